-- Count messages notified to a user in one conversation and return the user's whole badge.
-- KEYS[1] = the user's badge hash, ARGV[1] = conversation, ARGV[2] = how many, ARGV[3] = TTL seconds.
redis.call('HINCRBY', KEYS[1], ARGV[1], tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
local total = 0
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  total = total + tonumber(v)
end
return total
