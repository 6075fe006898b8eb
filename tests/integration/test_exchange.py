"""The EWS backend against the simulator over HTTP: connection test, reading, writing, faults."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pytest

from ewssync.errors import ExchangeError
from ewssync.exchange import GENERAL, SEND_RECEIVE, open_calendar
from ewssync.settings import SyncSettings
from tests.ewssim import EwsSimulator

RECORD_KEYS = {
    "item_id", "change_key", "item_type", "uid", "recurrence_id", "master_item_id", "subject",
    "location", "body", "body_type", "start", "end", "is_all_day", "start_date", "end_date",
    "timezone_windows", "timezone_iana", "sensitivity", "reminder_is_set", "reminder_minutes",
    "legacy_free_busy", "categories", "last_modified", "is_recurring", "is_cancelled",
    "my_response", "organizer", "stamp",
}  # fmt: skip


def settings_for(sim, email="alice@example.com", password="secret", **extra) -> SyncSettings:  # noqa: S107
    conn = SimpleNamespace(
        conn_id="ews_test",
        conn_type="ews",
        host=sim.url,
        login=email,
        password=password,
        description="test",
        port=None,
        schema=None,
        extra=json.dumps({"app_user": "alice", "timeout_seconds": 5, **extra}),
    )
    return SyncSettings.from_connection(conn)


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- the connection test ------------------------------------------------------------------------


def test_correct_connection_passes_both_parts(sim):
    report = open_calendar(settings_for(sim)).test(write=True)
    assert report.ok, str(report)
    assert [part.name for part in report.parts] == [GENERAL, SEND_RECEIVE]
    lines = str(report).splitlines()
    assert lines[0].startswith("General connection: OK")
    assert lines[1].startswith("Send/receive data: OK")
    assert "created and deleted" in lines[1]
    assert sim.request_counts["CreateItem"] == 1
    assert sim.request_counts["DeleteItem"] == 1
    assert sim.mailbox("alice@example.com").items() == []  # the test item is gone again


def test_read_only_test_writes_nothing(sim):
    report = open_calendar(settings_for(sim)).test(write=False)
    assert report.ok, str(report)
    assert sim.request_counts["CreateItem"] == 0


def test_wrong_password_fails_general_connection(sim):
    report = open_calendar(settings_for(sim, password="wrong-password")).test(write=True)
    assert not report.ok
    general, send_receive = report.parts
    assert general.ok is False
    assert "401" in general.message and "Password" in general.message
    assert send_receive.ok is None
    assert str(report).splitlines()[1].startswith("Send/receive data: not run")
    assert "wrong-password" not in str(report)


def test_unreachable_server_names_the_cause():
    conn = SimpleNamespace(
        conn_id="ews_test", conn_type="ews", host="http://127.0.0.1:9/EWS/Exchange.asmx",
        login="alice@example.com", password="secret", description=None, port=None, schema=None,
        extra=json.dumps({"app_user": "alice", "timeout_seconds": 2}),
    )  # fmt: skip
    started = time.monotonic()
    report = open_calendar(SyncSettings.from_connection(conn)).test(write=False)
    assert time.monotonic() - started < 30
    assert not report.ok
    assert "connection refused" in report.parts[0].message


def test_mailbox_without_calendar_access_fails_part_two(sim):
    sim.add_mailbox("bob@example.com", password="bobs-password", calendar_access=False)
    report = open_calendar(
        settings_for(sim, email="bob@example.com", password="bobs-password")
    ).test(write=True)
    general, send_receive = report.parts
    assert general.ok is True
    assert send_receive.ok is False
    assert "ErrorAccessDenied" in send_receive.message
    assert "bob@example.com" in send_receive.message
    assert "FAILED" in str(report).splitlines()[1]


def test_mailbox_guard_in_connection_test(sim):
    calendar = open_calendar(settings_for(sim))
    report = calendar.test(write=False, app_user_email="bob@example.com")
    assert report.parts[0].ok and report.parts[1].ok is False
    assert "allow_mailbox_mismatch" in report.parts[1].message
    assert calendar.test(write=False, app_user_email="Alice@example.com").ok


# --- faults ----------------------------------------------------------------------------------


def test_server_busy_is_retried_after_the_back_off(sim):
    calendar = open_calendar(settings_for(sim))
    calendar.read_index(utc(2026, 5, 1), utc(2026, 5, 8))  # warm up: folders known
    sim.inject_fault("server_busy", operation="FindItem", count=1, back_off_ms=300)
    started = time.monotonic()
    assert calendar.read_index(utc(2026, 5, 1), utc(2026, 5, 8)) == []
    assert time.monotonic() - started >= 0.3
    assert sim.request_counts["FindItem"] == 3  # warm-up, refused, retried


def test_dropped_connection_does_not_hang(sim):
    calendar = open_calendar(settings_for(sim, timeout_seconds=2))
    calendar.read_index(utc(2026, 5, 1), utc(2026, 5, 8))
    sim.inject_fault("drop_connection", operation="FindItem", count=1)
    started = time.monotonic()
    assert calendar.read_index(utc(2026, 5, 1), utc(2026, 5, 8)) == []
    assert time.monotonic() - started < 20


def test_a_silent_server_times_out(sim):
    calendar = open_calendar(settings_for(sim, timeout_seconds=1))
    calendar.read_index(utc(2026, 5, 1), utc(2026, 5, 8))
    sim.inject_fault("latency", operation="FindItem", count=100, seconds=5)
    started = time.monotonic()
    with pytest.raises(ExchangeError) as caught:
        calendar.read_index(utc(2026, 5, 1), utc(2026, 5, 8))
    assert time.monotonic() - started < 30
    assert "ews_test" in str(caught.value)


def test_http_500_once_is_retried(sim):
    calendar = open_calendar(settings_for(sim))
    calendar.read_index(utc(2026, 5, 1), utc(2026, 5, 8))
    sim.inject_fault("http500", operation="FindItem", count=1)
    assert calendar.read_index(utc(2026, 5, 1), utc(2026, 5, 8)) == []


# --- reading ---------------------------------------------------------------------------------


def test_read_index_splits_when_the_server_caps_the_view(sim):
    mailbox = sim.mailbox("alice@example.com")
    created = set()
    for day in range(40):
        for hour in (8, 12, 16):
            start = utc(2026, 3, 1, hour) + timedelta(days=day)
            created.add(
                mailbox.create(
                    subject=f"d{day}h{hour}", start=start, end=start + timedelta(hours=1)
                )
            )
    calendar = open_calendar(settings_for(sim), view_page_size=25)
    index = calendar.read_index(utc(2026, 3, 1), utc(2026, 4, 15))
    ids = [entry["item_id"] for entry in index]
    assert len(ids) == len(set(ids)) == 120
    assert set(ids) == created
    assert sim.request_counts["FindItem"] > 4  # it had to split
    assert sim.request_counts.get("GetItem", 0) == 0  # a cheap index: no GetItem
    assert set(index[0]) == {"item_id", "change_key", "item_type", "start", "end", "is_all_day"}


def test_read_index_handles_the_server_cap(sim):
    sim.max_view_items = 10
    mailbox = sim.mailbox("alice@example.com")
    for n in range(35):
        start = utc(2026, 6, 1, 9) + timedelta(hours=5 * n)
        mailbox.create(subject=f"n{n}", start=start, end=start + timedelta(minutes=30))
    calendar = open_calendar(settings_for(sim))
    index = calendar.read_index(utc(2026, 5, 25), utc(2026, 7, 1))
    assert len({entry["item_id"] for entry in index}) == len(index) == 35


def test_fetch_returns_the_record_keys_with_values(sim):
    mailbox = sim.mailbox("alice@example.com")
    timed = mailbox.create(
        subject="Dentist",
        start=utc(2026, 5, 6, 7, 30),
        end=utc(2026, 5, 6, 8, 15),
        location="Main St 1",
        body="<p>bring <b>card</b></p>",
        body_type="HTML",
        timezone="W. Europe Standard Time",
        categories=["Health"],
        sensitivity="Private",
        reminder_minutes=30,
        legacy_free_busy="OOF",
    )
    calendar = open_calendar(settings_for(sim, exchange_timezone="Asia/Tokyo"))
    records, missing = calendar.fetch([timed, "AAMkAGI2missing"])
    assert missing == ["AAMkAGI2missing"]
    (record,) = records
    assert set(record) == RECORD_KEYS
    assert record["item_id"] == timed
    assert record["item_type"] == "Single"
    assert record["subject"] == "Dentist"
    assert record["location"] == "Main St 1"
    assert "<b>card</b>" in record["body"] and record["body_type"] == "HTML"
    assert record["start"] == utc(2026, 5, 6, 7, 30) and record["end"] == utc(2026, 5, 6, 8, 15)
    assert record["start"].tzinfo is UTC
    assert record["is_all_day"] is False
    assert record["start_date"] is None and record["end_date"] is None
    assert record["timezone_windows"] == "W. Europe Standard Time"
    assert record["timezone_iana"] == "Europe/Berlin"
    assert record["sensitivity"] == "Private"
    assert record["reminder_is_set"] is True and record["reminder_minutes"] == 30
    assert record["legacy_free_busy"] == "OOF"
    assert record["categories"] == ["Health"]
    assert record["uid"]
    assert record["recurrence_id"] is None and record["is_recurring"] is False
    assert record["last_modified"] is not None


@pytest.mark.parametrize("host_zone", ["UTC", "Asia/Tokyo", "America/Los_Angeles"])
def test_all_day_dates_do_not_depend_on_the_host_zone(sim, monkeypatch, host_zone):
    monkeypatch.setenv("TZ", host_zone)
    time.tzset()
    try:
        mailbox = sim.mailbox("alice@example.com")
        # 6 and 7 May in Berlin: from local midnight to local midnight, two days
        all_day = mailbox.create(
            subject="Holiday",
            start=utc(2026, 5, 5, 22),
            end=utc(2026, 5, 7, 22),
            is_all_day=True,
            timezone="W. Europe Standard Time",
        )
        calendar = open_calendar(settings_for(sim))
        (record,), _ = calendar.fetch([all_day])
        assert record["is_all_day"] is True
        assert record["start_date"] == date(2026, 5, 6)
        assert record["end_date"] == date(2026, 5, 7)  # inclusive
        assert record["start"] == utc(2026, 5, 5, 22) and record["end"] == utc(2026, 5, 7, 22)
        assert record["timezone_iana"] == "Europe/Berlin"
        (entry,) = calendar.read_index(utc(2026, 5, 1), utc(2026, 5, 10))
        assert (entry["start"], entry["end"]) == (record["start"], record["end"])
    finally:
        monkeypatch.undo()
        time.tzset()


def test_unknown_zone_falls_back_to_the_connection_zone(sim):
    mailbox = sim.mailbox("alice@example.com")
    item = mailbox.create(
        subject="Custom zone all-day",
        start=utc(2026, 5, 5, 15),
        end=utc(2026, 5, 6, 15),
        is_all_day=True,
        timezone="Customized Time Zone",
    )
    calendar = open_calendar(settings_for(sim, exchange_timezone="Asia/Tokyo"))
    (record,), _ = calendar.fetch([item])
    assert record["timezone_windows"] == "Customized Time Zone"
    assert record["timezone_iana"] is None
    assert record["start_date"] == date(2026, 5, 6) == record["end_date"]


def test_read_window_is_index_plus_fetch(sim):
    mailbox = sim.mailbox("alice@example.com")
    ids = {
        mailbox.create(subject=f"m{n}", start=utc(2026, 5, 4 + n, 9), end=utc(2026, 5, 4 + n, 10))
        for n in range(3)
    }
    records = open_calendar(settings_for(sim)).read_window(utc(2026, 5, 1), utc(2026, 5, 31))
    assert {record["item_id"] for record in records} == ids


def test_sync_changes_reports_creates_updates_deletes(sim):
    calendar = open_calendar(settings_for(sim))
    mailbox = sim.mailbox("alice@example.com")
    first = mailbox.create(subject="a", start=utc(2026, 5, 6, 9), end=utc(2026, 5, 6, 10))
    state, changes, complete = calendar.sync_changes(None)
    assert complete and state
    assert [(c["kind"], c["item_id"]) for c in changes] == [("create", first)]
    state2, changes2, _ = calendar.sync_changes(state)
    assert changes2 == []
    second, _ = calendar.create(
        {"subject": "b", "start": utc(2026, 5, 7, 9), "end": utc(2026, 5, 7, 10)}
    )
    calendar.delete(first)
    _, changes3, _ = calendar.sync_changes(state2)
    assert {(c["kind"], c["item_id"]) for c in changes3} == {("create", second), ("delete", first)}


def test_sync_changes_skips_read_flag_changes(sim):
    """Outlook marking an item read changes no content: no change to read, no crash (exchangelib
    hands a read-flag change back as an (ItemId, is_read) pair, not an item)."""
    calendar = open_calendar(settings_for(sim))
    mailbox = sim.mailbox("alice@example.com")
    first = mailbox.create(subject="a", start=utc(2026, 5, 6, 9), end=utc(2026, 5, 6, 10))
    second = mailbox.create(subject="b", start=utc(2026, 5, 7, 9), end=utc(2026, 5, 7, 10))
    state, _, _ = calendar.sync_changes(None)
    mailbox.mark_read(first)
    mailbox.mark_read(second, False)
    mailbox.update(second, subject="b2")
    state2, changes, _ = calendar.sync_changes(state)
    assert [(c["kind"], c["item_id"]) for c in changes] == [("update", second)]
    mailbox.mark_read(first, False)
    _, changes, _ = calendar.sync_changes(state2)
    assert changes == []


def test_create_and_delete(sim):
    calendar = open_calendar(settings_for(sim, exchange_timezone="Europe/Berlin"))
    item_id, change_key = calendar.create(
        {
            "subject": "From the app",
            "start": utc(2026, 5, 6, 7),
            "end": utc(2026, 5, 6, 8),
            "body": "<p>notes</p>",
            "reminder_minutes": 10,
        }
    )
    assert item_id and change_key
    (record,), _ = calendar.fetch([item_id])
    assert record["subject"] == "From the app"
    assert record["start"] == utc(2026, 5, 6, 7)
    assert record["timezone_iana"] == "Europe/Berlin"
    assert record["reminder_minutes"] == 10, (
        "exchangelib sends <t:ReminderIsSet>1</t:ReminderIsSet> (xs:boolean allows 1/0); "
        "a simulator that only accepts 'true' loses the reminder"
    )
    calendar.delete(item_id)
    calendar.delete(item_id)  # already gone: fine
    assert calendar.fetch([item_id]) == ([], [item_id])


# --- Exchange 2007 ---------------------------------------------------------------------------


@pytest.fixture
def sim2007():
    """An Exchange 2007 SP1 server with alice."""
    simulator = EwsSimulator(dialect="Exchange2007_SP1")
    simulator.add_mailbox("alice@example.com", password="secret", calendar_access=True)
    simulator.start()
    try:
        yield simulator
    finally:
        simulator.stop()


def test_2007_server_works_with_the_2007_protocol(sim2007):
    settings = settings_for(sim2007, use_2007_protocol=True, exchange_timezone="Europe/Berlin")
    calendar = open_calendar(settings)
    assert calendar.test(write=True).ok
    item_id, _ = calendar.create(
        {"subject": "old server", "start": utc(2026, 5, 6, 7), "end": utc(2026, 5, 6, 8)}
    )
    mailbox = sim2007.mailbox("alice@example.com")
    all_day = mailbox.create(
        subject="2007 all-day",
        start=utc(2026, 5, 5, 22),
        end=utc(2026, 5, 6, 22),
        is_all_day=True,
        timezone="W. Europe Standard Time",
    )
    index = calendar.read_index(utc(2026, 5, 1), utc(2026, 5, 10))
    assert {entry["item_id"] for entry in index} == {item_id, all_day}
    records, _ = calendar.fetch([item_id, all_day])
    by_id = {record["item_id"]: record for record in records}
    assert by_id[item_id]["start"] == utc(2026, 5, 6, 7)
    assert by_id[item_id]["timezone_windows"] == "W. Europe Standard Time"
    assert by_id[item_id]["timezone_iana"] == "Europe/Berlin"
    assert by_id[all_day]["start_date"] == date(2026, 5, 6) == by_id[all_day]["end_date"]
    calendar.delete(item_id)
    assert {
        entry["item_id"] for entry in calendar.read_index(utc(2026, 5, 1), utc(2026, 5, 10))
    } == {all_day}


def test_2007_server_without_the_setting_suggests_it(sim2007):
    report = open_calendar(settings_for(sim2007)).test(write=True)
    assert not report.ok
    assert report.parts[0].ok is False
    assert "turn on 'Use 2007 protocol'" in report.parts[0].message


# --- secrecy ---------------------------------------------------------------------------------


def test_password_never_logged(sim, caplog):
    password = "Very-Distinct-Pa55word"
    sim.add_mailbox("carol@example.com", password=password, calendar_access=True)
    caplog.set_level(logging.DEBUG)
    for name in ("exchangelib", "ewssync", "urllib3", "requests"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    settings = settings_for(sim, email="carol@example.com", password=password)
    calendar = open_calendar(settings)
    report = calendar.test(write=True)
    assert report.ok
    bad = open_calendar(settings_for(sim, email="carol@example.com", password=password + "x"))
    bad_report = bad.test(write=True)
    with pytest.raises(ExchangeError) as caught:
        bad.read_index(utc(2026, 5, 1), utc(2026, 5, 2))
    import base64

    secrets = {
        password,
        password + "x",
        base64.b64encode(f"carol@example.com:{password}".encode()).decode(),
        base64.b64encode(f"carol@example.com:{password}x".encode()).decode(),
    }
    text = caplog.text + str(report) + str(bad_report) + str(caught.value) + repr(settings)
    assert "Authorization" in caplog.text  # exchangelib did dump the headers...
    for secret in secrets:
        assert secret not in text  # ...but blanked


def test_a_server_that_accepts_but_never_answers_does_not_hang():
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_stay_silent() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_stay_silent, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    try:
        conn = SimpleNamespace(
            conn_id="ews_silent", conn_type="ews",
            host=f"http://127.0.0.1:{port}/EWS/Exchange.asmx",
            login="alice@example.com", password="secret", description=None, port=None,
            schema=None, extra=json.dumps({"app_user": "alice", "timeout_seconds": 1}),
        )  # fmt: skip
        started = time.monotonic()
        report = open_calendar(SyncSettings.from_connection(conn)).test(write=False)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        thread.join()
        for sock in accepted:
            sock.close()
        listener.close()
    assert not report.ok
    assert elapsed < 20, elapsed
    assert "did not answer" in report.parts[0].message, report.parts[0].message


# --- TLS -------------------------------------------------------------------------------------


def test_an_untrusted_certificate_fails_the_general_connection_with_a_tls_message():
    sim = EwsSimulator(tls=True)
    sim.add_mailbox("alice@example.com", password="secret")
    sim.start()
    try:
        assert sim.url.startswith("https://")
        report = open_calendar(settings_for(sim)).test(write=False)
        assert report.parts[0].ok is False
        assert "TLS certificate" in report.parts[0].message
        # verify_tls off (test systems only): the same server is accepted
        assert open_calendar(settings_for(sim, verify_tls=False)).test(write=True).ok
    finally:
        sim.stop()
