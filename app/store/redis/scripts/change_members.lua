-- KEYS[1] = members set; ARGV[1] = how many adds follow, then the added ids, then the removed ids.
-- A missing set stays missing: the next reader rebuilds it from MongoDB, which changed first.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local adds = tonumber(ARGV[1])
for i = 2, adds + 1 do redis.call('SADD', KEYS[1], ARGV[i]) end
for i = adds + 2, #ARGV do redis.call('SREM', KEYS[1], ARGV[i]) end
return 1
