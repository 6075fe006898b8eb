"""The generated DAG, run for real (dag.test) against PostgreSQL and the EWS simulator, or the
Graph simulator serving the same mailbox (api=graph): the same cases through both backends."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import psycopg2
import pytest

from ewssync.exchange import oauth
from tests.dags.conftest import ews_connection, run_dag, task_states
from tests.graphsim import GraphSimulator
from tests.identitysim import IdentitySimulator

CONN_ID = "ews_alice"
DAG_ID = f"ewssync__{CONN_ID}"
NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)  # a Wednesday
BERLIN = "W. Europe Standard Time"
GRAPH_RESOURCE = "https://127.0.0.1"  # the Graph simulator's resource at the identity simulator

HTML_BODY = (
    "<html><head><style>p.MsoNormal{margin:0}</style><!--[if gte mso 9]><xml><o:Settings/>"
    "</xml><![endif]--></head><body><p class=MsoNormal>Bitte&nbsp;Leiter mitbringen.<o:p></o:p>"
    "</p><p class=MsoNormal>Kunde &amp; Hund</p></body></html>"
)


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture(params=["ews", "graph"])
def alice(request, airflow_env, sim, pg_dsn, db):
    """The alice connection (env), her app user, and a populated simulator mailbox; read
    through EWS, or through Graph (the Graph simulator serves the EWS simulator's mailbox)."""
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO calendar.users (login, email) VALUES ('alice', 'alice@example.com')"
        )
    db.commit()
    airflow_env.setenv("EWSSYNC_RETRY_DELAY_SECONDS", "1")
    settings = {"app_user": "alice", "exchange_timezone": "Europe/Berlin", "weeks_back": 2,
                "weeks_ahead": 4}  # fmt: skip
    ids = populate(sim.mailbox("alice@example.com"))
    found = {"sim": sim, "mailbox": sim.mailbox("alice@example.com"), "ids": ids, "dsn": pg_dsn,
             "api": request.param, "graph": None}  # fmt: skip
    if request.param == "ews":
        airflow_env.setenv(
            f"AIRFLOW_CONN_{CONN_ID.upper()}",
            ews_connection(sim.url, "alice@example.com", "secret", **settings),
        )
        yield found
        return
    with IdentitySimulator(tls=True) as idp, GraphSimulator(source=sim) as graph:
        idp.add_resource(GRAPH_RESOURCE, ["Calendars.ReadWrite"])
        app = idp.add_app(roles={GRAPH_RESOURCE: ["Calendars.ReadWrite"]})
        graph.trust(idp)
        extra = {**settings, "api": "graph", "auth_method": "oauth", "tenant_id": app.tenant_id,
                 "client_id": app.client_id, "authority": idp.authority,
                 "mailbox": "alice@example.com", "verify_tls": False}  # fmt: skip
        airflow_env.setenv(
            f"AIRFLOW_CONN_{CONN_ID.upper()}",
            json.dumps({"conn_type": "ews", "host": graph.url, "login": "",
                        "password": app.secret, "extra": extra}),
        )  # fmt: skip
        yield found | {"graph": graph}
    oauth.forget()


def populate(mb) -> dict[str, str]:
    """The mailbox the DAG cases start from."""
    ids = {
        "visit": mb.create(
            subject="Visit Müller", start=at(26, 8), end=at(26, 9, 30), timezone=BERLIN,
            body=HTML_BODY, body_type="HTML", location="Hauptstr. 1", reminder_minutes=15,
            categories=["Service"], legacy_free_busy="Busy",
        ),
        "private": mb.create(
            subject="Doctor", start=at(27, 14), end=at(27, 15), timezone=BERLIN,
            sensitivity="Private",
        ),
        "holiday": mb.create(
            subject="Company holiday", start=at(30, 0) - timedelta(hours=1),
            end=datetime(2026, 12, 2, 23, tzinfo=UTC), timezone=BERLIN, is_all_day=True,
            legacy_free_busy="OOF",
        ),
        "tokyo": mb.create(
            subject="Call Tokyo", start=at(26, 0), end=at(26, 1), timezone="Tokyo Standard Time",
            body="Plain text\r\nsecond line", body_type="Text", legacy_free_busy="Tentative",
        ),
        "standup": mb.create(
            subject="Standup", start=at(23, 8), end=at(23, 8, 15), timezone=BERLIN,
            recurrence={"pattern": "daily", "interval": 1, "start": date(2026, 11, 23),
                        "count": 10},
        ),
    }  # fmt: skip
    mb.modify_occurrence(ids["standup"], at(25, 8), subject="Standup (long)", end=at(25, 9))
    mb.delete_occurrence(ids["standup"], at(26, 8))
    return ids


