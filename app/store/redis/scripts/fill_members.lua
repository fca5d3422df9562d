-- Rebuild a group's member set unless one exists. KEYS[1] = members set; ARGV = member ids, the
-- first being a sentinel so an empty group still exists. Returns 1 when filled, 0 when left alone.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SADD', KEYS[1], unpack(ARGV))
return 1
