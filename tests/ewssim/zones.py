"""Windows time zones as Exchange describes them: every Windows id with its real rules, display
names, and the <t:StartTimeZone> definition (Periods, TransitionsGroups, Transitions)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

# CLDR's windowsZones table as tzlocal ships it (the simulator does not use ewssync's own table).
from tzlocal.windows_tz import win_tz

WINDOWS_ZONES: dict[str, str] = {**win_tz, "UTC": "UTC"}
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

# Display names Windows (and so Exchange) gives these zones (Windows 10/11, en-US). Other zones get
# "(UTC±hh:mm) <city>", the same shape.
DISPLAY_NAMES = {
    "W. Europe Standard Time": "(UTC+01:00) Amsterdam, Berlin, Bern, Rome, Stockholm, Vienna",
    "Romance Standard Time": "(UTC+01:00) Brussels, Copenhagen, Madrid, Paris",
    "GMT Standard Time": "(UTC+00:00) Dublin, Edinburgh, Lisbon, London",
    "Eastern Standard Time": "(UTC-05:00) Eastern Time (US & Canada)",
    "Central Standard Time": "(UTC-06:00) Central Time (US & Canada)",
    "Pacific Standard Time": "(UTC-08:00) Pacific Time (US & Canada)",
    "Tokyo Standard Time": "(UTC+09:00) Osaka, Sapporo, Tokyo",
    "India Standard Time": "(UTC+05:30) Chennai, Kolkata, Mumbai, New Delhi",
    "AUS Eastern Standard Time": "(UTC+10:00) Canberra, Melbourne, Sydney",
    "New Zealand Standard Time": "(UTC+12:00) Auckland, Wellington",
    "UTC": "(UTC) Coordinated Universal Time",
}


def iana_of(windows_id: str | None, rules: str | None = None) -> str:
    """The IANA zone whose rules an item follows: ``rules`` (a customized zone's real rules),
    else its Windows id's zone, else UTC."""
    return rules or WINDOWS_ZONES.get(windows_id or "UTC", "UTC")


def zone_of(windows_id: str | None, rules: str | None = None) -> ZoneInfo:
    return ZoneInfo(iana_of(windows_id, rules))


def _offset_text(offset: timedelta) -> str:
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@functools.cache
def display_name(windows_id: str, rules: str | None = None, name: str | None = None) -> str:
    """What Exchange sends as the zone's Name and as <t:TimeZone>."""
    if name:
        return name
    if windows_id in DISPLAY_NAMES:
        return DISPLAY_NAMES[windows_id]
    if windows_id not in WINDOWS_ZONES:  # a customized zone keeps the name it was given
        return windows_id
    iana = iana_of(windows_id, rules)
    standard, _ = _offsets(iana, 2026)
    city = iana.rsplit("/", 1)[-1].replace("_", " ")
    return f"(UTC{_offset_text(standard)}) {city}"


@functools.cache
def _offsets(iana: str, year: int) -> tuple[timedelta, timedelta | None]:
    """(standard offset, daylight offset or None) of a zone in a year."""
    zone = ZoneInfo(iana)
    standard, daylight = None, None
    for month in range(1, 13):
        local = datetime(year, month, 15, 12, tzinfo=UTC).astimezone(zone)
        if local.dst():
            daylight = local.utcoffset()
        else:
            standard = local.utcoffset()
    if standard is None:  # all year on "daylight" time (rare): treat it as standard
        standard, daylight = daylight, None
    return standard, daylight


@functools.cache
def _transitions(iana: str, year: int) -> list[tuple[datetime, timedelta, timedelta]]:
    """(UTC instant, offset before, offset after) of each change of offset in a year."""
    zone = ZoneInfo(iana)
    found = []
    moment = datetime(year, 1, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC)
    before = moment.astimezone(zone).utcoffset()
    while moment < end:
        step = moment + timedelta(days=1)
        after = step.astimezone(zone).utcoffset()
        if after != before:
            low, high = moment, step  # the change lies in (low, high]: narrow to the minute
            while high - low > timedelta(minutes=1):
                middle = low + (high - low) / 2
                if middle.astimezone(zone).utcoffset() == before:
                    low = middle
                else:
                    high = middle
            found.append((high.replace(second=0, microsecond=0), before, after))
            before = after
        moment = step
    return found


def _bias(offset: timedelta) -> str:
    """EWS's Bias: minutes to add to local time to get UTC (the offset negated)."""
    minutes = -int(offset.total_seconds() // 60)
    return f"-PT{-minutes}M" if minutes < 0 else f"PT{minutes}M"


def _duration(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"PT{hours}H{minutes}M" if minutes else f"PT{hours}H"


@functools.cache
def definition_xml(
    tag: str, windows_id: str, rules: str | None, year: int, name: str | None = None
) -> str:
    """<t:StartTimeZone>/<t:EndTimeZone> with the full definition of the zone's rules in
    ``year``, in the shape Exchange 2010+ sends (one transitions group, recurring day rules)."""
    iana = iana_of(windows_id, rules)
    standard, daylight = _offsets(iana, year)
    period = f"trule:Microsoft/Registry/{windows_id}/{year}"
    periods = f'<t:Period Bias="{_bias(standard)}" Name="Standard" Id="{period}-Standard"/>'
    changes = [t for t in _transitions(iana, year) if daylight is not None]
    if daylight is not None and len(changes) == 2:
        periods += f'<t:Period Bias="{_bias(daylight)}" Name="Daylight" Id="{period}-Daylight"/>'
        rules_xml = ""
        for instant, before, after in sorted(changes, key=lambda c: c[0].month):
            local = instant + before  # Windows names the wall-clock time before the change
            next_week = local + timedelta(days=7)
            occurrence = -1 if next_week.month != local.month else (local.day - 1) // 7 + 1
            target = "Daylight" if after == daylight else "Standard"
            rules_xml += (
                f'<t:RecurringDayTransition><t:To Kind="Period">{period}-{target}</t:To>'
                f"<t:TimeOffset>{_duration(local - local.replace(hour=0, minute=0))}"
                f"</t:TimeOffset><t:Month>{local.month}</t:Month>"
                f"<t:DayOfWeek>{WEEKDAYS[local.weekday()]}</t:DayOfWeek>"
                f"<t:Occurrence>{occurrence}</t:Occurrence></t:RecurringDayTransition>"
            )
    else:
        rules_xml = f'<t:Transition><t:To Kind="Period">{period}-Standard</t:To></t:Transition>'
    name = display_name(windows_id, rules, name)
    return (
        f'<t:{tag} Id="{_attr(windows_id)}" Name="{_attr(name)}"><t:Periods>{periods}</t:Periods>'
        f'<t:TransitionsGroups><t:TransitionsGroup Id="0">{rules_xml}</t:TransitionsGroup>'
        '</t:TransitionsGroups><t:Transitions><t:Transition><t:To Kind="Group">0</t:To>'
        f"</t:Transition></t:Transitions></t:{tag}>"
    )


def _attr(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
