-- observe.lua: an account's cluster, after recording the signal values it was seen with
-- (after time.lua and clusters.lua). KEYS[1] B..'cn' (routing only).
-- ARGV[1] B; ARGV[2] now, epoch seconds, or ''; ARGV[3] budget registry life, seconds;
-- ARGV[4] the account; ARGV[5] how many saturated values B..'cx' keeps; ARGV[6] how many
-- organizations a cluster keeps; ARGV[7] the account's organization, '' when not new;
-- ARGV[8] retention, seconds; then 3 per signal: its name, the value's SHA-256 hex, max
-- accounts ('' for no cap).
-- B..'cs:'..name..':'..value is a ZSET of the accounts seen with that value, scored by
-- arrival. A new account joins the cluster of the first member not manually unlinked; so
-- does a recorded one found on its own (its 'ca' lapsed). Once max accounts have a value it
-- links nobody new (carrier NAT); it is noted in B..'cx', a ZSET 'name:value' -> first seen
-- (epoch s), oldest dropped past the cap. The organization goes to B..'cg:'..account and,
-- if the account is linked, to its cluster's set. Everything the call touches is refreshed.
-- Returns {cluster id, its organizations, its accounts, n, n absorbed cluster ids, then the
-- newly saturated signal names}.
B, OCAP, LIFE = ARGV[1], tonumber(ARGV[6]), math.ceil(tonumber(ARGV[8]) * 1000)
local now, life, account = clock(ARGV[2]), math.ceil(tonumber(ARGV[3]) * 1000), ARGV[4]
local id, org = cluster_of(account), B .. 'cg:' .. enc(account)
if ARGV[7] ~= '' then
  redis.call('SET', org, ARGV[7], 'PX', LIFE)
  if id ~= account then add_org(id, ARGV[7]) end
else
  redis.call('PEXPIRE', org, LIFE)
end
local free = redis.call('SISMEMBER', B .. 'cu', account) == 0
local absorbed, saturated = {}, {}

local function anchor(key)
  if not free then return nil end
  for _, m in ipairs(redis.call('ZRANGE', key, 0, 15)) do
    if m ~= account and redis.call('SISMEMBER', B .. 'cu', m) == 0 then return m end
  end
end

for i = 9, #ARGV, 3 do
  local name, value, cap = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local key = B .. 'cs:' .. enc(name) .. ':' .. value
  local first
  if redis.call('ZSCORE', key, account) then
    if id == account then first = anchor(key) end
  else
    local n = redis.call('ZCARD', key)
    if cap and n >= cap then
      if redis.call('ZADD', B .. 'cx', 'NX', num(now), name .. ':' .. value) == 1 then
        saturated[#saturated + 1] = name
        local over = redis.call('ZCARD', B .. 'cx') - tonumber(ARGV[5])
        if over > 0 then redis.call('ZPOPMIN', B .. 'cx', over) end
      end
    else
      first = anchor(key)
      redis.call('ZADD', key, n, account)
    end
  end
  redis.call('PEXPIRE', key, LIFE)
  if first then id = join(id, cluster_of(first), now, life, absorbed) end
end
refresh(B .. 'ca:' .. enc(account))
if id ~= account then keep_sets(id, pinned(id)) end
local out = {id, id == account and 1 or organizations(id), id == account and 1 or size(id),
  #absorbed}
for _, x in ipairs(absorbed) do out[#out + 1] = x end
for _, x in ipairs(saturated) do out[#out + 1] = x end
return out
