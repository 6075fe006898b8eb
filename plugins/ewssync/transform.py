"""Pure functions: raw Exchange items -> normalised appointments (records; DataFrames too), no I/O."""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from ewssync import html_text
from ewssync.errors import EwsSyncError
from ewssync.timezones import is_valid_zone, windows_to_iana

# pandas, inscriptis and lxml are imported where they are used: extract, load and the DAG file
# import this module for its rules and column names, and each of those is a task process (or a
# DAG parse) that would otherwise pay half a second to load them.
if TYPE_CHECKING:
    import pandas as pd

RAW_COLUMNS = (
    "item_id", "change_key", "item_type", "uid", "recurrence_id", "master_item_id", "subject",
    "location", "body", "body_type", "start", "end", "is_all_day", "start_date", "end_date",
    "timezone_windows", "timezone_iana", "sensitivity", "reminder_is_set", "reminder_minutes",
    "legacy_free_busy", "categories", "last_modified", "is_recurring",
)  # fmt: skip

NORMALIZED_COLUMNS = (
    "ews_item_id", "change_key", "uid", "recurrence_id", "series_key", "occurrence_key",
    "item_type", "title", "location", "notes", "notes_html", "starts_at", "ends_at", "all_day",
    "start_date", "end_date", "time_zone", "is_private", "reminder_minutes", "show_as",
    "category", "fingerprint",
)  # fmt: skip

# The content the app sees; ids, change keys and modification times are not content.
FINGERPRINT_COLUMNS = (
    "title", "location", "notes", "notes_html", "starts_at", "ends_at", "all_day", "start_date",
    "end_date", "time_zone", "is_private", "reminder_minutes", "show_as", "category",
)  # fmt: skip

# Bumped when the digest's input format changes: every item then looks changed once.
FINGERPRINT_VERSION = "v1"

# Exchange's LegacyFreeBusyStatus -> the app's show-as. The legacy product's "present" flag was
# this field: busy/tentative mean present, free means not needed on site, OOF means away.
# NoData (no status recorded) and anything unknown count as busy: Outlook's default for a new
# appointment, and the safe reading for "is this person available".
SHOW_AS = {
    "Free": "free",
    "Tentative": "tentative",
    "Busy": "busy",
    "OOF": "away",
    "WorkingElsewhere": "working_elsewhere",
    "NoData": "busy",
}
DEFAULT_SHOW_AS = "busy"

# Outlook's "Private" and "Confidential" hide an item's details from delegates and shared
# views; "Personal" is only a label (Outlook shows it to delegates), so it syncs as normal.
PRIVATE_SENSITIVITIES = frozenset({"Private", "Confidential"})

SERIES_ITEM_TYPES = frozenset({"Occurrence", "Exception"})


@functools.cache
def _html_config():
    # Outlook's HTML puts <div class=WordSection1> around everything: the "strict" profile
    # (browser defaults) does not indent divs as inscriptis' default "relaxed" profile does.
    from inscriptis.css_profiles import CSS_PROFILES
    from inscriptis.model.config import ParserConfig

    return ParserConfig(
        css=CSS_PROFILES["strict"], display_links=False, display_images=False, display_anchors=False
    )


_LXML_TEXT_LIMIT = 10_000_000

# --- bodies ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def html_to_text(html: str | None) -> str:
    """Readable plain text from an (Outlook) HTML body.

    Paragraphs and line breaks are kept; styles, scripts, comments (Outlook's conditional
    comments included) and Office markup (<o:p>, <v:...>) are dropped by inscriptis' HTML
    model; entities are decoded (&nbsp; becomes a space). Trailing spaces are stripped per
    line, runs of empty lines collapse to one, and the whole text is stripped.
    """
    if not html or not html.strip():
        return ""
    text = html_text.render(html)  # inscriptis' text, faster, for the HTML Outlook writes
    if text is None:
        from inscriptis import get_text

        text = get_text(html, _html_config())
    if not text.strip() and len(html) > _LXML_TEXT_LIMIT:
        from inscriptis import Inscriptis
        from lxml.html import HTMLParser, document_fromstring

        # lxml silently drops a text node over 10,000,000 characters unless told otherwise: a
        # huge pasted log became empty notes. Parse such bodies again with huge_tree.
        tree = document_fromstring(html.strip(), parser=HTMLParser(huge_tree=True))
        text = Inscriptis(tree, _html_config()).get_text()
    return _tidy(text)


