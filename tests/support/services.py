"""Real PostgreSQL and Redis servers for the tests.

The running servers named by ``TEST_DATABASE_URL`` / ``TEST_REDIS_URL`` are used when reachable.
Otherwise a throwaway server is started from the installed binaries (``initdb``/``pg_ctl``,
``redis-server``) in a temporary directory and stopped at the end of the session. When neither works,
the tests that need the server fail with a message that says what to do; they are never skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis
from sqlalchemy.engine import URL, make_url

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"


class ServiceUnavailableError(RuntimeError):
    """Neither the configured server nor a throwaway one could be had."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------- PostgreSQL


def _libpq_dsn(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def postgres_reachable(url: str, timeout: int = 3) -> str | None:
    """``None`` when a connection works, else the reason it did not."""
    try:
        with psycopg.connect(_libpq_dsn(make_url(url)), connect_timeout=timeout):
            return None
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _pg_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    return str(candidates[0]) if candidates else None


@dataclass
class ThrowawayPostgres:
    """A PostgreSQL cluster in a temporary directory, on a free port, trust auth, user ``postgres``."""

    directory: Path
    port: int
    pg_ctl: str
    run_as: list[str]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    @classmethod
    def start(cls) -> ThrowawayPostgres:
        initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
        if not initdb or not pg_ctl:
            raise ServiceUnavailableError(
                "initdb/pg_ctl not found; install PostgreSQL (e.g. apt-get install postgresql)"
            )
        directory = Path(tempfile.mkdtemp(prefix="trader-pg-"))
        run_as: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            runuser = shutil.which("runuser")
            if not runuser:
                raise ServiceUnavailableError(
                    "running as root and no 'runuser' to start PostgreSQL as user postgres"
                )
            run_as = [runuser, "-u", "postgres", "--"]
            shutil.chown(directory, user="postgres")
        data = directory / "data"
        port = free_port()
        subprocess.run(
            [*run_as, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
        options = f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            [*run_as, pg_ctl, "-D", str(data), "-o", options, "-l", str(directory / "log"), "-w", "start"],
            check=True,
            capture_output=True,
        )
        return cls(directory=directory, port=port, pg_ctl=pg_ctl, run_as=run_as)

    def stop(self) -> None:
        subprocess.run(
            [*self.run_as, self.pg_ctl, "-D", str(self.directory / "data"), "-m", "immediate", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def postgres_server(url: str) -> Iterator[str]:
    """Yield an admin URL of a reachable PostgreSQL: ``url`` itself, or a throwaway server's."""
    problem = postgres_reachable(url)
    if problem is None:
        yield url
        return
    try:
        server = ThrowawayPostgres.start()
    except (ServiceUnavailableError, subprocess.CalledProcessError, OSError) as exc:
        detail = (
            exc.stderr.decode(errors="replace").strip()
            if isinstance(exc, subprocess.CalledProcessError)
            else exc
        )
        raise ServiceUnavailableError(
            f"PostgreSQL is not reachable at {make_url(url).render_as_string()} ({problem}) and a throwaway "
            f"server could not be started ({detail}). Start PostgreSQL or point TEST_DATABASE_URL at one."
        ) from None
    try:
        yield server.url
    finally:
        server.stop()


@contextlib.contextmanager
def scratch_database(
    admin_url: str, prefix: str = "trader_test", template: str | None = None
) -> Iterator[str]:
    """Create a database for one test (empty, or a copy of ``template``) and drop it afterwards."""
    admin = make_url(admin_url)
    name = f"{prefix}_{os.getpid()}_{time.monotonic_ns() % 10**12}"
    with psycopg.connect(_libpq_dsn(admin), autocommit=True) as conn:
        statement = f'CREATE DATABASE "{name}"'
        if template:
            statement += f' TEMPLATE "{template}"'
            # PostgreSQL 15+: copying the files is ~2.5x faster than WAL-logging a small template.
            statement += " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""
        conn.execute(statement)
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_libpq_dsn(admin), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -------------------------------------------------------------------------------------------- Redis


def redis_reachable(url: str) -> str | None:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        try:
            client.ping()
        finally:
            client.close()
        return None
    except redis.RedisError as exc:
        return str(exc) or type(exc).__name__


@dataclass
class ThrowawayRedis:
    """A ``redis-server`` on a free loopback port that keeps nothing on disk."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/15"

    @classmethod
    def start(cls, timeout: float = 10.0) -> ThrowawayRedis:
        binary = shutil.which("redis-server")
        if not binary:
            raise ServiceUnavailableError(
                "redis-server not found; install Redis (e.g. apt-get install redis-server)"
            )
        port = free_port()
        directory = Path(tempfile.mkdtemp(prefix="trader-redis-"))
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = cls(process=process, port=port, directory=directory)
        deadline = time.monotonic() + timeout
        while redis_reachable(server.url) is not None:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise ServiceUnavailableError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        return server

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


@contextlib.contextmanager
def redis_server(url: str) -> Iterator[str]:
    """Yield the URL of a reachable Redis: ``url`` itself, or a throwaway server's."""
    problem = redis_reachable(url)
    if problem is None:
        yield url
        return
    try:
        server = ThrowawayRedis.start()
    except (ServiceUnavailableError, OSError) as exc:
        raise ServiceUnavailableError(
            f"Redis is not reachable at {url} ({problem}) and a throwaway server could not be started "
            f"({exc}). Start Redis or point TEST_REDIS_URL at one."
        ) from None
    try:
        yield server.url
    finally:
        server.stop()


@dataclass
class RedisKeySpace:
    """A Redis client plus a key prefix owned by one test; every key under it is deleted afterwards."""

    client: redis.Redis[bytes]
    prefix: str

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def keys(self) -> list[str]:
        return sorted(k.decode() for k in self.client.scan_iter(match=f"{self.prefix}*"))

    def clear(self) -> int:
        keys = list(self.client.scan_iter(match=f"{self.prefix}*"))
        return int(self.client.delete(*keys)) if keys else 0
