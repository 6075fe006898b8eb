"""Two-way sync through the real pipeline steps, PostgreSQL and the simulator over HTTP, in both
dialects: app -> Exchange creates, updates, deletes, series; conflicts; no echoes; crashes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from ewssync.errors import SafetyStop
from ewssync.push import Crash
from tests.ewssim import EwsSimulator
from tests.integration.twoway_support import (
    add_user,
    delete,
    insert,
    live,
    new_run_key,
    resume,
    run_row,
    settings_for,
    sync,
    update,
)

BERLIN = "W. Europe Standard Time"


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.fixture(params=["Exchange2016", "Exchange2007_SP1"])
def two_way(request, db, pg_dsn):
    """A simulator in each dialect, alice's app user, her settings."""
    sim = EwsSimulator(dialect=request.param)
    sim.add_mailbox("alice@example.com", password="secret")
    sim.start()
    user_id = add_user(pg_dsn)
    try:
        yield {
            "sim": sim,
            "mailbox": sim.mailbox("alice@example.com"),
            "dsn": pg_dsn,
            "user": user_id,
            "settings": settings_for(sim),
        }
    finally:
        sim.stop()


def by_stamp(mailbox) -> dict[str, object]:
    return {
        item.extended.get("PublicStrings:ewssyncAppointmentId"): item for item in mailbox.items()
    }


def test_app_appointments_reach_exchange_with_every_field(two_way):
    dsn, user, mb = two_way["dsn"], two_way["user"], two_way["mailbox"]
    settings = settings_for(two_way["sim"], alarm_on_new=True, alarm_minutes=20, sync_private=True)
    visit = insert(
        dsn, user, title="Visit Müller", location="Hauptstr. 1", notes="Bring the ladder",
        starts_at=at(26, 8), ends_at=at(26, 9, 30), show_as="away", category="Service",
        is_private=True,
    )  # fmt: skip
    html = insert(
        dsn, user, title="Briefing", notes="Agenda", notes_html="<p>Agenda</p>",
        starts_at=at(27, 8), ends_at=at(27, 9), reminder_minutes=5, time_zone="Asia/Tokyo",
    )  # fmt: skip
    holiday = insert(
        dsn, user, title="Holiday", starts_at=at(30, 0) - timedelta(hours=1),
        ends_at=at(2, 23, month=12), all_day=True, start_date=date(2026, 11, 30),
        end_date=date(2026, 12, 2), show_as="free",
    )  # fmt: skip
    outside = insert(dsn, user, title="Far away", starts_at=at(1, 8, month=6) + timedelta(days=365),
                     ends_at=at(1, 9, month=6) + timedelta(days=365))  # fmt: skip
    report = sync(settings, dsn)
    assert report["counts"]["pushed_created"] == 3
    items = by_stamp(mb)
    assert str(outside) not in items
    item = items[str(visit)]
    assert (item.subject, item.location, item.body, item.body_type) == (
        "Visit Müller", "Hauptstr. 1", "Bring the ladder", "Text",
    )  # fmt: skip
    assert (item.start, item.end) == (at(26, 8), at(26, 9, 30))
    assert item.timezone == BERLIN  # the connection's Exchange time zone
    assert (item.sensitivity, item.legacy_free_busy, item.categories) == (
        "Private", "OOF", ["Service"],
    )  # fmt: skip
    assert item.reminder_minutes == 20  # alarm_on_new
    briefing = items[str(html)]
    assert (briefing.body, briefing.body_type) == ("<p>Agenda</p>", "HTML")
    assert briefing.reminder_minutes == 5 and briefing.timezone == "Tokyo Standard Time"
    day_off = items[str(holiday)]
    assert day_off.is_all_day and day_off.legacy_free_busy == "Free"
    # local midnights in Berlin: 30 Nov 00:00 to 3 Dec 00:00 (the last day, 2 Dec, inclusive)
    assert (day_off.start, day_off.end) == (at(29, 23), at(2, 23, month=12))

    # No echo: the next run without edits reads nothing and writes nothing.
    two_way["sim"].reset_counters()
    report = sync(settings, dsn)
    assert sum(two_way["sim"].request_counts.values()) <= 2, two_way["sim"].request_counts
    counts = report["counts"]
    assert report["mode"] == "no_change"
    assert counts["pushed_created"] + counts["pushed_updated"] + counts["pushed_deleted"] == 0
    assert len(live(dsn)) == 4  # nothing pulled back as a duplicate


