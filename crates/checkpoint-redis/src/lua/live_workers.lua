return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. fmt(now_ms()), '+inf')
