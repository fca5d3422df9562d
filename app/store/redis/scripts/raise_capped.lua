-- Raise a read seq, never lower it and never past the visible max.
-- KEYS[1] = read seq key, KEYS[2] = visible max key, ARGV[1] = wanted. Returns the read seq now held.
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(redis.call('GET', KEYS[2]) or '0')
local wanted = math.min(tonumber(ARGV[1]), limit)
if wanted > current then
  redis.call('SET', KEYS[1], wanted)
  return wanted
end
return current
