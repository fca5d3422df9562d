-- One conversation's commit, atomically (P5: the max seq never becomes visible before its messages).
-- KEYS: visible max, clientMsgID hash, conversation-ready marker, n message cache keys, m read-seq keys
-- ARGV: n, cache ttl, record ttl, new max seq, n message JSONs, n clientMsgIDs, n seqs, m read seqs
-- Returns n, or -1 (COMMIT_REFUSED) without writing anything when one of the clientMsgIDs got a seq
-- since the caller probed (another worker committed the same batch meanwhile): P2 holds even then.
local n = tonumber(ARGV[1])
local function raise(key, value)
  local current = tonumber(redis.call('GET', key) or '0')
  if tonumber(value) > current then redis.call('SET', key, value) end
end
-- the clientMsgIDs are ARGV[5 + n .. 4 + 2n], their seqs ARGV[5 + 2n .. 4 + 3n]; in chunks: unpack has a limit
for first = 1, n, 500 do
  local last = math.min(first + 499, n)
  local seen = redis.call('HMGET', KEYS[2], unpack(ARGV, 4 + n + first, 4 + n + last))
  for i = 1, #seen do
    if seen[i] then return -1 end
  end
end
for i = 1, n do
  redis.call('SET', KEYS[3 + i], ARGV[4 + i], 'EX', ARGV[2])
end
for first = 1, n, 250 do
  local records = {}
  for i = first, math.min(first + 249, n) do
    records[#records + 1] = ARGV[4 + n + i]
    records[#records + 1] = ARGV[4 + 2 * n + i]
  end
  redis.call('HSET', KEYS[2], unpack(records))
end
redis.call('EXPIRE', KEYS[2], ARGV[3])
raise(KEYS[1], ARGV[4])
for j = 1, #KEYS - 3 - n do
  raise(KEYS[3 + n + j], ARGV[4 + 3 * n + j])
end
redis.call('SET', KEYS[3], 1, 'EX', ARGV[3])
return n
