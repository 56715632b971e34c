"""RTMX CRDT sync server (y-websocket protocol), clustered through Redis and PostgreSQL."""

__version__ = "0.1.0"
