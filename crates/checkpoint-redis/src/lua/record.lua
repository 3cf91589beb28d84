-- v[1] owner, v[2] token, v[3] deadline, v[4] checkpoint, v[5] checkpoint_sub, v[6] pending,
-- v[7] pending_sub, v[8] parents, v[9] claim, v[10] owner_switches; false: absent.
local U64_MAX = '18446744073709551615'

-- A canonical decimal u64: digits, no leading zero, at most u64::MAX.
local function is_u64(s)
  return s and #s >= 1 and #s <= 20 and string.find(s, '^%d+$') ~= nil
    and (#s == 1 or string.byte(s, 1) ~= 48) and (#s < 20 or s <= U64_MAX)
end

local function is_id(s)
  return #s >= 1 and #s <= 256 and string.find(s, '^[%w_%.%-]+$') ~= nil
end

-- Whether s is valid UTF-8 as Rust's str::from_utf8 decides: no stray continuation byte, no
-- overlong form, no surrogate (U+D800 to U+DFFF), nothing above U+10FFFF. ASCII text returns
-- at the first pattern match.
local function is_utf8(s)
  if not string.find(s, '[\128-\255]') then return true end
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    local need, low, high = 0, 128, 191
    if c < 128 then
      need = 0
    elseif c >= 194 and c <= 223 then
      need = 1
    elseif c >= 224 and c <= 239 then
      need = 2
      if c == 224 then low = 160 elseif c == 237 then high = 159 end
    elseif c >= 240 and c <= 244 then
      need = 3
      if c == 240 then low = 144 elseif c == 244 then high = 143 end
    else
      return false
    end
    for k = 1, need do
      local b = string.byte(s, i + k)
      if not b then return false end
      if k == 1 then
        if b < low or b > high then return false end
      elseif b < 128 or b > 191 then
        return false
      end
    end
    i = i + need + 1
  end
  return true
end

-- A worker id (owner, claim): 1 to 256 bytes of valid UTF-8 without control characters (C0 and
-- DEL, or C1 encoded as UTF-8 \194\128 to \194\159), as WorkerId::new accepts.
local function is_worker(s)
  return #s >= 1 and #s <= 256 and string.find(s, '%c') == nil
    and string.find(s, '\194[\128-\159]') == nil and is_utf8(s)
end

-- What Position::decode accepts, with the sub-sequence already known to be a u64.
local function is_position(p, sub)
  if p == 'TRIM_HORIZON' or p == 'LATEST' or p == 'SHARD_END' then return sub == '0' end
  local ts = string.match(p, '^AT_TIMESTAMP:%+?(%d+)$')
  if ts then
    ts = string.gsub(ts, '^0+', '')
    return sub == '0' and (#ts < 20 or (#ts == 20 and ts <= U64_MAX))
  end
  return #p >= 1 and #p <= 128 and string.find(p, '^%d+$') ~= nil
end

-- The first field of record v that the client could not decode, or nil, checked field by field.
local function first_invalid(v)
  if v[1] and not is_worker(v[1]) then return 'owner' end
  if not is_u64(v[2]) then return 'token' end
  if v[3] and not is_u64(v[3]) then return 'deadline' end
  if v[4] then
    if v[5] and not is_u64(v[5]) then return 'checkpoint_sub' end
    if not is_position(v[4], v[5] or '0') then return 'checkpoint' end
  end
  if v[6] then
    if v[7] and not is_u64(v[7]) then return 'pending_sub' end
    if not is_position(v[6], v[7] or '0') then return 'pending' end
  end
  if v[8] and v[8] ~= '' then
    for piece in string.gmatch(v[8] .. ',', '([^,]*),') do
      if not is_id(piece) then return 'parents' end
    end
  end
  if v[9] and not is_worker(v[9]) then return 'claim' end
  if not is_u64(v[10]) then return 'owner_switches' end
  return nil
end

-- A worker id (owner, claim) of ASCII without control characters: what is_worker accepts, and
-- stricter (is_worker also lets through every other valid UTF-8 character but the C1 controls).
local function plain_worker(s)
  return #s >= 1 and #s <= 256 and not string.find(s, '[%c\128-\255]')
end

-- True for a record in the shape this crate writes for a sequence-number checkpoint: decimal
-- u64 fields of 1 to 19 digits without a leading zero (so below u64::MAX), positions absent or
-- 1 to 128 digits, plain worker ids, at most one parent. Everything it accepts,
-- first_invalid accepts; it costs five pattern matches where first_invalid needs about ten
-- (counted with callgrind: a pattern match is a C call of a few thousand instructions).
-- false: the record may still be valid (a TRIM_HORIZON checkpoint, two parents, a worker id
-- with a character outside ASCII), and first_invalid decides.
local function usual(v)
  local token, deadline, cp_sub, pd_sub, switches = v[2], v[3] or '0', v[5] or '0', v[7] or '0', v[10]
  if not token or not switches or #token > 19 or #deadline > 19 or #cp_sub > 19 or #pd_sub > 19
      or #switches > 19 then
    return false
  end
  local numbers = ' ' .. token .. ' ' .. deadline .. ' ' .. cp_sub .. ' ' .. pd_sub .. ' ' .. switches
  if not string.find(numbers, '^ %d+ %d+ %d+ %d+ %d+$') or string.find(numbers, ' 0%d') then
    return false
  end
  local cp, pd, parents = v[4], v[6], v[8]
  if cp and (#cp > 128 or not string.find(cp, '^%d+$')) then return false end
  if pd and (#pd > 128 or not string.find(pd, '^%d+$')) then return false end
  if parents and parents ~= '' and (#parents > 256 or not string.find(parents, '^[%w_%.%-]+$')) then
    return false
  end
  if v[1] and not plain_worker(v[1]) then return false end
  if v[9] and not plain_worker(v[9]) then return false end
  return true
end

-- The first field of record v that the client could not decode, or nil.
local function invalid(v)
  if usual(v) then return nil end
  return first_invalid(v)
end

-- The record of key, or nil when the key does not exist. A hash holding none of the known
-- fields (only possible by hand) is a record of absent fields, which fails validation.
local function read(key)
  local v = redis.call('HMGET', key, unpack(FIELDS))
  for i = 1, 10 do
    if v[i] then return v end
  end
  if redis.call('EXISTS', key) == 1 then return v end
  return nil
end

local function held_by(v, worker, token)
  return v[1] == worker and v[2] == token
end

-- [status, now, detail], or when there is a record its ten values (false is sent as nil)
-- followed by [status, now, detail]: appended to v itself, so no second table is built. `now`
-- is the server clock the script judged by, in milliseconds, as a number (sent as an integer,
-- never formatted as text here), or '' for a script that does not read the clock.
local function reply(status, now, detail, v)
  if v == nil then return {status, now, detail} end
  v[11] = status
  v[12] = now
  v[13] = detail
  return v
end
