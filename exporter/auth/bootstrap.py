"""First start: an `admin` account with a random password, shown once."""

from __future__ import annotations

import logging
import os
import secrets
import sys

import asyncpg

from exporter.auth.passwords import hash_password
from exporter.config import Settings
from exporter.datadir import ensure_private
from exporter.storage import users

log = logging.getLogger(__name__)

ADMIN = "admin"
PASSWORD_FILE = "initial-admin-password"


async def create_initial_admin(pool: asyncpg.Pool, settings: Settings) -> str | None:
    """Create `admin` when there is no user at all; returns the password, or None.

    The password is written to `<data dir>/initial-admin-password` (mode 0600) and shown
    on the terminal, never logged: log files are not the place for credentials.
    """
    password = secrets.token_urlsafe(18)
    if await users.create_first(pool, ADMIN, await hash_password(password)) is None:
        return None
    path = settings.data_dir / PASSWORD_FILE
    ensure_private(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(password + "\n")
    log.warning("no users existed: created %r; its password is in %s", ADMIN, path)
    if sys.stderr.isatty():
        bar = "*" * 64
        print(
            f"\n{bar}\n  perfpulse created the user '{ADMIN}' with password:\n\n"
            f"      {password}\n\n  (also in {path}; change it with\n"
            f"   `perfpulse users set-password {ADMIN}`)\n{bar}\n",
            file=sys.stderr,
        )
    return password
