"""The MCP face: the agent contract over the Model Context Protocol, at /mcp (docs/mcp.md).

An edge, like the HTTP API: `server.py` wires the official SDK, `auth.py` authenticates agents,
`calls.py` turns tools/call into a submission through `outbox.actions.service`, `keys.py`
derives idempotency keys for calls that bring none, `results.py` renders answers, `tasks.py`
serves calls that wait for a human as tasks.
"""
