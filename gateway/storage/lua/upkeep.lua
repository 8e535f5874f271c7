-- upkeep.lua: one replica's periodic tick (after time.lua, bucket.lua, adjust.lua).
-- KEYS[1] replicas ZSET (member: replica id, score: last heartbeat, epoch seconds);
-- KEYS[2] pending ZSET (member: '<replica>/<request>', score: expiry).
-- ARGV[1] now, epoch seconds, or '' for Redis TIME; ARGV[2] this replica's id; ARGV[3]
-- seconds without a heartbeat after which a replica is dead; ARGV[4] sweep limit; ARGV[5]
-- grace, seconds; ARGV[6] record key prefix; ARGV[7] the replicas key's life, seconds.
-- Heartbeats; expires every reservation of a dead replica at once (its concurrency slots
-- come back without waiting for anyone's next request; its tokens stay charged); expires
-- reservations whose time passed, even with no traffic. A replica whose own last heartbeat
-- is itself half the dead time old (the store stalled, or this replica was frozen) reaps
-- nobody this tick: the others missed their heartbeats for the same reason.
-- Returns {replicas alive, reservations of dead replicas expired, expired by time}.
local now = clock(ARGV[1])
local dead_after, limit, grace = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local mine = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]) or now)
redis.call('ZADD', KEYS[1], num(now), ARGV[2])
local dead = {}
if now - mine < dead_after / 2 then
  dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', num(now - dead_after))
end
local reaped = 0
if #dead > 0 then
  local owners = {}
  for _, replica in ipairs(dead) do
    owners[replica .. '/'] = true
    redis.call('ZREM', KEYS[1], replica)
  end
  for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    local slash = string.find(member, '/', 1, true)
    if slash and owners[string.sub(member, 1, slash)] then
      reaped = reaped + expire_member(KEYS[2], ARGV[6], member, now, grace)
    end
  end
end
local swept = sweep(KEYS[2], ARGV[6], now, limit, grace)
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[7]) * 1000))
return {redis.call('ZCARD', KEYS[1]), reaped, swept}
