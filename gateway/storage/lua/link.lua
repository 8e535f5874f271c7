-- link.lua: link accounts into one cluster (after time.lua and clusters.lua).
-- KEYS[1] B..'cn' (only so a cluster client routes the call to the tag's node).
-- ARGV[1] B, the key base; ARGV[2] now, epoch seconds, or '' for Redis TIME; ARGV[3] how
-- long a budget registry lives, seconds; ARGV[4] how many organizations a cluster keeps;
-- ARGV[5] retention, seconds (of what merges bring in); ARGV[6] a cluster id or link name;
-- ARGV[7..] accounts.
-- A name nobody holds yet becomes a named cluster. An explicit link overrules an unlink,
-- and is pinned: the cluster's sets and these accounts' entries get no TTL.
-- Returns {cluster id, its organizations, its accounts, absorbed cluster ids...}.
B, OCAP, LIFE = ARGV[1], tonumber(ARGV[4]), math.ceil(tonumber(ARGV[5]) * 1000)
local now, life = clock(ARGV[2]), math.ceil(tonumber(ARGV[3]) * 1000)
local id = canonical(ARGV[6])
if not named(id) and size(id) == 0 then redis.call('SADD', B .. 'cn', id) end
local absorbed = {}
for i = 7, #ARGV do
  redis.call('SREM', B .. 'cu', ARGV[i])
  id = join(id, cluster_of(ARGV[i]), now, life, absorbed)
end
keep_sets(id, true)
for i = 7, #ARGV do redis.call('PERSIST', B .. 'ca:' .. enc(ARGV[i])) end
return {id, organizations(id), math.max(1, size(id)), unpack(absorbed)}
