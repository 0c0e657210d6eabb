"""Northflank on localhost: the emulator (HTTP + WebSocket API, state, local containers)."""
