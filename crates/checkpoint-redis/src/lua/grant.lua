-- Adds one to a canonical decimal u64, saturating at u64::MAX (FencingToken::next).
local function incr(s)
  if s == U64_MAX then return s end
  local n = #s
  while n > 0 and string.sub(s, n, n) == '9' do n = n - 1 end
  if n == 0 then return '1' .. string.rep('0', #s) end
  return string.sub(s, 1, n - 1) .. string.char(string.byte(s, n) + 1) .. string.rep('0', #s - n)
end

-- rules::grant on record v of key, written: a new owner, the next token, one more owner
-- switch, no claim.
local function grant(key, v, worker, deadline)
  v[1] = worker
  v[2] = incr(v[2])
  v[3] = deadline
  v[10] = incr(v[10])
  redis.call('HSET', key, 'owner', v[1], 'token', v[2], 'deadline', v[3], 'owner_switches', v[10])
  if v[9] then
    redis.call('HDEL', key, 'claim')
    v[9] = false
  end
end
