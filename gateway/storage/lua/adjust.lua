-- adjust.lua: settle one reserved bucket to its actual cost; prepended to reserve and settle.
-- An entry e = {full key, metric, window, window seconds, amount, cost, reserved at,
-- cost kept on expiry, cost reserved}, all strings; `actual` is an integer, `now`/`grace` seconds.
local function adjust(e, actual, now, grace)
  local key, window, seconds = e[1], e[3], tonumber(e[4])
  local amount, cost = tonumber(e[5]), tonumber(e[6])
  local delta = actual - cost
  if delta == 0 then return end
  if window == 'rolling' then
    local _, level, rate = look(key, window, seconds, amount, now)
    if delta > 0 then
      level = level + delta
    else
      -- Refund only what of this reservation has not drained yet: more would erase
      -- other requests' spend.
      local left = cost - math.max(0, now - tonumber(e[7])) * rate
      if left > 0 then level = math.max(0, level - math.min(-delta, left)) end
    end
    redis.call('HSET', key, 'l', num(level), 't', num(now), 'r', num(rate))
    local life = rate > 0 and level / rate or seconds
    redis.call('PEXPIRE', key, math.ceil((life + 60) * 1000))
    return
  end
  if delta < 0 and redis.call('EXISTS', key) == 0 then return end
  if redis.call('INCRBY', key, delta) < 0 then redis.call('SET', key, 0, 'KEEPTTL') end
  if redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, math.ceil(grace * 1000)) end
end

-- Expire one reservation (its TTL passed without an extension, or its replica died): the
-- concurrency slot is freed, tokens and the request stay charged (the output may have been
-- served), and the record stays, as settled at what it kept, so that a late settle still
-- charges the real usage. Returns 1 when a reservation was expired.
local function expire_member(pending, prefix, member, now, grace)
  redis.call('ZREM', pending, member)
  local raw = redis.call('GET', prefix .. member)
  if not raw or raw == 'released' then return 0 end
  local entries = cjson.decode(raw)
  for _, e in ipairs(entries) do
    adjust(e, tonumber(e[8]), now, grace)
    e[6] = e[8]
  end
  redis.call('SET', prefix .. member, cjson.encode(entries), 'PX', math.ceil(grace * 1000))
  return 1
end

-- Expire up to `limit` reservations whose time has passed.
local function sweep(pending, prefix, now, limit, grace)
  local swept = 0
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', pending, '-inf', num(now), 'LIMIT', 0, limit)) do
    swept = swept + expire_member(pending, prefix, member, now, grace)
  end
  return swept
end
