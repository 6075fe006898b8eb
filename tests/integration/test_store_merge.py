"""The merge of a staged window into calendar.appointments, against a real PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from ewssync import store
from ewssync.errors import SafetyStop

CONN = "ews_alice"
WINDOW = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def appointment(item_id: str, title: str, day: int = 23, **overrides) -> dict:
    start = datetime(2026, 11, day, 9, tzinfo=UTC)
    row = {
        "ews_item_id": item_id,
        "change_key": f"ck-{item_id}-{title}",
        "uid": f"uid-{item_id}",
        "recurrence_id": None,
        "series_key": None,
        "occurrence_key": None,
        "item_type": "Single",
        "title": title,
        "location": "",
        "notes": "",
        "notes_html": None,
        "starts_at": start,
        "ends_at": start + timedelta(hours=1),
        "all_day": False,
        "start_date": start.date(),
        "end_date": start.date(),
        "time_zone": "Europe/Berlin",
        "is_private": False,
        "reminder_minutes": 15,
        "show_as": "busy",
        "category": None,
        "fingerprint": f"fp-{title}-{day}",
    }
    row.update(overrides)
    return row


def run(db, run_key: str, rows: list[dict], gone: list[str] = (), **merge_args) -> dict:
    store.clear_staging(db, CONN, run_key)
    store.put_staging_run(
        db, CONN, run_key, mode="full", ews_sync_state="state-" + run_key,
        window_start=WINDOW[0], window_end=WINDOW[1],
    )  # fmt: skip
    store.stage_appointments(db, CONN, run_key, pd.DataFrame(rows))
    store.stage_seen(db, CONN, run_key, gone, "gone")
    counts = store.merge(db, CONN, run_key, user_id=user_id(db), **merge_args)
    db.commit()
    return counts


def user_id(db) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT id FROM calendar.users WHERE login = 'alice'")
        row = cur.fetchone()
        if row:
            return row[0]
        cur.execute(
            "INSERT INTO calendar.users (login, email) VALUES ('alice', 'a@x') RETURNING id"
        )
        return cur.fetchone()[0]


def titles(db) -> dict[str, str]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT l.ews_item_id, a.title FROM ewssync.links l "
            "JOIN calendar.appointments a ON a.id = l.appointment_id WHERE a.deleted_at IS NULL"
        )
        return dict(cur.fetchall())


def test_first_merge_inserts_and_a_repeat_changes_nothing(db):
    rows = [appointment("A", "Visit"), appointment("B", "Repair", day=24)]
    assert run(db, "r1", rows)["created"] == 2
    assert titles(db) == {"A": "Visit", "B": "Repair"}
    with db.cursor() as cur:
        cur.execute("SELECT max(version) FROM calendar.appointments")
        version = cur.fetchone()[0]
    again = run(db, "r2", rows)
    assert again == {
        "created": 0, "updated": 0, "deleted": 0, "conflicts": 0, "rekeyed": 0, "quarantined": [],
    }  # fmt: skip
    with db.cursor() as cur:
        cur.execute("SELECT max(version) FROM calendar.appointments")
        assert cur.fetchone()[0] == version
        cur.execute("SELECT ews_sync_state FROM ewssync.sync_state WHERE conn_id = %s", (CONN,))
        assert cur.fetchone()[0] == "state-r2"


def test_changed_content_updates_and_gone_items_become_tombstones(db):
    run(db, "r1", [appointment("A", "Visit"), appointment("B", "Repair")])
    counts = run(db, "r2", [appointment("A", "Visit moved", day=25)], gone=["B"])
    assert counts["updated"] == 1 and counts["deleted"] == 1
    assert titles(db) == {"A": "Visit moved"}
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM calendar.appointments WHERE deleted_at IS NOT NULL")
        assert cur.fetchone()[0] == 1


def test_a_local_edit_is_not_swallowed_when_only_the_change_key_moves(db):
    run(db, "r1", [appointment("A", "Visit")])
    with db.cursor() as cur:
        cur.execute("UPDATE calendar.appointments SET location = 'Room 2'")
    db.commit()
    same_content = appointment("A", "Visit", change_key="ck-new")
    run(db, "r2", [same_content])
    with db.cursor() as cur:
        cur.execute(
            "SELECT a.location, a.version > l.local_version, l.change_key "
            "FROM calendar.appointments a JOIN ewssync.links l ON l.appointment_id = a.id"
        )
        location, pending, change_key = cur.fetchone()
    assert (location, pending, change_key) == ("Room 2", True, "ck-new")


def test_a_conflict_is_counted_and_exchange_wins_on_pull(db):
    run(db, "r1", [appointment("A", "Visit")])
    with db.cursor() as cur:
        cur.execute("UPDATE calendar.appointments SET title = 'Local title'")
    db.commit()
    counts = run(db, "r2", [appointment("A", "Exchange title")])
    assert counts["conflicts"] == 1
    assert titles(db) == {"A": "Exchange title"}


def test_a_new_item_id_for_the_same_uid_keeps_the_appointment(db):
    run(db, "r1", [appointment("A", "Visit")])
    rekeyed = appointment("A2", "Visit", uid="uid-A")
    # the old id is confirmed gone in the same run: the item was re-keyed, not deleted
    counts = run(db, "r2", [rekeyed], gone=["A"])
    assert counts["rekeyed"] == 1 and counts["created"] == 0
    assert titles(db) == {"A2": "Visit"}


def test_mass_deletion_stops_before_changing_anything(db):
    rows = [appointment(f"I{n}", f"T{n}", day=1 + n % 28) for n in range(40)]
    run(db, "r1", rows)
    with pytest.raises(SafetyStop, match="would delete 40 of 40"):
        run(db, "r2", [], gone=[r["ews_item_id"] for r in rows])
    db.rollback()
    assert len(titles(db)) == 40
    counts = run(db, "r3", [], gone=[r["ews_item_id"] for r in rows], allow_mass_delete=True)
    assert counts["deleted"] == 40
