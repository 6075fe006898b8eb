"""RFC 5545 recurrence rules of app series <-> Exchange's recurrence patterns (pure: no I/O).

The app writes a series as one row whose ``recurrence_rule`` holds an RRULE line (``RRULE:`` is
optional) and optionally EXDATE lines; ``starts_at`` is the first occurrence and ``time_zone``
the zone whose wall-clock time the series keeps (across DST). EWS and Graph express a subset of
RRULE; ``to_recurrence`` maps that subset exactly and names why anything else cannot be pushed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from dateutil.rrule import rrulestr

from ewssync.exchange.base import WEEK_INDEXES, WEEKDAYS, Recurrence

ICAL_DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
_SUPPORTED_KEYS = {"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "BYMONTHDAY", "BYMONTH",
                   "BYSETPOS", "WKST"}  # fmt: skip
_ORDINALS = {1: "First", 2: "Second", 3: "Third", 4: "Fourth", -1: "Last"}
MAX_OCCURRENCES = 999  # EWS NumberOfOccurrences maximum


class UnsupportedRule(ValueError):
    """The rule cannot be expressed as an Exchange recurrence; the message says why."""


@dataclass(frozen=True)
class SeriesRule:
    """A parsed ``recurrence_rule``: the RRULE's parts and the excluded original starts (UTC)."""

    parts: dict[str, str]
    exdates: tuple[datetime, ...]
    rrule_line: str


def parse_rule(text: str, zone: str) -> SeriesRule:
    """Split ``recurrence_rule`` into the RRULE's parts and the EXDATEs (as UTC instants).

    EXDATE values may be UTC (``…Z``), local to ``TZID=`` or, without either, local to ``zone``;
    a date-only value excludes that local day's occurrence (all-day series).
    """
    rrule_line = None
    exdates: list[datetime] = []
    for raw_line in text.replace("\r\n", "\n").split("\n"):
        line = raw_line.strip()
        if not line:
            continue
        name, _, value = line.partition(":")
        if not value:  # a bare "FREQ=…" line
            name, value = "RRULE", line
        head, *params = name.split(";")
        head = head.upper()
        if head == "RRULE":
            if rrule_line is not None:
                raise UnsupportedRule("several RRULE lines (Exchange has one pattern per series)")
            rrule_line = value
        elif head == "EXDATE":
            tz = zone
            for param in params:
                key, _, val = param.partition("=")
                if key.upper() == "TZID":
                    tz = val
            for stamp in value.split(","):
                exdates.append(_instant(stamp.strip(), tz))
        elif head in ("RDATE", "EXRULE"):
            raise UnsupportedRule(f"{head} (Exchange series have no extra or excluding rules)")
        else:
            raise UnsupportedRule(f"unknown line {head!r} in recurrence_rule")
    if rrule_line is None:
        raise UnsupportedRule("no RRULE in recurrence_rule")
    parts: dict[str, str] = {}
    for piece in rrule_line.split(";"):
        key, _, value = piece.partition("=")
        if not value:
            raise UnsupportedRule(f"malformed RRULE part {piece!r}")
        parts[key.strip().upper()] = value.strip().upper()
    return SeriesRule(parts, tuple(exdates), rrule_line)


def _instant(stamp: str, zone: str) -> datetime:
    try:
        if len(stamp) == 8:  # a date: that local day (the occurrence's start is found by date)
            day = datetime.strptime(stamp, "%Y%m%d")
            return day.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
        if stamp.endswith("Z"):
            return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        local = datetime.strptime(stamp, "%Y%m%dT%H%M%S")
        return local.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)
    except (ValueError, KeyError) as exc:
        raise UnsupportedRule(f"EXDATE {stamp!r} is not an iCalendar date-time ({exc})") from None


def _byday(value: str) -> list[tuple[int | None, str]]:
    days = []
    for token in value.split(","):
        token = token.strip()
        code = token[-2:]
        if code not in ICAL_DAYS:
            raise UnsupportedRule(f"BYDAY value {token!r}")
        ordinal = token[:-2]
        days.append((int(ordinal) if ordinal else None, WEEKDAYS[ICAL_DAYS.index(code)]))
    return days


