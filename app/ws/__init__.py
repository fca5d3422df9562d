"""The websocket edge the gateway (app/gateway.py) is built from: sockets and their limits,
connections and the node's hub, the per-shard batcher, acceptance (one answer per clientMsgID) and the
publish to the transfer queues."""
