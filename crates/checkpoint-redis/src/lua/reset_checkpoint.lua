local v = read(KEYS[1])
if v == nil then return reply('NOTFOUND', '', '', nil) end
local bad = invalid(v)
if bad then return reply('CORRUPT', '', bad, nil) end
if ARGV[1] == '1' then
  v[4] = ARGV[2]
  v[5] = ARGV[3]
  redis.call('HSET', KEYS[1], 'checkpoint', v[4], 'checkpoint_sub', v[5], 'owner_switches', '0')
else
  v[4] = false
  v[5] = false
  redis.call('HSET', KEYS[1], 'owner_switches', '0')
  redis.call('HDEL', KEYS[1], 'checkpoint', 'checkpoint_sub')
end
v[10] = '0'
if v[6] or v[7] then
  redis.call('HDEL', KEYS[1], 'pending', 'pending_sub')
  v[6] = false
  v[7] = false
end
return reply('OK', '', '', v)
