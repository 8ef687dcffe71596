"""How an agent appears to policy, in audit events and in approval digests: `agent:<name>`.

Agent names are unique and never reused (`agents create`), so the principal names one agent for
good. Human principals have their own parser (`outbox/identities.py`); an agent is never one.
"""

from __future__ import annotations

AGENT_PREFIX = "agent:"


def principal(name: str) -> str:
    """The principal of the agent called `name`, as rules, audit events and digests name it."""
    return AGENT_PREFIX + name


def names_an_agent(identity: str) -> bool:
    """Whether `identity` is written as an agent principal, in any case and with any padding
    (so that `AGENT:bot` offered as an approver is recognised as the agent it means)."""
    return identity.strip().casefold().startswith(AGENT_PREFIX)
