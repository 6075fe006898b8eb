"""The exchangelib adapters in ewssync.exchange, on real exchangelib objects without a server:
Exchange 2007's MeetingTimeZone, zones the server names, all-day dates, and log redaction."""

from __future__ import annotations

import base64
import logging
import time
from datetime import date

import pytest
from exchangelib import (
    BASIC,
    DELEGATE,
    Account,
    CalendarItem,
    Configuration,
    Credentials,
    EWSDateTime,
    EWSTimeZone,
    Version,
)
from exchangelib.util import xml_to_str
from exchangelib.version import EXCHANGE_2007_SP1, EXCHANGE_2016
from lxml import etree

import ewssync.exchange.ews_patches  # noqa: F401 - the adapters under test
from ewssync.exchange import SECRET_FILTER

T = "http://schemas.microsoft.com/exchange/services/2006/types"


def account(build, zone="Asia/Tokyo") -> Account:
    # one endpoint per version: exchangelib caches a protocol per endpoint and credentials
    config = Configuration(
        service_endpoint=f"http://127.0.0.1:9/EWS/{build.major_version}/Exchange.asmx",
        credentials=Credentials("a@example.com", "irrelevant"),
        auth_type=BASIC,
        version=Version(build=build),
    )
    return Account(
        "a@example.com",
        config=config,
        autodiscover=False,
        access_type=DELEGATE,
        default_timezone=EWSTimeZone(zone),
    )  # building an Account sends nothing


def calendar_item(zone_xml: str, start="2026-05-05T22:00:00Z", end="2026-05-07T22:00:00Z"):
    return etree.fromstring(
        f'<t:CalendarItem xmlns:t="{T}"><t:ItemId Id="i1" ChangeKey="c1"/>'
        f"<t:Start>{start}</t:Start><t:End>{end}</t:End>"
        f"<t:IsAllDayEvent>true</t:IsAllDayEvent>{zone_xml}</t:CalendarItem>"
    )


@pytest.mark.parametrize(
    ("build", "written", "not_written"),
    [
        (EXCHANGE_2007_SP1, '<t:MeetingTimeZone TimeZoneName="W. Europe Standard Time"/>',
         "StartTimeZone"),
        (EXCHANGE_2016, 'StartTimeZone Id="W. Europe Standard Time"', "MeetingTimeZone"),
    ],
    ids=["2007 writes TimeZoneName, not Id", "2016 still writes StartTimeZone Id"],
)  # fmt: skip
def test_an_items_zone_is_written_as_its_version_wants(build, written, not_written):
    acc = account(build)
    zone = EWSTimeZone("Europe/Berlin")
    item = CalendarItem(
        account=acc,
        subject="x",
        start=EWSDateTime(2026, 5, 6, 9, tzinfo=zone),
        end=EWSDateTime(2026, 5, 6, 10, tzinfo=zone),
    )
    item.clean(version=acc.version)
    xml = xml_to_str(item.to_xml(version=acc.version))
    assert written in xml
    assert not_written not in xml


@pytest.mark.parametrize("host_zone", ["UTC", "Asia/Tokyo", "America/Los_Angeles"])
def test_2007_meeting_timezone_is_read_and_all_day_dates_use_it(monkeypatch, host_zone):
    monkeypatch.setenv("TZ", host_zone)
    time.tzset()
    try:
        xml = calendar_item(
            '<t:MeetingTimeZone TimeZoneName="W. Europe Standard Time">'
            "<t:BaseOffset>-PT1H</t:BaseOffset></t:MeetingTimeZone>"
        )
        item = CalendarItem.from_xml(xml, account(EXCHANGE_2007_SP1))
        assert item._meeting_timezone.key == "Europe/Berlin"
        assert item._meeting_timezone.ms_id == "W. Europe Standard Time"
        assert (item.start, item.end) == (date(2026, 5, 6), date(2026, 5, 7))
    finally:
        monkeypatch.undo()
        time.tzset()


def test_all_day_without_a_zone_uses_the_account_zone_not_the_host(monkeypatch):
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        xml = calendar_item("", start="2026-05-05T15:00:00Z", end="2026-05-06T15:00:00Z")
        item = CalendarItem.from_xml(xml, account(EXCHANGE_2016, zone="Asia/Tokyo"))
        assert (item.start, item.end) == (date(2026, 5, 6), date(2026, 5, 6))
    finally:
        monkeypatch.undo()
        time.tzset()


def test_unknown_zone_keeps_its_name_and_falls_back():
    xml = calendar_item(
        '<t:StartTimeZone Id="Customized Time Zone" Name="Customized Time Zone"/>',
        start="2026-05-05T15:00:00Z",
        end="2026-05-06T15:00:00Z",
    )
    item = CalendarItem.from_xml(xml, account(EXCHANGE_2016, zone="Asia/Tokyo"))
    assert item._start_timezone.ms_id == "Customized Time Zone"
    assert item._start_timezone.ewssync_known is False
    assert (item.start, item.end) == (date(2026, 5, 6), date(2026, 5, 6))
    # the shared zone cache is untouched
    assert EWSTimeZone("Asia/Tokyo").ms_id == "Tokyo Standard Time"


def test_secret_filter_blanks_authorization_and_passwords(caplog):
    password = "Filter-Test-Pa55"
    token = base64.b64encode(f"bob@example.com:{password}".encode()).decode()
    SECRET_FILTER.add("bob@example.com", password)
    log = logging.getLogger("exchangelib.util")
    caplog.set_level(logging.DEBUG)
    log.debug(
        "Request headers: %(h)s",
        {"h": {"Authorization": f"Basic {token}", "Content-Type": "text/xml"}},
    )
    log.debug("Retrying with %s", password)
    logging.getLogger("ewssync.exchange").debug("Authorization: NTLM TlRMTVNTUAABAAAAB4IIog==")
    assert "Authorization" in caplog.text
    assert token not in caplog.text
    assert password not in caplog.text
    assert "TlRMTVNTUAABAAAAB4IIog==" not in caplog.text


def test_switching_the_protocol_setting_takes_effect_in_the_same_process():
    import json
    from types import SimpleNamespace

    from ewssync.exchange import open_calendar
    from ewssync.settings import SyncSettings

    def settings(use_2007: bool) -> SyncSettings:
        return SyncSettings.from_connection(
            SimpleNamespace(
                conn_id="ews_switch", conn_type="ews",
                host="http://127.0.0.1:9/EWS/switch/Exchange.asmx",
                login="a@example.com", password="pw-switch", description=None, port=None,
                schema=None, extra=json.dumps({"app_user": "a", "use_2007_protocol": use_2007}),
            )
        )  # fmt: skip

    assert open_calendar(settings(False)).account.version.build == EXCHANGE_2016
    assert open_calendar(settings(True)).account.version.build == EXCHANGE_2007_SP1
