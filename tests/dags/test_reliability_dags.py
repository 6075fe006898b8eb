"""DAG-level reliability: bad connection ids and values, timeouts from the settings, and two
connections on one mailbox run for real with dag.test()."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest

from ewssync.dag_factory import INVALID_IDS_DAG_ID, build_all
from ewssync.discovery import ConnectionFields
from tests.dags.conftest import ews_connection, run_dag, task_states

REPO = Path(__file__).resolve().parents[2]
URL = "http://127.0.0.1:9/EWS/Exchange.asmx"  # parsing never talks to Exchange


def fields(conn_id: str, **extra) -> ConnectionFields:
    return ConnectionFields(
        conn_id=conn_id, conn_type="ews", host=URL, login="alice@example.com", description=None,
        port=None, schema=None, extra={"app_user": "alice", **extra},
    )  # fmt: skip


@pytest.fixture
def dagbag(airflow_env):
    def parse():
        from airflow.dag_processing.dagbag import DagBag

        return DagBag(dag_folder=str(REPO / "dags"))

    return parse


def test_a_connection_id_that_cannot_name_a_dag_is_skipped_and_named(airflow_env):
    dags = build_all(
        {"ews good": fields("ews good"), "ews_alice": fields("ews_alice"), "x" * 300: fields("x")}
    )
    assert "ewssync__ews_alice" in dags
    assert "ewssync__ews good" not in dags
    named = dags[INVALID_IDS_DAG_ID]
    assert "'ews good'" in named.doc_md and "x" * 300 in named.doc_md
    assert "invalid-settings" in named.tags


def test_a_connection_whose_value_is_broken_json_gets_a_dag_that_says_so(airflow_env, dagbag):
    airflow_env.setenv("AIRFLOW_CONN_EWS_GOOD", ews_connection(URL, "a@example.com", "pw",
                                                               app_user="alice"))  # fmt: skip
    airflow_env.setenv("AIRFLOW_CONN_EWS_MANGLED", '{"conn_type": "ews", "host": "x", "login":')
    bag = dagbag()
    assert bag.import_errors == {}
    mangled = bag.get_dag("ewssync__ews_mangled")
    assert "invalid-settings" in mangled.tags and "not valid JSON" in mangled.doc_md
    assert bag.get_dag("ewssync__ews_good") is not None


def test_a_password_in_the_server_url_is_refused_and_never_shown(airflow_env, dagbag):
    airflow_env.setenv(
        "AIRFLOW_CONN_EWS_LEAKY",
        ews_connection("https://alice:Sup3rSecret@mail.example.com/EWS/Exchange.asmx",
                       "alice@example.com", "pw", app_user="alice"),
    )  # fmt: skip
    leaky = dagbag().get_dag("ewssync__ews_leaky")
    assert "invalid-settings" in leaky.tags
    assert "Sup3rSecret" not in leaky.doc_md and "'server'" in leaky.doc_md


def test_every_task_has_an_execution_timeout_and_the_dag_a_run_timeout(airflow_env, dagbag):
    airflow_env.setenv("AIRFLOW_CONN_EWS_DEFAULT", ews_connection(URL, "a@example.com", "pw",
                                                                  app_user="alice"))  # fmt: skip
    airflow_env.setenv(
        "AIRFLOW_CONN_EWS_QUICK",
        ews_connection(URL, "b@example.com", "pw", app_user="bob", task_timeout_minutes=10,
                       throttle_wait_seconds=120),
    )  # fmt: skip
    bag = dagbag()
    default, quick = bag.get_dag("ewssync__ews_default"), bag.get_dag("ewssync__ews_quick")
    assert {t.execution_timeout for t in default.tasks} == {timedelta(minutes=30)}
    assert default.dagrun_timeout == timedelta(minutes=90)
    assert {t.execution_timeout for t in quick.tasks} == {timedelta(minutes=10)}
    assert quick.dagrun_timeout == timedelta(minutes=30)


def test_two_connections_on_one_mailbox_sync_for_their_own_app_users(airflow_env, sim, pg_dsn, db):
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO calendar.users (login, email) VALUES ('alice', 'alice@example.com'), "
            "('team', 'team@example.com')"
        )
    db.commit()
    airflow_env.setenv("EWSSYNC_RETRY_DELAY_SECONDS", "1")
    for conn_id, app_user in (("ews_alice", "alice"), ("ews_team", "team")):
        airflow_env.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}",
            ews_connection(sim.url, "alice@example.com", "secret", app_user=app_user,
                           allow_mailbox_mismatch=True, weeks_back=1, weeks_ahead=2),
        )  # fmt: skip
    now = datetime(2026, 11, 25, 10, tzinfo=UTC)
    sim.mailbox("alice@example.com").create(
        subject="Site visit", start=now + timedelta(days=1), end=now + timedelta(days=1, hours=1)
    )
    runs = [run_dag(f"ewssync__{conn_id}", now) for conn_id in ("ews_alice", "ews_team")]
    assert runs[0].run_id == runs[1].run_id  # the same run id for both DAGs
    for dag_run in runs:
        assert set(task_states(dag_run).values()) == {"success"}
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT u.login, a.title FROM calendar.live_appointments a "
            "JOIN calendar.users u ON u.id = a.owner_user_id ORDER BY u.login"
        )
        assert cur.fetchall() == [("alice", "Site visit"), ("team", "Site visit")]


def test_a_manual_dag_test_while_another_run_is_mid_flight_leaves_it_alone(
    airflow_env, sim, pg_dsn, db
):
    """`airflow dags test` ignores max_active_runs: its run must wait, not clear the other
    run's staging (which made that run's load insert nothing and save its sync state)."""
    from ewssync import pipeline
    from ewssync.exchange import open_calendar
    from tests.integration.test_reliability import settings_for

    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO calendar.users (login, email) VALUES ('alice', 'alice@example.com')"
        )
    db.commit()
    airflow_env.setenv("EWSSYNC_RETRIES", "0")
    airflow_env.setenv(
        "AIRFLOW_CONN_EWS_ALICE",
        ews_connection(sim.url, "alice@example.com", "secret", app_user="alice",
                       exchange_timezone="Europe/Berlin", weeks_back=2, weeks_ahead=4),
    )  # fmt: skip
    now = datetime(2026, 11, 25, 10, tzinfo=UTC)
    sim.mailbox("alice@example.com").create(
        subject="Site visit", start=now + timedelta(days=1), end=now + timedelta(days=1, hours=1)
    )
    settings = settings_for(sim, conn_id="ews_alice", timeout_seconds=30)
    pipeline.extract(settings, pg_dsn, open_calendar(settings), "scheduled__other", now)
    pipeline.transform_staged(settings, pg_dsn, "scheduled__other")

    manual = run_dag("ewssync__ews_alice", now + timedelta(minutes=5))
    assert task_states(manual)["extract"] == "failed"

    pipeline.load(settings, pg_dsn, "scheduled__other")
    pipeline.report(settings, pg_dsn, "scheduled__other")
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT title FROM calendar.live_appointments")
        assert cur.fetchall() == [("Site visit",)]
