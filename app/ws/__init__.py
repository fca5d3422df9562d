"""The websocket edge the gateway (app/gateway.py) is built from: sockets and their limits,
connections and the node's hub, the batcher (every shard's batch per flush), acceptance (one answer
per clientMsgID) and the publish to the transfer queues."""
