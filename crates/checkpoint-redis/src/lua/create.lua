if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'created_by') == ARGV[6] then return 1 end
  return 0
end
if ARGV[3] == '1' then
  redis.call('HSET', KEYS[1], 'token', '0', 'owner_switches', '0', 'parents', ARGV[2],
    'checkpoint', ARGV[4], 'checkpoint_sub', ARGV[5], 'created_by', ARGV[6])
else
  redis.call('HSET', KEYS[1], 'token', '0', 'owner_switches', '0', 'parents', ARGV[2],
    'created_by', ARGV[6])
end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
