-- shadow.lua: add tallies of would-be refusals to the bounded shadow report (alone).
-- KEYS[1] ZSET entry -> count; KEYS[2] HASH entry -> tokens; KEYS[3] HASH entry -> first
-- seen; KEYS[4] HASH entry -> last seen; KEYS[5] count of refusals whose entry was dropped.
-- ARGV[1] the most entries kept; then 5 per tally: entry ('policy:scope:scope id', each
-- part percent-encoded), count, tokens, first seen, last seen (epoch seconds, %.17g).
-- Past the cap the smallest counts go first (ties: smallest entry), as ZPOPMIN does.
for i = 2, #ARGV, 5 do
  local entry, first, last = ARGV[i], tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
  redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], entry)
  redis.call('HINCRBY', KEYS[2], entry, ARGV[i + 2])
  local known = tonumber(redis.call('HGET', KEYS[3], entry))
  if not known or first < known then redis.call('HSET', KEYS[3], entry, ARGV[i + 3]) end
  known = tonumber(redis.call('HGET', KEYS[4], entry))
  if not known or last > known then redis.call('HSET', KEYS[4], entry, ARGV[i + 4]) end
end
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[1])
if over > 0 then
  local dropped = redis.call('ZPOPMIN', KEYS[1], over)
  for j = 1, #dropped, 2 do
    redis.call('HDEL', KEYS[2], dropped[j])
    redis.call('HDEL', KEYS[3], dropped[j])
    redis.call('HDEL', KEYS[4], dropped[j])
    redis.call('INCRBY', KEYS[5], dropped[j + 1])
  end
end
return 0
