local v = read(KEYS[1])
if v == nil then return reply('LOST', '', '', nil) end
local bad = invalid(v)
if bad then return reply('CORRUPT', '', bad, nil) end
if held_by(v, ARGV[1], ARGV[2]) then
  v[1] = false
  if v[9] then
    -- Claimed: the deadline stays as the claimant's reservation (rules::get_lease).
    redis.call('HDEL', KEYS[1], 'owner')
  else
    v[3] = false
    redis.call('HDEL', KEYS[1], 'owner', 'deadline')
  end
  return reply('OK', '', '', v)
end
if not v[1] and v[2] == ARGV[2] then return reply('OK', '', '', v) end
return reply('LOST', '', '', v)
