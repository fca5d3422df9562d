"""Storage behind small repositories: app/store/redis (cache, seq and online state, tokens) and
app/store/mongo (durable messages, seqs, conversations, groups, users). Imports only app/core and app/config."""
