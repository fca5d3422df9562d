"""Redis, one module per concern: `client` (the connections), `keys` (every key name and TTL),
`scripts` (the Lua files), `msg_cache`, `online`, `tokens`, `client_acks`, `group_members`,
`push_tokens`. The transfer journal lives with the rest of the hand-offs in app/pipeline/journal.py."""
