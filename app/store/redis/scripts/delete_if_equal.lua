-- Delete KEYS[1] only while it still holds ARGV[1]. Returns how many keys were deleted.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