def test_updates_send_only_changed_fields_and_deletes_remove_items(two_way):
    dsn, user, mb, settings = (
        two_way["dsn"],
        two_way["user"],
        two_way["mailbox"],
        two_way["settings"],
    )
    first = insert(dsn, user, title="Visit", location="Hall", starts_at=at(26, 8),
                   ends_at=at(26, 9))  # fmt: skip
    second = insert(dsn, user, title="Call", starts_at=at(27, 8), ends_at=at(27, 9))
    sync(settings, dsn)
    items = by_stamp(mb)
    mb.update(items[str(first)].item_id, location="Hall B")  # an Outlook edit of another field
    sync(settings, dsn)  # pulled
    update(dsn, first, title="Visit (moved)", starts_at=at(26, 10), ends_at=at(26, 11))
    delete(dsn, second)
    two_way["sim"].reset_counters()
    report = sync(settings, dsn)
    counts = two_way["sim"].request_counts
    assert counts["UpdateItem"] == 1 and counts["DeleteItem"] == 1
    assert report["counts"]["pushed_updated"] == 1 and report["counts"]["pushed_deleted"] == 1
    item = mb.get(items[str(first)].item_id)
    assert (item.subject, item.location, item.start) == ("Visit (moved)", "Hall B", at(26, 10))
    assert mb.get(items[str(second)].item_id) is None
    assert [row["title"] for row in live(dsn)] == ["Visit (moved)"]
    # the deletion is not resurrected, the update not echoed
    two_way["sim"].reset_counters()
    report = sync(settings, dsn)
    assert sum(two_way["sim"].request_counts.values()) <= 2
    assert [row["title"] for row in live(dsn)] == ["Visit (moved)"]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("exchange_wins", "Outlook title"), ("app_wins", "App title"), ("newest_wins", "App title")],
)
def test_conflicts_follow_the_policy_and_are_listed(two_way, policy, expected):
    dsn, user, mb = two_way["dsn"], two_way["user"], two_way["mailbox"]
    settings = settings_for(two_way["sim"], conflict_policy=policy)
    appointment = insert(dsn, user, title="Visit", starts_at=at(26, 8), ends_at=at(26, 9))
    sync(settings, dsn)
    item_id = by_stamp(mb)[str(appointment)].item_id
    mb.update(item_id, subject="Outlook title")
    update(dsn, appointment, title="App title")  # later than the Outlook edit
    report = sync(settings, dsn)
    row = run_row(dsn, report["run_key"])
    assert len(row["conflicts"]) == 1
    conflict = row["conflicts"][0]
    assert conflict["appointment_id"] == appointment and conflict["policy"] == policy
    assert conflict["app_fields"] == ["title"] and conflict["exchange_fields"] == ["title"]
    assert conflict["winner"] == ("exchange" if expected == "Outlook title" else "app")
    assert mb.get(item_id).subject == expected
    assert [r["title"] for r in live(dsn)] == [expected]
    # converged: the next run changes nothing
    report = sync(settings, dsn)
    assert mb.get(item_id).subject == expected and [r["title"] for r in live(dsn)] == [expected]
    assert run_row(dsn, report["run_key"])["conflicts"] == []


