-- override_put.lua: set or delete one live override, and tell every replica.
-- KEYS[1] the overrides HASH (field: override name, value: JSON document with expires_at,
-- epoch seconds or null); KEYS[2] the version counter (an integer).
-- ARGV[1] the override's field; ARGV[2] its JSON document, or '' to delete it;
-- ARGV[3] now, epoch seconds: overrides that expired before it are removed here;
-- ARGV[4] the channel to PUBLISH the new version on.
-- Returns {the document replaced or false, the new version}.
local old = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
local now = tonumber(ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local ok, doc = pcall(cjson.decode, all[i + 1])
  local expires = ok and type(doc) == 'table' and doc['expires_at']
  if type(expires) == 'number' and expires <= now then
    redis.call('HDEL', KEYS[1], all[i])
  end
end
local version = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[4], version)
return {old, version}
