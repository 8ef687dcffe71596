"""The replay twin (`outbox replay serve`, docs/replay-twin.md): a new model's tool calls answered
from an `outbox audit export` instead of the real world, and the report of such a session.

Nothing here executes, mails or sends: the twin builds no tools that act, opens no database and
starts no workers. It serves the agent faces (HTTP and MCP) the way the live service does, so it
is an edge, and it reuses the live service's answer rule (`outbox.actions.service.answer_for`)
and MCP result shaping (`outbox.mcp.results`).
"""
