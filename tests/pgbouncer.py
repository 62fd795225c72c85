"""A real PgBouncer (Debian's 1.18) in transaction mode in front of a test database."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from tests.servers import free_port

# PgBouncer refuses to run as root: it drops to this user, or to the owner of the
# server's socket directory (the embedded PostgreSQL's is its data directory, open only to
# the user it runs as).
RUN_AS = "nobody"


def binary() -> str:
    found = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if found is None:
        raise RuntimeError("pgbouncer is not installed: make test-deps installs it")
    return found


@contextmanager
def pgbouncer(
    database_url: str, *, pool_size: int = 4, max_clients: int = 200, relay_pool: int = 0
) -> Iterator[str]:
    """Start PgBouncer for `database_url`'s server; yields the same database's URL through
    it. `pool_size` server connections serve every client (transaction pooling). With
    `relay_pool`, a second entry for the same database (`relay_url`) has that many server
    connections of its own, for the live relay (docs/fleet.md)."""
    url = urlsplit(database_url)
    query = parse_qs(url.query)
    host = query.get("host", [url.hostname or "127.0.0.1"])[0]
    port = url.port or 5432
    user = unquote(url.username or "postgres")
    database = unquote(url.path.lstrip("/"))
    listen = free_port()
    directory = Path(tempfile.mkdtemp(prefix="perfpulse-pgbouncer-"))
    directory.chmod(0o755)
    (directory / "users.txt").write_text(f'"{user}" ""\n')
    relay_entry = (
        f"{database}{RELAY_SUFFIX} = host={host} port={port} dbname={database} "
        f"pool_size={relay_pool}\n"
        if relay_pool
        else ""
    )
    (directory / "pgbouncer.ini").write_text(
        f"""[databases]
{database} = host={host} port={port} dbname={database}
{relay_entry}[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = trust
auth_file = {directory / "users.txt"}
admin_users = {user}
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = {max_clients}
logfile = {directory / "pgbouncer.log"}
"""
    )
    run_as = Path(host).owner() if host.startswith("/") else RUN_AS
    if host.startswith("/"):
        # The embedded server's data directory (this test run's own) lets only the
        # server's processes through (exporter/datadir.py); PgBouncer runs as that user
        # but in its own group, so the test opens the directory to be passed through.
        parent = Path(host).parent
        parent.chmod(parent.stat().st_mode | 0o001)
    shutil.chown(directory, run_as)
    process = subprocess.Popen(
        [binary(), "-u", run_as, str(directory / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {_log(directory)}")
            try:
                socket.create_connection(("127.0.0.1", listen), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer did not listen: {_log(directory)}") from None
                time.sleep(0.05)
        yield f"postgresql://{user}@127.0.0.1:{listen}/{database}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


RELAY_SUFFIX = "_relay"


def relay_url(pooled: str) -> str:
    """The relay's entry of a `pgbouncer(..., relay_pool=N)`: the same database, its own
    server connections."""
    url = urlsplit(pooled)
    return url._replace(path=url.path + RELAY_SUFFIX).geturl()


def show(pooled: str, what: str) -> list[dict[str, str]]:
    """`SHOW <what>` on the console of the PgBouncer serving `pooled` (simple queries
    only: psql), one dict per row."""
    url = urlsplit(pooled)
    out = subprocess.run(
        [
            "psql",
            "-X",
            "-A",
            "-F",
            "\t",
            "-P",
            "footer=off",
            "-h",
            url.hostname or "127.0.0.1",
            "-p",
            str(url.port),
            "-U",
            unquote(url.username or "postgres"),
            "-d",
            "pgbouncer",
            "-c",
            f"SHOW {what}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout.splitlines()
    header = out[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in out[1:]]


def _log(directory: Path) -> str:
    path = directory / "pgbouncer.log"
    return path.read_text()[-2000:] if path.exists() else "(no log)"
