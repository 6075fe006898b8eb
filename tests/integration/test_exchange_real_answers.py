"""The EWS backend against answers shaped like real Exchange's, through exchangelib over HTTP:
deleted occurrences, throttling in its three forms, zones the wire defines, meetings."""

from __future__ import annotations

import logging
from datetime import date, timedelta

import pytest
from lxml import etree

from ewssync.errors import ExchangeError
from ewssync.exchange import open_calendar
from tests.conftest import SHARED
from tests.ewssim import throttling
from tests.integration.test_exchange import settings_for, utc

SOAP_BODY = "{http://schemas.xmlsoap.org/soap/envelope/}Body"

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


# --- throttling: three forms, each back-off honoured ------------------------------------------


def throttled_then_served(sim, operation: str) -> float:
    """The pause between the refused request and its retry (the simulator's clock)."""
    arrivals = sim.arrivals[operation]
    assert [throttled for _, throttled in arrivals] == [True, False], arrivals
    return arrivals[1][0] - arrivals[0][0]


def asked_waits(caplog) -> list[str]:
    return [
        r.getMessage().split("waiting ")[1].split(" s")[0]
        for r in caplog.records
        if "EWS throttling" in r.getMessage()
    ]


@pytest.mark.parametrize(
    ("kind", "params", "asked"),
    [
        ("server_busy", {"back_off_ms": 300}, "0.3"),  # HTTP 500 fault, BackOffMilliseconds
        ("http503", {"retry_after": 1}, "1"),  # no body, Retry-After in seconds
        ("http503", {}, "2"),  # no body, no hint: our first wait (exchangelib's was 10 s)
        ("busy_in_message", {"back_off_ms": 400}, "0.4"),  # HTTP 200, inner ErrorServerBusy
        ("busy_in_message", {}, "2"),
    ],
)
def test_each_throttling_form_waits_as_long_as_the_server_asks(sim, caplog, kind, params, asked):
    caplog.set_level(logging.WARNING, logger="ewssync")
    calendar = open_calendar(settings_for(sim, timeout_seconds=10))
    calendar.probe()  # connection warm: only the throttled request is retried
    sim.reset_counters()
    sim.inject_fault(kind, operation="FindItem", count=1, **params)
    assert calendar.read_index(utc(2026, 5, 1), utc(2026, 5, 8)) == []
    assert asked_waits(caplog) == [asked]
    assert throttled_then_served(sim, "FindItem") >= float(asked)


def test_retry_after_as_an_http_date_is_honoured(sim, caplog):
    caplog.set_level(logging.WARNING, logger="ewssync")
    calendar = open_calendar(settings_for(sim, timeout_seconds=10))
    calendar.probe()
    sim.reset_counters()
    sim.inject_fault("http503", operation="FindItem", count=1, retry_after="date:3")
    assert calendar.read_index(utc(2026, 5, 1), utc(2026, 5, 8)) == []
    (asked,) = asked_waits(caplog)
    assert 1.0 < float(asked) <= 3.0  # the date has whole seconds: 2 to 3 s from now
    assert throttled_then_served(sim, "FindItem") >= float(asked)


@pytest.mark.parametrize("operation", ["SyncFolderItems", "GetItem"])
def test_change_list_and_item_reads_are_retried_like_the_view(sim, caplog, operation):
    caplog.set_level(logging.WARNING, logger="ewssync")
    mailbox = sim.mailbox("alice@example.com")
    weekly_series(mailbox)
    single = mailbox.create(subject="One", start=utc(2026, 5, 5, 9), end=utc(2026, 5, 5, 10))
    calendar = open_calendar(settings_for(sim, timeout_seconds=10))
    calendar.probe()
    sim.reset_counters()
    sim.inject_fault("busy_in_message", operation=operation, count=1, back_off_ms=200)
    if operation == "SyncFolderItems":
        _, changes, _ = calendar.sync_changes(None)
        assert {c["item_id"] for c in changes} == {m.item_id for m in mailbox.items()}
    else:
        records, missing = calendar.fetch([single])
        assert [r["subject"] for r in records] == ["One"] and missing == []
    assert asked_waits(caplog) == ["0.2"]
    assert throttled_then_served(sim, operation) >= 0.2


def test_a_dropped_change_list_answer_is_read_again(sim):
    mailbox = sim.mailbox("alice@example.com")
    mailbox.create(subject="One", start=utc(2026, 5, 5, 9), end=utc(2026, 5, 5, 10))
    calendar = open_calendar(settings_for(sim, timeout_seconds=3))
    calendar.probe()
    sim.inject_fault("drop_connection", operation="SyncFolderItems", count=1)
    state, changes, _ = calendar.sync_changes(None)
    assert [c["kind"] for c in changes] == ["create"] and state


