local expected = {'hash', 'zset', 'zset'}
for i, key in ipairs(KEYS) do
  local t = redis.call('TYPE', key)['ok']
  if t ~= 'none' and t ~= expected[i] then
    return {'MISMATCH', key .. ' holds a ' .. t .. ', expected a ' .. expected[i]}
  end
end
redis.call('HSETNX', KEYS[1], 'layout', ARGV[1])
local layout = redis.call('HGET', KEYS[1], 'layout')
if layout ~= ARGV[1] then
  return {'MISMATCH', KEYS[1] .. ' says layout ' .. tostring(layout) .. ', this version writes layout ' .. ARGV[1]}
end
return {'OK', ''}
