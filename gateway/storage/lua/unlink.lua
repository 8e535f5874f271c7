-- unlink.lua: make an account a cluster of one (after time.lua and clusters.lua).
-- KEYS[1] B..'cn' (routing only). ARGV[1] B; ARGV[2] the account.
-- Its spend stays with the cluster it leaves; it starts afresh on its own. It is put on
-- the manually unlinked list, so shared signals do not link it back (an explicit link does).
-- The cluster keeps its organizations, as it keeps the spend, until its last account goes.
-- Returns the cluster id it left, or '' when it was on its own.
B = ARGV[1]
local account = ARGV[2]
local key = B .. 'ca:' .. enc(account)
local id = redis.call('GET', key)
redis.call('SADD', B .. 'cu', account)
if not id then return '' end
redis.call('SREM', B .. 'cm:' .. enc(id), account)
if size(id) == 0 then redis.call('DEL', B .. 'co:' .. enc(id)) end
redis.call('DEL', key)
return id
