"""The lean reading of GetItem / FindItem / SyncFolderItems answers (ews_lean, setting
lean_parser) gives exactly the records and changes exchangelib's reading gives: the realistic
fixture and every Windows zone (timed and all-day), in both dialects, over HTTP from the
simulator; and recorded answers, as sent and altered into the shapes real servers also send
(offsets, naive times, empty or odd values)."""

from __future__ import annotations

import copy
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from exchangelib import CalendarItem
from lxml import etree

from ewssync.exchange import open_calendar
from ewssync.exchange.ews_lean import Reader, ZoneCache
from tests.ewssim import EwsSimulator
from tests.ewssim.zones import WINDOWS_ZONES
from tests.integration.test_ewssim_wire import assert_schema_valid as assert_valid
from tests.integration.test_ewssim_wire import record_responses, schema  # noqa: F401 (fixture)
from tests.integration.test_exchange import settings_for

FIXTURE = Path(__file__).resolve().parents[1] / "ewssim" / "fixtures" / "realistic.json"
SOAP_BODY = "{http://schemas.xmlsoap.org/soap/envelope/}Body"
T = "{http://schemas.microsoft.com/exchange/services/2006/types}"
DIALECTS = ["Exchange2016", "Exchange2007_SP1"]


def simulator(dialect: str) -> EwsSimulator:
    sim = EwsSimulator(dialect=dialect)
    sim.add_mailbox("alice@example.com", password="secret")
    return sim


def both_readings(sim, window, dialect: str, **extra):
    """(index, records) read with exchangelib's objects and with ews_lean, and the answers."""
    answers = record_responses(sim)
    read = {}
    for lean in (False, True):
        settings = settings_for(
            sim, lean_parser=lean, use_2007_protocol=dialect == "Exchange2007_SP1",
            exchange_timezone="Europe/Berlin", timeout_seconds=60, **extra,
        )  # fmt: skip
        calendar = open_calendar(settings, view_page_size=200)
        index = calendar.read_index(*window)
        records, missing = calendar.fetch([entry["item_id"] for entry in index] + ["gone-id"])
        assert missing == ["gone-id"]
        read[lean] = (index, records)
    return read[False], read[True], answers


def assert_schema_valid(schema, answers) -> set[str]:  # noqa: F811
    """The GetItem and FindItem answers (the ones the lean reading parses) schema-valid."""
    return assert_valid(schema, answers, only={"GetItemResponse", "FindItemResponse"})


@pytest.mark.parametrize("dialect", DIALECTS)
def test_the_realistic_calendar_reads_the_same_both_ways(schema, dialect):  # noqa: F811
    sim = simulator(dialect)
    sim.load_fixture(FIXTURE, default_mailbox="alice@example.com")
    sim.start()
    try:
        window = (datetime(2026, 9, 28, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC))
        ours, lean, answers = both_readings(sim, window, dialect)
    finally:
        sim.stop()
    index, records = ours
    assert len(records) > 40  # singles, occurrences, exceptions, all-day, meetings
    assert {r["item_type"] for r in records} >= {"Single", "Occurrence", "Exception"}
    assert any(r["is_all_day"] for r in records) and any(r["organizer"] for r in records)
    assert any(r["sensitivity"] != "Normal" for r in records)
    assert lean == ours
    assert assert_schema_valid(schema, answers) == {"GetItemResponse", "FindItemResponse"}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_sync_folder_items_reads_the_same_both_ways(schema, dialect):  # noqa: F811
    """The whole folder from no state (pages of 7), then every kind of change: created,
    updated, deleted, a read flag, an occurrence modified and one deleted from its series."""
    sim = simulator(dialect)
    sim.load_fixture(FIXTURE, default_mailbox="alice@example.com")
    mailbox = sim.mailbox("alice@example.com")
    held = len(mailbox.items())
    sim.start()
    answers = record_responses(sim)

    def changes(lean: bool, state: str | None):
        settings = settings_for(
            sim, lean_parser=lean, use_2007_protocol=dialect == "Exchange2007_SP1",
            exchange_timezone="Europe/Berlin",
        )  # fmt: skip
        return open_calendar(settings).sync_changes(state, max_changes=7)

    try:
        read = {lean: [changes(lean, None)] for lean in (False, True)}
        singles = [item for item in mailbox.items() if not item.recurrence]
        series = next(item for item in mailbox.items() if item.recurrence)
        first, second = mailbox.expand(series.item_id, series.start + timedelta(days=60))[:2]
        mailbox.update(singles[0].item_id, subject="moved")
        mailbox.delete(singles[1].item_id)
        mailbox.mark_read(singles[2].item_id, False)
        mailbox.modify_occurrence(series.item_id, first, subject="exception")
        mailbox.delete_occurrence(series.item_id, second)
        mailbox.create(subject="new", start=singles[0].start, end=singles[0].end)
        for lean in (False, True):
            read[lean].append(changes(lean, read[lean][0][0]))
    finally:
        sim.stop()
    ours, lean = read[False], read[True]
    assert len(ours[0][1]) == held > 7  # several pages
    kinds = sorted(change["kind"] for change in ours[1][1])
    assert kinds == ["create", "delete", "update", "update"]  # a read flag alone is no change
    assert {c["item_type"] for c in ours[0][1]} == {"Single", "RecurringMaster"}
    assert [changes for _, changes, _ in lean] == [changes for _, changes, _ in ours]
    assert assert_valid(schema, answers, only={"SyncFolderItemsResponse"}) == {
        "SyncFolderItemsResponse"
    }


