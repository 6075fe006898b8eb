"""The simulator's answers to everything push sends (bulk CreateItem with stamps and series,
UpdateItem of items and of occurrences by index, DeleteItem of occurrences, FindItem by stamp,
GetItem of stamps) validate against Microsoft's EWS schema, in both dialects."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from ewssync.exchange import (
    AppointmentWrite,
    ItemUpdate,
    OccurrenceRef,
    OccurrenceUpdate,
    Recurrence,
    open_calendar,
)
from ewssync.settings import SyncSettings
from tests.ewssim import EwsSimulator
from tests.integration.test_ewssim_wire import (  # noqa: F401
    SOAP_BODY,
    assert_schema_valid,
    connection,
    record_responses,
    schema,
)

T0 = datetime(2026, 11, 23, 7, tzinfo=UTC)


@pytest.mark.parametrize("dialect", ["Exchange2016", "Exchange2007_SP1"])
def test_push_responses_validate_against_the_ews_schema(schema, dialect):  # noqa: F811
    sim = EwsSimulator(dialect=dialect)
    sim.add_mailbox("alice@example.com", password="secret")
    responses = record_responses(sim)
    sim.start()
    try:
        calendar = open_calendar(
            SyncSettings.from_connection(
                connection(sim, use_2007_protocol=dialect == "Exchange2007_SP1")
            )
        )
        single = AppointmentWrite(
            stamp="1", subject="Visit & <repair>", start=T0 + timedelta(days=3),
            end=T0 + timedelta(days=3, hours=1), time_zone="Europe/Berlin", body="<p>x</p>",
            body_type="HTML", sensitivity="Private", reminder_minutes=10,
            legacy_free_busy="OOF", categories=("Service",), uid="uid-1",
        )  # fmt: skip
        series = AppointmentWrite(
            stamp="2", subject="Standup", start=T0, end=T0 + timedelta(minutes=15),
            time_zone="Europe/Berlin", uid="standup@app",
            recurrence=Recurrence("weekly", start=date(2026, 11, 23), weekdays=("Monday",
                                  "Wednesday"), count=6),
            deleted_occurrences=(T0 + timedelta(days=2),),
        )  # fmt: skip
        created = calendar.create_items([single, series])
        assert all(result.ok for result in created)
        found = calendar.find_stamped(["1", "2", "3"])
        assert sorted(found) == ["1", "2"]
        records, _ = calendar.fetch([created[0].item_id])
        assert records[0]["stamp"] == "1"
        moved = AppointmentWrite(**{**single.__dict__, "subject": "moved"})
        updated = calendar.update_items(
            [ItemUpdate(created[0].item_id, created[0].change_key, moved, ("subject",)),
             ItemUpdate(created[0].item_id, "stale", moved, ("subject",))]
        )  # fmt: skip
        assert [r.ok for r in updated] == [True, False]
        ref = OccurrenceRef(created[1].item_id, T0 + timedelta(days=7), 3)
        exception = AppointmentWrite(**{**series.__dict__, "subject": "Standup (long)",
                                        "recurrence": None})  # fmt: skip
        assert calendar.update_occurrences([OccurrenceUpdate(ref, exception, ("subject",))])[0].ok
        gone = OccurrenceRef(created[1].item_id, T0 + timedelta(days=9), 4)
        assert calendar.delete_occurrences([gone, gone])[1].error == "not_found"
        assert all(r.ok for r in calendar.delete_items([created[0].item_id, "bogus"]))
    finally:
        sim.stop()

    operations = assert_schema_valid(schema, responses)
    assert operations >= {
        "CreateItemResponse", "FindItemResponse", "GetItemResponse", "UpdateItemResponse",
        "DeleteItemResponse",
    }  # fmt: skip
