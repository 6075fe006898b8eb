"""The generated DAG, run for real, both ways: each path from the app to Exchange and back
(create, Outlook edit, app edit, app delete, conflict, series with an exception and a deleted
occurrence, an RRULE Exchange cannot express), against PostgreSQL and the EWS simulator over
HTTP in both dialects, and the Graph simulator serving the same mailbox model (api=graph: creates
through $batch, an occurrence's edits through the series' instances, a stale change key refused
by If-Match, a quiet run asks one delta page, every answer valid against Microsoft's CSDL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from ewssync.exchange import oauth
from tests.dags.conftest import ews_connection, run_dag, task_states
from tests.ewssim import EwsSimulator
from tests.graphsim import GraphSimulator
from tests.identitysim import IdentitySimulator
from tests.integration.twoway_support import delete, insert, live, run_row, update

CONN_ID = "ews_twoway"
DAG_ID = f"ewssync__{CONN_ID}"
NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)
STAMP = "PublicStrings:ewssyncAppointmentId"
GRAPH_RESOURCE = "https://127.0.0.1"  # the Graph simulator's resource at the identity simulator


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


@pytest.fixture(params=["Exchange2016", "Exchange2007_SP1", "graph"])
def bob(request, airflow_env, pg_dsn, db):
    """The bob connection (env) and his app user, through EWS in one of its dialects or through
    Graph; `server` is the simulator the DAG talks to (its request counts)."""
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO calendar.users (login, email) VALUES ('bob', 'bob@example.com') "
            "RETURNING id"
        )
        user_id = cur.fetchone()[0]
    db.commit()
    airflow_env.setenv("EWSSYNC_RETRY_DELAY_SECONDS", "1")
    airflow_env.setenv("EWSSYNC_RETRIES", "0")
    settings = {"app_user": "bob", "exchange_timezone": "Europe/Berlin", "weeks_back": 1,
                "weeks_ahead": 4, "conflict_policy": "app_wins", "alarm_on_new": True,
                "alarm_minutes": 10}  # fmt: skip
    if request.param != "graph":
        sim = EwsSimulator(dialect=request.param)
        sim.add_mailbox("bob@example.com", password="secret")
        sim.start()
        airflow_env.setenv(
            f"AIRFLOW_CONN_{CONN_ID.upper()}",
            ews_connection(sim.url, "bob@example.com", "secret", **settings,
                           use_2007_protocol=request.param == "Exchange2007_SP1"),
        )  # fmt: skip
        try:
            yield {"api": "ews", "server": sim, "mailbox": sim.mailbox("bob@example.com"),
                   "dsn": pg_dsn, "user": user_id, "answers": None}  # fmt: skip
        finally:
            sim.stop()
        return
    ews = EwsSimulator()  # the mailbox model only: Graph serves it
    ews.add_mailbox("bob@example.com", password="unused")
    with IdentitySimulator(tls=True) as idp:
        idp.add_resource(GRAPH_RESOURCE, ["Calendars.ReadWrite"])
        app = idp.add_app(roles={GRAPH_RESOURCE: ["Calendars.ReadWrite"]})
        graph = GraphSimulator(source=ews)
        graph.trust(idp)
        answers = graph.record_answers()
        with graph:
            extra = {**settings, "api": "graph", "auth_method": "oauth",
                     "tenant_id": app.tenant_id, "client_id": app.client_id,
                     "authority": idp.authority, "mailbox": "bob@example.com",
                     "verify_tls": False}  # fmt: skip
            airflow_env.setenv(
                f"AIRFLOW_CONN_{CONN_ID.upper()}",
                json.dumps({"conn_type": "ews", "host": graph.url, "login": "",
                            "password": app.secret, "extra": extra}),
            )  # fmt: skip
            yield {"api": "graph", "server": graph, "mailbox": ews.mailbox("bob@example.com"),
                   "dsn": pg_dsn, "user": user_id, "answers": answers}  # fmt: skip
    oauth.forget()


def last_run(dsn: str) -> dict:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_key FROM ewssync.sync_runs ORDER BY id DESC LIMIT 1")
        return run_row(dsn, cur.fetchone()[0])


def stamped(mailbox) -> dict[str, object]:
    return {item.extended.get(STAMP): item for item in mailbox.items()}


def test_every_path_both_ways(bob):
    dsn, user, mb, server = bob["dsn"], bob["user"], bob["mailbox"], bob["server"]
    graph = bob["api"] == "graph"
    when = iter(NOW + timedelta(minutes=30 * n) for n in range(20))

    # 1. app -> Exchange: a new appointment and a series (through Graph in one $batch), and one
    # series Exchange cannot express: named, not pushed
    visit = insert(dsn, user, title="Visit", location="Hall", starts_at=at(26, 8),
                   ends_at=at(26, 9), category="Service")  # fmt: skip
    insert(dsn, user, title="Standup", starts_at=at(23, 7), ends_at=at(23, 7, 15),
           time_zone="Europe/Berlin", series_key="standup@app",
           recurrence_rule="FREQ=DAILY;COUNT=5")  # fmt: skip
    hourly = insert(dsn, user, title="Ping", starts_at=at(26, 7), ends_at=at(26, 8),
                    recurrence_rule="FREQ=DAILY;BYHOUR=7,9")  # fmt: skip
    dag_run = run_dag(DAG_ID, next(when))
    assert set(task_states(dag_run).values()) == {"success"}
    assert "push" in task_states(dag_run)
    items = stamped(mb)
    assert items[str(visit)].subject == "Visit" and items[str(visit)].reminder_minutes == 10
    assert items[str(visit)].categories == ["Service"]
    series = [item for item in mb.items() if item.recurrence]
    assert len(series) == 1 and series[0].recurrence["count"] == 5
    if graph:
        assert items[str(visit)].extended.get("graph:transactionId")  # a retry cannot duplicate
        assert server.request_counts["batch:create"] == 2 and server.request_counts["create"] == 0
    else:  # Graph cannot set the iCalUId: it keeps the app's series key in ewssyncUid
        assert series[0].uid == "standup@app"
    report = last_run(dsn)
    assert report["counts"]["pushed_created"] == 2
    assert [n["appointment_id"] for n in report["not_pushed"]] == [hourly]
    assert "BYHOUR" in report["not_pushed"][0]["reason"]

    # 2. the occurrences come back as rows of the series (the UID push gave it); no duplicates
    run_dag(DAG_ID, next(when))
    titles = [row["title"] for row in live(dsn)]
    assert titles.count("Visit") == 1 and titles.count("Standup") == 6  # series row + 5

    # 3. an Outlook edit reaches the app; an app edit and an app delete reach Exchange (through
    # Graph, an occurrence's through the series' instances)
    mb.update(items[str(visit)].item_id, location="Hall B")
    run_dag(DAG_ID, next(when))
    assert [r["location"] for r in live(dsn) if r["id"] == visit] == ["Hall B"]
    occurrences = [r for r in live(dsn) if r["occurrence_key"]]
    update(dsn, occurrences[1]["id"], title="Standup (long)", ends_at=at(24, 8))
    delete(dsn, occurrences[2]["id"])
    update(dsn, visit, title="Visit (moved)", starts_at=at(26, 10), ends_at=at(26, 11))
    run_dag(DAG_ID, next(when))
    item = mb.get(items[str(visit)].item_id)
    assert (item.subject, item.location, item.start) == ("Visit (moved)", "Hall B", at(26, 10))
    master = mb.get(series[0].item_id)
    assert master.modified[at(24, 7)]["subject"] == "Standup (long)"
    assert at(25, 7) in master.deleted

    # 4. a conflict: both sides edit; app_wins (Graph refuses the stale change key: If-Match),
    # and the run lists it
    mb.update(items[str(visit)].item_id, subject="Visit (Outlook)")
    update(dsn, visit, title="Visit (app)")
    run_dag(DAG_ID, next(when))
    assert mb.get(items[str(visit)].item_id).subject == "Visit (app)"
    conflicts = last_run(dsn)["conflicts"]
    assert [(c["appointment_id"], c["winner"], c["policy"]) for c in conflicts] == [
        (visit, "app", "app_wins")
    ]

    # 5. deleted in the app -> deleted in Exchange; then a run with no edits is a no-change run
    # (EWS: at most 2 requests; Graph: one delta page)
    delete(dsn, visit)
    run_dag(DAG_ID, next(when))
    assert mb.get(items[str(visit)].item_id) is None
    run_dag(DAG_ID, next(when))  # the occurrence edits are read back once
    server.reset_counters()
    run_dag(DAG_ID, next(when))
    if graph:
        assert dict(server.request_counts) == {"calendar": 1, "delta": 1}
    else:
        assert sum(server.request_counts.values()) <= 2, dict(server.request_counts)
    report = last_run(dsn)
    assert report["mode"] == "no_change" and report["status"] == "success"
    assert not any(report["counts"].get(k) for k in ("pushed_created", "pushed_updated",
                                                      "pushed_deleted"))  # fmt: skip
    titles = [row["title"] for row in live(dsn)]
    # the series row, 3 occurrences as they were, the edited one; the deleted one is gone
    assert titles.count("Standup") == 4 and titles.count("Standup (long)") == 1

    if graph:  # every answer of every run: valid against Microsoft's CSDL
        from tests.graphsim import csdl

        for path, _status, document in bob["answers"]:
            csdl.validate_answer(document, "graph.calendar" if path.endswith("/calendar") or
                                 "/calendar?" in path else "graph.event")  # fmt: skip
