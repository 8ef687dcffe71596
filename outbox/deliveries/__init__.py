"""Outbound deliveries: every call the outbox makes to tell someone what happened (Slack
messages and ephemeral replies, agent callbacks), written durably and retried until it lands.

`service.py` is the way in (enqueue, make the due deliveries); `repository.py` holds the SQL;
`models.py` the table; `results.py` what a channel is handed and answers.
Each channel renders its own calls: Slack in `outbox/slack/sync.py`, callbacks in `callbacks.py`.
Claims, leases, backoff and dead-lettering are the leased-job primitive of `outbox/jobs/`.
"""