@pytest.mark.slow
@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_windows_zone_reads_the_same_both_ways(schema, dialect):  # noqa: F811
    """A timed and an all-day item in each Windows zone; a few with only the display name or no
    zone on the wire."""
    sim = simulator(dialect)
    mailbox = sim.mailbox("alice@example.com")
    day = date(2026, 3, 2)
    for n, windows_id in enumerate(sorted(WINDOWS_ZONES)):
        zone = ZoneInfo(WINDOWS_ZONES[windows_id])
        when = day + timedelta(days=n % 60)
        start = datetime.combine(when, time(9, 30), tzinfo=zone)
        wire = {} if n % 17 else {"zone_on_wire": "name" if n % 2 else "none"}
        mailbox.create(subject=f"{windows_id} visit", start=start,
                       end=start + timedelta(minutes=45), timezone=windows_id, **wire)  # fmt: skip
        midnight = datetime.combine(when, time(0), tzinfo=zone)
        mailbox.create(subject=f"{windows_id} day", start=midnight,
                       end=datetime.combine(when + timedelta(days=1), time(0), tzinfo=zone),
                       timezone=windows_id, is_all_day=True, **wire)  # fmt: skip
    sim.start()
    try:
        window = (datetime(2026, 2, 25, tzinfo=UTC), datetime(2026, 5, 10, tzinfo=UTC))
        ours, lean, answers = both_readings(sim, window, dialect)
    finally:
        sim.stop()
    assert len(ours[1]) == 2 * len(WINDOWS_ZONES)
    assert lean == ours
    assert_schema_valid(schema, answers)


# --- recorded answers, as sent and altered ------------------------------------------------------


def _set(item, name: str, text: str | None) -> None:
    child = item.find(f"{T}{name}")
    if child is not None:
        if text is None:
            item.remove(child)
        else:
            child.text = text


ALTERATIONS = {
    "as sent": lambda item: None,
    "offset times": lambda item: [
        _set(item, name, (el.text[:-1] + "+00:00") if el is not None and el.text else None)
        for name in ("Start", "End", "LastModifiedTime")
        for el in [item.find(f"{T}{name}")]
    ],
    "naive times (the account's zone)": lambda item: [
        _set(item, name, el.text[:-1] if el is not None and el.text else None)
        for name in ("Start", "End", "RecurrenceId")
        for el in [item.find(f"{T}{name}")]
    ],
    "fractional seconds": lambda item: _set(item, "LastModifiedTime", "2026-11-20T10:11:12.345Z"),
    "an unreadable start (quarantined downstream)": lambda item: _set(item, "Start", "soon"),
    "xs:boolean digits": lambda item: [
        _set(item, "IsAllDayEvent", "1"),
        _set(item, "ReminderIsSet", "0"),
    ],  # fmt: skip
    "empty texts": lambda item: [
        _set(item, "Subject", ""),
        _set(item, "Location", ""),
        _set(item, "Sensitivity", ""),
    ],  # fmt: skip
    "missing fields": lambda item: [
        _set(item, name, None)
        for name in (
            "Sensitivity",
            "LegacyFreeBusyStatus",
            "CalendarItemType",
            "TimeZone",
            "ReminderMinutesBeforeStart",
            "Categories",
            "MyResponseType",
        )
    ],  # fmt: skip
    "odd reminder": lambda item: _set(item, "ReminderMinutesBeforeStart", "soon"),
    "no zone definitions": lambda item: [
        item.remove(el)
        for name in ("StartTimeZone", "EndTimeZone", "MeetingTimeZone")
        for el in item.findall(f"{T}{name}")
    ],
}


