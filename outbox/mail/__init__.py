"""Email from agents: isolated sending subdomains, DKIM, DNS checks, delivery and feedback.

One folder per concern (docs/mail.md has the map):

- `sending/`: the `email.send` tool and the library it stands on (MIME, DKIM, SMTP, unsubscribe
  headers, send windows, the local sink). It knows mail but not the database: budgets,
  suppression, breakers and kill switches reach it through `MailGate` (`sending/gate.py`).
- `budgets/`: `DatabaseMailGate`, the gate on the database ledger, and the caps it charges.
- `feedback/`: bounces, complaints and unsubscribes coming back; the circuit breakers.
- `dns/`: SPF, DKIM and DMARC checks and the stored verdicts that block a subdomain.
- At the top: the domain's roles (`config`, `models`, `repository`, `schemas`, `service`, the
  `api` and `cli` edges) and the wiring (`environment`, `provider`, `embedded`).
"""
