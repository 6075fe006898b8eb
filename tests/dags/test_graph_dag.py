"""The generated DAG with api=graph, run for real (dag.test) against the Graph simulator, whose
mailbox is the EWS simulator's: the same mailbox lands as the same rows through both APIs, and
later runs read only what changed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest

from ewssync.exchange import oauth
from tests.dags.conftest import ews_connection, run_dag, task_states
from tests.graphsim import GraphSimulator
from tests.identitysim import IdentitySimulator

FIXTURE = Path(__file__).resolve().parents[1] / "ewssim" / "fixtures" / "realistic.json"
WHEN = datetime(2026, 11, 23, 6, tzinfo=UTC)
RESOURCE = "https://127.0.0.1"
STEPS = ["check", "extract", "transform", "load", "push", "report"]
COLUMNS = (
    "title, location, notes, notes_html, starts_at, ends_at, all_day, start_date, end_date, "
    "time_zone, is_private, reminder_minutes, show_as, category, series_key, occurrence_key"
)


@pytest.fixture
def both(airflow_env, sim, pg_dsn, db):
    """ews_alice (EWS) and graph_alice (Graph) on the same mailbox, for app users alice and
    alice_graph."""
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO calendar.users (login, email) VALUES ('alice', 'alice@example.com'), "
            "('alice_graph', 'alice@example.com')"
        )
    db.commit()
    sim.load_fixture(FIXTURE, default_mailbox="alice@example.com")
    airflow_env.setenv("EWSSYNC_RETRY_DELAY_SECONDS", "1")
    common = {"keep_html": True, "sync_private": True, "exchange_timezone": "Europe/Berlin",
              "weeks_back": 6, "weeks_ahead": 12}  # fmt: skip
    airflow_env.setenv(
        "AIRFLOW_CONN_EWS_ALICE",
        ews_connection(sim.url, "alice@example.com", "secret", app_user="alice", **common),
    )
    with IdentitySimulator(tls=True) as idp:
        idp.add_resource(RESOURCE, ["Calendars.ReadWrite"])
        app = idp.add_app(roles={RESOURCE: ["Calendars.ReadWrite"]})
        graph = GraphSimulator(source=sim)
        graph.trust(idp)
        with graph:
            graph_conn = {
                    "conn_type": "ews", "description": "Alice through Graph", "host": graph.url,
                    "login": "", "password": app.secret,
                    "extra": {**common, "app_user": "alice_graph", "api": "graph",
                              "auth_method": "oauth", "tenant_id": app.tenant_id,
                              "client_id": app.client_id, "authority": idp.authority,
                              "mailbox": "alice@example.com", "verify_tls": False},
            }  # fmt: skip
            airflow_env.setenv("AIRFLOW_CONN_GRAPH_ALICE", json.dumps(graph_conn))
            yield {"sim": sim, "graph": graph, "dsn": pg_dsn, "graph_conn": graph_conn,
                   "env": airflow_env}  # fmt: skip
    oauth.forget()


def rows(dsn: str, login: str) -> dict[tuple, dict]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            f"SELECT {COLUMNS} FROM calendar.live_appointments a "
            "JOIN calendar.users u ON u.id = a.owner_user_id WHERE u.login = %s",
            (login,),
        )
        names = [c.name for c in cur.description]
        found = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    return {(r["title"], r["start_date"], r["starts_at"].time() if not r["all_day"] else None): r
            for r in found}  # fmt: skip


def assert_same_rows(through_ews: dict, through_graph: dict) -> None:
    """Equal, column by column, but for what Graph answers differently (docs/architecture.md,
    "The Graph backend")."""
    assert len(through_ews) > 20 and set(through_graph) == set(through_ews)
    for key, expected in through_ews.items():
        got = dict(through_graph[key])
        if key[0] == "Messe Tokio (ohne Zeitzone)":
            # EWS answered without a zone (the connection's is used); Graph names it
            assert (expected["time_zone"], got.pop("time_zone")) == ("Europe/Berlin", "Asia/Tokyo")
            expected = {k: v for k, v in expected.items() if k != "time_zone"}
        if expected["notes_html"] is None and got["notes_html"] is not None:
            # a Text body: Graph gives it as HTML (the notes are the same text)
            assert got.pop("notes_html").startswith("<html><body><pre>")
            expected = {k: v for k, v in expected.items() if k != "notes_html"}
        if key[0] == "Thanksgiving (US-Kunde, importiert)":
            # all-day in a customized zone Graph cannot name: the same dates, placed at midnight
            # in the connection's zone instead of the zone's own
            for name in ("starts_at", "ends_at"):
                assert got.pop(name) != expected[name]
            expected = {k: v for k, v in expected.items() if k not in ("starts_at", "ends_at")}
        assert got == expected, key


def last_run(dsn: str, conn_id: str) -> dict:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT status, mode, counts FROM ewssync.sync_runs WHERE conn_id = %s "
            "ORDER BY id DESC LIMIT 1",
            (conn_id,),
        )
        status, mode, counts = cur.fetchone()
    return {"status": status, "mode": mode, "counts": counts}


def test_the_same_mailbox_lands_as_the_same_rows_through_ews_and_graph(both):
    assert task_states(run_dag("ewssync__ews_alice", WHEN)) == dict.fromkeys(STEPS, "success")
    assert task_states(run_dag("ewssync__graph_alice", WHEN)) == dict.fromkeys(STEPS, "success")
    through_ews = rows(both["dsn"], "alice")
    through_graph = rows(both["dsn"], "alice_graph")
    assert_same_rows(through_ews, through_graph)

    # the second Graph run reads the delta: nothing changed, nothing written
    graph = both["graph"]
    graph.reset_counters()
    run_dag("ewssync__graph_alice", WHEN + timedelta(minutes=30))
    assert last_run(both["dsn"], "graph_alice")["mode"] == "no_change"
    assert graph.request_counts["delta"] == 1 and graph.request_counts["calendarView"] == 0
    assert rows(both["dsn"], "alice_graph") == through_graph

    # a change in the mailbox arrives with the next run's delta page, no other read
    mailbox = both["sim"].mailbox("alice@example.com")
    visit = next(i for i in mailbox.items() if i.subject == "Wartung Heizung – Familie Schulz")
    mailbox.update(visit.item_id, subject="Wartung Heizung – verschoben", location="Hof")
    graph.reset_counters()
    run_dag("ewssync__graph_alice", WHEN + timedelta(hours=1))
    run = last_run(both["dsn"], "graph_alice")
    assert (run["status"], run["mode"]) == ("success", "incremental")
    assert graph.request_counts["calendarView"] == 0 and graph.request_counts["batch"] == 0
    after = rows(both["dsn"], "alice_graph")
    moved = [r for r in after.values() if r["title"] == "Wartung Heizung – verschoben"]
    assert len(moved) == 1 and moved[0]["location"] == "Hof"
    assert len(after) == len(through_graph)


def test_moving_a_connection_from_ews_to_graph_keeps_the_appointments(both):
    """One setting moves a connection: the next run reads the window through Graph, the EWS ids
    are not Graph's (confirmed gone by id), and every link follows its appointment by UID and
    original start: nothing deleted, nothing created twice."""
    run_dag("ewssync__ews_alice", WHEN)
    before = rows(both["dsn"], "alice")
    moved = json.loads(json.dumps(both["graph_conn"]))
    moved["extra"]["app_user"] = "alice"
    both["env"].setenv("AIRFLOW_CONN_EWS_ALICE", json.dumps(moved))
    dag_run = run_dag("ewssync__ews_alice", WHEN + timedelta(minutes=30))
    assert task_states(dag_run) == dict.fromkeys(STEPS, "success")
    run = last_run(both["dsn"], "ews_alice")
    assert (run["status"], run["mode"]) == ("success", "full")
    counts = run["counts"]
    # an item Exchange keeps without a UID has nothing to follow: its row is replaced (the
    # fixture has one); every other link is re-keyed
    no_uid = [i for i in both["sim"].mailbox("alice@example.com").items() if i.uid is None]
    assert len(no_uid) == 1
    assert counts["pulled_rekeyed"] == len(before) - 1
    assert (counts["pulled_created"], counts["pulled_deleted"]) == (1, 1)
    assert_same_rows(before, rows(both["dsn"], "alice"))
