"""Leased jobs: the one way anything in the outbox is claimed, retried and dead-lettered.

Actions (`outbox/execution/`) and outbound deliveries (`outbox/deliveries/`) are both rows that
workers claim with a lease, attempt, and either finish, retry after a backoff, or give up on with a
reason. `repository.py` holds the conditional UPDATE statements that make this safe when many
workers race; `backoff.py` holds the retry policy (full jitter).
"""
