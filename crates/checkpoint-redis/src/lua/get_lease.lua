local now = now_ms()
local v = read(KEYS[1])
local created = v == nil
if created then v = {false, '0', false, false, false, false, false, '', false, '0'} end
local bad = invalid(v)
if bad then return reply('CORRUPT', now, bad, nil) end
local deadline = fmt(now + tonumber(ARGV[2]))
if v[1] == ARGV[1] then
  v[3] = deadline
  redis.call('HSET', KEYS[1], 'deadline', deadline)
  return reply('OK', now, '', v)
end
if v[1] and v[3] and tonumber(v[3]) > now then return reply('HELD', now, '', v) end
-- A claim is honoured: a lease released while claimed is reserved for the claimant until the
-- deadline it was released with.
if not v[1] and v[9] and v[9] ~= ARGV[1] and v[3] and tonumber(v[3]) > now then
  return reply('HELD', now, '', v)
end
if created then
  redis.call('HSET', KEYS[1], 'parents', v[8])
  redis.call('ZADD', KEYS[2], 0, ARGV[3])
end
grant(KEYS[1], v, ARGV[1], deadline)
return reply('OK', now, '', v)
