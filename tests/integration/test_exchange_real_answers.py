"""The EWS backend against answers shaped like real Exchange's, through exchangelib over HTTP:
deleted occurrences, throttling in its three forms, zones the wire defines, meetings."""

from __future__ import annotations

from datetime import timedelta

from ewssync.exchange import open_calendar
from tests.integration.test_exchange import settings_for, utc

BERLIN = "W. Europe Standard Time"


def weekly_series(mailbox, count: int = 4) -> str:
    start = utc(2026, 5, 4, 7)
    return mailbox.create(
        subject="Weekly",
        start=start,
        end=start + timedelta(minutes=30),
        timezone=BERLIN,
        recurrence={"pattern": "weekly", "interval": 1, "weekdays": ["Monday"], "count": count},
    )


# --- ErrorCalendarOccurrenceIsDeletedFromRecurrence --------------------------------------------


def test_an_occurrence_deleted_from_its_series_is_gone_not_an_error(sim):
    mailbox = sim.mailbox("alice@example.com")
    weekly_series(mailbox)
    calendar = open_calendar(settings_for(sim))
    index = calendar.read_index(utc(2026, 5, 1), utc(2026, 6, 1))
    ids = [entry["item_id"] for entry in sorted(index, key=lambda e: e["start"])]
    assert len(ids) == 4
    master = mailbox.items()[0]
    mailbox.delete_occurrence(master.item_id, utc(2026, 5, 11, 7))
    records, missing = calendar.fetch(ids)
    assert missing == [ids[1]]
    assert [r["item_id"] for r in records] == [ids[0], *ids[2:]]
    # Exchange names the reason: the wire said ErrorCalendarOccurrenceIsDeletedFromRecurrence
    assert sim.last_error_codes["GetItem"] == ["ErrorCalendarOccurrenceIsDeletedFromRecurrence"]
    calendar.delete(ids[1])  # deleting it again is fine too
    assert sim.last_error_codes["DeleteItem"] == ["ErrorCalendarOccurrenceIsDeletedFromRecurrence"]
