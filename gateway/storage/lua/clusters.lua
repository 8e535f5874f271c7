-- clusters.lua: linked-account clusters; prepended (after time.lua) to link, observe, unlink.
-- No KEYS or ARGV of its own: B is the key base '{prefix}:{tag}:' that each script sets
-- from its ARGV[1]; every key below starts with B, so one hash tag holds them all.
-- Keys: B..'ca:'..account -> its cluster id (absent: a cluster of one, id = account);
-- B..'cm:'..cluster -> SET of accounts; B..'cn' SET of named clusters; B..'cl' HASH
-- absorbed name -> survivor; B..'cu' SET of manually unlinked accounts; B..'cq' sequence
-- of generated ids; B..'k:'..cluster the budget registry reserve.lua fills; B..'c:' counters;
-- B..'cg:'..account -> its last organization; B..'co:'..cluster SET of the organizations
-- of a cluster of several accounts, at most OCAP of them (a cluster of one counts 1).
-- Retention: LIFE (milliseconds) is how long link data outlives its last use. 'ca', 'cg',
-- 'cm', 'co' and 'cs' keys get it when written and again when used; a 'ca', 'cm' or 'co'
-- key without a TTL (an account linked explicitly, a cluster linked into) is pinned.
-- Ids in keys are percent-encoded as Python's quote(safe='') does. Units: seconds, but LIFE.
local B, OCAP, LIFE

local function enc(s)
  return (string.gsub(s, '[^%w%-%._~]', function(c) return string.format('%%%02X', string.byte(c)) end))
end

local function cluster_of(account) return redis.call('GET', B .. 'ca:' .. enc(account)) or account end
local function size(id) return redis.call('SCARD', B .. 'cm:' .. enc(id)) end
local function named(id) return redis.call('SISMEMBER', B .. 'cn', id) == 1 end

-- Refresh a key that has a TTL; a pinned one (no TTL) stays pinned, a missing one missing.
local function refresh(key)
  if redis.call('PTTL', key) ~= -1 then redis.call('PEXPIRE', key, LIFE) end
end

-- Whether a cluster was linked into explicitly: its member set has no TTL.
local function pinned(id) return redis.call('PTTL', B .. 'cm:' .. enc(id)) == -1 end

-- A cluster was used: its sets live LIFE more, or for good once pinned.
local function keep_sets(id, pin)
  local members, orgs = B .. 'cm:' .. enc(id), B .. 'co:' .. enc(id)
  if pin then
    redis.call('PERSIST', members)
    redis.call('PERSIST', orgs)
  else
    redis.call('PEXPIRE', members, LIFE)
    redis.call('PEXPIRE', orgs, LIFE)
  end
end

-- Organizations only accumulate, up to OCAP: a cluster at the cap counts as "many" for good.
local function add_org(id, org)
  local key = B .. 'co:' .. enc(id)
  if redis.call('SCARD', key) < OCAP then redis.call('SADD', key, org) end
end

local function organizations(id)
  return math.max(1, redis.call('SCARD', B .. 'co:' .. enc(id)))
end

-- A named cluster that merged into another answers to the survivor's id.
local function canonical(id)
  for _ = 1, 32 do
    local next_id = redis.call('HGET', B .. 'cl', id)
    if not next_id then return id end
    id = next_id
  end
  return id
end

-- A rolling level at `now`, drained by its own stored rate (none stored: as it stands).
local function drained(h, now)
  if not h[1] then return 0 end
  if not h[3] then return tonumber(h[1]) end
  return math.max(0, tonumber(h[1]) - math.max(0, now - tonumber(h[2])) * tonumber(h[3]))
end

