"""The Graph backend's write side over real HTTP against the Graph simulator (which checks every
request body against Microsoft's CSDL): $batch creates of singles and series (their EXDATEs
deleted through the series' instances), If-Match conflicts, occurrence edits and deletes by
original start, stamps found again, transactionId against duplicates, throttling in a batch."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from ewssync.exchange import oauth
from ewssync.exchange.base import (
    CONFLICT,
    NOT_FOUND,
    AppointmentWrite,
    ItemUpdate,
    OccurrenceRef,
    OccurrenceUpdate,
    Recurrence,
)
from ewssync.exchange.graph import GraphCalendar
from ewssync.settings import SyncSettings  # noqa: I001
from tests.ewssim import EwsSimulator
from tests.graphsim import GraphSimulator, csdl
from tests.identitysim import IdentitySimulator
from tests.integration.test_graph_backend import RESOURCE, conn

MAILBOX = "alice@example.com"
BERLIN = "Europe/Berlin"


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def world():
    with IdentitySimulator(tls=True) as idp:
        idp.add_resource(RESOURCE, ["Calendars.ReadWrite"])
        app = idp.add_app(roles={RESOURCE: ["Calendars.ReadWrite"]})
        ews = EwsSimulator()
        ews.add_mailbox(MAILBOX, password="unused")
        graph = GraphSimulator(source=ews)
        graph.trust(idp)
        answers = graph.record_answers()
        with graph:
            settings = SyncSettings.from_connection(
                conn(
                    graph.url,
                    "",
                    app.secret,
                    api="graph",
                    auth_method="oauth",
                    tenant_id=app.tenant_id,
                    client_id=app.client_id,
                    authority=idp.authority,
                    mailbox=MAILBOX,
                    exchange_timezone=BERLIN,
                    verify_tls=False,  # the identity simulator's throwaway certificate
                )  # fmt: skip
            )
            yield GraphCalendar(settings), graph, graph.mailbox(MAILBOX)
        for _path, _status, document in answers:
            csdl.validate_answer(document)
    oauth.forget()


def single(stamp: str, **fields) -> AppointmentWrite:
    values = {"subject": "Visit", "start": at(2, 8), "end": at(2, 9), "time_zone": BERLIN,
              "location": "Hall", "body": "<p>Bring the ladder</p>", "body_type": "HTML",
              "reminder_minutes": 15, "categories": ("Service",), "legacy_free_busy": "Tentative",
              "sensitivity": "Private", **fields}  # fmt: skip
    return AppointmentWrite(stamp=stamp, **values)


def series(stamp: str, **fields) -> AppointmentWrite:
    return AppointmentWrite(
        stamp=stamp, subject="Standup", start=at(7, 7), end=at(7, 7, 15), time_zone=BERLIN,
        recurrence=Recurrence(pattern="daily", start=date(2026, 12, 7), count=5),
        uid="standup@app", **fields,
    )  # fmt: skip


def test_creates_in_batches_with_their_fields_and_exdates(world):
    calendar, graph, mailbox = world
    records = [single(str(n), subject=f"Visit {n}") for n in range(25)]
    records.append(series("s1", deleted_occurrences=(at(9, 7),)))
    results = calendar.create_items(records)
    assert all(r.ok for r in results), [r.message for r in results if not r.ok]
    # 26 creates: two $batch requests (20 + 6), none sent alone
    assert graph.request_counts["batch:create"] == 26 and graph.request_counts["create"] == 0
    item = mailbox.get(results[0].item_id.removeprefix("AAMk").replace("-", "+").replace("_", "/"))
    assert (item.subject, item.location, item.start, item.end) == (
        "Visit 0",
        "Hall",
        at(2, 8),
        at(2, 9),
    )
    assert (item.timezone, item.reminder_minutes, item.categories) == (
        "W. Europe Standard Time", 15, ["Service"])  # fmt: skip
    assert (item.sensitivity, item.legacy_free_busy, item.body_type) == (
        "Private",
        "Tentative",
        "HTML",
    )
    master = next(i for i in mailbox.items() if i.recurrence)
    assert master.recurrence["count"] == 5 and master.deleted == {at(9, 7)}
    assert master.change_key == results[-1].change_key  # read back after the EXDATE
    # read back: the occurrences name the UID push gave the series
    records_back, _ = calendar.fetch([results[-1].item_id])
    assert records_back[0]["uid"] == "standup@app" and records_back[0]["stamp"] == "s1"


def test_a_retried_create_does_not_duplicate(world):
    calendar, _, mailbox = world
    first = calendar.create_items([single("42")])[0]
    again = calendar.create_items([single("42")])[0]  # the answer of the first was "lost"
    assert first.ok and again.ok and again.item_id == first.item_id
    assert len(mailbox.items()) == 1
    assert calendar.find_stamped(["42", "43"]).keys() == {"42"}


def test_updates_conflict_on_a_stale_change_key(world):
    calendar, _, mailbox = world
    created = calendar.create_items([single("1")])[0]
    fresh = calendar.update_items(
        [ItemUpdate(created.item_id, created.change_key, single("1", subject="New"), ("subject",))]
    )[0]
    assert fresh.ok and fresh.change_key != created.change_key
    stale = calendar.update_items(
        [ItemUpdate(created.item_id, created.change_key, single("1", subject="Old"), ("subject",))]
    )[0]
    assert (stale.ok, stale.error) == (False, CONFLICT)
    moved = calendar.update_items(
        [
            ItemUpdate(
                created.item_id,
                None,
                single("1", start=at(3, 10), end=at(3, 11)),
                ("start", "end", "time_zone", "is_all_day"),
            )
        ]  # fmt: skip
    )[0]
    assert moved.ok
    [item] = mailbox.items()
    assert (item.subject, item.start) == ("New", at(3, 10))
    gone = calendar.update_items([ItemUpdate("AAMkbm9uZQ==", None, single("1"), ("subject",))])[0]
    assert (gone.ok, gone.error) == (False, NOT_FOUND)


def test_occurrences_edited_and_deleted_by_their_original_start(world):
    calendar, _, mailbox = world
    master_id = calendar.create_items([series("s")])[0].item_id
    # occurrences at 07:00 UTC (08:00 Berlin)
    edit = OccurrenceUpdate(
        OccurrenceRef(master_id, at(8, 7), 2),
        AppointmentWrite(stamp="s", subject="Standup (long)", start=at(8, 7), end=at(8, 8),
                         time_zone=BERLIN),
        ("subject", "start", "end", "time_zone", "is_all_day"),
    )  # fmt: skip
    [edited] = calendar.update_occurrences([edit])
    assert edited.ok and edited.item_id != master_id
    [deleted] = calendar.delete_occurrences([OccurrenceRef(master_id, at(10, 7), 4)])
    assert deleted.ok
    [again] = calendar.delete_occurrences([OccurrenceRef(master_id, at(10, 7), 4)])
    assert (again.ok, again.error) == (True, NOT_FOUND)
    master = next(i for i in mailbox.items() if i.recurrence)
    assert master.modified[at(8, 7)]["subject"] == "Standup (long)"
    assert master.modified[at(8, 7)]["end"] == at(8, 8)
    assert master.deleted == {at(10, 7)}


def test_deletes_and_throttling_inside_a_batch(world):
    calendar, graph, mailbox = world
    created = calendar.create_items([single("1"), single("2")])
    graph.inject_fault("throttle429", route="delete", count=1, retry_after=1)
    results = calendar.delete_items([created[0].item_id, created[1].item_id])
    assert all(r.ok and r.error is None for r in results)
    assert mailbox.items() == []
    [again] = calendar.delete_items([created[0].item_id])
    assert (again.ok, again.error) == (True, NOT_FOUND)
    meeting = calendar.create_items([single("3")])[0]
    [cancelled] = calendar.delete_items([meeting.item_id], send_cancellations=True)
    assert cancelled.ok and graph.request_counts["batch:cancel"] == 1


def test_a_create_whose_answer_was_lost_is_not_made_twice(world):
    calendar, graph, mailbox = world
    # Graph processes the batch, then the connection drops before the answer arrives; the
    # backend sends it again and the transactionId makes the second POST return the first event
    graph.inject_fault("drop_connection", route="batch")
    [result] = calendar.create_items([single("7")])
    assert result.ok and graph.request_counts["batch:create"] == 2
    assert len(mailbox.items()) == 1
