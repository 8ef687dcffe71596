"""The web console at /console (issue 14): server-rendered pages for approvers and operators.

An edge like the API and the Slack app: thin handlers that call the same services (approvals,
actions, mail, audit, policy). Templates and static assets ship inside the package, so the
console works offline under a strict Content-Security-Policy (`security.py`).
"""
