"""Running it: embedded Redis and SecantusDB, the dev stack (`python -m app up`), logs, metrics."""
