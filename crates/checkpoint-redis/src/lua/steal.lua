local now = now_ms()
local v = read(KEYS[1])
if v == nil then return reply('CHANGED', now, '', nil) end
local bad = invalid(v)
if bad then return reply('CORRUPT', now, bad, nil) end
if held_by(v, ARGV[2], ARGV[3]) then
  grant(KEYS[1], v, ARGV[1], fmt(now + tonumber(ARGV[5])))
  return reply('OK', now, '', v)
end
if held_by(v, ARGV[1], ARGV[4]) then return reply('OK', now, '', v) end
return reply('CHANGED', now, '', v)
