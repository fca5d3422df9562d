"""Plumbing of the Celery stages: the hand-off journal, dead letters, backoff through outages, the
transfer shard lease, the offline push providers."""
