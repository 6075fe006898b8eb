"""No silent loss, one bad item never stops a mailbox, nothing waits forever: the pipeline's steps
against the real PostgreSQL and the simulator over HTTP (issue #15)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import psycopg2
import pytest

from ewssync import pipeline, store
from ewssync.errors import ExchangeError, RunInProgress, SafetyStop, SettingsError, StoreError
from ewssync.exchange import open_calendar
from ewssync.settings import SyncSettings

NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)
BERLIN = "W. Europe Standard Time"


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def settings_for(sim, conn_id="ews_alice", app_user="alice", **extra) -> SyncSettings:
    conn = SimpleNamespace(
        conn_id=conn_id,
        conn_type="ews",
        host=sim.url,
        login="alice@example.com",
        password="secret",  # noqa: S106 - the simulator's
        description="test",
        port=None,
        schema=None,
        extra=json.dumps(
            {"app_user": app_user, "timeout_seconds": 5, "weeks_back": 2, "weeks_ahead": 4,
             "exchange_timezone": "Europe/Berlin", **extra}
        ),
    )  # fmt: skip
    return SyncSettings.from_connection(conn)


@pytest.fixture
def users(db):
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO calendar.users (login, email) VALUES ('alice', 'alice@example.com'), "
            "('bob', 'bob@example.com')"
        )
    db.commit()


def sync(settings, dsn, run_key, now=NOW, **load_args) -> dict:
    """One whole run, step by step as the DAG does it."""
    calendar = open_calendar(settings)
    pipeline.check(settings, dsn, calendar, move_app_user=load_args.get("move_app_user", False))
    pipeline.extract(settings, dsn, calendar, run_key, now)
    pipeline.transform_staged(settings, dsn, run_key)
    pipeline.load(settings, dsn, run_key, **load_args)
    return pipeline.report(settings, dsn, run_key)


def live(dsn, login="alice") -> list[str]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT a.title FROM calendar.live_appointments a JOIN calendar.users u "
            "ON u.id = a.owner_user_id WHERE u.login = %s ORDER BY a.title",
            (login,),
        )
        return [row[0] for row in cur.fetchall()]


def one(dsn, sql, *args):
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchone()[0]


# --- overlapping runs --------------------------------------------------------------------------


def test_a_second_run_waits_for_the_first_and_cannot_clear_its_staging(sim, pg_dsn, users):
    settings = settings_for(sim)
    mb = sim.mailbox("alice@example.com")
    sync(settings, pg_dsn, "run-1")
    mb.create(subject="New job", start=at(26, 9), end=at(26, 10), timezone=BERLIN)
    calendar = open_calendar(settings)
    pipeline.extract(settings, pg_dsn, calendar, "run-2", NOW + timedelta(minutes=30))
    pipeline.transform_staged(settings, pg_dsn, "run-2")
    # another run (a manual `airflow dags test`, where max_active_runs does not apply) starts now
    with pytest.raises(RunInProgress, match="run-2"):
        pipeline.extract(settings, pg_dsn, calendar, "run-3", NOW + timedelta(minutes=31))
    with pytest.raises(RunInProgress):
        pipeline.report(settings, pg_dsn, "run-3")
    # its staging is gone only for itself: run-2's load still finds and lands the new item
    pipeline.load(settings, pg_dsn, "run-2")
    pipeline.report(settings, pg_dsn, "run-2")
    assert live(pg_dsn) == ["New job"]
    # once run-2 reported, the next run goes ahead
    sync(settings, pg_dsn, "run-3", NOW + timedelta(minutes=31))
    assert live(pg_dsn) == ["New job"]


def test_clearing_one_runs_staging_leaves_another_runs(pg_dsn, db, users):
    for run_key in ("a", "b"):
        store.put_staging_run(
            db, "ews_alice", run_key, mode="full", ews_sync_state=None,
            window_start=NOW, window_end=NOW + timedelta(days=1),
        )  # fmt: skip
        store.stage_seen(db, "ews_alice", run_key, ["X"], "gone")
    store.clear_staging(db, "ews_alice", "b")
    db.commit()
    assert one(pg_dsn, "SELECT count(*) FROM ewssync.staging_seen WHERE run_key = 'a'") == 1
    assert store.get_staging_run(db, "ews_alice", "a")["mode"] == "full"


def test_a_killed_run_is_marked_abandoned_and_its_claim_expires(sim, pg_dsn, db, users):
    settings = settings_for(sim)
    sim.mailbox("alice@example.com").create(subject="Visit", start=at(26, 9), end=at(26, 10))
    calendar = open_calendar(settings)
    pipeline.extract(settings, pg_dsn, calendar, "killed", NOW)  # then SIGKILL: no callback
    with pytest.raises(RunInProgress):
        pipeline.extract(settings, pg_dsn, calendar, "next", NOW)
    with db.cursor() as cur:  # the killed run has been silent for longer than a run may take
        cur.execute("UPDATE ewssync.run_lease SET touched_at = now() - interval '1 day'")
    db.commit()
    sync(settings, pg_dsn, "next")
    assert live(pg_dsn) == ["Visit"]
    status = one(pg_dsn, "SELECT status || ' ' || errors::text FROM ewssync.sync_runs "
                 "WHERE run_key = 'killed'")  # fmt: skip
    assert status.startswith("failed") and "abandoned" in status


def test_two_connections_on_one_mailbox_with_the_same_run_id(sim, pg_dsn, users):
    mb = sim.mailbox("alice@example.com")
    mb.create(subject="Shared visit", start=at(26, 9), end=at(26, 10), timezone=BERLIN)
    for_alice = settings_for(sim, conn_id="ews_alice")
    for_bob = settings_for(sim, conn_id="ews_bob", app_user="bob", allow_mailbox_mismatch=True)
    run_key = "scheduled__2026-11-25T10:00:00+00:00"  # Airflow gives both DAGs this id
    calendars = {s.conn_id: open_calendar(s) for s in (for_alice, for_bob)}
    for step in ("extract", "transform_staged", "load", "report"):
        for settings in (for_alice, for_bob):
            if step == "extract":
                pipeline.extract(settings, pg_dsn, calendars[settings.conn_id], run_key, NOW)
            elif step == "load":
                pipeline.load(settings, pg_dsn, run_key)
            else:
                getattr(pipeline, step)(settings, pg_dsn, run_key)
    assert live(pg_dsn, "alice") == ["Shared visit"] and live(pg_dsn, "bob") == ["Shared visit"]


# --- UIDs are hints ----------------------------------------------------------------------------


def test_items_sharing_a_uid_or_without_one_each_land(sim, pg_dsn, users):
    settings = settings_for(sim)
    mb = sim.mailbox("alice@example.com")
    mb.create(subject="Meeting", start=at(26, 9), end=at(26, 10), uid="SAME-UID")
    mb.create(subject="Meeting (copy)", start=at(27, 9), end=at(27, 10), uid="SAME-UID")
    mb.create(subject="Imported A", start=at(26, 12), end=at(26, 13), uid=None)
    mb.create(subject="Imported B", start=at(27, 12), end=at(27, 13), uid=None)
    sync(settings, pg_dsn, "r1")
    assert live(pg_dsn) == ["Imported A", "Imported B", "Meeting", "Meeting (copy)"]
    # after a good sync, one more copy with the UID neither replaces nor is lost
    mb.create(subject="Meeting (copy 2)", start=at(28, 9), end=at(28, 10), uid="SAME-UID")
    counts = sync(settings, pg_dsn, "r2", NOW + timedelta(minutes=30))["counts"]
    assert counts["pulled_rekeyed"] == 0 and counts["pulled_created"] == 1
    assert live(pg_dsn) == [
        "Imported A", "Imported B", "Meeting", "Meeting (copy 2)", "Meeting (copy)",
    ]  # fmt: skip


# --- incomplete answers ------------------------------------------------------------------------


def add_twenty_jobs(mb) -> None:
    """Twenty 20-minute appointments, one every half hour from 26 Nov 06:00 UTC."""
    for n in range(20):
        mb.create(subject=f"Job {n:02}", start=at(26, 6) + timedelta(minutes=30 * n),
                  end=at(26, 6) + timedelta(minutes=30 * n + 20))  # fmt: skip


def test_a_calendar_view_answer_cut_short_is_read_again_not_taken_as_complete(sim, pg_dsn, users):
    settings = settings_for(sim)
    add_twenty_jobs(sim.mailbox("alice@example.com"))
    sim.inject_fault("truncated", operation="FindItem", count=1)
    sync(settings, pg_dsn, "r1")
    assert len(live(pg_dsn)) == 20


def test_a_view_that_stays_cut_short_fails_and_saves_no_sync_state(sim, pg_dsn, users):
    settings = settings_for(sim)
    add_twenty_jobs(sim.mailbox("alice@example.com"))
    sim.inject_fault("truncated", operation="FindItem", count=100)
    with pytest.raises(ExchangeError, match="cut short|envelope|items it announces"):
        sync(settings, pg_dsn, "r1")
    assert one(pg_dsn, "SELECT count(*) FROM ewssync.sync_state") == 0
    assert live(pg_dsn) == []


def test_sync_changes_cut_short_fail_instead_of_losing_changes(sim, pg_dsn, users):
    settings = settings_for(sim)
    mb = sim.mailbox("alice@example.com")
    sync(settings, pg_dsn, "r1")
    for n in range(20):
        mb.create(subject=f"Job {n:02}", start=at(26, 6) + timedelta(minutes=30 * n),
                  end=at(26, 6) + timedelta(minutes=30 * n + 20))  # fmt: skip
    sim.inject_fault("truncated", operation="SyncFolderItems", count=100, keep=0.5)
    with pytest.raises(ExchangeError):
        pipeline.extract(settings, pg_dsn, open_calendar(settings), "r2", NOW)
    sim.clear_faults()
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:  # what the failure callback does
        cur.execute("UPDATE ewssync.sync_runs SET status = 'failed' WHERE run_key = 'r2'")
    sync(settings, pg_dsn, "r3", NOW + timedelta(minutes=30))
    assert len(live(pg_dsn)) == 20


# --- one bad item ------------------------------------------------------------------------------


def test_a_bad_item_is_repaired_named_and_the_rest_syncs(sim, pg_dsn, users):
    settings = settings_for(sim)
    mb = sim.mailbox("alice@example.com")
    backwards = mb.create(subject="Backwards", start=at(26, 10), end=at(26, 9))
    zero_day = mb.create(subject="Zero-day holiday", start=at(27, 0), end=at(27, 0),
                         is_all_day=True)  # fmt: skip
    mb.create(subject="Fine", start=at(26, 12), end=at(26, 13))
    report = sync(settings, pg_dsn, "r1")
    assert live(pg_dsn) == ["Backwards", "Fine", "Zero-day holiday"]
    named = {item["item_id"]: item for item in report["counts"]["quarantined_items"]}
    assert set(named) == {backwards, zero_day}
    assert named[backwards]["problem"] == "ends before it starts"
    assert report["counts"]["quarantined"] == 2
    # and the next item syncs too
    mb.create(subject="New", start=at(28, 12), end=at(28, 13))
    sync(settings, pg_dsn, "r2", NOW + timedelta(minutes=30))
    assert "New" in live(pg_dsn)


def test_a_row_the_table_refuses_is_left_out_of_the_merge_and_named(pg_dsn, db, users):
    import pandas as pd

    from tests.integration.test_store_merge import appointment

    user_id = one(pg_dsn, "SELECT id FROM calendar.users WHERE login = 'alice'")
    store.put_staging_run(
        db, "ews_alice", "r1", mode="full", ews_sync_state="s1",
        window_start=NOW, window_end=NOW + timedelta(days=30),
    )  # fmt: skip
    bad = appointment("BAD", "Bad", ends_at=at(23, 8))  # before its start (9:00)
    store.stage_appointments(db, "ews_alice", "r1", pd.DataFrame([appointment("OK", "Ok"), bad]))
    counts = store.merge(db, "ews_alice", "r1", user_id=user_id)
    db.commit()
    assert counts["created"] == 1 and [q["item_id"] for q in counts["quarantined"]] == ["BAD"]


# --- privacy -----------------------------------------------------------------------------------


def test_a_private_items_content_is_never_written_when_sync_private_is_off(sim, pg_dsn, users):
    settings = settings_for(sim)
    mb = sim.mailbox("alice@example.com")
    mb.create(subject="Doctor Xylophon", location="Praxis Zebra", body="Befund Quagga",
              start=at(26, 9), end=at(26, 10), sensitivity="Private")  # fmt: skip
    mb.create(subject="Visit", start=at(26, 11), end=at(26, 12))
    calendar = open_calendar(settings)
    pipeline.extract(settings, pg_dsn, calendar, "r1", NOW)
    pipeline.transform_staged(settings, pg_dsn, "r1")
    # the run fails before report (staging stays): nothing private is anywhere
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema IN ('calendar', 'ewssync') AND table_type = 'BASE TABLE'"
        )
        for schema, table in cur.fetchall():
            cur.execute(f'SELECT count(*) FROM "{schema}"."{table}" t WHERE t::text ~ '  # noqa: S608
                        "'Xylophon|Zebra|Quagga'")  # fmt: skip
            assert cur.fetchone()[0] == 0, f"{schema}.{table}"
    pipeline.load(settings, pg_dsn, "r1")
    pipeline.report(settings, pg_dsn, "r1")
    assert live(pg_dsn) == ["Visit"]


def test_an_item_made_private_leaves_the_app(sim, pg_dsn, users):
    settings = settings_for(sim)
    mb = sim.mailbox("alice@example.com")
    doctor = mb.create(subject="Doctor", start=at(26, 9), end=at(26, 10))
    mb.create(subject="Visit", start=at(26, 11), end=at(26, 12))
    mb.create(subject="Repair", start=at(26, 13), end=at(26, 14))
    sync(settings, pg_dsn, "r1")
    mb.update(doctor, sensitivity="Private")
    sync(settings, pg_dsn, "r2", NOW + timedelta(minutes=30))
    assert live(pg_dsn) == ["Repair", "Visit"]


# --- waiting: throttling, locks, lost database ----------------------------------------------


def test_endless_throttling_ends_after_the_total_wait(sim):
    settings = settings_for(sim, throttle_wait_seconds=1)
    calendar = open_calendar(settings)
    calendar.read_index(at(1, 0), at(2, 0))  # warm up
    sim.reset_counters()
    sim.inject_fault("server_busy", operation="FindItem", count=40, back_off_ms=300)
    with pytest.raises(ExchangeError, match="throttl"):
        calendar.read_index(at(1, 0), at(2, 0))
    # 0.3 s each: three waits fit in one second, the fourth does not
    assert sim.request_counts["FindItem"] == 4


def test_a_lock_held_by_the_app_fails_the_load_clearly(sim, pg_dsn, db, users):
    settings = settings_for(sim)
    sim.mailbox("alice@example.com").create(subject="Visit", start=at(26, 9), end=at(26, 10))
    calendar = open_calendar(settings)
    pipeline.extract(settings, pg_dsn, calendar, "r1", NOW)
    pipeline.transform_staged(settings, pg_dsn, "r1")
    with db.cursor() as cur:  # the app holds the table in an open transaction
        cur.execute("LOCK TABLE calendar.appointments IN ACCESS EXCLUSIVE MODE")
    previous = store.LOCK_TIMEOUT_SECONDS
    store.LOCK_TIMEOUT_SECONDS = 0.5
    try:
        with pytest.raises(StoreError, match="lock_timeout"):
            pipeline.load(settings, pg_dsn, "r1")
    finally:
        store.LOCK_TIMEOUT_SECONDS = previous
        db.rollback()
    pipeline.load(settings, pg_dsn, "r1")  # the retry, once the app let go
    assert live(pg_dsn) == ["Visit"]


def test_a_statement_over_its_time_fails_clearly(pg_dsn):
    with (
        pytest.raises(StoreError, match="statement_timeout"),
        store.connect(pg_dsn, statement_timeout=0.2) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT pg_sleep(5)")


def test_a_terminated_backend_is_reported_as_such(pg_dsn):
    with (
        pytest.raises(StoreError) as caught,
        store.connect(pg_dsn) as conn,
        conn.cursor() as cur,
    ):
        cur.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    message = str(caught.value)
    assert "terminat" in message and "already closed" not in message


def test_the_lock_wait_is_bounded_even_for_a_waiting_advisory_lock(pg_dsn):
    holder = psycopg2.connect(pg_dsn)
    try:
        store.lock_connection(holder, "ews_alice")  # held until rollback
        done = threading.Event()

        def wait() -> None:
            try:
                with store.connect(pg_dsn, lock_timeout=0.3) as conn:
                    store.lock_connection(conn, "ews_alice")
            except StoreError:
                done.set()

        waiter = threading.Thread(target=wait)
        waiter.start()
        waiter.join(30)
        assert done.is_set()
    finally:
        holder.rollback()
        holder.close()


# --- app user, mass deletion -------------------------------------------------------------------


def test_changing_the_app_user_is_refused_until_told_to_move(sim, pg_dsn, users):
    mb = sim.mailbox("alice@example.com")
    mb.create(subject="Visit", start=at(26, 9), end=at(26, 10))
    sync(settings_for(sim), pg_dsn, "r1")
    changed = settings_for(sim, app_user="bob", allow_mailbox_mismatch=True)
    with pytest.raises(SettingsError, match="move_app_user"):
        sync(changed, pg_dsn, "r2", NOW + timedelta(minutes=30))
    assert live(pg_dsn, "alice") == ["Visit"] and live(pg_dsn, "bob") == []
    mb.create(subject="Repair", start=at(26, 11), end=at(26, 12))
    report = sync(changed, pg_dsn, "r3", NOW + timedelta(minutes=60), move_app_user=True)
    assert live(pg_dsn, "alice") == [] and live(pg_dsn, "bob") == ["Repair", "Visit"]
    assert report["counts"]["pulled_moved_to_app_user"] == 1


@pytest.mark.parametrize(
    ("linked", "gone", "stops"),
    [(10, 10, True), (20, 20, True), (10, 6, True), (10, 5, False), (10, 2, False),
     (4, 3, True), (2, 2, True), (1, 1, False), (100, 50, False), (100, 51, True), (0, 0, False)],
)  # fmt: skip
def test_the_mass_deletion_rule_protects_small_calendars(linked, gone, stops):
    assert store.would_mass_delete(gone, linked) is stops


def test_a_small_calendar_that_vanishes_is_not_deleted(sim, pg_dsn, users):
    settings = settings_for(sim)
    mb = sim.mailbox("alice@example.com")
    ids = [mb.create(subject=f"Job {n}", start=at(26, 6 + n), end=at(26, 6 + n, 30))
           for n in range(10)]  # fmt: skip
    sync(settings, pg_dsn, "r1")
    for item_id in ids:
        mb.delete(item_id)
    with pytest.raises(SafetyStop, match="10 of 10"):
        sync(settings, pg_dsn, "r2", NOW + timedelta(minutes=30))
    assert len(live(pg_dsn)) == 10


# --- smaller ---------------------------------------------------------------------------------


def test_a_location_or_body_that_is_the_csv_null_marker_is_kept(sim, pg_dsn, users):
    settings = settings_for(sim)
    sim.mailbox("alice@example.com").create(
        subject="\\N", location="\\N", body="\\N", body_type="Text", start=at(26, 9),
        end=at(26, 10),
    )  # fmt: skip
    sync(settings, pg_dsn, "r1")
    with psycopg2.connect(pg_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT title, location, notes FROM calendar.live_appointments")
        assert cur.fetchall() == [("\\N", "\\N", "\\N")]


def test_nul_characters_exchange_sent_are_reported_not_dropped_silently(sim, pg_dsn, users):
    settings = settings_for(sim)
    sim.mailbox("alice@example.com").create(
        subject="Visit\x00Müller", location="Room\x00", body="a\x00b", body_type="Text",
        start=at(26, 9), end=at(26, 10),
    )  # fmt: skip
    report = sync(settings, pg_dsn, "r1")
    assert report["counts"]["exchange_nul_characters_dropped"] == 3
    assert live(pg_dsn) == ["VisitMüller"]  # Postgres text cannot hold U+0000 either


def test_a_step_waiting_too_long_for_another_runs_step_says_run_in_progress(sim, pg_dsn, users):
    settings = settings_for(sim)
    holder = psycopg2.connect(pg_dsn)
    try:
        store.lock_connection(holder, settings.conn_id)  # another run's step, mid-transaction
        previous = store.LOCK_TIMEOUT_SECONDS
        store.LOCK_TIMEOUT_SECONDS = 0.3
        try:
            with pytest.raises(RunInProgress, match="another step"):
                pipeline.extract(settings, pg_dsn, open_calendar(settings), "r1", NOW)
        finally:
            store.LOCK_TIMEOUT_SECONDS = previous
    finally:
        holder.rollback()
        holder.close()
    sync(settings, pg_dsn, "r1")  # once it is done, the run goes ahead


def test_a_rekey_needs_one_gone_link_and_one_new_item(db, users):
    from tests.integration.test_store_merge import appointment, run

    run(db, "r1", [appointment("A", "Visit", uid="U"), appointment("B", "Visit copy", uid="U")])
    # both old ids gone, two new items with the UID: ambiguous, so nothing is re-keyed
    counts = run(
        db, "r2", [appointment("A2", "Visit", uid="U"), appointment("B2", "Visit copy", uid="U")],
        gone=["A", "B"], allow_mass_delete=True,
    )  # fmt: skip
    assert counts["rekeyed"] == 0 and counts["created"] == 2 and counts["deleted"] == 2