def test_too_long_a_back_off_gives_up_with_a_throttling_message(sim):
    calendar = open_calendar(settings_for(sim, timeout_seconds=1))  # max_wait 2 s
    calendar.probe()
    sim.inject_fault("busy_in_message", operation="FindItem", count=1, back_off_ms=60_000)
    with pytest.raises(ExchangeError, match="throttling"):
        calendar.read_index(utc(2026, 5, 1), utc(2026, 5, 8))


@pytest.mark.parametrize("operation", ["GetItem", "FindItem", "SyncFolderItems", "GetFolder"])
def test_the_throttled_answers_are_schema_valid(operation):
    xmlschema = pytest.importorskip("xmlschema")
    schema = xmlschema.XMLSchema(str(SHARED / "ews-schema" / "messages.xsd"), validation="lax")
    requests = {
        "GetItem": "<m:GetItem><m:ItemShape><t:BaseShape>IdOnly</t:BaseShape></m:ItemShape>"
        '<m:ItemIds><t:ItemId Id="a"/><t:ItemId Id="b"/></m:ItemIds></m:GetItem>',
        "FindItem": '<m:FindItem Traversal="Shallow"/>',
        "SyncFolderItems": "<m:SyncFolderItems/>",
        "GetFolder": '<m:GetFolder><m:FolderIds><t:FolderId Id="x"/></m:FolderIds></m:GetFolder>',
    }
    body = (
        f'<s:Envelope xmlns:s="{throttling.S}" xmlns:m="{throttling.M}" xmlns:t="{throttling.T}">'
        f"<s:Body>{requests[operation]}</s:Body></s:Envelope>"
    ).encode()
    answer = throttling.busy_in_messages(body, 'Version="V2017_07_11"', 500)
    response = etree.fromstring(answer).find(SOAP_BODY)[0]
    assert list(schema.iter_errors(etree.tostring(response).decode())) == []
    messages = response.find(f"{{{throttling.M}}}ResponseMessages")
    assert len(messages) == (2 if operation == "GetItem" else 1)
    # the check can fail: a misspelt element is reported
    broken = etree.tostring(response).decode().replace("ResponseCode>", "ResponseCod>", 2)
    assert list(schema.iter_errors(broken))


# --- all-day dates from what the wire carries --------------------------------------------------

ALL_DAY_CASES = [
    # subject, start, end (UTC), zone fields of the item, expected dates (inclusive), IANA zone
    (
        "Thanksgiving (imported, custom zone with US Eastern rules)",
        utc(2026, 11, 26, 5), utc(2026, 11, 27, 5),
        {"timezone": "Customized Time Zone", "timezone_rules": "America/New_York"},
        (date(2026, 11, 26), date(2026, 11, 26)), None,
    ),
    (
        "Tokyo fair (no zone on the wire)",
        utc(2026, 11, 25, 15), utc(2026, 11, 27, 15),
        {"timezone": "Tokyo Standard Time", "zone_on_wire": "none"},
        (date(2026, 11, 26), date(2026, 11, 27)), None,
    ),
    (
        "Sydney holiday (only the display name on the wire)",
        utc(2026, 12, 24, 13), utc(2026, 12, 25, 13),
        {"timezone": "AUS Eastern Standard Time", "zone_on_wire": "name"},
        (date(2026, 12, 25), date(2026, 12, 25)), "Australia/Sydney",
    ),
    (
        "Calgary training (a zone CLDR added after exchangelib's copy)",
        utc(2026, 11, 30, 7), utc(2026, 12, 2, 7),
        {"timezone": "Alberta Standard Time"},
        (date(2026, 11, 30), date(2026, 12, 1)), "America/Edmonton",
    ),
    (
        "Berlin week across nothing special",
        utc(2026, 11, 22, 23), utc(2026, 11, 27, 23),
        {"timezone": "W. Europe Standard Time"},
        (date(2026, 11, 23), date(2026, 11, 27)), "Europe/Berlin",
    ),
    (
        "Auckland day (custom id, Windows display name)",
        utc(2026, 12, 1, 11), utc(2026, 12, 2, 11),
        {"timezone": "Customized Time Zone", "timezone_rules": "Pacific/Auckland",
         "timezone_name": "(UTC+12:00) Auckland, Wellington"},
        (date(2026, 12, 2), date(2026, 12, 2)), "Pacific/Auckland",
    ),
]  # fmt: skip


