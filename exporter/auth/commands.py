"""`perfpulse users ...`: accounts from the command line, and the password prompt every
command shares (a terminal, or --password-stdin)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TypeVar

import asyncpg

from exporter.auth.passwords import hash_password
from exporter.config import CommandError, Settings
from exporter.storage import users
from exporter.storage.database import with_database

T = TypeVar("T")


def prompt(text: str) -> str:
    """A password typed at the terminal; a clear error where there is no terminal."""
    if not sys.stdin.isatty():
        raise CommandError(
            "no terminal to ask for the password on; pipe it in with --password-stdin"
        )
    try:
        return getpass.getpass(text)
    except EOFError:
        raise CommandError("no password given") from None


def _read_password(args: argparse.Namespace, question: str = "Password: ") -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = prompt(question)
        if prompt("Repeat: ") != password:
            raise CommandError("the passwords differ")
    if not 8 <= len(password) <= 1024:
        raise CommandError("a password must be 8 to 1024 characters")
    return password


def _validate_username(username: str) -> None:
    if not 1 <= len(username) <= 64 or not username.isprintable() or username.strip() != username:
        raise CommandError("a user name is 1 to 64 printable characters, no surrounding spaces")


def users_create(settings: Settings, args: argparse.Namespace) -> int:
    _validate_username(args.username)
    password = _read_password(args)

    async def create(pool: asyncpg.Pool) -> users.User | None:
        return await users.create(pool, args.username, await hash_password(password))

    if with_database(settings, create) is None:
        raise CommandError(f"user {args.username!r} already exists")
    print(f"created user {args.username!r}")
    return 0


def users_list(settings: Settings, args: argparse.Namespace) -> int:
    for user in with_database(settings, users.list_all):
        print(f"{user.username}\tcreated {user.created_at:%Y-%m-%d %H:%M:%S%z}")
    return 0


def users_delete(settings: Settings, args: argparse.Namespace) -> int:
    if not with_database(settings, lambda pool: users.delete(pool, args.username)):
        raise CommandError(f"no user {args.username!r}")
    print(f"deleted user {args.username!r}")
    _forget_initial_password(settings, args.username)
    return 0


def users_set_password(settings: Settings, args: argparse.Namespace) -> int:
    password = _read_password(args, "New password: ")

    async def change(pool: asyncpg.Pool) -> bool:
        return await users.set_password(pool, args.username, await hash_password(password))

    if not with_database(settings, change):
        raise CommandError(f"no user {args.username!r}")
    print(f"password changed for {args.username!r}; its existing tokens no longer work")
    _forget_initial_password(settings, args.username)
    return 0


def _forget_initial_password(settings: Settings, username: str) -> None:
    """The generated first password is stale once the admin's password changes or the
    admin goes: remove the file that holds it."""
    from exporter.auth.bootstrap import ADMIN, PASSWORD_FILE

    path = settings.data_dir / PASSWORD_FILE
    if username == ADMIN and path.exists():
        path.unlink()
        print(f"removed {path}")
