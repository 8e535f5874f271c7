-- debit.lua: add what replicas admitted on their own during an outage (after time.lua,
-- bucket.lua): the store then counts it, as if it had been there.
-- KEYS[1] this write-back's id key (written with it: a repeat of the same batch, after a
-- lost answer, does nothing); KEYS[2..n] one key per bucket (as reserve.lua's).
-- ARGV[1] now, epoch seconds, or '' for Redis TIME; ARGV[2] grace, seconds; then 4 per
-- bucket: window (rolling|day|month), window seconds, amount, cost (integer; negative
-- corrects a reservation written back earlier down to what was used; never below 0).
-- Unconditional: what was served was served. In-flight counters are never written back.
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', math.ceil(tonumber(ARGV[2]) * 1000)) == false then
  return 0
end
local now, grace = clock(ARGV[1]), tonumber(ARGV[2])
for i = 2, #KEYS do
  local a = 3 + (i - 2) * 4
  local window, seconds = ARGV[a], tonumber(ARGV[a + 1])
  local amount, cost = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local key, level, rate, ends = look(KEYS[i], window, seconds, amount, now)
  if window == 'rolling' then
    level = math.max(0, level + cost)
    redis.call('HSET', key, 'l', num(level), 't', num(now), 'r', num(rate))
    redis.call('PEXPIRE', key, math.ceil(((rate > 0 and level / rate or seconds) + 60) * 1000))
  elseif window ~= 'inflight' then
    if redis.call('INCRBY', key, cost) < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
    local life = math.ceil(((ends - now) + grace) * 1000)
    if redis.call('PTTL', key) < life then redis.call('PEXPIRE', key, life) end
  end
end
return #KEYS - 1
