"""Local fake vendor servers (websocket and REST) for tests and demos; loopback only."""
