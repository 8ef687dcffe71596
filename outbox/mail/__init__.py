"""Email from agents: isolated sending subdomains, DKIM, DNS checks, delivery and feedback.

This package is the library layer: it knows mail (MIME, DKIM, SMTP, DNS, DSNs) but nothing about
the database. Budgets, suppression, breakers and kill switches reach it through `MailGate`
(`outbox.mail.gate`), which the pipeline implements on its ledger.
"""
