-- Keep a block reserved in MongoDB ahead of need beside the cached one, for malloc_seq.lua to
-- continue into when the cached block runs out (no MongoDB round trip on the transfer's path).
-- KEYS[1] malloc key; ARGV: the block's start (seqs start+1 ..), its last seq, now ms, extra.
-- 1 stored; 0 not: no cached block to follow (or one cached before a failover: see malloc_seq.lua),
-- a block ahead is there already, or this one starts below the cached block's end (reserved before
-- the block cached since: it is never served, P4).
local key = KEYS[1]
local info = redis.pcall('INFO', 'replication')
local rid = type(info) == 'string' and string.match(info, 'master_replid:(%w+)') or ''
local fields = redis.call('HMGET', key, 'CURR', 'LAST', 'RID', 'NEXT_CURR')
local last = tonumber(fields[2])
if tonumber(fields[1]) == nil or last == nil or fields[3] ~= rid or fields[4] then
  return 0
end
if tonumber(ARGV[1]) < last then
  return 0
end
redis.call('HSET', key, 'NEXT_CURR', ARGV[1], 'NEXT_LAST', ARGV[2], 'NEXT_BORN', ARGV[3], 'NEXT_EXTRA', ARGV[4])
return 1
