if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[3] then return 2 end
redis.call('ZADD', KEYS[1], fmt(now_ms() + tonumber(ARGV[2])), ARGV[1])
return 1
