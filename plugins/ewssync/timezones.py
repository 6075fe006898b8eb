"""Windows <-> IANA time zone names, from a table generated out of CLDR (tools/gen_windows_zones,
from tzlocal's current copy of CLDR's windowsZones)."""

from __future__ import annotations

import functools
import json
import re
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from zoneinfo import ZoneInfo, available_timezones

# Entries of the tz database that are not zones to store: "localtime" is the host's own zone
# (results would depend on the machine), "Factory"/"posixrules" are tzdata internals.
_NOT_ZONES = frozenset({"localtime", "Factory", "posixrules", "posix", "right"})

# What Exchange sends for an item whose zone was defined ad hoc (no id to map): the caller
# falls back to the connection's Exchange time zone.
_CUSTOM_PREFIXES = ("customized time zone", "tzone://microsoft/custom")

# "(UTC+01:00) Amsterdam, Berlin, ..." and the older "(GMT+01:00) ..." display names.
_DISPLAY_NAME = re.compile(
    r"^\((?:UTC|GMT)(?:(?P<sign>[+-])(?P<hours>\d{1,2}):(?P<minutes>\d{2}))?\)\s*(?P<places>.*)$"
)


@functools.cache
def _table() -> dict[str, dict[str, str]]:
    text = resources.files("ewssync").joinpath("data/windows_zones.json").read_text("utf-8")
    return json.loads(text)


@functools.cache
def _names_lower() -> dict[str, str]:
    table = _table()
    names: dict[str, str] = {}
    for section in ("display_names", "aliases", "windows_to_iana"):
        names.update({name.lower(): zone for name, zone in table[section].items()})
    return names


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(
        name
        for name in available_timezones() | {"UTC"}
        if name not in _NOT_ZONES and not name.startswith(("posix/", "right/"))
    )


def is_valid_zone(name: str | None) -> bool:
    """True for an IANA zone name zoneinfo knows (links such as Europe/Kiev included)."""
    return isinstance(name, str) and name in _zones()


@functools.cache
def zone_names() -> tuple[str, ...]:
    """The names the connection form offers: every IANA zone, then every other Windows zone id
    ("UTC" is both)."""
    return (*sorted(_zones()), *sorted(set(_table()["windows_to_iana"]) - _zones()))


def windows_to_iana(name: str | None) -> str | None:
    """The IANA zone for a Windows zone id, display name or UTC alias; an IANA name maps to
    itself.

    "Customized Time Zone" and unknown names give None: the caller falls back to the
    connection's Exchange time zone.
    """
    if not isinstance(name, str) or not name.strip():
        return None
    name = name.strip()
    table = _table()
    for section in ("windows_to_iana", "aliases", "display_names"):
        if name in table[section]:
            return table[section][name]
    if is_valid_zone(name):
        return name
    lowered = name.lower()
    if lowered.startswith(_CUSTOM_PREFIXES):
        return None
    known = _names_lower().get(lowered)
    if known is not None:
        return known
    return _match_display_name(name)


def _match_display_name(name: str) -> str | None:
    """A localized or unlisted display name, "(UTC+01:00) Amsterdam, Berlin, Rom, Wien": the
    first place that names an IANA zone whose standard offset is the one shown."""
    parsed = _parse_display_name(name)
    if parsed is None:
        return None
    shown, places = parsed
    listed = _normalized_display_names().get((shown, places.lower()))
    if listed:
        return listed
    cities = _cities()
    for place in re.split(r",|\band\b|/", places):
        for zone in cities.get(place.strip().lower(), ()):
            if shown in _standard_offsets(zone):
                return zone
    return None


@functools.cache
def _normalized_display_names() -> dict[tuple[timedelta, str], str]:
    names = {}
    for display, zone in _table()["display_names"].items():
        parsed = _parse_display_name(display)
        if parsed:
            names[(parsed[0], parsed[1].lower())] = zone
    return names


def _parse_display_name(name: str) -> tuple[timedelta, str] | None:
    """(offset shown, places) of "(UTC+05:30) Chennai, Kolkata" or "(GMT) Casablanca"."""
    match = _DISPLAY_NAME.match(" ".join(name.split()))
    if match is None:
        return None
    sign = -1 if match["sign"] == "-" else 1
    shown = sign * timedelta(hours=int(match["hours"] or 0), minutes=int(match["minutes"] or 0))
    return shown, match["places"]


@functools.cache
def _cities() -> dict[str, tuple[str, ...]]:
    """City (last part of an IANA name, "st johns", "new york") -> zones, canonical first."""
    preferred = set(_table()["windows_to_iana"].values())
    cities: dict[str, list[str]] = {}
    for zone in sorted(_zones()):
        if "/" not in zone or zone.startswith("Etc/"):
            continue
        city = zone.rsplit("/", 1)[1].replace("_", " ").lower()
        cities.setdefault(city, []).append(zone)
    return {
        city: tuple(sorted(zones, key=lambda z: (z not in preferred, z)))
        for city, zones in cities.items()
    }