def rows(dsn: str) -> dict[str, dict]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT title, location, notes, notes_html, starts_at, ends_at, all_day, start_date, "
            "end_date, time_zone, is_private, reminder_minutes, show_as, category, series_key, "
            "occurrence_key, version FROM calendar.live_appointments ORDER BY starts_at, title"
        )
        names = [c.name for c in cur.description]
        found = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    by_key = {}
    for row in found:
        key = row["title"] if not row["series_key"] else f"{row['title']}@{row['starts_at']:%d}"
        by_key[key] = row
    return by_key


def last_run(dsn: str) -> dict:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT status, mode, counts FROM ewssync.sync_runs ORDER BY id DESC LIMIT 1")
        status, mode, counts = cur.fetchone()
    return {"status": status, "mode": mode, "counts": counts}


def test_the_mailbox_lands_exactly_and_a_second_run_changes_nothing(alice):
    dag_run = run_dag(DAG_ID, NOW)
    assert task_states(dag_run) == dict.fromkeys(
        ["check", "extract", "transform", "load", "push", "report"], "success"
    )
    landed = rows(alice["dsn"])
    assert "Doctor" not in landed  # private, sync_private off

    visit = landed["Visit Müller"]
    assert (visit["starts_at"], visit["ends_at"]) == (at(26, 8), at(26, 9, 30))
    assert visit["notes"] == "Bitte Leiter mitbringen.\n\nKunde & Hund"
    assert visit["notes_html"] is None
    assert visit["time_zone"] == "Europe/Berlin" and visit["location"] == "Hauptstr. 1"
    assert (visit["reminder_minutes"], visit["show_as"], visit["category"]) == (
        15,
        "busy",
        "Service",
    )
    assert visit["start_date"] == date(2026, 11, 26)

    holiday = landed["Company holiday"]
    assert holiday["all_day"] is True and holiday["show_as"] == "away"
    assert (holiday["start_date"], holiday["end_date"]) == (date(2026, 11, 30), date(2026, 12, 2))

    tokyo = landed["Call Tokyo"]
    assert tokyo["time_zone"] == "Asia/Tokyo" and tokyo["start_date"] == date(2026, 11, 26)
    assert tokyo["notes"] == "Plain text\nsecond line" and tokyo["show_as"] == "tentative"

    standups = {k: v for k, v in landed.items() if v["series_key"]}
    # 10 daily occurrences from the 23rd, the 26th deleted, the 25th modified
    assert sorted(standups) == sorted(
        [f"Standup@{d}" for d in (23, 24, 27, 28, 29, 30)]
        + ["Standup (long)@25"]
        + [f"Standup@0{d}" for d in (1, 2)]
    )
    assert standups["Standup (long)@25"]["ends_at"] == at(25, 9)
    assert len({v["series_key"] for v in standups.values()}) == 1
    assert last_run(alice["dsn"])["mode"] == "full"

    versions = {k: v["version"] for k, v in landed.items()}
    alice["sim"].reset_counters()
    if alice["graph"]:
        alice["graph"].reset_counters()
    run_dag(DAG_ID, NOW + timedelta(minutes=30))
    assert {k: v["version"] for k, v in rows(alice["dsn"]).items()} == versions
    assert last_run(alice["dsn"])["mode"] == "no_change"
    if alice["graph"]:
        # one delta page says nothing changed: no view, no batch of reads
        counts = alice["graph"].request_counts
        assert counts["delta"] == 1 and counts["calendarView"] == 0, dict(counts)
        assert not any(route.startswith("batch") for route in counts), dict(counts)
    else:
        # the check's one GetFolder and one SyncFolderItems: nothing else is read
        assert dict(alice["sim"].request_counts) == {"GetFolder": 1, "SyncFolderItems": 1}


