-- observe.lua: an account's cluster, after recording the signal values it was seen with
-- (after time.lua and clusters.lua). KEYS[1] B..'cn' (routing only).
-- ARGV[1] B; ARGV[2] now, epoch seconds, or ''; ARGV[3] budget registry life, seconds;
-- ARGV[4] the account; ARGV[5] how many saturated values B..'cx' keeps; ARGV[6] how many
-- organizations a cluster keeps; ARGV[7] the account's organization, '' when not new; then
-- 3 per signal: its name, the value's SHA-256 hex, max accounts ('' for no cap).
-- B..'cs:'..name..':'..value is a ZSET of the accounts seen with that value, scored by
-- arrival. A new account joins the cluster of the first member not manually unlinked.
-- Once max accounts have a value it links nobody new (carrier NAT); it is noted in
-- B..'cx', a ZSET 'name:value' -> first seen (epoch s), oldest dropped past the cap.
-- The organization goes to B..'cg' and, if the account is linked, to its cluster's set.
-- Returns {cluster id, its organizations, n, n absorbed cluster ids, then the newly
-- saturated signal names}.
B, OCAP = ARGV[1], tonumber(ARGV[6])
local now, life, account = clock(ARGV[2]), math.ceil(tonumber(ARGV[3]) * 1000), ARGV[4]
local id = cluster_of(account)
if ARGV[7] ~= '' then
  redis.call('HSET', B .. 'cg', account, ARGV[7])
  if id ~= account then add_org(id, ARGV[7]) end
end
local free = redis.call('SISMEMBER', B .. 'cu', account) == 0
local absorbed, saturated = {}, {}
for i = 8, #ARGV, 3 do
  local name, value, cap = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local key = B .. 'cs:' .. enc(name) .. ':' .. value
  if not redis.call('ZSCORE', key, account) then
    local n = redis.call('ZCARD', key)
    if cap and n >= cap then
      if redis.call('ZADD', B .. 'cx', 'NX', num(now), name .. ':' .. value) == 1 then
        saturated[#saturated + 1] = name
        local over = redis.call('ZCARD', B .. 'cx') - tonumber(ARGV[5])
        if over > 0 then redis.call('ZPOPMIN', B .. 'cx', over) end
      end
    else
      local anchor
      if free then
        for _, m in ipairs(redis.call('ZRANGE', key, 0, 15)) do
          if redis.call('SISMEMBER', B .. 'cu', m) == 0 then anchor = m break end
        end
      end
      redis.call('ZADD', key, n, account)
      if anchor then id = join(id, cluster_of(anchor), now, life, absorbed) end
    end
  end
end
local out = {id, id == account and 1 or organizations(id), #absorbed}
for _, x in ipairs(absorbed) do out[#out + 1] = x end
for _, x in ipairs(saturated) do out[#out + 1] = x end
return out
