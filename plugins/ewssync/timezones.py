"""Windows <-> IANA time zone names, from a table generated out of CLDR (tools/gen_windows_zones)."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from importlib import resources
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones


@functools.cache
def _table() -> dict[str, dict[str, str]]:
    text = resources.files("ewssync").joinpath("data/windows_zones.json").read_text("utf-8")
    return json.loads(text)


@functools.cache
def _windows_lower() -> dict[str, str]:
    return {name.lower(): zone for name, zone in _table()["windows_to_iana"].items()}


@functools.cache
def is_valid_zone(name: str | None) -> bool:
    """True for an IANA zone name zoneinfo knows (links such as Europe/Kiev included)."""
    if not name or name != name.strip() or name.startswith("/"):
        return False
    if name in available_timezones() or name == "UTC":
        return True
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def windows_to_iana(name: str | None) -> str | None:
    """The IANA zone for a Windows zone id or display name; an IANA name maps to itself.

    "Customized Time Zone" and unknown names give None: the caller falls back to the
    connection's Exchange time zone.
    """
    if not name:
        return None
    name = name.strip()
    table = _table()["windows_to_iana"]
    if name in table:
        return table[name]
    if is_valid_zone(name):
        return name
    return _windows_lower().get(name.lower())


def iana_to_windows(name: str) -> str | None:
    """The canonical Windows zone id for an IANA zone (aliases resolved), for new items."""
    table = _table()["iana_to_windows"]
    if name in table:
        return table[name]
    if not is_valid_zone(name):
        return None
    # An alias/link (Europe/Kiev -> Europe/Kyiv): find a table zone with the same rules.
    target = ZoneInfo(name)
    probe = [datetime(2026, month, 1, 12, tzinfo=UTC) for month in (1, 4, 7, 10)]
    offsets = [p.astimezone(target).utcoffset() for p in probe]
    for zone, windows in table.items():
        try:
            candidate = ZoneInfo(zone)
        except ZoneInfoNotFoundError:
            continue
        if [p.astimezone(candidate).utcoffset() for p in probe] == offsets and (
            zone.split("/")[0] == name.split("/")[0]
        ):
            return windows
    return None


def to_iana(name: str | None, fallback: str) -> str:
    """IANA for a Windows or IANA name; ``fallback`` when unknown or customized."""
    return windows_to_iana(name) or fallback
