"""The Slack app: approval messages with buttons, the interactions endpoint, durable API calls."""
