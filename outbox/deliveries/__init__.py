"""Outbound deliveries: every call the outbox makes to tell someone what happened (Slack
messages and ephemeral replies, agent callbacks), written durably and retried until it lands.

`service.py` makes the due deliveries; `repository.py` holds their SQL; `models.py` the table.
Each channel renders its own calls: Slack in `outbox/slack/sync.py`, callbacks in `callbacks.py`.
Claims, leases, backoff and dead-lettering are the leased-job primitive of `outbox/jobs/`.
"""
