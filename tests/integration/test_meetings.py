"""Meetings through the whole run (simulator over HTTP, real Postgres): cancelled ones never
land, declined ones land unless skip_declined, tentative ones show as tentative."""

from __future__ import annotations

import psycopg2

from tests.integration.test_reliability import at, settings_for, sync, users  # noqa: F401

ORGANIZER = "dispatch@example.com"


def meeting(mailbox, subject, day, response, **fields) -> str:
    return mailbox.create(
        subject=subject, start=at(day, 9), end=at(day, 10), timezone="W. Europe Standard Time",
        organizer=ORGANIZER, organizer_name="Disposition", my_response=response,
        attendees=[{"email": "alice@example.com", "name": "Alice", "response": response}],
        **fields,
    )  # fmt: skip


def shown(dsn) -> dict[str, str]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT title, show_as FROM calendar.live_appointments ORDER BY title")
        return dict(cur.fetchall())


def test_meetings_land_by_the_owners_answer(sim, pg_dsn, users):  # noqa: F811
    mailbox = sim.mailbox("alice@example.com")
    meeting(mailbox, "Accepted", 26, "Accept", legacy_free_busy="Busy")
    meeting(mailbox, "Tentative", 26, "Tentative", legacy_free_busy="Busy")
    meeting(mailbox, "Declined", 27, "Decline", legacy_free_busy="Free")
    meeting(mailbox, "Unanswered", 27, "NoResponseReceived", legacy_free_busy="Tentative")
    meeting(mailbox, "Cancelled", 28, "Accept", legacy_free_busy="Free", is_cancelled=True)
    mailbox.create(subject="Own meeting", start=at(30, 9), end=at(30, 10), organizer=
                   "alice@example.com", my_response="Organizer")  # fmt: skip
    mailbox.create(subject="Appointment", start=at(30, 11), end=at(30, 12))

    report = sync(settings_for(sim), pg_dsn, "r1")
    assert shown(pg_dsn) == {
        "Accepted": "busy", "Tentative": "tentative", "Declined": "free",
        "Unanswered": "tentative", "Own meeting": "busy", "Appointment": "busy",
    }  # fmt: skip
    assert report["counts"]["skipped_cancelled"] == 1


def test_skip_declined_leaves_declined_meetings_out(sim, pg_dsn, users):  # noqa: F811
    mailbox = sim.mailbox("alice@example.com")
    meeting(mailbox, "Declined", 27, "Decline", legacy_free_busy="Free")
    meeting(mailbox, "Accepted", 26, "Accept")
    report = sync(settings_for(sim, skip_declined=True), pg_dsn, "r1")
    assert shown(pg_dsn) == {"Accepted": "busy"}
    assert report["counts"]["skipped_declined"] == 1


def test_a_meeting_cancelled_or_declined_after_it_landed_leaves_the_app(sim, pg_dsn, users):  # noqa: F811
    mailbox = sim.mailbox("alice@example.com")
    cancelled = meeting(mailbox, "Will be cancelled", 26, "Accept")
    declined = meeting(mailbox, "Will be declined", 27, "Accept")
    tentative = meeting(mailbox, "Will be tentative", 27, "Accept")
    settings = settings_for(sim, skip_declined=True)
    sync(settings, pg_dsn, "r1")
    assert set(shown(pg_dsn)) == {"Will be cancelled", "Will be declined", "Will be tentative"}
    mailbox.update(cancelled, is_cancelled=True, subject="Canceled: Will be cancelled")
    mailbox.update(declined, my_response="Decline", legacy_free_busy="Free")
    mailbox.update(tentative, my_response="Tentative")
    sync(settings, pg_dsn, "r2")
    assert shown(pg_dsn) == {"Will be tentative": "tentative"}
