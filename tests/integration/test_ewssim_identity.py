"""The simulator's ids and UIDs, read through exchangelib over HTTP: stable for a fixture
across restarts, UIDs in Exchange's GlobalObjectId hex form, and items without a UID."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

from ewssync.exchange import open_calendar
from ewssync.settings import SyncSettings
from tests.ewssim import EwsSimulator

FIXTURE = "tests/ewssim/fixtures/realistic.json"
# [MS-OXOCAL] 2.2.1.27: class id, instance date (zero: the item), FILETIME, 8 reserved bytes,
# payload size (little-endian) and payload.
GLOBAL_OBJECT_ID = re.compile(
    r"^040000008200E00074C5B7101A82E00800000000[0-9A-F]{16}0{16}10000000[0-9A-F]{32}$"
)


def settings_for(sim) -> SyncSettings:
    conn = SimpleNamespace(
        conn_id="ews_ids", conn_type="ews", host=sim.url, login="demo@example.com",
        password="demo", description=None, port=None, schema=None,
        extra=json.dumps({"app_user": "demo", "timeout_seconds": 5}),
    )  # fmt: skip
    return SyncSettings.from_connection(conn)


def read_ids(shift_to: date) -> dict[tuple[str, str, str], tuple[str, str | None]]:
    """(item type, subject, start relative to the shift) -> (item id, uid), from a freshly
    started server."""
    sim = EwsSimulator()
    sim.add_mailbox("demo@example.com", password="demo")
    sim.load_fixture(FIXTURE, shift_to=shift_to, default_mailbox="demo@example.com")
    sim.start()
    try:
        calendar = open_calendar(settings_for(sim))
        monday = shift_to - timedelta(days=shift_to.weekday())
        start = datetime.combine(monday - timedelta(weeks=2), datetime.min.time(), UTC)
        records = calendar.read_window(start, start + timedelta(weeks=10))
        calendar.close()
    finally:
        sim.stop()
    offset = start - datetime(2026, 11, 9, tzinfo=UTC)
    return {
        (r["item_type"], r["subject"], (r["start"] - offset).isoformat()): (r["item_id"], r["uid"])
        for r in records
    }


def test_ids_and_uids_survive_a_restart_and_a_different_week():
    first = read_ids(date(2026, 11, 23))
    again = read_ids(date(2026, 11, 23))
    # shifted by 14 weeks: the same items keep their ids (an occurrence's id names its date)
    later = read_ids(date(2027, 3, 1))
    assert len(first) > 20
    assert first == again
    both = {key for key in set(later) & set(first) if key[0] == "Single"}
    assert len(both) > 10
    assert {key: later[key] for key in both} == {key: first[key] for key in both}


def test_uids_are_global_object_ids_and_some_items_have_none():
    records = read_ids(date(2026, 11, 23))
    uids = [uid for _, uid in records.values()]
    without = [key for key, (_, uid) in records.items() if uid is None]
    assert without, "the fixture has items Exchange returns without a UID"
    assert all(GLOBAL_OBJECT_ID.match(uid) for uid in uids if uid is not None), uids[:3]
    # occurrences of one series share their master's UID; distinct items have distinct UIDs
    singles = [uid for (kind, _, _), (_, uid) in records.items() if uid and kind == "Single"]
    assert len({u for u in uids if u}) < len([u for u in uids if u])
    assert len(set(singles)) == len(singles) > 10


def test_items_created_at_run_time_get_fresh_ids(sim):
    mailbox = sim.mailbox("alice@example.com")
    start = datetime(2026, 5, 4, 9, tzinfo=UTC)
    first = mailbox.create(subject="a", start=start, end=start + timedelta(hours=1))
    second = mailbox.create(subject="a", start=start, end=start + timedelta(hours=1))
    assert first != second
    assert mailbox.get(first).uid != mailbox.get(second).uid
