-- Hand out seqs from a conversation's cached block (app/seq_lua.py has the four outcomes).
-- KEYS[1] malloc key; ARGV: size, lock seconds, data seconds, now ms, lock owner
local key = KEYS[1]
local size = tonumber(ARGV[1])
local lock_seconds = tonumber(ARGV[2])
local data_seconds = tonumber(ARGV[3])
local now_ms = ARGV[4]
local owner = ARGV[5]
-- This server's replication id: a replica promoted to master takes a new one. A block cached under
-- another id may have gone back (replication is asynchronous: the old master can have handed out
-- seqs its replica never saw), so it is no block at all and MongoDB's next one is taken instead.
local info = redis.pcall('INFO', 'replication')
local rid = type(info) == 'string' and string.match(info, 'master_replid:(%w+)') or ''
local function start_over()
  redis.call('DEL', key)
  redis.call('HSET', key, 'LOCK', owner)
  redis.call('EXPIRE', key, lock_seconds)
  return {1}
end
if redis.call('EXISTS', key) == 0 then
  return start_over()
end
if redis.call('HEXISTS', key, 'LOCK') == 1 then
  return {2}
end
local curr = tonumber(redis.call('HGET', key, 'CURR'))
local last = tonumber(redis.call('HGET', key, 'LAST'))
if curr == nil or last == nil or redis.call('HGET', key, 'RID') ~= rid then
  -- a half-written hash, or one cached before a failover: start over from MongoDB
  return start_over()
end
if curr + size > last then
  local born = redis.call('HGET', key, 'BORN') or '0'
  local extra = redis.call('HGET', key, 'EXTRA') or '0'
  redis.call('HSET', key, 'LOCK', owner, 'TIME', now_ms)
  redis.call('EXPIRE', key, lock_seconds)
  return {3, curr, last, born, extra}
end
redis.call('HSET', key, 'CURR', curr + size, 'TIME', now_ms)
redis.call('EXPIRE', key, data_seconds)
return {0, curr, last}
