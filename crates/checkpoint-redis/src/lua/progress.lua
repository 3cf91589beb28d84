-- 0: TRIM_HORIZON, LATEST, AT_TIMESTAMP; 1: a sequence number; 2: SHARD_END. Every position
-- here is one the client encoded or one `invalid` accepted, so a sequence number is exactly a
-- position that starts with a digit.
local function pos_rank(p)
  if p == 'SHARD_END' then return 2 end
  local b = string.byte(p, 1)
  if b and b >= 48 and b <= 57 then return 1 end
  return 0
end

-- A decimal string without its leading zeros ('0' stays): a stored sequence number may carry
-- them (`invalid` accepts any digits); the client never sends them.
local function canonical(s)
  if #s > 1 and string.byte(s, 1) == 48 then
    s = string.gsub(s, '^0+', '')
    if s == '' then return '0' end
  end
  return s
end

-- a < b for decimal strings without leading zeros: the shorter is smaller, and at equal length
-- text order is numeric order. No padding, so no string is built.
local function dec_lt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end

-- rules::check_progress: true when the attempted position (att, with sub-sequence att_sub, both
-- canonical) is behind the stored one (false: none), or the shard already ended and the
-- attempt is anything else.
local function regresses(stored, stored_sub, att, att_sub)
  if not stored then return false end
  if stored == 'SHARD_END' then return att ~= 'SHARD_END' end
  local sr, ar = pos_rank(stored), pos_rank(att)
  if sr ~= ar then return ar < sr end
  if ar ~= 1 then return false end
  stored = canonical(stored)
  if att ~= stored then return dec_lt(att, stored) end
  return dec_lt(att_sub, stored_sub or '0')
end
