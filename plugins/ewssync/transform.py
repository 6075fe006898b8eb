"""Pure functions on DataFrames: raw Exchange items -> normalised appointments (no I/O)."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from datetime import date, datetime
from typing import TYPE_CHECKING

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
    from inscriptis import Inscriptis, get_text

    text = get_text(html, _html_config())
    if not text.strip() and len(html) > _LXML_TEXT_LIMIT:
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


def notes_columns(
    bodies: pd.Series, body_types: pd.Series, *, keep_html: bool
) -> tuple[pd.Series, pd.Series]:
    """(notes, notes_html) for bodies: plain text always; the original HTML only with
    ``keep_html``. Each distinct body is converted once; empty bodies are not parsed."""
    import pandas as pd

    keys = pd.Series(
        list(zip(map(_str_or_none, bodies), map(_str_or_none, body_types), strict=True)),
        index=bodies.index,
        dtype=object,
    )
    converted: dict[tuple, tuple[str, str | None]] = {}
    for key in keys.unique():
        body, body_type = key
        if not body:
            converted[key] = ("", None)
        elif _is_html(body, body_type):
            converted[key] = (html_to_text(body), body if keep_html else None)
        else:
            converted[key] = (plain_text(body), None)
    pairs = keys.map(converted)
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


def _as_date(value: object) -> date | None:
    import pandas as pd

    if value is None or value is pd.NaT or isinstance(value, float):
        return None
    if isinstance(value, datetime):  # datetime first: it is a date subclass
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str) and value.strip():
        return date.fromisoformat(value.strip()[:10])
    return None


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _objects(values: Iterable) -> pd.Series:
    import pandas as pd

    # object dtype keeps None as None (pandas 3 infers its str dtype, which turns None into NaN)
    return pd.Series(list(values), dtype=object)


def _text(values: pd.Series) -> pd.Series:
    """Stripped strings; None/NaN become ''."""
    return _objects(v.strip() if isinstance(v, str) else "" for v in values)


def _utc(values: pd.Series) -> pd.Series:
    """Aware UTC timestamps (naive values are taken as UTC, as EWS sends them)."""
    import pandas as pd

    return pd.to_datetime(values, utc=True)


def _local_dates(instants: pd.Series, zones: pd.Series) -> pd.Series:
    """The calendar date of each instant in its zone (grouped by zone: few distinct zones)."""
    import pandas as pd

    dates = pd.Series(None, index=instants.index, dtype=object)
    for zone in zones.unique():
        mask = zones == zone
        dates[mask] = instants[mask].dt.tz_convert(zone).dt.date
    return dates


def _iso_z(instants: pd.Series) -> pd.Series:

    text = instants.dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return text.astype(object).where(instants.notna(), None)


# --- normalize ----------------------------------------------------------------------------------


def normalize(
    raw: pd.DataFrame, *, keep_html: bool, sync_private: bool, fallback_zone: str
) -> pd.DataFrame:
    """Raw Exchange items (RAW_COLUMNS) -> appointments (NORMALIZED_COLUMNS), one row each.

    Series masters are dropped (a view already expanded them into occurrences); private items
    are dropped unless ``sync_private`` (then they are kept and flagged ``is_private``).
    ``fallback_zone`` (IANA) is used for items whose zone is customized, unknown or missing.
    The result does not depend on the host's time zone.
    """
    import pandas as pd

    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise EwsSyncError(f"transform.normalize: raw items lack columns {missing}")
    if not is_valid_zone(fallback_zone):
        raise EwsSyncError(
            f"transform.normalize: fallback zone {fallback_zone!r} is not an IANA zone; "
            "set the connection's Exchange time zone"
        )
    items = raw.loc[raw["item_type"] != "RecurringMaster"]
    private = items["sensitivity"].isin(PRIVATE_SENSITIVITIES)
    if not sync_private:
        items, private = items.loc[~private], private.loc[~private]
    if items.empty:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in NORMALIZED_COLUMNS})
    items = items.reset_index(drop=True)
    private = private.reset_index(drop=True)

    zone_names = list(
        zip(
            map(_str_or_none, items["timezone_iana"]),
            map(_str_or_none, items["timezone_windows"]),
            strict=True,
        )
    )
    zone_of = {pair: resolve_zone(*pair, fallback_zone) for pair in set(zone_names)}
    time_zone = pd.Series([zone_of[pair] for pair in zone_names], dtype=object)
    starts_at = _utc(items["start"])
    ends_at = _utc(items["end"])
    all_day = items["is_all_day"].fillna(False).astype(bool)
    in_series = items["item_type"].isin(SERIES_ITEM_TYPES)

    # All-day: Exchange's own dates, never recomputed from instants, so no zone (the item's,
    # the connection's, the host's) can shift them. Timed items (and all-day items without
    # dates): the local dates of start and end in the item's zone.
    start_date = _local_dates(starts_at, time_zone)
    end_date = _local_dates(ends_at, time_zone)
    own_start = items["start_date"].map(_as_date)
    own_end = items["end_date"].map(_as_date)
    use_own = all_day & own_start.notna()
    start_date[use_own] = own_start[use_own]
    end_date[use_own] = own_end[use_own].where(own_end[use_own].notna(), own_start[use_own])
    computed_all_day = all_day & ~use_own
    if computed_all_day.any():
        # Exchange's all-day end is the next midnight: the inclusive end is the day before.
        last_instant = (ends_at - pd.Timedelta(microseconds=1)).where(
            ends_at > starts_at, starts_at
        )
        inclusive = _local_dates(last_instant, time_zone)
        end_date[computed_all_day] = inclusive[computed_all_day]

    # An occurrence's original start is its start; an exception without one keeps its own
    # start as key (a degraded key, but never a NULL one).
    recurrence_id = _utc(items["recurrence_id"])
    recurrence_id = recurrence_id.where(recurrence_id.notna() | ~in_series, starts_at)
    occurrence_key = _iso_z(recurrence_id).where(in_series, None)
    uid = items["uid"].astype(object).where(items["uid"].notna(), None)

    reminder_set = items["reminder_is_set"].fillna(False).astype(bool)
    reminder = pd.to_numeric(items["reminder_minutes"], errors="coerce").round().astype("Int64")
    notes, notes_html = notes_columns(items["body"], items["body_type"], keep_html=keep_html)

    frame = pd.DataFrame(
        {
            "ews_item_id": items["item_id"].astype(object),
            "change_key": items["change_key"].astype(object),
            "uid": uid,
            "recurrence_id": recurrence_id,
            "series_key": uid.where(in_series, None),
            "occurrence_key": occurrence_key,
            "item_type": items["item_type"].astype(object),
            "title": _text(items["subject"]),
            "location": _text(items["location"]),
            "notes": notes,
            "notes_html": notes_html,
            "starts_at": starts_at,
            "ends_at": ends_at,
            "all_day": all_day,
            "start_date": start_date,
            "end_date": end_date,
            "time_zone": time_zone,
            "is_private": private.astype(bool),
            "reminder_minutes": reminder.where(reminder_set, pd.NA),
            "show_as": _objects(map(show_as, items["legacy_free_busy"])),
            "category": _objects(map(first_category, items["categories"])),
        }
    )
    frame["fingerprint"] = fingerprints(frame)
    return frame.loc[:, list(NORMALIZED_COLUMNS)]


def repair(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[dict[str, str]]]:
    """Normalise what calendar.appointments would refuse the way Outlook shows it, so one odd
    item cannot stop a mailbox's load; return the repaired rows and one note per repair.

    - an end before the start: the end becomes the start (Outlook shows a zero-length item);
    - an all-day item whose (inclusive) end date is before its start date, i.e. zero days
      long: it becomes one day long;
    - a reminder outside 0..40320 minutes: no reminder.
    """
    import pandas as pd

    if frame.empty:
        return frame, []
    frame = frame.copy()
    notes: list[dict[str, str]] = []

    def note(mask: pd.Series, problem: str, action: str) -> None:
        for item_id, title in zip(
            frame.loc[mask, "ews_item_id"], frame.loc[mask, "title"], strict=True
        ):
            notes.append(
                {"item_id": str(item_id), "title": str(title), "problem": problem, "action": action}
            )

    starts, ends = frame["starts_at"], frame["ends_at"]
    backwards = (ends < starts).fillna(False).astype(bool)
    if backwards.any():
        note(backwards, "ends before it starts", "end set to the start")
        frame.loc[backwards, "ends_at"] = starts[backwards]
    all_day = frame["all_day"].fillna(False).astype(bool)
    start_date = frame["start_date"].map(_as_date)
    end_date = frame["end_date"].map(_as_date)
    no_days = (
        all_day
        & start_date.notna()
        & (
            end_date.isna()
            | pd.Series(
                [
                    e is not None and s is not None and e < s
                    for s, e in zip(start_date, end_date, strict=True)
                ],
                index=frame.index,
                dtype=bool,
            )
        )
    )
    if no_days.any():
        note(no_days, "all-day item of zero days", "made one day long")
        frame.loc[no_days, "end_date"] = start_date[no_days]
        one_day = frame.loc[no_days, "starts_at"] + pd.Timedelta(days=1)
        frame.loc[no_days, "ends_at"] = frame.loc[no_days, "ends_at"].where(
            frame.loc[no_days, "ends_at"] > frame.loc[no_days, "starts_at"], one_day
        )
    reminder = pd.to_numeric(frame["reminder_minutes"], errors="coerce")
    bad_reminder = (reminder.notna() & ((reminder < 0) | (reminder > 40320))).astype(bool)
    if bad_reminder.any():
        note(bad_reminder, "reminder outside 0..40320 minutes", "reminder dropped")
        frame["reminder_minutes"] = frame["reminder_minutes"].astype(object)
        frame.loc[bad_reminder, "reminder_minutes"] = None
    if notes:
        frame["fingerprint"] = fingerprints(frame)
    return frame, notes


def fingerprints(frame: pd.DataFrame) -> pd.Series:
    """A stable SHA-256 hex digest per row over FINGERPRINT_COLUMNS (normalised content only:
    no ids, change keys or modification times), the same on every host and pandas version."""
    import pandas as pd

    columns = [_canonical(frame[column]) for column in FINGERPRINT_COLUMNS]
    digests = [
        hashlib.sha256(
            json.dumps(
                [FINGERPRINT_VERSION, *row], ensure_ascii=False, separators=(",", ":")
            ).encode("utf-8")
        ).hexdigest()
        for row in zip(*columns, strict=True)
    ]
    return pd.Series(digests, index=frame.index, dtype=object)


def _canonical(values: pd.Series) -> list:
    """JSON-ready values: ISO-8601 UTC for instants, ISO dates, Python scalars, None."""
    import pandas as pd

    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return _iso_z(values.dt.tz_convert("UTC")).tolist()
    if values.dtype == bool:
        return values.tolist()
    return [_scalar(value) for value in values.to_numpy(dtype=object)]


def _scalar(value: object) -> object:
    import pandas as pd

    if isinstance(value, str | bool | int):
        return value.item() if hasattr(value, "item") else value
    if value is None or value is pd.NA or value is pd.NaT or value != value:
        return None
    if isinstance(value, datetime):
        return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return value


def summarize(frame: pd.DataFrame) -> dict[str, int]:
    """Counts for the run report: rows, private, all-day and recurring (in a series)."""
    if frame.empty:
        return {"rows": 0, "private": 0, "all_day": 0, "recurring": 0}
    return {
        "rows": len(frame),
        "private": int(frame["is_private"].astype(bool).sum()),
        "all_day": int(frame["all_day"].astype(bool).sum()),
        "recurring": int(frame["series_key"].notna().sum()),
    }
