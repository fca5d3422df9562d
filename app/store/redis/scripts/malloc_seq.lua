-- Hand out seqs from a conversation's cached block, or the one reserved ahead of it (app/seq_lua.py
-- has the outcomes).
-- KEYS[1] malloc key; ARGV: size, lock seconds, data seconds, now ms, lock owner.
-- Probing (KEYS[2] a hash of the ids that have their seqs already, KEYS[3] a key that must exist
-- before anything is allocated, ARGV[6..] ids): the size is the number of distinct ids the hash
-- lacks, and the answer is {outcome, KEYS[3] exists, the hash's values of the ids}; outcome 4 when
-- nothing was allocated (every id has its seq, or KEYS[3] is missing: the caller prepares first).
local key = KEYS[1]
local lock_seconds = tonumber(ARGV[2])
local data_seconds = tonumber(ARGV[3])
local now_ms = ARGV[4]
local owner = ARGV[5]

local function malloc(size)
  local function start_over()
    redis.call('DEL', key)
    redis.call('HSET', key, 'LOCK', owner)
    redis.call('EXPIRE', key, lock_seconds)
    return {1}
  end
  -- one read of the fields every outcome needs (a missing key reads as all nil: start over)
  local fields = redis.call('HMGET', key, 'LOCK', 'CURR', 'LAST', 'RID', 'NEXT_CURR', 'NEXT_LAST')
  if fields[1] then
    return {2}
  end
  local curr = tonumber(fields[2])
  local last = tonumber(fields[3])
  if curr == nil or last == nil then
    -- no block, or a half-written hash: start over from MongoDB
    return start_over()
  end
  -- This server's replication id (read only when there is a block to serve): a replica promoted to
  -- master takes a new one. A block cached under another id may have gone back (replication is
  -- asynchronous: the old master can have handed out seqs its replica never saw), so it is no block
  -- at all and MongoDB's next one is taken instead.
  local info = redis.pcall('INFO', 'replication')
  local rid = type(info) == 'string' and string.match(info, 'master_replid:(%w+)') or ''
  if fields[4] ~= rid then
    return start_over()  -- cached before a failover
  end
  local next_curr = tonumber(fields[5])
  local next_last = tonumber(fields[6])
  if curr + size > last and next_curr ~= nil and next_last ~= nil and next_curr >= last then
    -- The block reserved ahead (store_next_seq_block.lua): continue into it where it follows the
    -- cached one, else start at its beginning (the cached rest is skipped, never handed out).
    local start = curr
    if next_curr > last then start = next_curr end
    if start + size <= next_last then
      local ahead = redis.call('HMGET', key, 'NEXT_BORN', 'NEXT_EXTRA')
      redis.call('HDEL', key, 'NEXT_CURR', 'NEXT_LAST', 'NEXT_BORN', 'NEXT_EXTRA')
      redis.call('HSET', key, 'CURR', start + size, 'LAST', next_last, 'TIME', now_ms,
        'BORN', ahead[1] or now_ms, 'EXTRA', ahead[2] or '0')
      redis.call('EXPIRE', key, data_seconds)
      return {0, start, next_last, 0}
    end
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
  -- the fourth field: whether a block is reserved ahead already (the caller refills when low)
  return {0, curr, last, next_curr and 1 or 0}
end

if #KEYS == 1 then
  return malloc(tonumber(ARGV[1]))
end
local known, wanted, seen = {}, 0, {}
for first = 6, #ARGV, 500 do  -- in chunks: unpack has a limit
  local last = math.min(first + 499, #ARGV)
  local values = redis.call('HMGET', KEYS[2], unpack(ARGV, first, last))
  for i = first, last do
    local value = values[i - first + 1]
    known[#known + 1] = value
    if not value and not seen[ARGV[i]] then
      seen[ARGV[i]] = true
      wanted = wanted + 1
    end
  end
end
local exists = redis.call('EXISTS', KEYS[3])
if wanted == 0 or exists == 0 then
  return {{4}, exists, known}
end
return {malloc(wanted), exists, known}
