-- Journal hand-offs and publish their task messages, in one round trip and atomically: no consumer
-- pops a message before its entry exists.
-- KEYS: per hand-off, its journal stream and its queue (a kombu Redis list).
-- ARGV[1]: the streams' approximate cap; then per hand-off: its journal payload, the number of
-- pieces of its task message, and the pieces. A task message names its own journal entry, whose id
-- is known only here: the caller split the message where the id goes, and the pieces are joined
-- with it. Returns the entry ids, in the order of the hand-offs.
local at = 2
local ids = {}
for i = 1, #KEYS, 2 do
  local id = redis.call('XADD', KEYS[i], 'MAXLEN', '~', ARGV[1], '*', 'msgs', ARGV[at])
  local count = tonumber(ARGV[at + 1])
  local pieces = {}
  for p = 1, count do
    pieces[p] = ARGV[at + 1 + p]
  end
  redis.call('LPUSH', KEYS[i + 1], table.concat(pieces, id))
  ids[#ids + 1] = id
  at = at + 2 + count
end
return ids
