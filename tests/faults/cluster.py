"""A private PostgreSQL cluster (and a PgBouncer) that a test may stop, restart and kill.

Never the shared server: each cluster is created by ``initdb`` in a temporary directory, listens on a free port
of 127.0.0.1 with trust authentication, and runs as the ``postgres`` user when the tests run as root (the
server refuses root). The binaries come from ``pg_config --bindir``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psycopg

SERVICE_USER = "postgres"


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bindir() -> Path:
    """Where PostgreSQL's server binaries are (``pg_config --bindir``)."""
    found = shutil.which("pg_config")
    if found is None:
        raise RuntimeError("pg_config is not on PATH: install the PostgreSQL server package")
    return Path(
        subprocess.run([found, "--bindir"], check=True, capture_output=True, text=True).stdout.strip()
    )


def _as_service_user(command: Sequence[str]) -> list[str]:
    if os.geteuid() != 0:
        return list(command)
    return ["runuser", "-u", SERVICE_USER, "--", *command]


class Cluster:
    """One private PostgreSQL server: ``start``, ``stop``, ``restart``, ``kill`` and its URL."""

    def __init__(self, settings: dict[str, str] | None = None, *, standby_of: Cluster | None = None) -> None:
        """Create the cluster: a new one by ``initdb``, or with ``standby_of`` a streaming standby of that
        (running) primary, copied by ``pg_basebackup`` and following it until promoted."""
        self.bin = bindir()
        self.root = Path(tempfile.mkdtemp(prefix="planflow-cluster-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "200",
            "shared_buffers": "32MB",
            "fsync": "on",
            "synchronous_commit": "on",
            "log_min_messages": "warning",
            **(settings or {}),
        }
        if os.geteuid() == 0:
            shutil.chown(self.root, SERVICE_USER, SERVICE_USER)
        if standby_of is None:
            self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
            )
        else:
            # -R writes standby.signal and the primary's address; the copied settings are overridden below.
            self._run(
                "pg_basebackup", "-h", "127.0.0.1", "-p", str(standby_of.port), "-U", "postgres",
                "-D", str(self.data), "-R", "-X", "stream", "--no-sync",
            )  # fmt: skip
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            for key, value in self.settings.items():
                conf.write(f"{key} = {value}\n")

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            _as_service_user([str(self.bin / program), *args]), check=check, capture_output=True, text=True
        )

    def url(self, database: str = "postgres", **query: str) -> str:
        """A URL of this server (``query`` becomes its query string)."""
        tail = "&".join(f"{key}={value}" for key, value in query.items())
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}" + (f"?{tail}" if tail else "")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``smart``, ``fast`` or ``immediate``)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def restart(self, mode: str = "fast") -> None:
        """Restart the server with ``pg_ctl restart -m mode`` and wait until it accepts connections."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", mode, "-w", "-t", "60", "restart"
        )

    def promote(self) -> None:
        """Promote this standby to a primary (``pg_ctl promote``) and wait until it accepts writes."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "promote")

    def ready(self) -> bool:
        """Whether the server accepts a connection right now."""
        try:
            with psycopg.connect(self.url(), connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def wait_ready(self, timeout: float = 60) -> float:
        """Wait until the server accepts connections; return when that was (``time.monotonic``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return time.monotonic()
            time.sleep(0.02)
        raise TimeoutError(f"the private cluster on port {self.port} did not come up: {self.log.read_text()}")

    def sql(
        self, statement: str, params: Sequence[object] = (), database: str = "postgres"
    ) -> list[tuple[object, ...]]:
        """Run one statement as the superuser on a connection of its own; its rows (none for a command)."""
        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cursor = conn.execute(statement.encode(), params or None)  # pyright: ignore[reportArgumentType]
            return list(cursor.fetchall()) if cursor.description else []

    def destroy(self) -> None:
        """Stop the server at once and remove its files."""
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class Bouncer:
    """A PgBouncer in transaction-pooling mode in front of a server, on a free port."""

    def __init__(self, server_port: int, *, pool_size: int = 4) -> None:
        program = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not Path(program).exists():
            raise RuntimeError("pgbouncer is not installed (Debian package pgbouncer)")
        self.root = Path(tempfile.mkdtemp(prefix="planflow-bouncer-"))
        self.port = free_port()
        ini = self.root / "pgbouncer.ini"
        ini.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={server_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            f"unix_socket_dir = {self.root}\n"
            "auth_type = trust\n"
            f"auth_file = {self.root / 'users.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {pool_size}\n"
            "max_client_conn = 500\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {self.root / 'pgbouncer.log'}\n"
            f"pidfile = {self.root / 'pgbouncer.pid'}\n",
            encoding="utf-8",
        )
        (self.root / "users.txt").write_text('"postgres" ""\n', encoding="utf-8")
        if os.geteuid() == 0:
            shutil.chown(self.root, SERVICE_USER, SERVICE_USER)
            for path in self.root.iterdir():
                shutil.chown(path, SERVICE_USER, SERVICE_USER)
        self.process = subprocess.Popen(
            _as_service_user([program, str(ini)]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not start: {(self.root / 'pgbouncer.log').read_text()}")

    def url(self, database: str, user: str = "postgres") -> str:
        """A planflow URL through the bouncer, in transaction-pooling mode."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}?pgbouncer=true"

    def stop(self) -> None:
        """Stop the bouncer and remove its files."""
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.root, ignore_errors=True)
