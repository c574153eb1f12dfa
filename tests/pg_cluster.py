"""A throwaway PostgreSQL cluster for the run-server tests: a real server, never a mock.

``initdb`` in a temporary folder, a free TCP port on 127.0.0.1, the unix socket in that folder,
``trust`` authentication for local connections, stopped and deleted at the end. PostgreSQL
refuses to run as root, so as root the cluster runs as the ``postgres`` system user (the
Debian package creates it) through ``runuser``.

Also a command: ``python tests/pg_cluster.py`` starts one and prints its DSN until Ctrl-C.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class NoPostgres(RuntimeError):
    """No PostgreSQL binaries here, or the cluster could not start; says why."""


def postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<ver>/bin`` (Debian), else the folder of ``initdb``."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_user() -> list[str]:
    """``runuser -u postgres --`` when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser") is None:
        raise NoPostgres("running as root and runuser is missing: cannot start PostgreSQL")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        raise NoPostgres("running as root and no 'postgres' user exists") from None
    return ["runuser", "-u", "postgres", "--"]


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        program = next((Path(c).name for c in cmd if "/bin/" in c), cmd[0])
        raise NoPostgres(f"{program} failed: {' / '.join(tail)}")


@contextmanager
def cluster() -> Iterator[str]:
    """Start a cluster; yield its DSN (database ``postgres``, user ``postgres``); stop it."""
    bindir = postgres_bin()
    if bindir is None:
        raise NoPostgres("no PostgreSQL binaries (apt-get install postgresql)")
    prefix = _as_user()
    root = Path(tempfile.mkdtemp(prefix="edgewatch-pg-"))
    data = root / "data"
    try:
        if prefix:
            shutil.chown(root, "postgres", "postgres")
        root.chmod(0o700)
        initdb = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
        _run([*prefix, *initdb, "--no-sync", "-E", "UTF8", "--locale=C"])
        port = _free_port()
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50 "
            "-c shared_buffers=64MB"
        )
        ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w"]
        _run([*prefix, *ctl, "-o", options, "start"])
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*prefix, *ctl, "-m", "immediate", "stop"], capture_output=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    with cluster() as dsn:
        print(f"EDGEWATCH_PG_DSN={dsn}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
