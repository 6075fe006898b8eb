"""The simulator's zones, read through exchangelib over HTTP: series expand in every Windows zone
with its real DST rules, and StartTimeZone carries a schema-valid definition the client reads."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from dateutil.rrule import WEEKLY, rrule
from lxml import etree

from ewssync.exchange import open_calendar
from tests.conftest import SHARED
from tests.ewssim.zones import WINDOWS_ZONES, definition_xml
from tests.integration.test_exchange import settings_for

ZONES = sorted(WINDOWS_ZONES)
T = "http://schemas.microsoft.com/exchange/services/2006/types"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"


@pytest.mark.slow
def test_a_series_keeps_its_wall_clock_time_in_every_windows_zone(sim):
    """One fortnightly series per Windows zone at 09:30 local for a year: every occurrence is where
    dateutil's rrule puts it in the zone's IANA rules (DST changes included)."""
    mailbox = sim.mailbox("alice@example.com")
    first_day = datetime(2026, 1, 5)  # a Monday
    expected: dict[timedelta, list[datetime]] = {}
    for n, windows_id in enumerate(ZONES):
        zone = ZoneInfo(WINDOWS_ZONES[windows_id])
        start = datetime.combine(first_day, time(9, 30), tzinfo=zone)
        duration = timedelta(minutes=n + 1)  # tells the series apart in the listing
        mailbox.create(
            subject=windows_id, start=start, end=start + duration, timezone=windows_id,
            recurrence={"pattern": "weekly", "interval": 2, "weekdays": ["Monday"], "count": 26},
        )  # fmt: skip
        rule = rrule(WEEKLY, interval=2, dtstart=start.replace(tzinfo=None), count=26)
        expected[duration] = sorted(d.replace(tzinfo=zone).astimezone(UTC) for d in rule)
    calendar = open_calendar(settings_for(sim, timeout_seconds=120))
    index = calendar.read_index(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    found: dict[timedelta, list[datetime]] = {}
    for entry in index:
        found.setdefault(entry["end"] - entry["start"], []).append(entry["start"])
    assert len(found) == len(ZONES) >= 142
    for n, windows_id in enumerate(ZONES):
        duration = timedelta(minutes=n + 1)
        assert sorted(found[duration]) == expected[duration], windows_id


@pytest.mark.parametrize("windows_id", ZONES)
def test_every_zone_definition_is_schema_valid_with_the_zones_offsets(schema, windows_id):
    xml = definition_xml("StartTimeZone", windows_id, None, 2026)
    response = (
        f'<m:GetItemResponse xmlns:m="{M}" xmlns:t="{T}"><m:ResponseMessages>'
        '<m:GetItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError'
        '</m:ResponseCode><m:Items><t:CalendarItem><t:ItemId Id="a" ChangeKey="b"/>'
        f"{xml}</t:CalendarItem></m:Items></m:GetItemResponseMessage></m:ResponseMessages>"
        "</m:GetItemResponse>"
    )
    assert list(schema.iter_errors(response)) == []
    periods = etree.fromstring(response).findall(f".//{{{T}}}Period")
    zone = ZoneInfo(WINDOWS_ZONES[windows_id])
    offsets = {
        datetime(2026, m, 15, 12, tzinfo=UTC).astimezone(zone).utcoffset() for m in range(1, 13)
    }
    biases = {p.get("Bias") for p in periods}
    assert len(periods) == len(offsets)
    for offset in offsets:
        minutes = int(offset.total_seconds() // 60)
        assert (f"-PT{minutes}M" if minutes > 0 else f"PT{-minutes}M") in biases


@pytest.fixture(scope="module")
def schema():
    xmlschema = pytest.importorskip("xmlschema")
    return xmlschema.XMLSchema(str(SHARED / "ews-schema" / "messages.xsd"), validation="lax")
