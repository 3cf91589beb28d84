local now = fmt(now_ms())
for _, w in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('HDEL', KEYS[2], w)
end
return redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
