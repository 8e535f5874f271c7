-- extend.lua: keep running exchanges' reservations alive (after time.lua); one call per
-- replica per upkeep tick, for every reservation it holds.
-- KEYS[1] pending ZSET (member: '<replica>/<request>', score: expiry, epoch seconds).
-- ARGV[1] now, epoch seconds, or '' for Redis TIME; ARGV[2] reservation TTL, seconds;
-- ARGV[3] grace, seconds; ARGV[4] record key prefix; ARGV[5..] members.
-- A member no longer pending (settled, expired, released) is left as it is. What a held
-- reservation needs lives as long as it does: its record, the pending set, and its
-- in-flight counters (whose own lifetime was set when it was reserved).
-- Returns how many reservations were extended.
-- A member that expired while its exchange still runs (a store stall past the TTL, or a
-- replica frozen and taken for dead) is taken back: what expiry released (its concurrency
-- slot) is debited again, whatever the limit says now, since the exchange is running.
local now, ttl, grace = clock(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local life = math.ceil((ttl + grace) * 1000)
local extended = 0
for i = 5, #ARGV do
  local held = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if not held then
    local raw = redis.call('GET', ARGV[4] .. ARGV[i])
    if raw and raw ~= 'released' then
      local entries = cjson.decode(raw)
      for _, e in ipairs(entries) do
        if e[9] and e[6] ~= e[9] then
          adjust(e, tonumber(e[9]), now, grace)
          e[6] = e[9]
        end
      end
      redis.call('SET', ARGV[4] .. ARGV[i], cjson.encode(entries), 'PX', life)
      redis.call('ZADD', KEYS[1], num(now + ttl), ARGV[i])
      held = true
    end
  end
  if held then
    redis.call('ZADD', KEYS[1], num(now + ttl), ARGV[i])
    local raw = redis.call('GET', ARGV[4] .. ARGV[i])
    if raw and raw ~= 'released' then
      redis.call('PEXPIRE', ARGV[4] .. ARGV[i], life)
      for _, e in ipairs(cjson.decode(raw)) do
        if e[3] == 'inflight' and redis.call('PTTL', e[1]) < life then
          redis.call('PEXPIRE', e[1], life)
        end
      end
    end
    extended = extended + 1
  end
end
if extended > 0 and redis.call('PTTL', KEYS[1]) < life then redis.call('PEXPIRE', KEYS[1], life) end
return extended