def plain_text(text: str | None) -> str:
    """A Text body as notes: only line endings are normalised (CRLF and CR become LF)."""
    if not text:
        return ""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in plain_text(text).replace("\u00a0", " ").split("\n")]
    kept: list[str] = []
    for line in lines:
        if line or (kept and kept[-1]):
            kept.append(line)
    return "\n".join(kept).strip()


def _is_html(body: str, body_type: object) -> bool:
    if isinstance(body_type, str) and body_type.strip():
        return body_type.strip().upper() == "HTML"
    return body.lstrip().startswith("<")  # body type missing: trust the content


def notes_of(body: object, body_type: object, *, keep_html: bool) -> tuple[str, str | None]:
    """(notes, notes_html) for one body: plain text always; the original HTML only with
    ``keep_html``. Empty bodies are not parsed."""
    body, body_type = _str_or_none(body), _str_or_none(body_type)
    if not body:
        return "", None
    if _is_html(body, body_type):
        return html_to_text(body), body if keep_html else None
    return plain_text(body), None


def notes_columns(
    bodies: pd.Series, body_types: pd.Series, *, keep_html: bool
) -> tuple[pd.Series, pd.Series]:
    """notes_of for columns of bodies and body types: (notes, notes_html); each distinct body
    is converted once."""
    import pandas as pd

    converted: dict[tuple, tuple[str, str | None]] = {}
    pairs = []
    for key in zip(map(_str_or_none, bodies), map(_str_or_none, body_types), strict=True):
        if key not in converted:
            converted[key] = notes_of(*key, keep_html=keep_html)
        pairs.append(converted[key])
    notes = pd.Series([p[0] for p in pairs], index=bodies.index, dtype=object)
    notes_html = pd.Series([p[1] for p in pairs], index=bodies.index, dtype=object)
    return notes, notes_html


# --- small rules --------------------------------------------------------------------------------


def resolve_zone(timezone_iana: object, timezone_windows: object, fallback_zone: str) -> str:
    """The item's IANA zone: its IANA name, else its Windows name mapped, else the fallback
    (the connection's Exchange time zone) for customized, unknown or missing zones."""
    for name in (timezone_iana, timezone_windows):
        zone = windows_to_iana(name) if isinstance(name, str) else None
        if zone is not None:
            return zone
    return fallback_zone


def show_as(legacy_free_busy: object) -> str:
    """The app's show-as for Exchange's LegacyFreeBusyStatus (see SHOW_AS)."""
    return (
        SHOW_AS.get(legacy_free_busy, DEFAULT_SHOW_AS)
        if isinstance(legacy_free_busy, str)
        else DEFAULT_SHOW_AS
    )


# --- meetings ------------------------------------------------------------------------------------
# A meeting's copy in an attendee's calendar says how the owner answered (MyResponseType) and
# whether the organizer cancelled it (IsCancelled). Decided here, applied by extract before
# anything is staged:
# - cancelled: not synced (it no longer takes place; Outlook only keeps it until the owner
#   removes it); one synced before leaves the app.
# - declined and still in the calendar: synced as Exchange has it (usually free) unless the
#   connection's skip_declined is on; then it is left out like a cancelled one.
# - tentatively accepted: shown as tentative, whatever free/busy status the item carries.
# - the organizer's own meetings and plain appointments: unchanged.


def meeting_skip_reason(
    is_cancelled: object, my_response: object, *, skip_declined: bool
) -> str | None:
    """Why a meeting is left out ('cancelled' or 'declined'), or None to sync it."""
    if is_cancelled is True:
        return "cancelled"
    if skip_declined and my_response == "Decline":
        return "declined"
    return None


