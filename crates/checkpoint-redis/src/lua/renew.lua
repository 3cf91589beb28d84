local now = now_ms()
local v = read(KEYS[1])
if v == nil then return reply('LOST', now, '', nil) end
local bad = invalid(v)
if bad then return reply('CORRUPT', now, bad, nil) end
if not held_by(v, ARGV[1], ARGV[2]) then return reply('LOST', now, '', v) end
v[3] = fmt(now + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'deadline', v[3])
return reply('OK', now, '', v)