def to_recurrence(text: str, starts_at: datetime, zone: str) -> tuple[Recurrence, SeriesRule]:
    """The Exchange pattern of an app series (exactly the same occurrences), and its parsed rule.

    :param starts_at: the series' first occurrence (aware).
    :param zone: the series' IANA zone.
    :raises UnsupportedRule: for what EWS cannot express (HOURLY, BYHOUR, several BYSETPOS...).
    """
    rule = parse_rule(text, zone)
    parts = rule.parts
    unknown = sorted(set(parts) - _SUPPORTED_KEYS)
    if unknown:
        raise UnsupportedRule(f"{', '.join(unknown)} (Exchange patterns have no such part)")
    freq = parts.get("FREQ")
    if freq not in ("DAILY", "WEEKLY", "MONTHLY", "YEARLY"):
        raise UnsupportedRule(f"FREQ={freq} (Exchange repeats daily, weekly, monthly or yearly)")
    interval = int(parts.get("INTERVAL", "1"))
    if not 1 <= interval <= 99:
        raise UnsupportedRule(f"INTERVAL={interval} (Exchange allows 1-99)")
    if "COUNT" in parts and "UNTIL" in parts:
        raise UnsupportedRule("both COUNT and UNTIL")
    local_start = starts_at.astimezone(ZoneInfo(zone))
    first_day = local_start.date()
    count = int(parts["COUNT"]) if "COUNT" in parts else None
    if count is not None and not 1 <= count <= MAX_OCCURRENCES:
        raise UnsupportedRule(f"COUNT={count} (Exchange allows 1-{MAX_OCCURRENCES})")
    end = _until_day(parts["UNTIL"], zone) if "UNTIL" in parts else None
    if end is not None and end < first_day:
        raise UnsupportedRule("UNTIL is before the first occurrence")
    if "WKST" in parts and parts["WKST"] != "MO" and freq == "WEEKLY" and interval > 1:
        raise UnsupportedRule(f"WKST={parts['WKST']} with INTERVAL>1 (Exchange weeks start Monday)")
    days = _byday(parts["BYDAY"]) if "BYDAY" in parts else []
    monthdays = parts.get("BYMONTHDAY", "")
    months = parts.get("BYMONTH", "")
    setpos = parts.get("BYSETPOS", "")
    if "," in setpos:
        raise UnsupportedRule("several BYSETPOS values (Exchange names one week of the month)")
    if "," in monthdays:
        raise UnsupportedRule("several BYMONTHDAY values (Exchange repeats on one day of month)")
    if "," in months:
        raise UnsupportedRule("several BYMONTH values (Exchange repeats in one month a year)")
    if monthdays and int(monthdays) < 1:
        raise UnsupportedRule(f"BYMONTHDAY={monthdays} (Exchange counts days from the start)")
    common = {"start": first_day, "end": end, "count": count}

    if freq == "DAILY":
        if days or monthdays or months or setpos:
            raise UnsupportedRule("BY… parts in a DAILY rule (write it as WEEKLY with BYDAY)")
        pattern = Recurrence("daily", interval=interval, **common)
    elif freq == "WEEKLY":
        if monthdays or months or setpos or any(n is not None for n, _ in days):
            raise UnsupportedRule("BYMONTHDAY, BYMONTH, BYSETPOS or numbered BYDAY in WEEKLY")
        names = [name for _, name in days] or [WEEKDAYS[first_day.weekday()]]
        ordered = tuple(sorted(set(names), key=WEEKDAYS.index))
        pattern = Recurrence("weekly", interval=interval, weekdays=ordered, **common)
    else:
        yearly = freq == "YEARLY"
        if yearly and interval != 1:
            raise UnsupportedRule("INTERVAL>1 in a YEARLY rule (Exchange repeats every year)")
        month = int(months) if months else (first_day.month if yearly else None)
        if months and not yearly:
            raise UnsupportedRule("BYMONTH in a MONTHLY rule")
        kind = "yearly" if yearly else "monthly"
        if days:
            if monthdays or len(days) != 1:
                raise UnsupportedRule("several BYDAY values or BYDAY with BYMONTHDAY")
            ordinal, weekday = days[0]
            if setpos:
                if ordinal is not None:
                    raise UnsupportedRule("BYSETPOS with a numbered BYDAY")
                ordinal = int(setpos)
            if ordinal not in _ORDINALS:
                raise UnsupportedRule(
                    f"week {ordinal} of the month (Exchange knows 1st-4th and last)"
                )
            pattern = Recurrence(
                f"relative_{kind}", interval=interval, weekdays=(weekday,), month=month,
                week_index=_ORDINALS[ordinal], **common,
            )  # fmt: skip
        else:
            if setpos:
                raise UnsupportedRule("BYSETPOS without BYDAY")
            day = int(monthdays) if monthdays else first_day.day
            pattern = Recurrence(
                f"absolute_{kind}", interval=interval, day_of_month=day, month=month, **common
            )
    # RFC 5545 counts DTSTART as an occurrence even when the rule does not produce it; Exchange
    # starts at the first day the pattern produces. Only rules that agree are pushed.
    first = next(iter(_local_starts(rule, local_start)), None)
    if first is None or first != local_start.replace(tzinfo=None):
        raise UnsupportedRule("the first occurrence (starts_at) is not a day the rule produces")
    assert pattern.weekdays == () or all(d in WEEKDAYS for d in pattern.weekdays)
    assert pattern.week_index is None or pattern.week_index in WEEK_INDEXES
    return pattern, rule


def _until_day(value: str, zone: str) -> date:
    if len(value) == 8:
        return datetime.strptime(value, "%Y%m%d").date()
    return _instant(value, zone).astimezone(ZoneInfo(zone)).date()


