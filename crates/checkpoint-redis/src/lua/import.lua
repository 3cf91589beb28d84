if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'created_by') == ARGV[2] then return 1 end
  return 0
end
for i = 1, 10 do
  local value = ARGV[i + 2]
  if value ~= '' or i == 8 then redis.call('HSET', KEYS[1], FIELDS[i], value) end
end
redis.call('HSET', KEYS[1], 'created_by', ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
