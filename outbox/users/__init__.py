"""The people who sign in to the console: users, their sessions, sign-in attempts (issue 14)."""
