-- Raise an integer, never lower it. KEYS[1] = key, ARGV[1] = value. Returns the value now held.
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[1])
if wanted > current then
  redis.call('SET', KEYS[1], wanted)
  return wanted
end
return current
