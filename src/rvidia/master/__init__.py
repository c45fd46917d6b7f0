"""The master: REST API, worker WebSocket endpoint, storage and the event stream."""