def test_edits_moves_and_deletes_in_exchange_show_up_after_the_next_run(alice):
    run_dag(DAG_ID, NOW)
    mb, ids = alice["mailbox"], alice["ids"]
    mb.update(ids["visit"], subject="Visit Müller (moved)", location="Nebenstr. 2")
    mb.move(ids["tokyo"], at(28, 3), at(28, 4))
    mb.delete(ids["holiday"])
    mb.delete_occurrence(ids["standup"], at(27, 8))
    # moved far outside the window: updated, not deleted (the legacy product lost these)
    far = mb.create(subject="Inspection", start=at(27, 10), end=at(27, 11), timezone=BERLIN)
    run_dag(DAG_ID, NOW + timedelta(minutes=30))
    mb.move(far, datetime(2027, 6, 1, 10, tzinfo=UTC), datetime(2027, 6, 1, 11, tzinfo=UTC))
    run_dag(DAG_ID, NOW + timedelta(minutes=60))

    landed = rows(alice["dsn"])
    assert "Visit Müller (moved)" in landed and "Visit Müller" not in landed
    assert landed["Visit Müller (moved)"]["location"] == "Nebenstr. 2"
    assert landed["Call Tokyo"]["starts_at"] == at(28, 3)
    assert "Company holiday" not in landed
    assert "Standup@27" not in landed and "Standup@28" in landed
    assert landed["Inspection"]["starts_at"] == datetime(2027, 6, 1, 10, tzinfo=UTC)
    assert last_run(alice["dsn"])["status"] == "success"


def test_a_failure_mid_load_leaves_the_previous_state_and_the_retry_succeeds(alice, db):
    run_dag(DAG_ID, NOW)
    before = rows(alice["dsn"])
    alice["mailbox"].update(alice["ids"]["visit"], subject="Visit Müller v2")
    alice["mailbox"].create(subject="New job", start=at(27, 9), end=at(27, 10), timezone=BERLIN)
    # A real fault inside the load transaction: the first write of "New job" raises once.
    with db.cursor() as cur:
        cur.execute(
            """
            CREATE TABLE public.fault_once (fired boolean);
            CREATE FUNCTION public.fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.title = 'New job' AND NOT EXISTS (SELECT 1 FROM public.fault_once) THEN
                    RAISE EXCEPTION 'injected fault: disk full';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER fail_once BEFORE INSERT ON calendar.appointments
                FOR EACH ROW EXECUTE FUNCTION public.fail_once();
            """
        )
    db.commit()
    try:
        first = run_dag(DAG_ID, NOW + timedelta(minutes=30))
        assert task_states(first)["load"] == "failed"
        assert rows(alice["dsn"]) == before
        assert last_run(alice["dsn"])["status"] == "failed"
        # the fault clears; the same run's load, retried, commits the staged window
        with db.cursor() as cur:
            cur.execute("INSERT INTO public.fault_once VALUES (true)")
        db.commit()
        retried = run_dag(DAG_ID, NOW + timedelta(minutes=30))
        assert task_states(retried)["report"] == "success"
        landed = rows(alice["dsn"])
        assert "New job" in landed and "Visit Müller v2" in landed
    finally:
        with db.cursor() as cur:
            cur.execute("DROP TRIGGER IF EXISTS fail_once ON calendar.appointments")
            cur.execute("DROP FUNCTION IF EXISTS public.fail_once()")
            cur.execute("DROP TABLE IF EXISTS public.fault_once")
        db.commit()