def test_deleted_on_one_side_modified_on_the_other(two_way):
    dsn, user, mb = two_way["dsn"], two_way["user"], two_way["mailbox"]
    settings = settings_for(two_way["sim"], conflict_policy="app_wins")
    kept = insert(dsn, user, title="Kept", starts_at=at(26, 8), ends_at=at(26, 9))
    gone = insert(dsn, user, title="Gone", starts_at=at(27, 8), ends_at=at(27, 9))
    sync(settings, dsn)
    items = by_stamp(mb)
    mb.delete(items[str(kept)].item_id)  # Outlook deletes, the app edits: the edit wins
    update(dsn, kept, title="Kept (edited)")
    mb.update(items[str(gone)].item_id, subject="Gone (edited)")  # the app deletes: app_wins
    delete(dsn, gone)
    report = sync(settings, dsn)
    kinds = sorted(c["kind"] for c in run_row(dsn, report["run_key"])["conflicts"])
    assert kinds == ["deleted_in_app", "deleted_in_exchange"]
    assert [r["title"] for r in live(dsn)] == ["Kept (edited)"]
    assert sorted(i.subject for i in mb.items()) == ["Kept (edited)"]


def test_a_series_from_the_app_becomes_one_recurring_series(two_way):
    dsn, user, mb, settings = (
        two_way["dsn"],
        two_way["user"],
        two_way["mailbox"],
        two_way["settings"],
    )
    insert(
        dsn, user, title="Standup", starts_at=at(23, 7), ends_at=at(23, 7, 15),
        time_zone="Europe/Berlin", series_key="standup-1",
        recurrence_rule="RRULE:FREQ=WEEKLY;BYDAY=MO,WE,FR;COUNT=9\nEXDATE:20261125T070000Z",
    )  # fmt: skip
    hourly = insert(dsn, user, title="Ping", starts_at=at(26, 7), ends_at=at(26, 8),
                    recurrence_rule="FREQ=HOURLY;COUNT=3")  # fmt: skip
    report = sync(settings, dsn)
    masters = [i for i in mb.items() if i.recurrence]
    assert len(masters) == 1
    master = masters[0]
    assert master.uid == "standup-1"
    assert master.recurrence["pattern"] == "weekly" and master.recurrence["count"] == 9
    assert master.deleted == {at(25, 7)}
    row = run_row(dsn, report["run_key"])
    assert [n["appointment_id"] for n in row["not_pushed"]] == [hourly]
    assert "FREQ=HOURLY" in row["not_pushed"][0]["reason"]
    # the next run brings the occurrences into the app as rows of the series
    sync(settings, dsn)
    occurrences = [r for r in live(dsn) if r["series_key"] == "standup-1" and r["occurrence_key"]]
    assert [r["starts_at"] for r in occurrences][:3] == [at(23, 7), at(27, 7), at(30, 7)]
    # an occurrence edited in the app -> an exception; one deleted -> a deleted occurrence
    friday, monday = occurrences[1], occurrences[2]
    update(dsn, friday["id"], title="Standup (long)", ends_at=at(27, 8))
    delete(dsn, monday["id"])
    sync(settings, dsn)
    master = mb.get(master.item_id)
    assert master.modified[at(27, 7)]["subject"] == "Standup (long)"
    assert at(30, 7) in master.deleted
    # and converged: nothing more to do
    report = sync(settings, dsn)
    counts = report["counts"]
    assert counts["pushed_updated"] + counts["pushed_deleted"] + counts["pushed_created"] == 0
    assert counts["pulled_created"] == 0


def test_a_crash_after_exchange_accepted_the_create_does_not_duplicate(two_way):
    dsn, user, mb, settings = (
        two_way["dsn"],
        two_way["user"],
        two_way["mailbox"],
        two_way["settings"],
    )
    insert(dsn, user, title="Visit", starts_at=at(26, 8), ends_at=at(26, 9))

    def die(point):
        raise Crash(point)

    run_key = new_run_key()
    with pytest.raises(Crash):
        sync(settings, dsn, crash=die, run_key=run_key)
    assert len(mb.items()) == 1  # Exchange has it, Postgres has no link
    two_way["sim"].reset_counters()
    report = resume(settings, dsn, run_key)  # Airflow retries push: it adopts the stamped item
    assert len(mb.items()) == 1 and len(live(dsn)) == 1
    assert report["counts"]["pushed_created"] == 0 and report["counts"]["pushed_adopted"] == 1
    assert "CreateItem" not in two_way["sim"].request_counts
    report = sync(settings, dsn)
    assert len(mb.items()) == 1 and len(live(dsn)) == 1