def meeting_free_busy(legacy_free_busy: object, my_response: object) -> object:
    """The free/busy status to sync: Tentative for a tentatively accepted meeting."""
    return "Tentative" if my_response == "Tentative" else legacy_free_busy


def apply_meeting_rules(
    records: list[dict], *, skip_declined: bool
) -> tuple[list[dict], dict[str, str]]:
    """Records to stage (tentative meetings marked Tentative) and the ids left out, with why."""
    kept: list[dict] = []
    skipped: dict[str, str] = {}
    for record in records:
        reason = meeting_skip_reason(
            record.get("is_cancelled"), record.get("my_response"), skip_declined=skip_declined
        )
        if reason:
            skipped[record["item_id"]] = reason
            continue
        free_busy = meeting_free_busy(record.get("legacy_free_busy"), record.get("my_response"))
        kept.append(record if free_busy == record.get("legacy_free_busy") else
                    {**record, "legacy_free_busy": free_busy})  # fmt: skip
    return kept, skipped


def first_category(categories: object) -> str | None:
    """The app's single appointment type: the first non-blank Exchange category.

    The app creates items with exactly one category; items with several (set in Outlook) keep
    the first one Exchange lists, which is the order the user assigned them.
    """
    if categories is None or isinstance(categories, float):  # None / NaN
        return None
    if isinstance(categories, str):
        categories = [categories]
    if not isinstance(categories, Iterable):
        return None
    for category in categories:
        if isinstance(category, str) and category.strip():
            return category.strip()
    return None


