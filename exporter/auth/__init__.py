"""Accounts: passwords (argon2id), access tokens (JWT), login throttling, the first admin."""
