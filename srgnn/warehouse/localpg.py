"""A throwaway local PostgreSQL server for tests, benchmarks and trying the PostgreSQL warehouse
on one machine.

Starts a private cluster from the server binaries of Debian's ``postgresql`` package
(``/usr/lib/postgresql/<version>/bin``): ``initdb`` into a fresh temporary folder, ``pg_ctl
start`` on a free TCP port of 127.0.0.1 with the unix socket in that folder too, password
authentication over TCP. Nothing outside the temporary folder is touched, and ``stop()``
(also run at exit) removes it.

PostgreSQL refuses to run as root, so when this runs as root the server commands run as the
``postgres`` system user (``runuser``/``setpriv``) and the folder is handed to that user.

Set ``SRGNN_TEST_POSTGRES_URL`` (an admin URL of an existing server, e.g. a CI service
container) to use that server instead of starting one; set ``SRGNN_PG_BINDIR`` to choose the
binaries. Usage::

    from srgnn.warehouse.localpg import PostgresServer

    server = PostgresServer.start()          # raises PostgresUnavailable if no binaries
    url = server.create_database("t1")       # postgresql+psycopg://..., for Warehouse.connect
    server.stop()
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

__all__ = ["PostgresServer", "PostgresUnavailable", "find_bindir"]

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (tests skip with this reason)."""


def find_bindir() -> Path | None:
    """The newest PostgreSQL server ``bin`` folder, or None when no server is installed."""
    override = os.environ.get("SRGNN_PG_BINDIR")
    if override:
        return Path(override) if (Path(override) / "pg_ctl").exists() else None
    candidates = glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")

    def major(path: str) -> float:
        version = Path(path).parent.parent.name
        try:
            return float(version)
        except ValueError:
            return 0.0

    if candidates:
        return Path(max(candidates, key=major)).parent
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    """A running server (ours, or an external one named by ``SRGNN_TEST_POSTGRES_URL``)."""

    def __init__(self, admin_url: str, *, bindir: Path | None = None, base: Path | None = None,
                 run_as: list[str] | None = None):
        self.admin_url = admin_url  # libpq URL of a superuser connection to the `postgres` db
        self._bindir = bindir
        self._base = base  # temporary folder holding data, socket and log (None if external)
        self._run_as = run_as or []
        self._stopped = False

    # -- starting and stopping -------------------------------------------------------------
    @classmethod
    def start(cls, *, startup_timeout: int = 60) -> "PostgresServer":
        external = os.environ.get("SRGNN_TEST_POSTGRES_URL")
        if external:
            return cls(external.replace("postgresql+psycopg://", "postgresql://", 1))

        bindir = find_bindir()
        if bindir is None:
            where = (f"SRGNN_PG_BINDIR={os.environ['SRGNN_PG_BINDIR']} has no pg_ctl"
                     if os.environ.get("SRGNN_PG_BINDIR") else
                     "looked in /usr/lib/postgresql/*/bin and on PATH")
            raise PostgresUnavailable(
                f"PostgreSQL server binaries not found ({where}); install Debian's `postgresql` "
                "package or set SRGNN_TEST_POSTGRES_URL"
            )

        run_as: list[str] = []
        owner = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PostgresUnavailable(
                    "running as root and there is no `postgres` user to run the server as"
                ) from exc
            if shutil.which("runuser"):
                run_as = ["runuser", "-u", "postgres", "--"]
            else:
                run_as = ["setpriv", f"--reuid={owner.pw_uid}", f"--regid={owner.pw_gid}",
                          "--init-groups", "--"]

        base = Path(tempfile.mkdtemp(prefix="srgnn-pg-"))
        password = secrets.token_hex(12)
        (base / "pwfile").write_text(password + "\n")
        if owner is not None:
            for path in (base, base / "pwfile"):
                os.chown(path, owner.pw_uid, owner.pw_gid)

        server = None
        try:
            user = "srgnn_test"
            cls._run(run_as, base, [
                str(bindir / "initdb"), "-D", str(base / "data"), "-U", user,
                f"--pwfile={base / 'pwfile'}", "--auth-local=trust", "--auth-host=scram-sha-256",
                "--encoding=UTF8", "--locale=C", "--no-sync",
            ])
            # A free port can be taken between probing and binding: try a few.
            for _ in range(3):
                port = _free_port()
                options = (
                    f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
                    "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
                )
                result = cls._run(run_as, base, [
                    str(bindir / "pg_ctl"), "-D", str(base / "data"),
                    "-l", str(base / "server.log"), "-o", options,
                    "-w", "-t", str(startup_timeout), "start",
                ], check=False)
                if result.returncode == 0:
                    break
            else:
                log = (base / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"PostgreSQL did not start:\n{result.stdout}\n{log}")
            admin_url = f"postgresql://{user}:{quote(password)}@127.0.0.1:{port}/postgres"
            server = cls(admin_url, bindir=bindir, base=base, run_as=run_as)
            atexit.register(server.stop)
            return server
        finally:
            if server is None:
                cls._run(run_as, base, [str(bindir / "pg_ctl"), "-D", str(base / "data"),
                                        "-m", "immediate", "stop"], check=False)
                shutil.rmtree(base, ignore_errors=True)

    @staticmethod
    def _run(run_as: list[str], cwd: Path, args: list[str], check: bool = True):
        result = subprocess.run(run_as + args, cwd=cwd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({result.returncode}):\n"
                               f"{result.stdout}")
        return result

    def stop(self) -> None:
        """Stop our server and remove its folder (a no-op for an external server)."""
        if self._stopped:
            return
        self._stopped = True
        if self._base is None:
            return
        self._run(self._run_as, self._base, [str(self._bindir / "pg_ctl"), "-D",
                                             str(self._base / "data"), "-m", "fast", "-w", "stop"],
                  check=False)
        shutil.rmtree(self._base, ignore_errors=True)

    # -- databases -------------------------------------------------------------------------
    def create_database(self, name: str) -> str:
        """Create an empty database and return its ``postgresql+psycopg://`` URL."""
        import psycopg
        from psycopg import sql

        if not _DB_NAME.match(name):
            raise ValueError(f"not a plain database name: {name!r}")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(scheme="postgresql+psycopg", path="/" + name))