def test_an_unrecorded_create_found_by_the_next_run_is_adopted_not_imported(two_way):
    """The pull side adopts a stamped item too (its intent gone, e.g. lost with the database)."""
    dsn, user, mb, settings = (
        two_way["dsn"],
        two_way["user"],
        two_way["mailbox"],
        two_way["settings"],
    )
    sync(settings, dsn)
    appointment = insert(dsn, user, title="Visit", starts_at=at(26, 8), ends_at=at(26, 9))
    # Exchange got the stamped item; Postgres never heard back
    mb.create(subject="Visit", start=at(26, 8), end=at(26, 9), timezone=BERLIN,
              extended={"PublicStrings:ewssyncAppointmentId": str(appointment)})  # fmt: skip
    report = sync(settings, dsn)
    assert report["counts"]["pulled_adopted"] == 1 and report["counts"]["pulled_created"] == 0
    assert len(mb.items()) == 1 and len(live(dsn)) == 1


def test_the_push_stops_before_deleting_most_of_the_mailbox(two_way):
    dsn, user, mb, settings = (
        two_way["dsn"],
        two_way["user"],
        two_way["mailbox"],
        two_way["settings"],
    )
    ids = [
        insert(dsn, user, title=f"Visit {n}", starts_at=at(26, 8) + timedelta(minutes=n),
               ends_at=at(26, 9))
        for n in range(30)
    ]  # fmt: skip
    sync(settings, dsn)
    for appointment in ids:
        delete(dsn, appointment)
    with pytest.raises(SafetyStop, match="allow_mass_delete"):
        sync(settings, dsn)
    assert len(mb.items()) == 30
    sync(settings, dsn, allow_mass_delete=True)
    assert mb.items() == []


def test_another_users_appointments_are_never_pushed(two_way):
    dsn, mb, settings = two_way["dsn"], two_way["mailbox"], two_way["settings"]
    bob = add_user(dsn, "bob", "bob@example.com")
    insert(dsn, bob, title="Bob's visit", starts_at=at(26, 8), ends_at=at(26, 9))
    insert(dsn, two_way["user"], title="Private", starts_at=at(26, 8), ends_at=at(26, 9),
           is_private=True)  # fmt: skip
    report = sync(settings, dsn)
    assert mb.items() == []
    assert [n["reason"] for n in run_row(dsn, report["run_key"])["not_pushed"]] == [
        "private (sync_private is off)"
    ]


def test_batches_of_one_hundred(two_way):
    dsn, user, settings = two_way["dsn"], two_way["user"], two_way["settings"]
    for n in range(250):
        insert(dsn, user, title=f"Visit {n}", starts_at=at(26, 8) + timedelta(minutes=n),
               ends_at=at(26, 9) + timedelta(minutes=n))  # fmt: skip
    two_way["sim"].reset_counters()
    report = sync(settings, dsn)
    assert report["counts"]["pushed_created"] == 250
    assert two_way["sim"].request_counts["CreateItem"] == 3


def test_throttled_creates_are_retried_after_the_back_off(two_way):
    dsn, user, settings, sim = two_way["dsn"], two_way["user"], two_way["settings"], two_way["sim"]
    insert(dsn, user, title="Visit", starts_at=at(26, 8), ends_at=at(26, 9))
    sim.inject_fault("server_busy", operation="CreateItem", count=1, back_off_ms=200)
    report = sync(settings, dsn)
    assert report["counts"]["pushed_created"] == 1
    assert len(two_way["mailbox"].items()) == 1
    assert sim.request_counts["CreateItem"] == 2  # refused (not applied), then retried
