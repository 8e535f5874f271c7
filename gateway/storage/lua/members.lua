-- members.lua: a cluster and its accounts, by account or by cluster id (after time.lua
-- and clusters.lua). KEYS[1] B..'cn' (routing only). ARGV[1] B; ARGV[2] 'account' or
-- 'cluster'; ARGV[3] the id. An absorbed name answers for its survivor. An account whose
-- 'ca' lapsed is on its own again, so it is left out of the set that still names it.
-- Returns {cluster id, its organizations, accounts...}: for an account on its own,
-- {account, 1, account}; for an unknown cluster id, {id, 1}.
B = ARGV[1]
local id = ARGV[3]
if ARGV[2] == 'account' then id = cluster_of(id) else id = canonical(id) end
local accounts = {}
for _, a in ipairs(redis.call('SMEMBERS', B .. 'cm:' .. enc(id))) do
  if cluster_of(a) == id then accounts[#accounts + 1] = a end
end
if #accounts == 0 and ARGV[2] == 'account' then accounts = {id} end
table.sort(accounts)
local out = {id, organizations(id)}
for _, a in ipairs(accounts) do out[#out + 1] = a end
return out
