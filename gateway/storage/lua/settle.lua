-- settle.lua: replace one reservation by what the request really cost (after time.lua, bucket.lua,
-- adjust.lua). Never refuses; counters never go below 0; a second settle finds no record.
-- KEYS[1] pending ZSET; KEYS[2] the request's record.
-- ARGV[1] now, epoch seconds, or '' for Redis TIME; ARGV[2] grace, seconds; ARGV[3] the
-- request's member in KEYS[1]; then pairs: metric, actual cost (integer). A metric not
-- named keeps its reserved cost.
-- A reservation that expired first was kept at its reserved tokens: this corrects it to
-- the real usage all the same.
-- Returns 1 when a reservation was settled, 0 when there was none (or it was released).
local raw = redis.call('GET', KEYS[2])
if not raw or raw == 'released' then return 0 end
local now, grace = clock(ARGV[1]), tonumber(ARGV[2])
local actual = {}
for i = 4, #ARGV, 2 do actual[ARGV[i]] = tonumber(ARGV[i + 1]) end
for _, e in ipairs(cjson.decode(raw)) do
  local cost = actual[e[2]]
  if cost then adjust(e, cost, now, grace) end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[3])
return 1
