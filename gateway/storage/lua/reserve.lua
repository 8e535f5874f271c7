-- reserve.lua: debit one request in every bucket at once (after time.lua, bucket.lua, adjust.lua).
-- KEYS[1] pending ZSET (member: request, score: expiry, epoch s); KEYS[2] this request's
-- record; KEYS[3..] one key per bucket (no amount; calendar keys get ':<period>' here).
-- ARGV[1] now, epoch seconds, or '' for Redis TIME; ARGV[2] reservation TTL, seconds;
-- ARGV[3] grace, seconds, before records and counters are dropped; ARGV[4] the request's
-- member ('<replica>/<quoted request id>'); ARGV[5] record key prefix (prefix .. member =
-- record key); ARGV[6] sweep limit;
-- ARGV[7] how long a cluster's budget registry lives, seconds (longer than any counter);
-- ARGV[8] '1' to debit whatever the limits say (a request a replica admitted on its own
-- during an outage, still running, recorded once the store answers again), else '';
-- then 8 per bucket: metric, window (rolling|day|month|inflight), window seconds, amount,
-- cost, group (0 enforced, else one shadow policy), cost kept if the reservation expires,
-- and the key of its cluster's budget registry ('' unless a cluster-scope counter that a
-- merge must move: clusters.lua reads these sets).
-- A rolling hash also keeps its drain rate ('r') so a merge can drain it without the policy.
-- The enforced group is all or nothing; each shadow group too, debited only if admitted.
-- Returns {admitted, then per bucket: fits, remaining, retry_after ('' never), reset}; or
-- {2} when this request id holds a reservation already (a repeated call debits nothing),
-- {3} when it was released (a reserve that timed out and was compensated: it does nothing).
local existing = redis.call('GET', KEYS[2])
if existing then return {existing == 'released' and 3 or 2} end
local now, ttl, grace = clock(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
sweep(KEYS[1], ARGV[5], now, tonumber(ARGV[6]), grace)
local buckets, groups = {}, {}
local registry_life = math.ceil(tonumber(ARGV[7]) * 1000)
local force = ARGV[8] == '1'
for i = 3, #KEYS do
  local a = 9 + (i - 3) * 8
  local b = {metric = ARGV[a], window = ARGV[a + 1], seconds = ARGV[a + 2], amount = tonumber(ARGV[a + 3]),
    cost = tonumber(ARGV[a + 4]), group = tonumber(ARGV[a + 5]), kept = ARGV[a + 6], registry = ARGV[a + 7]}
  b.key, b.level, b.rate, b.ends = look(KEYS[i], b.window, tonumber(b.seconds), b.amount, now)
  b.fits = force or b.level + b.cost <= b.amount + EPS
  if not b.fits then groups[b.group] = false elseif groups[b.group] == nil then groups[b.group] = true end
  buckets[#buckets + 1] = b
end
local admitted = groups[0] ~= false
local out, record = {admitted and 1 or 0}, {}
for _, b in ipairs(buckets) do
  local level = b.level
  if admitted and groups[b.group] then
    level = level + b.cost
    if b.window == 'rolling' then
      redis.call('HSET', b.key, 'l', num(level), 't', num(now), 'r', num(b.rate))
      redis.call('PEXPIRE', b.key, math.ceil(((b.rate > 0 and level / b.rate or b.seconds) + 60) * 1000))
    else
      redis.call('INCRBY', b.key, b.cost)
      redis.call('PEXPIRE', b.key, math.ceil(((b.ends and b.ends - now or 0) + ttl + grace) * 1000))
    end
    if b.registry ~= '' then
      redis.call('SADD', b.registry, b.key)
      redis.call('PEXPIRE', b.registry, registry_life)
    end
    record[#record + 1] = {b.key, b.metric, b.window, b.seconds, tostring(b.amount),
      tostring(b.cost), num(now), b.kept, tostring(b.cost)}
  end
  local remaining, reset = report(b, level, now)
  out[#out + 1] = b.fits and 1 or 0
  out[#out + 1] = remaining
  out[#out + 1] = b.fits and '' or retry(b, now)
  out[#out + 1] = num(reset)
end
if #record > 0 then
  local life = math.ceil((ttl + grace) * 1000)
  redis.call('SET', KEYS[2], cjson.encode(record), 'PX', life)
  redis.call('ZADD', KEYS[1], num(now + ttl), ARGV[4])
  redis.call('PEXPIRE', KEYS[1], life)
end
return out
