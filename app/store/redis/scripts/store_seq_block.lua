-- Cache a block fetched from MongoDB, under this server's replication id (see malloc_seq.lua).
-- KEYS[1] malloc key; ARGV: owner, data seconds, curr, last, now ms, extra (seqs reserved beyond
-- the request: the next block's size follows it, see next_block_extra).
-- 0 stored under our lock; 1 stored without our lock (it had expired) because ours is the newer
-- block; 2 not stored: the cache already holds a newer block. The cached CURR only ever moves up,
-- so an allocator whose lock expired mid-fetch can never make the cache hand out lower seqs (P4).
local key = KEYS[1]
local curr = tonumber(ARGV[3])
local info = redis.pcall('INFO', 'replication')
local rid = type(info) == 'string' and string.match(info, 'master_replid:(%w+)') or ''
local fields = {'CURR', ARGV[3], 'LAST', ARGV[4], 'TIME', ARGV[5], 'BORN', ARGV[5], 'EXTRA', ARGV[6], 'RID', rid}
-- a block reserved ahead is dropped: it may lie below this newer one, and must never be served then (P4)
local ahead = {'NEXT_CURR', 'NEXT_LAST', 'NEXT_BORN', 'NEXT_EXTRA'}
if redis.call('HGET', key, 'LOCK') == ARGV[1] then
  redis.call('HDEL', key, 'LOCK', unpack(ahead))
  redis.call('HSET', key, unpack(fields))
  redis.call('EXPIRE', key, tonumber(ARGV[2]))
  return 0
end
local cached = tonumber(redis.call('HGET', key, 'CURR'))
if cached ~= nil and cached >= curr and redis.call('HGET', key, 'RID') == rid then
  return 2
end
redis.call('HDEL', key, unpack(ahead))
redis.call('HSET', key, unpack(fields))
if redis.call('HEXISTS', key, 'LOCK') == 0 then
  redis.call('EXPIRE', key, tonumber(ARGV[2]))
end
return 1
