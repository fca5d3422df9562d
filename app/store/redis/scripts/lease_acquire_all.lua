-- Take every lease or none. KEYS: lease keys; ARGV[1] owner, ARGV[2] ttl seconds.
-- Returns "" when all are ours now, else a holder.
for _, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder and holder ~= ARGV[1] then
    return holder
  end
end
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1], 'EX', tonumber(ARGV[2]))
end
return ''