@pytest.fixture(scope="module", params=DIALECTS)
def recorded(request):
    """The GetItem answers of reading the realistic calendar, and the calendar that read them."""
    sim = simulator(request.param)
    sim.load_fixture(FIXTURE, default_mailbox="alice@example.com")
    sim.start()
    answers = record_responses(sim)
    try:
        settings = settings_for(
            sim, use_2007_protocol=request.param == "Exchange2007_SP1",
            exchange_timezone="Europe/Berlin", lean_parser=False,
        )  # fmt: skip
        calendar = open_calendar(settings)
        window = (datetime(2026, 9, 28, tzinfo=UTC), datetime(2027, 2, 1, tzinfo=UTC))
        calendar.fetch([entry["item_id"] for entry in calendar.read_index(*window)])
    finally:
        sim.stop()
    items = [
        item
        for payload in answers
        if b"GetItemResponse" in payload
        for item in etree.fromstring(payload).iter(f"{T}CalendarItem")
    ]
    return calendar, items


@pytest.mark.parametrize("alteration", sorted(ALTERATIONS))
def test_recorded_answers_read_the_same_both_ways(recorded, alteration):
    calendar, items = recorded
    assert len(items) > 40
    reader = Reader(calendar.account)
    for original in items:
        item = copy.deepcopy(original)
        ALTERATIONS[alteration](item)
        lean = outcome(lambda item=item: calendar._record(reader.item(copy.deepcopy(item))))
        ours = outcome(
            lambda item=item: calendar._record(
                CalendarItem.from_xml(elem=item, account=calendar.account)
            )
        )
        assert lean == ours, etree.tostring(item)[:300]
        # every odd item is a record (the load repairs or quarantines it), never a failure
        assert isinstance(ours, dict), (ours, etree.tostring(item)[:300])


def outcome(read):
    """The record, or the kind of failure."""
    try:
        return read()
    except Exception as exc:
        return type(exc)


def test_the_zone_cache_keys_on_id_display_name_and_periods():
    def zone(attrs: dict, biases: tuple[str, ...] = ()):
        elem = etree.Element(f"{T}StartTimeZone", attrs)
        periods = etree.SubElement(elem, f"{T}Periods")
        for bias in biases:
            etree.SubElement(periods, f"{T}Period", {"Bias": bias, "Name": "Standard", "Id": "x"})
        return elem

    cache = ZoneCache()
    custom = {"Id": "Customized Time Zone", "Name": "(UTC+01:00) Amsterdam, Berlin"}
    first = cache.zone(zone(custom, ("-PT60M",)), "UTC")
    assert cache.zone(zone(custom, ("-PT60M",)), "UTC") is first
    # the same id with another definition or display name is another zone
    other_periods = cache.zone(zone(custom, ("-PT120M",)), "UTC")
    other_name = cache.zone(zone({**custom, "Name": "(UTC+02:00) Athens"}, ("-PT60M",)), "UTC")
    assert first is not other_periods and first is not other_name
    assert first.ewssync_periods == [timedelta(hours=1)]
    assert other_periods.ewssync_periods == [timedelta(hours=2)]
    assert other_name.ms_name == "(UTC+02:00) Athens"
    assert first.key == other_periods.key == "Europe/Amsterdam"  # its display name says so