@functools.cache
def _standard_offsets(zone: str) -> frozenset[timedelta]:
    tz = ZoneInfo(zone)
    offsets = set()
    for month in (1, 7):
        local = datetime(2026, month, 15, 12, tzinfo=UTC).astimezone(tz)
        offsets.add(local.utcoffset() - (local.dst() or timedelta(0)))
    return frozenset(offsets)


def iana_to_windows(name: str) -> str | None:
    """The canonical Windows zone id for an IANA zone (aliases resolved), for new items.

    Zones the table does not list (newer than its CLDR data), or whose listed Windows zone no
    longer has the same UTC offsets through 2026, get a Windows id whose zone has them,
    preferring one in the same region; None if none has.
    """
    table = _table()["iana_to_windows"]
    listed = table.get(name)
    if listed is None and name in _table()["aliases"]:
        listed = table.get(_table()["aliases"][name])
    if not is_valid_zone(name):
        return listed
    signature = _offsets_2026(name)
    if listed is not None and _offsets_2026(_table()["windows_to_iana"][listed]) == signature:
        return listed
    # Not listed, or CLDR's row lags tzdata (Scoresbysund, Casey, Vostok changed rules since):
    # a Windows zone with the same offsets through 2026, else CLDR's row.
    region = name.split("/")[0]
    candidates = [
        (zone.split("/")[0] != region, zone, windows)
        for windows, zone in _table()["windows_to_iana"].items()
        if _offsets_2026(zone) == signature
    ]
    return min(candidates)[2] if candidates else listed


@functools.cache
def _offsets_2026(zone: str) -> tuple[timedelta, ...]:
    tz = ZoneInfo(zone)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    # Every 6 hours: DST rules that switch on different days (US vs. EU) differ somewhere.
    return tuple((start + timedelta(hours=6 * i)).astimezone(tz).utcoffset() for i in range(1461))


def to_iana(name: str | None, fallback: str) -> str:
    """IANA for a Windows or IANA name; ``fallback`` when unknown or customized."""
    return windows_to_iana(name) or fallback


# --- all-day dates from what the wire carries ------------------------------------------------

_LATEST_OFFSET = timedelta(hours=14)  # Kiritimati; the earliest is -12 (Baker Island)
_EARLIEST_OFFSET = timedelta(hours=-12)


def _midnight_offset(instant: datetime, offsets: list[timedelta], preferred: timedelta):
    for offset in offsets:
        local = instant + offset
        if (local.hour, local.minute, local.second) == (0, 0, 0):
            return offset
    # No candidate makes it midnight: the UTC offsets that do, nearest the preferred one.
    since_midnight = instant - instant.replace(hour=0, minute=0, second=0, microsecond=0)
    choices = [
        offset
        for offset in (-since_midnight, timedelta(days=1) - since_midnight)
        if _EARLIEST_OFFSET <= offset <= _LATEST_OFFSET
    ]
    return min(choices or [-since_midnight], key=lambda offset: abs(offset - preferred))


def all_day_dates(
    start: datetime,
    end: datetime,
    start_offsets: list[timedelta],
    end_offsets: list[timedelta],
    preferred: timedelta,
) -> tuple[date, date]:
    """The first and last day (inclusive) of an all-day item from its instants.

    An all-day item runs from local midnight to local midnight in its own zone, which is how
    Outlook shows it, whatever the reader's zone. The offsets are what the wire says of that
    zone, most trusted first (the named zone's offset at that instant, the zone definition's
    periods, the display name's offset); the first at which the instant is a midnight wins. When
    none does (no or unusable zone information), the offset that makes it a midnight is used,
    the one nearest ``preferred`` (the connection zone's) when two do.
    """
    start = start.astimezone(UTC)
    end = end.astimezone(UTC)
    start_offset = _midnight_offset(start, start_offsets, preferred)
    end_offset = _midnight_offset(end, end_offsets, preferred) if end > start else start_offset
    start_date = (start + start_offset).date()
    # not repaired here: a zero-length item ends the day before it starts, for the load step's
    # checks to repair and name
    return start_date, (end + end_offset).date() - timedelta(days=1)


def display_name_offset(name: str | None) -> timedelta | None:
    """The standard offset a display name shows: "(UTC-05:00) Eastern Time" -> -5 h."""
    parsed = _parse_display_name(name) if isinstance(name, str) else None
    return parsed[0] if parsed else None
