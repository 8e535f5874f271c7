-- peek.lua: where buckets stand, debiting nothing (after time.lua, bucket.lua). Read-only.
-- KEYS[1..] one key per bucket, as in reserve.lua.
-- ARGV[1] now, epoch seconds, or '' for Redis TIME; then 4 per bucket: window
-- (rolling|day|month|inflight), window seconds, amount, cost (integers).
-- Returns per bucket: fits, remaining, retry_after ('' never, or fits), reset seconds.
local now = clock(ARGV[1])
local out = {}
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 4
  local b = {window = ARGV[a], amount = tonumber(ARGV[a + 2]), cost = tonumber(ARGV[a + 3])}
  b.key, b.level, b.rate, b.ends = look(KEYS[i], b.window, tonumber(ARGV[a + 1]), b.amount, now)
  local fits = b.level + b.cost <= b.amount + EPS
  local remaining, reset = report(b, b.level, now)
  out[#out + 1] = fits and 1 or 0
  out[#out + 1] = remaining
  out[#out + 1] = fits and '' or retry(b, now)
  out[#out + 1] = num(reset)
end
return out