-- Add every registered counter of cluster `src` into `dst`'s, then drop it.
local function move_budget(src, dst, now, registry_life)
  local head, dq = B .. 'c:', enc(dst)
  local reg, target_reg = B .. 'k:' .. enc(src), B .. 'k:' .. dq
  local members = redis.call('SMEMBERS', reg)
  table.sort(members)
  for _, key in ipairs(members) do
    local policy, scope, rest = string.match(string.sub(key, #head + 1), '^([^:]*):([^:]*):[^:]*:(.*)$')
    local kind = redis.call('TYPE', key)['ok']
    if policy and kind ~= 'none' then
      local into = head .. policy .. ':' .. scope .. ':' .. dq .. ':' .. rest
      local life = redis.call('PTTL', key)
      if kind == 'hash' then
        local s = redis.call('HMGET', key, 'l', 't', 'r')
        local d = redis.call('HMGET', into, 'l', 't', 'r')
        local rate = tonumber(d[3] or s[3] or 0)
        local level = drained(s, now) + drained(d, now)
        redis.call('HSET', into, 'l', num(level), 't', num(now), 'r', num(rate))
        if rate > 0 then life = math.ceil((level / rate + 60) * 1000) end
      else
        redis.call('INCRBY', into, tonumber(redis.call('GET', key)))
      end
      life = math.max(life, redis.call('PTTL', into))
      if life > 0 then redis.call('PEXPIRE', into, life) end
      redis.call('DEL', key)
      redis.call('SADD', target_reg, into)
    end
  end
  redis.call('DEL', reg)
  if redis.call('EXISTS', target_reg) == 1 then redis.call('PEXPIRE', target_reg, registry_life) end
end

-- `lose`'s accounts (itself, if a cluster of one), organizations and spend go to `keep`.
local function adopt(keep, lose, now, registry_life, absorbed)
  local from = B .. 'cm:' .. enc(lose)
  local pin = pinned(keep) or pinned(lose)
  local accounts = redis.call('SMEMBERS', from)
  local alone = #accounts == 0 and not named(lose)
  if alone then accounts = {lose} end
  for _, account in ipairs(accounts) do
    local key = B .. 'ca:' .. enc(account)
    if redis.call('PTTL', key) == -1 then
      redis.call('SET', key, keep, 'KEEPTTL')
    else
      redis.call('SET', key, keep, 'PX', LIFE)
    end
    redis.call('SADD', B .. 'cm:' .. enc(keep), account)
  end
  redis.call('DEL', from)
  if alone then
    local org = redis.call('GET', B .. 'cg:' .. enc(lose))
    if org then add_org(keep, org) end
  else
    local orgs = redis.call('SMEMBERS', B .. 'co:' .. enc(lose))
    table.sort(orgs)
    for _, org in ipairs(orgs) do add_org(keep, org) end
    redis.call('DEL', B .. 'co:' .. enc(lose))
  end
  if named(lose) then
    redis.call('SREM', B .. 'cn', lose)
    redis.call('HSET', B .. 'cl', lose, keep)
  end
  move_budget(lose, keep, now, registry_life)
  keep_sets(keep, pin)
  absorbed[#absorbed + 1] = lose
end

-- Which of two clusters survives a merge: a named one, then the larger, then the smaller id.
local function outranks(a, b)
  local na, nb = named(a) and 1 or 0, named(b) and 1 or 0
  if na ~= nb then return na > nb end
  local sa, sb = size(a), size(b)
  if sa ~= sb then return sa > sb end
  return a < b
end

-- Merge the clusters `a` and `b`; returns the survivor. Two clusters of one make a new
-- cluster with a generated id that never changes afterwards.
local function join(a, b, now, registry_life, absorbed)
  if a == b then return a end
  if not named(a) and not named(b) and size(a) == 0 and size(b) == 0 then
    local id = 'linked-' .. redis.call('INCR', B .. 'cq')
    adopt(id, a, now, registry_life, absorbed)
    adopt(id, b, now, registry_life, absorbed)
    return id
  end
  if outranks(b, a) then a, b = b, a end
  adopt(a, b, now, registry_life, absorbed)
  return a
end
