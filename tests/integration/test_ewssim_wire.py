"""The simulator answers real EWS: every response body validates against Microsoft's schema
(../shared/ews-schema), in both dialects; series expand as an independent rrule says."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import DAILY, MO, TH, WEEKLY, rrule
from exchangelib import CalendarItem
from lxml import etree

from ewssync.exchange import open_calendar
from ewssync.settings import SyncSettings
from tests.conftest import SHARED
from tests.ewssim import EwsSimulator

SOAP_BODY = "{http://schemas.xmlsoap.org/soap/envelope/}Body"
BERLIN = "W. Europe Standard Time"


@pytest.fixture(scope="module")
def schema():
    xmlschema = pytest.importorskip("xmlschema")
    path = SHARED / "ews-schema" / "messages.xsd"
    if not path.is_file():
        pytest.fail(f"Microsoft's EWS schema is expected at {path} (../shared beside the repo)")
    return xmlschema.XMLSchema(str(path), validation="lax")


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def connection(sim: EwsSimulator, **extra):
    extra = {"app_user": "alice", "exchange_timezone": "Europe/Berlin", **extra}
    fields = {
        "conn_id": "ews_wire", "conn_type": "ews", "host": sim.url, "login": "alice@example.com",
        "password": "secret", "description": "", "port": None, "schema": None, "extra": extra,
    }  # fmt: skip
    return type("Conn", (), fields)()


def record_responses(sim: EwsSimulator) -> list[bytes]:
    """Every answer body the simulator sends from now on, in order (for schema checks)."""
    responses: list[bytes] = []
    serve = sim.handle

    def recording(auth, body):
        status, payload = serve(auth, body)
        responses.append(payload)
        return status, payload

    sim.handle = recording
    return responses


def assert_schema_valid(schema, responses, only: set[str] | None = None) -> set[str]:
    """Every recorded answer body (or those of the operations in ``only``) valid against
    Microsoft's schema; returns the operations seen (of ``only``, when given)."""
    operations = set()
    for payload in responses:
        body = etree.fromstring(payload).find(SOAP_BODY)[0]
        name = etree.QName(body).localname
        if only is not None and name not in only:
            continue
        operations.add(name)
        errors = [error.reason for error in schema.iter_errors(etree.tostring(body).decode())]
        assert errors == [], f"{name}: {errors[:2]}"
    return operations


@pytest.mark.parametrize("dialect", ["Exchange2016", "Exchange2007_SP1"])
def test_every_response_validates_against_the_ews_schema(schema, dialect):
    sim = EwsSimulator(dialect=dialect)
    sim.add_mailbox("alice@example.com", password="secret")
    responses = record_responses(sim)
    mailbox = sim.mailbox("alice@example.com")
    visit = mailbox.create(
        subject="Visit & <repair>", start=at(26, 8), end=at(26, 9), timezone=BERLIN,
        body="<p>Hallo</p>", categories=["Service", "Solar"], reminder_minutes=15,
        sensitivity="Private", location="Hauptstr. 1",
    )  # fmt: skip
    mailbox.create(subject="Holiday", start=at(27, 23), end=at(28, 23), timezone=BERLIN,
                   is_all_day=True, legacy_free_busy="OOF")  # fmt: skip
    series = mailbox.create(
        subject="Standup", start=at(23, 8), end=at(23, 8, 15), timezone=BERLIN,
        recurrence={"pattern": "daily", "interval": 1, "start": date(2026, 11, 23), "count": 5},
    )  # fmt: skip
    mailbox.modify_occurrence(series, at(24, 8), subject="Standup (long)", end=at(24, 9))
    mailbox.delete_occurrence(series, at(25, 8))
    sim.start()
    try:
        calendar = open_calendar(
            SyncSettings.from_connection(
                connection(sim, use_2007_protocol=dialect == "Exchange2007_SP1")
            )
        )
        calendar.probe()
        state, _, _ = calendar.sync_changes(None)
        index = calendar.read_index(at(20, 0), at(30, 0))
        records, missing = calendar.fetch([entry["item_id"] for entry in index] + ["bogus"])
        item_id, change_key = calendar.create(
            {"subject": "test", "start": at(27, 8), "end": at(27, 9)}
        )
        edit = CalendarItem(account=calendar.account, folder=calendar.calendar, id=item_id,
                            changekey=change_key, subject="edited", location="Room 2")  # fmt: skip
        edit.save(update_fields=["subject", "location"])  # UpdateItem
        masters = list(calendar.calendar.all().only("subject", "recurrence"))  # FindItem, no view
        assert any(master.recurrence is not None for master in masters)
        list(calendar.account.fetch([(series, None)], folder=calendar.calendar))  # all properties
        mailbox.update(item_id, subject="edited in Outlook")
        mailbox.mark_read(visit, False)  # a ReadFlagChange in the answer
        calendar.sync_changes(state)
        calendar.delete(item_id)
    finally:
        sim.stop()

    assert len(records) == 6 and missing == ["bogus"]  # 2 singles + 4 of 5 occurrences
    operations = assert_schema_valid(schema, responses)
    assert operations >= {
        "GetFolderResponse", "SyncFolderItemsResponse", "FindItemResponse", "GetItemResponse",
        "CreateItemResponse", "DeleteItemResponse", "UpdateItemResponse",
    }  # fmt: skip


