"""Clients: the websocket client library (client.py) and the terminal chat (`python -m app chat`)."""
