"""Pure domain, no I/O: conversation ids and shards, classification, the protocol codecs, push frames,
session rules, OpenIM's constants and error codes, validation of what clients send, the pipeline's
per-message checks. Imports nothing above it."""
