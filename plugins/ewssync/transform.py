"""Pure functions on DataFrames: raw Exchange items -> normalised appointments (no I/O)."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pandas as pd

from ewssync.timezones import to_iana

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

# Exchange's LegacyFreeBusyStatus -> the app's show-as. The legacy product's "present" flag was
# this field: busy/tentative mean present, free means not needed on site, OOF means away.
SHOW_AS = {
    "Free": "free",
    "Tentative": "tentative",
    "Busy": "busy",
    "OOF": "away",
    "WorkingElsewhere": "working_elsewhere",
    "NoData": "busy",
}

# Outlook's "Private" and "Confidential" hide an item from delegates; "Personal" only labels
# it, so it is synced like a normal appointment.
PRIVATE_SENSITIVITIES = {"Private", "Confidential"}

_CONDITIONAL_COMMENT = re.compile(r"<!--\[if[^\]]*\]>.*?<!\[endif\]-->", re.DOTALL | re.IGNORECASE)
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_OFFICE_TAG = re.compile(r"</?(?:o|v|w|m|st1):[^>]*>", re.IGNORECASE)
_BLANK_RUNS = re.compile(r"\n{3,}")


@functools.lru_cache(maxsize=4096)
def html_to_text(html: str | None) -> str:
    """Readable plain text from an (Outlook) HTML body: paragraphs and line breaks kept;
    styles, scripts, comments and Office markup dropped; entities decoded."""
    if not html or not html.strip():
        return ""
    from inscriptis import get_text
    from inscriptis.model.config import ParserConfig

    # Comments and Office namespace tags are removed before parsing: inscriptis would keep the
    # text inside Outlook's conditional comments (<xml> settings) otherwise.
    cleaned = _OFFICE_TAG.sub("", _COMMENT.sub("", _CONDITIONAL_COMMENT.sub("", html)))
    text = get_text(cleaned, ParserConfig(display_links=False, display_images=False))
    return tidy_text(text)


def tidy_text(text: str | None) -> str:
    """Normalise line endings, no-break spaces, trailing blanks and runs of empty lines."""
    if not text:
        return ""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u00a0", " ")
    lines = [line.strip() for line in text.split("\n")]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def _iso_utc(value) -> str | None:
    if value is None or value is pd.NaT or (isinstance(value, float) and value != value):
        return None
    return pd.Timestamp(value).tz_convert(UTC).isoformat()


def _local_date(instant, zone: str) -> date:
    return pd.Timestamp(instant).tz_convert(ZoneInfo(zone)).date()


def _as_date(value) -> date | None:
    if value is None or value is pd.NaT or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return pd.Timestamp(value).date()


def fingerprint(row: dict) -> str:
    """A stable digest of an appointment's content (FINGERPRINT_COLUMNS)."""
    payload = []
    for column in FINGERPRINT_COLUMNS:
        value = row.get(column)
        if value is None or value is pd.NaT or (isinstance(value, float) and value != value):
            payload.append(None)
        elif isinstance(value, datetime | pd.Timestamp):
            payload.append(_iso_utc(value))
        elif isinstance(value, date):
            payload.append(value.isoformat())
        elif hasattr(value, "item"):  # numpy scalars
            payload.append(value.item())
        else:
            payload.append(value)
    encoded = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def _first_category(categories) -> str | None:
    # The app has one appointment type; Exchange items may carry several categories. The first
    # one is the type (the app writes exactly one when it creates items).
    if categories is None or (isinstance(categories, float) and categories != categories):
        return None
    items = list(categories)
    return str(items[0]) if items else None


def normalize_row(raw: dict, *, keep_html: bool, fallback_zone: str) -> dict:
    """One raw Exchange item -> one normalised appointment row (NORMALIZED_COLUMNS)."""
    zone = to_iana(raw.get("timezone_iana") or raw.get("timezone_windows"), fallback_zone)
    body = raw.get("body")
    body = None if body is None or (isinstance(body, float) and body != body) else str(body)
    is_html = (raw.get("body_type") or "HTML").upper() == "HTML"
    notes = html_to_text(body) if is_html else tidy_text(body)
    notes_html = body if keep_html and is_html and body else None
    starts_at = pd.Timestamp(raw["start"]).tz_convert(UTC).to_pydatetime()
    ends_at = pd.Timestamp(raw["end"]).tz_convert(UTC).to_pydatetime()
    all_day = bool(raw.get("is_all_day"))
    if all_day and _as_date(raw.get("start_date")) is not None:
        # Exchange's own dates: never recomputed from instants, so no zone can shift them.
        start_date = _as_date(raw.get("start_date"))
        end_date = _as_date(raw.get("end_date")) or start_date
    else:
        start_date = _local_date(starts_at, zone)
        end_date = _local_date(ends_at, zone)
    recurrence_id = raw.get("recurrence_id")
    occurrence_key = _iso_utc(recurrence_id)
    in_series = raw.get("item_type") in ("Occurrence", "Exception")
    reminder = raw.get("reminder_minutes") if raw.get("reminder_is_set") else None
    row = {
        "ews_item_id": raw["item_id"],
        "change_key": raw.get("change_key"),
        "uid": raw.get("uid"),
        "recurrence_id": pd.Timestamp(recurrence_id).tz_convert(UTC).to_pydatetime()
        if occurrence_key
        else None,
        "series_key": raw.get("uid") if in_series else None,
        "occurrence_key": occurrence_key if in_series else None,
        "item_type": raw.get("item_type") or "Single",
        "title": (raw.get("subject") or "").strip(),
        "location": (raw.get("location") or "").strip(),
        "notes": notes,
        "notes_html": notes_html,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "all_day": all_day,
        "start_date": start_date,
        "end_date": end_date,
        "time_zone": zone,
        "is_private": raw.get("sensitivity") in PRIVATE_SENSITIVITIES,
        "reminder_minutes": None if reminder is None or reminder != reminder else int(reminder),
        "show_as": SHOW_AS.get(raw.get("legacy_free_busy") or "Busy", "busy"),
        "category": _first_category(raw.get("categories")),
    }
    row["fingerprint"] = fingerprint(row)
    return row


def normalize(
    raw: pd.DataFrame, *, keep_html: bool, sync_private: bool, fallback_zone: str
) -> pd.DataFrame:
    """Raw Exchange items (RAW_COLUMNS) -> appointments (NORMALIZED_COLUMNS).

    Series masters are dropped (a view already expanded them into occurrences); private items
    are dropped unless ``sync_private`` (then they are kept and flagged ``is_private``).
    """
    if raw.empty:
        return pd.DataFrame(columns=list(NORMALIZED_COLUMNS))
    items = raw[raw["item_type"] != "RecurringMaster"]
    if not sync_private:
        items = items[~items["sensitivity"].isin(PRIVATE_SENSITIVITIES)]
    rows = [
        normalize_row(record, keep_html=keep_html, fallback_zone=fallback_zone)
        for record in items.to_dict("records")
    ]
    return pd.DataFrame(rows, columns=list(NORMALIZED_COLUMNS))


def summarize(frame: pd.DataFrame) -> dict[str, int]:
    """Counts for the run report: rows, private, all-day and recurring instances."""
    if frame.empty:
        return {"rows": 0, "private": 0, "all_day": 0, "recurring": 0}
    return {
        "rows": len(frame),
        "private": int(frame["is_private"].sum()),
        "all_day": int(frame["all_day"].sum()),
        "recurring": int(frame["series_key"].notna().sum()),
    }
