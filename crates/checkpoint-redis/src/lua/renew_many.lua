local now = now_ms()
local deadline = fmt(now + tonumber(ARGV[2]))
local records = {}
for i, key in ipairs(KEYS) do
  local v = read(key)
  if v ~= nil then
    local bad = invalid(v)
    if bad then return {'CORRUPT', tostring(i), bad} end
  end
  records[i] = v or false
end
local out = {'OK', now}
for i, key in ipairs(KEYS) do
  local v = records[i]
  if v and held_by(v, ARGV[1], ARGV[2 + i]) then
    redis.call('HSET', key, 'deadline', deadline)
    -- One bulk string per record (no validated value contains a newline): far cheaper to
    -- build and to send than a nested array.
    out[i + 2] = 'OK\n' .. v[1] .. '\n' .. v[2] .. '\n' .. deadline .. '\n' .. (v[4] or '')
      .. '\n' .. (v[5] or '') .. '\n' .. (v[6] or '') .. '\n' .. (v[7] or '') .. '\n'
      .. (v[8] or '') .. '\n' .. (v[9] or '') .. '\n' .. v[10]
  else
    out[i + 2] = 'LOST'
  end
end
return out
