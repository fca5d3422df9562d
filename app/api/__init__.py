"""OpenIM's REST API on the gateway's port: one envelope and its argument parsers (envelope.py), the
web app factory and probes (app.py), and the admin, openim, groups and third blueprints."""
