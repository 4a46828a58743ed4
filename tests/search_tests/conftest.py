"""A throw-away PostgreSQL server for the search tests (real storage, as users run it).

``postgres_server`` (session) starts a cluster with the Debian server binaries
(``/usr/lib/postgresql/<version>/bin/initdb`` and ``pg_ctl``) in a fresh temporary folder,
bound to 127.0.0.1 on a free port, with its unix sockets in that folder and durability
switched off (tests need speed, not crash safety). ``initdb`` refuses to run as root, so as
root the server runs as the ``postgres`` system user (``nobody`` where that does not exist).
``postgres_url`` (function) creates a fresh database on it per test and yields its SQLAlchemy
URL. ``PIKENAS_TEST_POSTGRES_URL`` points the tests at an existing server instead (each test
then gets a fresh database on it). Without binaries or URL the tests are skipped with the
reason.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_DB_COUNTER = itertools.count()


@dataclass(frozen=True)
class PostgresServer:
    """Where a running test server listens: host, port, the superuser's name."""

    host: str
    port: int
    user: str
    password: str = ""

    def url(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` on this server."""
        auth = f"{self.user}:{self.password}" if self.password else self.user
        return f"postgresql+psycopg2://{auth}@{self.host}:{self.port}/{database}"


def _server_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL server ``bin`` folder holding initdb and pg_ctl."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name.split(".")[0]),
    )
    for initdb in reversed(candidates):
        bin_dir = Path(initdb).parent
        if (bin_dir / "pg_ctl").is_file():
            return bin_dir
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as_user() -> list[str]:
    """Command prefix running a program as a non-root user (empty when not root)."""
    if os.geteuid() != 0:
        return []
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return ["runuser", "-u", name, "--"]
    pytest.skip("running as root and neither a 'postgres' nor a 'nobody' user exists")


def _server_user_ids() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    prefix = _run_as_user()
    entry = pwd.getpwnam(prefix[2])
    return entry.pw_uid, entry.pw_gid


def _admin_connection(server: PostgresServer):  # -> psycopg2 connection
    import psycopg2

    connection = psycopg2.connect(
        host=server.host,
        port=server.port,
        user=server.user,
        password=server.password or None,
        dbname="postgres",
        connect_timeout=10,
    )
    connection.autocommit = True
    return connection


def _server_from_url(url: str) -> PostgresServer:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return PostgresServer(
        host=parsed.host or "127.0.0.1",
        port=int(parsed.port or 5432),
        user=parsed.username or "postgres",
        password=parsed.password or "",
    )


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL server for this test session (started here or given by URL)."""
    given = os.environ.get("PIKENAS_TEST_POSTGRES_URL")
    if given:
        yield _server_from_url(given)
        return
    bin_dir = _server_bin_dir()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb); "
            "install them with 'apt-get install postgresql' or set PIKENAS_TEST_POSTGRES_URL"
        )
    prefix = _run_as_user()
    # Directly under /tmp: pytest's tmp folders are private to root, the server user
    # could not enter them.
    root = Path(tempfile.mkdtemp(prefix="pikenas-pg-"))
    ids = _server_user_ids()
    if ids is not None:
        os.chown(root, *ids)
    data_dir, log_file = root / "data", root / "server.log"
    user = "pikenas"
    port = _free_port()
    try:
        subprocess.run(
            [*prefix, str(bin_dir / "initdb"), "-D", str(data_dir), "-U", user]
            + ["--auth=trust", "--encoding=UTF8", "--no-sync", "--no-instructions"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        options = (
            f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c max_connections=200"
        )
        started = subprocess.run(
            [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-l", str(log_file)]
            + ["-o", options, "-w", "-t", "60", "start"],
            capture_output=True,
            text=True,
            timeout=90,
        )
        if started.returncode != 0:
            log = log_file.read_text() if log_file.is_file() else ""
            raise RuntimeError(f"pg_ctl start failed: {started.stderr}\n{log}")
        yield PostgresServer(host="127.0.0.1", port=port, user=user)
    finally:
        if (data_dir / "postmaster.pid").is_file():
            subprocess.run(
                [*prefix, str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate"]
                + ["-w", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh, empty database on the test server (dropped afterwards)."""
    name = f"pikenas_test_{os.getpid()}_{next(_DB_COUNTER)}_{int(time.time())}"
    connection = _admin_connection(postgres_server)
    try:
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield postgres_server.url(name)
        with connection.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        connection.close()


#: a one-block search space: enough for worker and CLI tests of the distributed paths
SMALL_CONFIG = """\
space:
  stages:
    - {blocks: 1, stride: 1, channels: [8, 16]}
search: {population_size: 4}
"""


@pytest.fixture()
def config_file(tmp_path: Path) -> Path:
    """A search config file holding :data:`SMALL_CONFIG`."""
    path = tmp_path / "search.yaml"
    path.write_text(SMALL_CONFIG)
    return path


ROOT = Path(__file__).resolve().parents[2]
PIKENAS = str(Path(__import__("sys").executable).with_name("pikenas"))


def fake_env(delay_s: float = 0.0) -> dict[str, str]:
    """Environment of a `pikenas` subprocess using the tests' fake evaluator: the repository
    on its import path (``tests.search_tests.fakes``) and the fake's delay per trial."""
    from tests.search_tests.fakes import DELAY_ENV

    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, DELAY_ENV: str(delay_s)}
