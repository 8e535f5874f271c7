-- release.lua: undo a reserve whose answer never came (it timed out, and may have run or
-- may still run late). After time.lua, bucket.lua, adjust.lua.
-- KEYS[1] pending ZSET; KEYS[2] the request's record.
-- ARGV[1] now, epoch seconds, or '' for Redis TIME; ARGV[2] grace, seconds; ARGV[3] the
-- request's member; ARGV[4] how long the tombstone lives, seconds (longer than any call
-- can wait in Redis).
-- Everything the reservation debited is refunded, its request included (the request was
-- decided without it), and the record becomes the tombstone 'released', which a late
-- reserve of the same id finds and then debits nothing (reserve.lua).
-- Returns 1 when a reservation was undone, 0 when none had run.
local raw = redis.call('GET', KEYS[2])
if raw == 'released' then return 0 end
local now, grace = clock(ARGV[1]), tonumber(ARGV[2])
if raw then
  for _, e in ipairs(cjson.decode(raw)) do adjust(e, 0, now, grace) end
end
redis.call('SET', KEYS[2], 'released', 'PX', math.ceil(tonumber(ARGV[4]) * 1000))
redis.call('ZREM', KEYS[1], ARGV[3])
return raw and 1 or 0
