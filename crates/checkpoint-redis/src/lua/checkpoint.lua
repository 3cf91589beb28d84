local v = read(KEYS[1])
if v == nil then return reply('LOST', '', '', nil) end
local bad = invalid(v)
if bad then return reply('CORRUPT', '', bad, nil) end
if not held_by(v, ARGV[1], ARGV[2]) then return reply('LOST', '', '', v) end
if regresses(v[4], v[5], ARGV[4], ARGV[5]) then return reply('REGRESSION', '', '', v) end
if ARGV[3] == 'commit' then
  v[4] = ARGV[4]
  v[5] = ARGV[5]
  v[10] = '0'
  redis.call('HSET', KEYS[1], 'checkpoint', v[4], 'checkpoint_sub', v[5], 'owner_switches', '0')
  if v[6] or v[7] then
    redis.call('HDEL', KEYS[1], 'pending', 'pending_sub')
    v[6] = false
    v[7] = false
  end
else
  v[6] = ARGV[4]
  v[7] = ARGV[5]
  redis.call('HSET', KEYS[1], 'pending', v[6], 'pending_sub', v[7])
end
return reply('OK', '', '', v)
