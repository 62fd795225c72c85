"""`perfpulse users ...` and `perfpulse tokens ...`: accounts, roles, host scopes and API
tokens from the command line (everything the dashboard's Users and Tokens pages do), and
the password prompt every command shares (a terminal, or --password-stdin)."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import asyncpg

from exporter.auth.access import (
    AccessError,
    check_role,
    check_token_name,
    new_token,
    parse_expiry,
    parse_hosts,
    token_digest,
)
from exporter.auth.passwords import hash_password
from exporter.config import CommandError, Settings
from exporter.logs import audit
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


def _access(call: Callable[[], T]) -> T:
    try:
        return call()
    except AccessError as exc:
        raise CommandError(str(exc)) from None


def users_create(settings: Settings, args: argparse.Namespace) -> int:
    _validate_username(args.username)
    role = _access(lambda: check_role(args.role))
    hosts = _access(lambda: parse_hosts(args.hosts))
    password = _read_password(args)

    async def create(pool: asyncpg.Pool) -> users.User | None:
        return await users.create(
            pool, args.username, await hash_password(password), role=role, hosts=hosts
        )

    if with_database(settings, create) is None:
        raise CommandError(f"user {args.username!r} already exists")
    audit("user_created", user=args.username, role=role, hosts=",".join(hosts), by="cli")
    print(f"created user {args.username!r} ({role}, hosts {','.join(hosts)})")
    return 0


def users_list(settings: Settings, args: argparse.Namespace) -> int:
    print("USER\tROLE\tHOSTS\tCREATED")
    for user in with_database(settings, users.list_all):
        print(
            f"{user.username}\t{user.role}\t{','.join(user.hosts)}\t"
            f"{user.created_at:%Y-%m-%d %H:%M:%S%z}"
        )
    return 0


def users_delete(settings: Settings, args: argparse.Namespace) -> int:
    async def delete(pool: asyncpg.Pool) -> bool:
        async with pool.acquire() as conn, conn.transaction():
            user = await users.get(conn, args.username)
            if user is None:
                raise CommandError(f"no user {args.username!r}")
            if await users.is_last_admin(conn, user):
                raise CommandError("the last admin cannot be deleted")
            return await users.delete(conn, args.username)

    with_database(settings, delete)
    audit("user_deleted", user=args.username, by="cli")
    print(f"deleted user {args.username!r} (and its tokens)")
    _forget_initial_password(settings, args.username)
    return 0


def users_set_access(settings: Settings, args: argparse.Namespace) -> int:
    """`users set-role NAME ROLE` and `users set-hosts NAME PATTERNS`."""
    role = _access(lambda: check_role(args.role)) if getattr(args, "role", None) else None
    hosts = _access(lambda: parse_hosts(args.hosts)) if getattr(args, "hosts", None) else None

    async def change(pool: asyncpg.Pool) -> users.User | None:
        async with pool.acquire() as conn, conn.transaction():
            user = await users.get(conn, args.username)
            if user is None:
                raise CommandError(f"no user {args.username!r}")
            if role is not None and await users.is_last_admin(conn, user, role):
                raise CommandError("the last admin cannot become a viewer")
            return await users.set_access(conn, args.username, role=role, hosts=hosts)

    user = with_database(settings, change)
    assert user is not None
    audit(
        "user_changed",
        user=user.username,
        changed="role" if role else "hosts",
        role=user.role,
        hosts=",".join(user.hosts),
        by="cli",
    )
    print(
        f"{user.username}: {user.role}, hosts {','.join(user.hosts)} "
        "(its open streams close within PERFPULSE_SESSION_RECHECK_SECONDS)"
    )
    return 0


def tokens_create(settings: Settings, args: argparse.Namespace) -> int:
    name = _access(lambda: check_token_name(args.name))
    lifetime = _access(lambda: parse_expiry(args.expires))
    token = new_token()

    async def create(pool: asyncpg.Pool) -> users.ApiToken | None:
        expires_at = datetime.now(UTC) + lifetime if lifetime is not None else None
        made = await users.create_api_token(pool, name, args.user, token_digest(token), expires_at)
        if made is None and await users.get(pool, args.user) is None:
            raise CommandError(f"no user {args.user!r}")
        return made

    made = with_database(settings, create)
    if made is None:
        raise CommandError(f"a token named {name!r} exists")
    audit("token_created", token=name, user=args.user, expires=args.expires, by="cli")
    expiry = f"expires {made.expires_at:%Y-%m-%d %H:%M:%S%z}" if made.expires_at else "no expiry"
    print(
        f"created token {name!r} for {args.user!r} ({expiry}); it is shown this once:",
        file=sys.stderr,
    )
    print(token)
    return 0


def tokens_list(settings: Settings, args: argparse.Namespace) -> int:
    print("NAME\tUSER\tCREATED\tEXPIRES\tLAST USED")

    def when(moment: datetime | None, otherwise: str) -> str:
        return f"{moment:%Y-%m-%d %H:%M:%S%z}" if moment else otherwise

    for token in with_database(settings, users.api_tokens):
        print(
            f"{token.name}\t{token.username}\t{when(token.created_at, '-')}\t"
            f"{when(token.expires_at, 'never')}\t{when(token.last_used_at, 'never')}"
        )
    return 0


def tokens_revoke(settings: Settings, args: argparse.Namespace) -> int:
    gone = with_database(settings, lambda pool: users.revoke_api_token(pool, args.name))
    if gone is None:
        raise CommandError(f"no token {args.name!r}")
    audit("token_revoked", token=args.name, user=gone.username, by="cli")
    print(
        f"revoked token {args.name!r} of {gone.username!r}: refused from now on; streams "
        "opened with it close within PERFPULSE_SESSION_RECHECK_SECONDS"
    )
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
