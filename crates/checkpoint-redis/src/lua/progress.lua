-- 0: TRIM_HORIZON, LATEST, AT_TIMESTAMP; 1: a sequence number; 2: SHARD_END.
local function pos_rank(p)
  if p == 'SHARD_END' then return 2 end
  if string.find(p, '^%d+$') then return 1 end
  return 0
end

local function pad(s, width)
  return string.rep('0', width - #s) .. s
end

-- True when the attempted position is behind the stored one (false: none), or the shard
-- already ended and the attempt is anything else.
local function regresses(stored, stored_sub, att, att_padded, att_sub_padded)
  if not stored then return false end
  if stored == 'SHARD_END' then return att ~= 'SHARD_END' end
  local sr, ar = pos_rank(stored), pos_rank(att)
  if sr ~= ar then return ar < sr end
  if ar ~= 1 then return false end
  local s = pad(stored, 128)
  if att_padded ~= s then return att_padded < s end
  return att_sub_padded < pad(stored_sub or '0', 20)
end