def test_a_corrupted_response_does_not_validate(schema):
    """The check above can fail: an element out of place is reported."""
    body = (
        '<m:GetItemResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"'
        ' xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types"><m:ResponseMessages>'
        '<m:GetItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode>'
        '<m:Items><t:CalendarItem><t:ItemId Id="a" ChangeKey="b"/><t:Start>2026-11-26T08:00:00Z'
        "</t:Start><t:Subject>late</t:Subject></t:CalendarItem></m:Items>"
        "</m:GetItemResponseMessage></m:ResponseMessages></m:GetItemResponse>"
    )
    assert list(schema.iter_errors(body))


@pytest.mark.parametrize(
    ("recurrence", "rule"),
    [
        (
            {"pattern": "daily", "interval": 2, "start": date(2026, 10, 20), "count": 12},
            {"freq": DAILY, "interval": 2, "count": 12},
        ),
        (
            {"pattern": "weekly", "interval": 1, "weekdays": ["Monday", "Thursday"],
             "start": date(2026, 10, 12), "end": date(2026, 12, 31)},
            {"freq": WEEKLY, "byweekday": (MO, TH), "until": datetime(2026, 12, 31, 23, 59)},
        ),
    ],
)  # fmt: skip
def test_a_series_expands_as_an_independent_rrule_says_across_dst(recurrence, rule):
    """Wall-clock 09:00 Berlin on both sides of the DST change (25 Oct 2026); a modified and a
    deleted occurrence replace and remove exactly theirs."""
    berlin = ZoneInfo("Europe/Berlin")
    first = datetime.combine(recurrence["start"], datetime.min.time()).replace(hour=9)
    expected = [
        local.replace(tzinfo=berlin).astimezone(UTC) for local in rrule(dtstart=first, **rule)
    ]
    sim = EwsSimulator()
    mailbox = sim.add_mailbox("alice@example.com", password="secret")
    start = first.replace(tzinfo=berlin)
    series = mailbox.create(subject="Series", start=start, end=start + timedelta(minutes=30),
                            timezone=BERLIN, recurrence=recurrence)  # fmt: skip
    moved, deleted = expected[3], expected[5]
    mailbox.modify_occurrence(series, moved, start=moved + timedelta(hours=2),
                              end=moved + timedelta(hours=3))  # fmt: skip
    mailbox.delete_occurrence(series, deleted)
    seen = mailbox.occurrences(expected[0] - timedelta(days=1), expected[-1] + timedelta(days=1))
    assert [item.recurrence_id for item in seen] == [o for o in expected if o != deleted]
    exception = next(item for item in seen if item.recurrence_id == moved)
    assert exception.item_type == "Exception" and exception.start == moved + timedelta(hours=2)
    assert {item.item_type for item in seen if item.recurrence_id != moved} == {"Occurrence"}