def test_the_realistic_fixture_lands_with_html_kept_and_private_items_flagged(
    airflow_env, sim, pg_dsn, db
):
    """The demo mailbox, with keep_html and sync_private on: every occurrence of the window
    lands once, private ones flagged, HTML kept beside the text, zones mapped."""
    from pathlib import Path

    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO calendar.users (login, email) VALUES ('alice', 'alice@example.com')"
        )
    db.commit()
    fixture = Path(__file__).resolve().parents[1] / "ewssim" / "fixtures" / "realistic.json"
    sim.load_fixture(fixture, default_mailbox="alice@example.com")
    airflow_env.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        ews_connection(
            sim.url, "alice@example.com", "secret", app_user="alice", keep_html=True,
            sync_private=True, exchange_timezone="Europe/Berlin", weeks_back=6, weeks_ahead=12,
        ),
    )  # fmt: skip
    when = datetime(2026, 11, 23, 6, tzinfo=UTC)
    run_dag(DAG_ID, when)
    window_start = datetime(2026, 11, 23, tzinfo=UTC) - timedelta(weeks=6)
    window_end = datetime(2026, 11, 23, tzinfo=UTC) + timedelta(weeks=12)
    occurrences = sim.mailbox("alice@example.com").occurrences(window_start, window_end)
    expected = [item for item in occurrences if not item.is_cancelled]  # cancelled: never land

    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT title, starts_at, is_private, notes, notes_html, time_zone, all_day, "
            "start_date, end_date, show_as FROM calendar.live_appointments"
        )
        landed = cur.fetchall()
    assert sorted((row[0], row[1]) for row in landed) == sorted(
        (item.subject, item.start) for item in expected
    )
    by_title = {row[0]: row for row in landed}
    assert by_title["Arzttermin"][2] is True and by_title["Gehaltsgespräch"][2] is True
    assert by_title["Personal: Kita abholen"][2] is False  # Personal is not private
    visit = by_title["Wartung Heizung – Familie Schulz"]
    assert (
        visit[3]
        == "Hallo Herr Schulz,\n\nBitte Zugang zum Keller freihalten.\n\nGrüße & Dank\nDisposition"
    )
    assert visit[4].startswith("<html") and "<o:p>" in visit[4]
    assert by_title["Abstimmung Tokio-Büro"][5] == "Asia/Tokyo"
    # a zone Exchange cannot name falls back to the connection's zone
    assert by_title["Kundentermin (importiert, eigene Zeitzone)"][5] == "Europe/Berlin"
    messe = by_title["Messe ISH Frankfurt"]
    assert messe[6] is True and (messe[7], messe[8]) == (date(2026, 12, 1), date(2026, 12, 3))
    # the weekly meeting keeps 09:00 Berlin on both sides of the DST change (25 Oct 2026)
    meetings = sorted(row[1] for row in landed if row[0] == "Teambesprechung")
    assert datetime(2026, 10, 19, 7, tzinfo=UTC) in meetings  # CEST: UTC+2
    assert datetime(2026, 10, 26, 8, tzinfo=UTC) in meetings  # CET: UTC+1
    assert datetime(2026, 12, 7, 8, tzinfo=UTC) not in meetings  # deleted occurrence
    # meetings: cancelled left out (above), declined kept as free, tentative shows tentative
    assert by_title["Quartalsmeeting Vertrieb"][9] == "free"
    assert by_title["Lieferantengespräch Heizungsbau"][9] == "tentative"
    # all-day dates are the item's own: a custom zone with US rules, and one with no zone at all
    thanksgiving = by_title["Thanksgiving (US-Kunde, importiert)"]
    assert (thanksgiving[7], thanksgiving[8]) == (date(2026, 11, 26), date(2026, 11, 26))
    tokyo = by_title["Messe Tokio (ohne Zeitzone)"]
    assert (tokyo[7], tokyo[8]) == (date(2026, 12, 9), date(2026, 12, 10))
    assert by_title["Webinar Sydney (nur Anzeigename)"][5] == "Australia/Sydney"


def test_an_expired_sync_state_falls_back_to_reading_the_whole_window(alice):
    run_dag(DAG_ID, NOW)
    before = rows(alice["dsn"])
    if alice["graph"]:
        alice["graph"].expire_delta_tokens()  # Graph answers the deltaLink 410 syncStateNotFound
    else:
        alice["mailbox"].epoch = "another-server"  # Exchange no longer knows our sync state
    run_dag(DAG_ID, NOW + timedelta(minutes=30))
    assert last_run(alice["dsn"]) | {"counts": None} == {
        "status": "success", "mode": "full", "counts": None,
    }  # fmt: skip
    assert rows(alice["dsn"]) == before  # same content: nothing rewritten, duplicated or lost


def test_a_run_triggered_with_full_resync_rereads_the_whole_window(alice):
    """The DAG's run parameter (as the UI's Trigger with config sends it) reaches extract."""
    run_dag(DAG_ID, NOW)
    before = rows(alice["dsn"])
    run_dag(DAG_ID, NOW + timedelta(minutes=30))
    assert last_run(alice["dsn"])["mode"] == "no_change"
    dag_run = run_dag(DAG_ID, NOW + timedelta(minutes=60), conf={"full_resync": True})
    assert task_states(dag_run)["report"] == "success"
    assert last_run(alice["dsn"]) | {"counts": None} == {
        "status": "success", "mode": "full", "counts": None,
    }  # fmt: skip
    assert rows(alice["dsn"]) == before  # re-read, nothing rewritten, duplicated or lost
