-- Journal a hand-off and push its task message onto its queue: one round trip, and no entry
-- without its message nor message without its entry (app/pipeline/journal.py).
-- KEYS[1] journal stream, KEYS[2] the queue's list (kombu's Redis transport)
-- ARGV: entry payload, stream cap, then kombu's message envelope cut where the entry id goes (the
-- pieces are joined with it: a pattern search over the envelope cost Redis twice as much).
-- Refused before anything is written: a script is not rolled back when a later command fails.
local kind = redis.call('TYPE', KEYS[2]).ok
if kind ~= 'list' and kind ~= 'none' then
  return redis.error_reply('WRONGTYPE the queue ' .. KEYS[2] .. ' is not a list')
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'msgs', ARGV[1])
redis.call('LPUSH', KEYS[2], table.concat(ARGV, id, 3))
return id