def _local_starts(rule: SeriesRule, local_start: datetime, limit: int = 5000):
    """Local (naive) starts of the rule from the series' first occurrence, EXDATEs ignored."""
    naive = local_start.replace(tzinfo=None)
    line = rule.rrule_line
    if "UNTIL=" in line.upper():
        # dateutil wants UNTIL in the DTSTART's form (naive): the end of that local day
        until = _until_day(rule.parts["UNTIL"], str(local_start.tzinfo))
        pieces = [p for p in line.split(";") if not p.upper().startswith("UNTIL=")]
        line = ";".join([*pieces, f"UNTIL={until:%Y%m%d}T235959"])
    generator = rrulestr(line, dtstart=naive, forceset=False, ignoretz=True)
    for n, start in enumerate(generator):
        if n >= limit:
            return
        yield start


def occurrences(
    text: str, starts_at: datetime, zone: str, until: datetime | None = None
) -> list[datetime]:
    """Original starts (UTC) of an app series' occurrences up to ``until``, EXDATEs removed;
    wall-clock time is kept in ``zone`` across DST, as Exchange does."""
    rule = parse_rule(text, zone)
    tz = ZoneInfo(zone)
    local_start = starts_at.astimezone(tz)
    excluded = set(rule.exdates)
    result = []
    for local in _local_starts(rule, local_start):
        instant = local.replace(tzinfo=tz).astimezone(UTC)
        if until is not None and instant >= until:
            break
        if instant not in excluded and not _excluded_day(rule, local.date(), tz):
            result.append(instant)
    return result


def _excluded_day(rule: SeriesRule, day: date, tz: ZoneInfo) -> bool:
    midnight = datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)
    return midnight in rule.exdates


def occurrence_index(
    recurrence: Recurrence | None, starts_at: datetime, zone: str, original_start: datetime
) -> int:
    """The 1-based position of an occurrence in its series' pattern (EWS InstanceIndex),
    deleted occurrences counted. ``original_start`` may also be a local midnight (a date-only
    EXDATE): the occurrence on that day is meant."""
    if recurrence is None:
        raise ValueError("not a series")
    tz = ZoneInfo(zone)
    target = original_start.astimezone(tz).replace(tzinfo=None)
    line = rrule_of(recurrence, starts_at.astimezone(tz))
    generator = rrulestr(line, dtstart=starts_at.astimezone(tz).replace(tzinfo=None))
    for n, local in enumerate(generator, start=1):
        if local == target or (target.time() == time(0) and local.date() == target.date()):
            return n
        if local > target + timedelta(days=1) or n > 5000:
            break
    raise ValueError(f"{original_start} is not an occurrence of the series")


def rrule_of(recurrence: Recurrence, local_start: datetime) -> str:
    """An Exchange pattern as an RRULE (the inverse of to_recurrence, for expanding it)."""
    byday = ",".join(ICAL_DAYS[WEEKDAYS.index(d)] for d in recurrence.weekdays)
    parts = {
        "daily": ["FREQ=DAILY"],
        "weekly": ["FREQ=WEEKLY", f"BYDAY={byday}", "WKST=MO"],
        "absolute_monthly": ["FREQ=MONTHLY", f"BYMONTHDAY={recurrence.day_of_month}"],
        "relative_monthly": ["FREQ=MONTHLY", f"BYDAY={byday}",
                             f"BYSETPOS={_setpos(recurrence.week_index)}"],
        "absolute_yearly": ["FREQ=YEARLY", f"BYMONTH={recurrence.month}",
                            f"BYMONTHDAY={recurrence.day_of_month}"],
        "relative_yearly": ["FREQ=YEARLY", f"BYMONTH={recurrence.month}", f"BYDAY={byday}",
                            f"BYSETPOS={_setpos(recurrence.week_index)}"],
    }[recurrence.pattern]  # fmt: skip
    if not recurrence.pattern.endswith("yearly"):
        parts.append(f"INTERVAL={recurrence.interval}")
    if recurrence.count:
        parts.append(f"COUNT={recurrence.count}")
    elif recurrence.end:
        parts.append(f"UNTIL={recurrence.end:%Y%m%d}T235959")
    return ";".join(parts)


def _setpos(week_index: str | None) -> int:
    return {"First": 1, "Second": 2, "Third": 3, "Fourth": 4, "Last": -1}[week_index or "First"]


def unsupported_reason(text: str | None, starts_at: datetime, zone: str) -> str | None:
    """Why an app series cannot be pushed, or None when it can (or is not a series)."""
    if not text or not text.strip():
        return None
    try:
        to_recurrence(text, starts_at, zone)
    except UnsupportedRule as exc:
        return f"recurrence_rule not supported by Exchange: {exc}"
    except (ValueError, KeyError) as exc:
        return f"recurrence_rule cannot be read: {exc}"
    return None
