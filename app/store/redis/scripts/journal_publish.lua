-- Journal a hand-off and push its task message onto its queue: one round trip, and no entry
-- without its message nor message without its entry (app/pipeline/journal.py).
-- KEYS[1] journal stream, KEYS[2] the queue's list (kombu's Redis transport)
-- ARGV: entry payload, kombu's message envelope, the placeholder standing for the entry id in it
-- (letters, digits and underscores: no Lua pattern character, never in a base64 body), stream cap
-- refused before anything is written: a script is not rolled back when a later command fails
local kind = redis.call('TYPE', KEYS[2]).ok
if kind ~= 'list' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE the queue ' .. KEYS[2] .. ' is not a list')
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[4], '*', 'msgs', ARGV[1])
local envelope = string.gsub(ARGV[2], ARGV[3], id)
redis.call('LPUSH', KEYS[2], envelope)
return id
