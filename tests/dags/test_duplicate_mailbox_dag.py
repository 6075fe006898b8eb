"""Two connections for one mailbox and app user, run as DAGs (dag.test): the second one's check
fails naming the first, unless it sets allow_duplicate_mailbox."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg2
import pytest

from tests.dags.conftest import ews_connection, run_dag, task_states

NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)
STEPS = ("check", "extract", "transform", "load", "push", "report")


@pytest.fixture
def two_connections(airflow_env, sim, pg_dsn, db):
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO calendar.users (login, email) VALUES ('alice', 'alice@example.com')"
        )
    db.commit()
    sim.mailbox("alice@example.com").create(
        subject="Visit", start=datetime(2026, 11, 26, 8, tzinfo=UTC),
        end=datetime(2026, 11, 26, 9, tzinfo=UTC),
    )  # fmt: skip
    for conn_id in ("ews_alice_one", "ews_alice_two"):
        airflow_env.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}",
            ews_connection(sim.url, "alice@example.com", "secret", app_user="alice"),
        )
    return airflow_env


def run_errors(dsn: str, conn_id: str) -> list[str]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT errors FROM ewssync.sync_runs WHERE conn_id = %s", (conn_id,))
        return [error for (errors,) in cur.fetchall() for error in errors]


def appointments(dsn: str) -> int:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM calendar.live_appointments")
        return cur.fetchone()[0]


def test_the_second_connection_fails_at_check_naming_the_first(two_connections, sim, pg_dsn):
    first = run_dag("ewssync__ews_alice_one", NOW)
    assert task_states(first) == dict.fromkeys(STEPS, "success")
    assert appointments(pg_dsn) == 1

    second = run_dag("ewssync__ews_alice_two", NOW)
    states = task_states(second)
    assert states["check"] == "failed"
    assert all(states[step] != "success" for step in STEPS[1:])
    [error] = run_errors(pg_dsn, "ews_alice_two")
    assert "'ews_alice_one'" in error and "field 'mailbox'" in error
    assert "allow_duplicate_mailbox" in error
    assert appointments(pg_dsn) == 1  # nothing doubled

    # explicitly allowed: the second one syncs too (and the appointment arrives twice)
    two_connections.setenv(
        "AIRFLOW_CONN_EWS_ALICE_TWO",
        ews_connection(
            sim.url, "alice@example.com", "secret", app_user="alice", allow_duplicate_mailbox=True
        ),
    )
    allowed = run_dag("ewssync__ews_alice_two", datetime(2026, 11, 25, 11, tzinfo=UTC))
    assert task_states(allowed) == dict.fromkeys(STEPS, "success")
    assert appointments(pg_dsn) == 2


def test_deleting_the_first_connection_hands_the_mailbox_to_the_second(two_connections, pg_dsn):
    assert task_states(run_dag("ewssync__ews_alice_one", NOW))["check"] == "success"
    two_connections.delenv("AIRFLOW_CONN_EWS_ALICE_ONE")
    second = run_dag("ewssync__ews_alice_two", NOW)
    assert task_states(second)["check"] == "success"
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT conn_id FROM ewssync.mailbox_claims")
        assert cur.fetchall() == [("ews_alice_two",)]
