local v = read(KEYS[1])
if v == nil then return reply('NOTFOUND', '', '', nil) end
local bad = invalid(v)
if bad then return reply('CORRUPT', '', bad, nil) end
if v[1] or v[3] then redis.call('HDEL', KEYS[1], 'owner', 'deadline') end
v[1] = false
v[3] = false
return reply('OK', '', '', v)
