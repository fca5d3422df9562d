-- Hand out seqs from a conversation's cached block (app/seq_lua.py has the four outcomes).
-- KEYS[1] malloc key; ARGV: size, lock seconds, data seconds, now ms, lock owner
local key = KEYS[1]
local size = tonumber(ARGV[1])
local lock_seconds = tonumber(ARGV[2])
local data_seconds = tonumber(ARGV[3])
local now_ms = ARGV[4]
local owner = ARGV[5]
if redis.call('EXISTS', key) == 0 then
  redis.call('HSET', key, 'LOCK', owner)
  redis.call('EXPIRE', key, lock_seconds)
  return {1}
end
if redis.call('HEXISTS', key, 'LOCK') == 1 then
  return {2}
end
local curr = tonumber(redis.call('HGET', key, 'CURR'))
local last = tonumber(redis.call('HGET', key, 'LAST'))
if curr == nil or last == nil then
  -- a half-written hash is no block at all: start over from MongoDB
  redis.call('DEL', key)
  redis.call('HSET', key, 'LOCK', owner)
  redis.call('EXPIRE', key, lock_seconds)
  return {1}
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
