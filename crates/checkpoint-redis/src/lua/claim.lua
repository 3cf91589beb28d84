local v = read(KEYS[1])
if v == nil then return reply('NOTFOUND', '', '', nil) end
local bad = invalid(v)
if bad then return reply('CORRUPT', '', bad, nil) end
if v[1] == ARGV[1] or v[9] == ARGV[1] then return reply('OK', '', '', v) end
v[9] = ARGV[1]
redis.call('HSET', KEYS[1], 'claim', v[9])
return reply('OK', '', '', v)
