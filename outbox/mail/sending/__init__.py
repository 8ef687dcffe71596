"""Build, sign and deliver one message: the `email.send` tool and the mail library under it."""