def _is_null(value: object) -> bool:
    """None, NaN, and pandas' NaT and NA (recognised only once pandas is loaded: a value can be
    one of them only then)."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    pandas = sys.modules.get("pandas")
    return pandas is not None and (value is pandas.NaT or value is pandas.NA)


def _as_date(value: object) -> date | None:
    if _is_null(value):
        return None
    if isinstance(value, datetime):  # datetime first: it is a date subclass
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and value.strip():
        return date.fromisoformat(value.strip()[:10])
    return None


def _as_utc(value: object) -> datetime | None:
    """An aware UTC instant (naive values are taken as UTC, as EWS sends them), or None."""
    if _is_null(value):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _stripped(value: object) -> str:
    """A stripped string; anything else (None, NaN) becomes ''."""
    return value.strip() if isinstance(value, str) else ""


def _flag(value: object) -> bool:
    """A boolean; a missing value (None, NaN) is False."""
    if value is True or value is False:
        return value
    return False if _is_null(value) else bool(value)


def _number(value: object) -> int | float | None:
    """A number as pandas.to_numeric(errors="coerce") reads it, or None."""
    if _is_null(value):
        return None
    if isinstance(value, int | float):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number


def _minutes(value: object) -> int | None:
    """Whole minutes (rounded half to even), or None for a missing or non-numeric value."""
    number = _number(value)
    if number is None or isinstance(number, int):
        return None if number is None else int(number)
    return round(number) if abs(number) != float("inf") else None


def _local_date(instant: datetime | None, zone: str) -> date | None:
    return None if instant is None else instant.astimezone(_zone(zone)).date()


@functools.cache
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _iso_z(instant: datetime | None) -> str | None:
    """ISO-8601 UTC to the second, 'Z' for the zone (as pandas' strftime wrote it)."""
    if instant is None:
        return None
    utc = instant.astimezone(UTC)
    if utc.year < 1000:  # isoformat pads the year, strftime does not
        return utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    return utc.replace(microsecond=0, tzinfo=None).isoformat() + "Z"  # faster than strftime


# --- normalize ----------------------------------------------------------------------------------


def normalize_records(
    raw: Iterable[dict[str, Any]], *, keep_html: bool, sync_private: bool, fallback_zone: str
) -> list[dict[str, Any]]:
    """Raw Exchange items (dicts with RAW_COLUMNS) -> appointments (dicts with
    NORMALIZED_COLUMNS), one each, in the same order.

    Series masters are dropped (a view already expanded them into occurrences); private items
    are dropped unless ``sync_private`` (then they are kept and flagged ``is_private``).
    ``fallback_zone`` (IANA) is used for items whose zone is customized, unknown or missing.
    The result does not depend on the host's time zone. Instants are aware UTC datetimes,
    dates are dates, missing values None.
    """
    if not is_valid_zone(fallback_zone):
        raise EwsSyncError(
            f"transform.normalize: fallback zone {fallback_zone!r} is not an IANA zone; "
            "set the connection's Exchange time zone"
        )
    zone_of: dict[tuple, str] = {}
    notes_for: dict[tuple, tuple[str, str | None]] = {}
    rows: list[dict[str, Any]] = []
    for item in raw:
        item_type = item["item_type"]
        if item_type == "RecurringMaster":
            continue
        sensitivity = item["sensitivity"]
        private = isinstance(sensitivity, str) and sensitivity in PRIVATE_SENSITIVITIES
        if private and not sync_private:
            continue
        zone_names = (_str_or_none(item["timezone_iana"]), _str_or_none(item["timezone_windows"]))
        zone = zone_of.get(zone_names)
        if zone is None:
            zone = zone_of[zone_names] = resolve_zone(*zone_names, fallback_zone)
        starts_at = _as_utc(item["start"])
        ends_at = _as_utc(item["end"])
        all_day = _flag(item["is_all_day"])
        in_series = isinstance(item_type, str) and item_type in SERIES_ITEM_TYPES

        # All-day: Exchange's own dates, never recomputed from instants, so no zone (the item's,
        # the connection's, the host's) can shift them. Timed items (and all-day items without
        # dates): the local dates of start and end in the item's zone.
        own_start = _as_date(item["start_date"]) if all_day else None
        if own_start is not None:
            start_date = own_start
            end_date = _as_date(item["end_date"]) or own_start
        else:
            start_date = _local_date(starts_at, zone)
            if all_day:
                # Exchange's all-day end is the next midnight: the inclusive end is the day before.
                last = (
                    ends_at - _MICROSECOND
                    if starts_at is not None and ends_at is not None and ends_at > starts_at
                    else starts_at
                )
                end_date = _local_date(last, zone)
            else:
                end_date = _local_date(ends_at, zone)

        # An occurrence's original start is its start; an exception without one keeps its own
        # start as key (a degraded key, but never a NULL one).
        recurrence_id = _as_utc(item["recurrence_id"])
        if recurrence_id is None and in_series:
            recurrence_id = starts_at
        uid = None if _is_null(item["uid"]) else item["uid"]

        body_key = (_str_or_none(item["body"]), _str_or_none(item["body_type"]))
        notes = notes_for.get(body_key)
        if notes is None:
            notes = notes_for[body_key] = notes_of(*body_key, keep_html=keep_html)

        row = {
            "ews_item_id": item["item_id"],
            "change_key": item["change_key"],
            "uid": uid,
            "recurrence_id": recurrence_id,
            "series_key": uid if in_series else None,
            "occurrence_key": _iso_z(recurrence_id) if in_series else None,
            "item_type": item_type,
            "title": _stripped(item["subject"]),
            "location": _stripped(item["location"]),
            "notes": notes[0],
            "notes_html": notes[1],
            "starts_at": starts_at,
            "ends_at": ends_at,
            "all_day": all_day,
            "start_date": start_date,
            "end_date": end_date,
            "time_zone": zone,
            "is_private": private,
            "reminder_minutes": (
                _minutes(item["reminder_minutes"]) if _flag(item["reminder_is_set"]) else None
            ),
            "show_as": show_as(item["legacy_free_busy"]),
            "category": first_category(item["categories"]),
        }
        row["fingerprint"] = fingerprint(row)
        rows.append(row)
    return rows


_MICROSECOND = timedelta(microseconds=1)


def normalize(
    raw: pd.DataFrame, *, keep_html: bool, sync_private: bool, fallback_zone: str
) -> pd.DataFrame:
    """normalize_records for a DataFrame of raw items: one row per appointment, the columns
    NORMALIZED_COLUMNS (instants as UTC timestamps, reminder minutes as Int64)."""
    import pandas as pd

    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise EwsSyncError(f"transform.normalize: raw items lack columns {missing}")
    items = raw.loc[:, list(RAW_COLUMNS)].astype(object)
    for column in ("start", "end", "recurrence_id"):
        # pandas parses what the frame may hold (strings, timestamps, naive datetimes)
        instants = pd.to_datetime(raw[column], utc=True)
        items[column] = [None if v is pd.NaT else v for v in instants.dt.to_pydatetime()]
    records = items.to_dict("records")
    rows = normalize_records(
        records, keep_html=keep_html, sync_private=sync_private, fallback_zone=fallback_zone
    )
    return normalized_frame(rows)


def normalized_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Normalised appointments as a DataFrame (NORMALIZED_COLUMNS; empty with those columns)."""
    import pandas as pd

    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in NORMALIZED_COLUMNS})
    columns: dict[str, Any] = {}
    for name in NORMALIZED_COLUMNS:
        values = [row[name] for row in rows]
        if name in _INSTANT_COLUMNS:
            columns[name] = pd.to_datetime(pd.Series(values, dtype=object), utc=True)
        elif name in _FLAG_COLUMNS:
            columns[name] = pd.Series(values, dtype=bool)
        elif name == "reminder_minutes":
            columns[name] = pd.Series(values, dtype="Int64")
        else:
            # object dtype keeps None as None (pandas 3 would infer its str dtype, with NaN)
            columns[name] = pd.Series(values, dtype=object)
    return pd.DataFrame(columns)


_INSTANT_COLUMNS = frozenset({"recurrence_id", "starts_at", "ends_at"})
_FLAG_COLUMNS = frozenset({"all_day", "is_private"})


# --- repair -------------------------------------------------------------------------------------

MAX_REMINDER_MINUTES = 40320


def repair_records(
    rows: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Normalise what calendar.appointments would refuse the way Outlook shows it, so one odd
    item cannot stop a mailbox's load; return the rows (a repaired row is a new dict) and one
    note per repair.

    - an end before the start: the end becomes the start (Outlook shows a zero-length item);
    - an all-day item whose (inclusive) end date is before its start date, i.e. zero days
      long: it becomes one day long;
    - a reminder outside 0..40320 minutes: no reminder.
    """
    rows = list(rows)
    notes: list[dict[str, str]] = []
    repaired: set[int] = set()

    def note(index: int, problem: str, action: str, **changes: Any) -> None:
        row = rows[index]
        notes.append(
            {"item_id": str(row["ews_item_id"]), "title": str(row["title"]), "problem": problem,
             "action": action}
        )  # fmt: skip
        rows[index] = {**row, **changes}
        repaired.add(index)

    # One pass per rule: the notes list every item of a rule together, as the run report shows.
    for index, row in enumerate(rows):
        starts, ends = row["starts_at"], row["ends_at"]
        if not _is_null(starts) and not _is_null(ends) and ends < starts:
            note(index, "ends before it starts", "end set to the start", ends_at=starts)
    for index, row in enumerate(rows):
        if not _flag(row["all_day"]):
            continue
        start_date = _as_date(row["start_date"])
        end_date = _as_date(row["end_date"])
        if start_date is not None and (end_date is None or end_date < start_date):
            starts, ends = row["starts_at"], row["ends_at"]
            if _is_null(starts) or (not _is_null(ends) and ends > starts):
                one_day_end = ends if not _is_null(starts) else starts
            else:
                one_day_end = starts + _ONE_DAY
            note(index, "all-day item of zero days", "made one day long", end_date=start_date,
                 ends_at=one_day_end)  # fmt: skip
    for index, row in enumerate(rows):
        reminder = _number(row["reminder_minutes"])
        if reminder is None:
            continue
        if reminder < 0 or reminder > MAX_REMINDER_MINUTES:
            note(index, f"reminder outside 0..{MAX_REMINDER_MINUTES} minutes", "reminder dropped",
                 reminder_minutes=None)  # fmt: skip
    for index in repaired:
        rows[index]["fingerprint"] = fingerprint(rows[index])
    return rows, notes


_ONE_DAY = timedelta(days=1)


def repair(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """repair_records for a DataFrame of normalised appointments: the repaired frame (a copy;
    a dropped reminder makes the reminder column object dtype, holding None) and the notes."""
    if frame.empty:
        return frame, []
    frame = frame.copy()
    originals = frame.to_dict("records")
    rows, notes = repair_records(originals)
    if not notes:
        return frame, []
    if any(row["reminder_minutes"] is None and not _is_null(original["reminder_minutes"])
           for row, original in zip(rows, originals, strict=True)):  # fmt: skip
        frame["reminder_minutes"] = frame["reminder_minutes"].astype(object)
    for position, (row, original) in enumerate(zip(rows, originals, strict=True)):
        if row is original:
            continue
        for column in ("ends_at", "end_date", "reminder_minutes", "fingerprint"):
            if row[column] is not original[column]:
                frame.iloc[position, frame.columns.get_loc(column)] = row[column]
    return frame, notes


# --- fingerprints -------------------------------------------------------------------------------


def fingerprint(row: dict[str, Any]) -> str:
    """A stable SHA-256 hex digest over a row's FINGERPRINT_COLUMNS (normalised content only:
    no ids, change keys or modification times), the same on every host and pandas version."""
    return _digest([_canonical_value(row[column]) for column in FINGERPRINT_COLUMNS])


def _digest(values: list) -> str:
    return hashlib.sha256(
        json.dumps([FINGERPRINT_VERSION, *values], ensure_ascii=False, separators=(",", ":"))
        .encode("utf-8")
    ).hexdigest()  # fmt: skip


def fingerprints(frame: pd.DataFrame) -> pd.Series:
    """fingerprint for every row of a DataFrame of normalised appointments."""
    import pandas as pd

    columns = [_canonical(frame[column]) for column in FINGERPRINT_COLUMNS]
    digests = [_digest(list(row)) for row in zip(*columns, strict=True)]
    return pd.Series(digests, index=frame.index, dtype=object)


def _canonical(values: pd.Series) -> list:
    """JSON-ready values: ISO-8601 UTC for instants, ISO dates, Python scalars, None."""
    import pandas as pd

    if isinstance(values.dtype, pd.DatetimeTZDtype):
        text = values.dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        return text.astype(object).where(values.notna(), None).tolist()
    if values.dtype == bool:
        return values.tolist()
    return [_canonical_value(value) for value in values.to_numpy(dtype=object)]


def _canonical_value(value: object) -> object:
    kind = type(value)
    if kind is str or kind is bool or kind is int or value is None:  # the common cases first
        return value
    if isinstance(value, str | bool | int):
        return value.item() if hasattr(value, "item") else value
    if _is_null(value):
        return None
    if isinstance(value, datetime):
        return _iso_z(value)
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return value


# --- summary ------------------------------------------------------------------------------------


def summarize_records(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Counts for the run report: rows, private, all-day and recurring (in a series)."""
    return {
        "rows": len(rows),
        "private": sum(1 for row in rows if row["is_private"]),
        "all_day": sum(1 for row in rows if row["all_day"]),
        "recurring": sum(1 for row in rows if not _is_null(row["series_key"])),
    }


def summarize(frame: pd.DataFrame) -> dict[str, int]:
    """summarize_records for a DataFrame of normalised appointments."""
    if frame.empty:
        return {"rows": 0, "private": 0, "all_day": 0, "recurring": 0}
    return {
        "rows": len(frame),
        "private": int(frame["is_private"].astype(bool).sum()),
        "all_day": int(frame["all_day"].astype(bool).sum()),
        "recurring": int(frame["series_key"].notna().sum()),
    }
