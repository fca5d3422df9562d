"""MongoDB, one repository per collection or concern: `client` (connections and every index),
`seq_blocks`, `messages` (100-slot documents), `conversations`, `seq_users`, `groups`, `users`, `bulk`
(upserts that race other writers)."""