@pytest.mark.parametrize("connection_zone", ["America/Los_Angeles", "Asia/Tokyo", "Europe/Berlin"])
def test_all_day_dates_are_the_items_own_whatever_the_connections_zone(sim, connection_zone):
    mailbox = sim.mailbox("alice@example.com")
    ids = {
        mailbox.create(subject=subject, start=start, end=end, is_all_day=True, **zone): case
        for case in ALL_DAY_CASES
        for subject, start, end, zone, *_ in [case]
    }
    calendar = open_calendar(settings_for(sim, exchange_timezone=connection_zone))
    records, missing = calendar.fetch(list(ids))
    assert missing == []
    for record in records:
        subject, start, end, _, dates, iana = ids[record["item_id"]]
        assert (record["start_date"], record["end_date"]) == dates, subject
        assert (record["start"], record["end"]) == (start, end), subject  # as Exchange sent them
        assert record["timezone_iana"] == iana, subject
    # the cheap listing dates them the same way
    index = calendar.read_index(utc(2026, 11, 20), utc(2026, 12, 31))
    assert {e["item_id"]: (e["start"], e["end"]) for e in index} == {
        item_id: (case[1], case[2]) for item_id, case in ids.items()
    }


# --- the simulator's masters and meetings, as exchangelib reads them -----------------------------


def test_a_master_names_its_first_last_modified_and_deleted_occurrences(sim):
    mailbox = sim.mailbox("alice@example.com")
    master_id = weekly_series(mailbox, count=5)
    mailbox.modify_occurrence(master_id, utc(2026, 5, 11, 7), subject="moved", start=utc(2026, 5, 12, 7), end=utc(2026, 5, 12, 8))  # fmt: skip
    mailbox.delete_occurrence(master_id, utc(2026, 5, 18, 7))
    calendar = open_calendar(settings_for(sim))
    (master,) = calendar.account.fetch([(master_id, None)], folder=calendar.calendar)
    assert master.type == "RecurringMaster"
    assert master.is_recurring is False  # as Exchange answers for a master
    assert master.first_occurrence.start == utc(2026, 5, 4, 7)
    assert master.last_occurrence.start == utc(2026, 6, 1, 7)
    (modified,) = master.modified_occurrences
    assert (modified.original_start, modified.start) == (utc(2026, 5, 11, 7), utc(2026, 5, 12, 7))
    assert [d.start for d in master.deleted_occurrences] == [utc(2026, 5, 18, 7)]
    never_ending = mailbox.create(
        subject="Daily", start=utc(2026, 5, 4, 6), end=utc(2026, 5, 4, 7),
        recurrence={"pattern": "daily", "interval": 1},
    )  # fmt: skip
    (daily,) = calendar.account.fetch([(never_ending, None)], folder=calendar.calendar)
    assert daily.first_occurrence is not None and daily.last_occurrence is None


def test_a_meeting_carries_organizer_attendees_response_and_state(sim):
    mailbox = sim.mailbox("alice@example.com")
    item_id = mailbox.create(
        subject="Site meeting", start=utc(2026, 5, 5, 9), end=utc(2026, 5, 5, 10),
        organizer="boss@example.com", organizer_name="Boss", my_response="Tentative",
        is_cancelled=True,
        attendees=[
            {"email": "alice@example.com", "name": "Alice", "response": "Tentative"},
            {"email": "bob@example.com", "name": "Bob", "response": "Accept", "optional": True},
        ],
    )  # fmt: skip
    plain = mailbox.create(subject="Dentist", start=utc(2026, 5, 6, 9), end=utc(2026, 5, 6, 10))
    calendar = open_calendar(settings_for(sim))
    meeting, appointment = calendar.account.fetch(
        [(item_id, None), (plain, None)], folder=calendar.calendar
    )
    assert meeting.is_meeting is True and meeting.is_cancelled is True
    assert meeting.my_response_type == "Tentative"
    assert meeting.organizer.email_address == "boss@example.com"
    assert [a.mailbox.email_address for a in meeting.required_attendees] == ["alice@example.com"]
    assert [a.response_type for a in meeting.optional_attendees] == ["Accept"]
    assert set(meeting.appointment_state) == {"Meeting", "Received", "Canceled"}
    assert appointment.is_meeting is False and appointment.organizer is None
    records, _ = calendar.fetch([item_id])
    assert (records[0]["organizer"], records[0]["my_response"], records[0]["is_cancelled"]) == (
        "boss@example.com", "Tentative", True,
    )  # fmt: skip
