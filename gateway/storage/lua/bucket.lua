-- bucket.lua: reading a bucket; prepended to every script after time.lua; no KEYS or ARGV.
-- Units: seconds (floats), amounts and costs (integers). A rolling bucket is a hash
-- {l = used level, t = last update}; a calendar or in-flight counter is an integer
-- string; a missing key means 0. budget_memory.py repeats this arithmetic operation for
-- operation, so memory:// and redis:// decide alike: keep them in step.
local EPS = 1e-6

-- A bucket as it stands at `now`: full key, level (or count), drain rate, period end.
local function look(key, window, seconds, amount, now)
  if window == 'rolling' then
    local rate = amount / seconds
    local h = redis.call('HMGET', key, 'l', 't')
    if not h[1] then return key, 0, rate, false end
    return key, math.max(0, tonumber(h[1]) - math.max(0, now - tonumber(h[2])) * rate), rate, false
  end
  if window == 'inflight' then return key, tonumber(redis.call('GET', key) or 0), 0, false end
  local suffix, ends = period(window, now)
  return key .. suffix, tonumber(redis.call('GET', key .. suffix) or 0), 0, ends
end

-- Remaining and seconds until whole again (rolling) or until the period resets.
local function report(b, level, now)
  if b.window == 'rolling' then
    return math.max(0, math.floor(b.amount - level + EPS)), b.rate > 0 and level / b.rate or 0
  end
  return math.max(0, b.amount - level), b.ends and b.ends - now or 0
end

-- Seconds until `b.cost` fits ('' when it never can); only asked when it does not fit now.
local function retry(b, now)
  if b.cost > b.amount then return '' end
  if b.window == 'inflight' then return '1' end
  if b.window ~= 'rolling' then return num(b.ends - now) end
  if b.rate == 0 then return '' end
  return num(math.ceil((b.level + b.cost - b.amount) / b.rate * 1000) / 1000)
end
