"""What the websocket gateway and the REST API share: tokens and their revocation, history and read
state, groups, sender profiles."""
