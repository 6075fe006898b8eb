"""Postgres changes -> Exchange: carry out the planner's push decisions in batches, record links.

Crash rule: a create is announced in ``ewssync.push_intents`` (committed) before the CreateItem
is sent, and the intent is removed in the transaction that records the link. An intent found at
the start of a push means an earlier push may have created the item and died before recording
it: the stamped item is looked up (``find_stamped``) and adopted instead of created twice. The
pull side adopts stamped items it reads as well (store.adopt_stamped).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import pandas as pd

from ewssync import extract, reconcile, store, transform
from ewssync import recurrence as rules
from ewssync.errors import SafetyStop
from ewssync.exchange.base import (
    CONFLICT,
    MAX_BATCH,
    NOT_FOUND,
    AppointmentWrite,
    ItemUpdate,
    OccurrenceRef,
    OccurrenceUpdate,
    StampedItem,
    WriteResult,
)
from ewssync.reconcile import Action, AppSide, ExchangeSide, ExchangeState, LinkState, Pair
from ewssync.settings import SyncSettings
from ewssync.timezones import iana_to_windows

log = logging.getLogger(__name__)

UID_NAMESPACE = uuid.UUID("5b0c2f4e-8d0e-4f55-9a59-2d7c0e1f6a11")

# The app's show-as -> Exchange's LegacyFreeBusyStatus (transform.SHOW_AS the other way)
LEGACY_FREE_BUSY = {
    "free": "Free",
    "tentative": "Tentative",
    "busy": "Busy",
    "away": "OOF",
    "working_elsewhere": "WorkingElsewhere",
}

# app content fields -> the AppointmentWrite fields an update sends
WRITE_FIELDS = {
    "title": ("subject",),
    "location": ("location",),
    "notes": ("body",),
    "notes_html": ("body",),
    "starts_at": ("start", "end", "time_zone", "is_all_day"),
    "ends_at": ("start", "end", "time_zone", "is_all_day"),
    "all_day": ("start", "end", "time_zone", "is_all_day"),
    "start_date": ("start", "end", "time_zone", "is_all_day"),
    "end_date": ("start", "end", "time_zone", "is_all_day"),
    "time_zone": ("start", "end", "time_zone", "is_all_day"),
    "is_private": ("sensitivity",),
    "reminder_minutes": ("reminder_minutes",),
    "show_as": ("legacy_free_busy",),
    "category": ("categories",),
    "recurrence_rule": ("recurrence",),
}


class CalendarTarget(Protocol):
    """What push needs of the Exchange side (base.ExchangeCalendar's write half + fetch)."""

    def create_items(self, records: Sequence[AppointmentWrite]) -> list[WriteResult]: ...

    def update_items(self, updates: Sequence[ItemUpdate]) -> list[WriteResult]: ...

    def delete_items(
        self, item_ids: Sequence[str], send_cancellations: bool = False
    ) -> list[WriteResult]: ...

    def update_occurrences(self, updates: Sequence[OccurrenceUpdate]) -> list[WriteResult]: ...

    def delete_occurrences(self, occurrences: Sequence[OccurrenceRef]) -> list[WriteResult]: ...

    def find_stamped(self, stamps: Sequence[str]) -> dict[str, StampedItem]: ...

    def fetch(self, item_ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]: ...

    def sync_changes(
        self,
        state: str | None,
        max_changes: int = 512,
        window: tuple[datetime, datetime] | None = None,
    ) -> tuple[str, list[dict[str, Any]], bool]: ...


class Crash(Exception):  # noqa: N818 - a test hook, named for what it simulates
    """Raised by a test's crash hook to simulate the process dying at a named point."""


# --- pure mapping -------------------------------------------------------------------------------


def item_zone(row: dict[str, Any], settings: SyncSettings) -> str:
    """The zone an item is written in: the row's own zone when it names one Exchange knows
    (other than the column's default UTC), else the connection's Exchange time zone."""
    zone = row.get("time_zone") or "UTC"
    if zone != "UTC" and iana_to_windows(zone) is not None:
        return zone
    return settings.exchange_timezone


def to_write(
    row: dict[str, Any], settings: SyncSettings, *, new: bool
) -> tuple[AppointmentWrite, str | None]:
    """An app row -> the record push writes, and why it cannot be pushed (else None).

    :param new: the item is created now: the reminder defaults to ``alarm_minutes`` when
        ``alarm_on_new`` is on (an explicit reminder_minutes on the row wins).
    """
    zone = item_zone(row, settings)
    reminder = row.get("reminder_minutes")
    if reminder is None and new and settings.alarm_on_new:
        reminder = settings.alarm_minutes
    html = row.get("notes_html")
    recurrence = None
    deleted: tuple[datetime, ...] = ()
    why = None
    rule_text = row.get("recurrence_rule")
    series_zone = row.get("time_zone") if row.get("time_zone") != "UTC" else zone
    if rule_text and rule_text.strip():
        try:
            recurrence, parsed = rules.to_recurrence(rule_text, row["starts_at"], series_zone)
            deleted = tuple(parsed.exdates)
            zone = series_zone
        except (rules.UnsupportedRule, ValueError) as exc:
            why = f"recurrence_rule not supported by Exchange: {exc}"
    record = AppointmentWrite(
        stamp=str(row["appointment_id"]),
        subject=row.get("title") or "",
        start=row["starts_at"],
        end=row["ends_at"],
        time_zone=zone,
        location=row.get("location") or "",
        body=html if html else (row.get("notes") or ""),
        body_type="HTML" if html else "Text",
        is_all_day=bool(row.get("all_day")),
        start_date=row.get("start_date") if row.get("all_day") else None,
        end_date=row.get("end_date") if row.get("all_day") else None,
        sensitivity="Private" if row.get("is_private") else "Normal",
        reminder_minutes=reminder,
        legacy_free_busy=LEGACY_FREE_BUSY.get(row.get("show_as") or "busy", "Busy"),
        categories=(row["category"],) if row.get("category") else (),
        recurrence=recurrence,
        deleted_occurrences=deleted,
        uid=item_uid(row, settings.conn_id, series=recurrence is not None),
    )
    return record, why


def item_uid(row: dict[str, Any], conn_id: str, *, series: bool) -> str:
    """The iCalendar UID a created item gets: a series' own ``series_key`` when the app set
    one (its occurrences then carry it back), else one derived from connection and appointment
    (stable, so a link always has a UID and a retried create names the same one)."""
    if series and row.get("series_key"):
        return row["series_key"]
    return str(uuid.uuid5(UID_NAMESPACE, f"{conn_id}:{row['appointment_id']}")).upper()


def write_fields(app_fields: Sequence[str]) -> tuple[str, ...]:
    """The AppointmentWrite fields that carry these app fields."""
    names: list[str] = []
    for name in app_fields:
        names.extend(WRITE_FIELDS.get(name, ()))
    return tuple(dict.fromkeys(names))


def written_fingerprints(pairs: Sequence[tuple[dict[str, Any], AppointmentWrite]]) -> list[str]:
    """The fingerprints transform will compute when it reads the written items back, predicted
    from the rows (zone, reminder and dates as written); one frame for the whole batch."""
    if not pairs:
        return []
    columns: dict[str, list] = {name: [] for name in transform.FINGERPRINT_COLUMNS}
    for row, record in pairs:
        written = as_written(row, record) or row
        values = {
            "title": (row.get("title") or "").strip(),
            "location": (row.get("location") or "").strip(),
            "notes": row.get("notes") or "",
            "notes_html": row.get("notes_html"),
            "starts_at": written["starts_at"],
            "ends_at": written["ends_at"],
            "all_day": bool(row.get("all_day")),
            "start_date": written["start_date"],
            "end_date": written["end_date"],
            "time_zone": record.time_zone,
            "is_private": bool(row.get("is_private")),
            "reminder_minutes": record.reminder_minutes,
            "show_as": row.get("show_as") or "busy",
            "category": row.get("category"),
        }
        for name in columns:
            columns[name].append(values[name])
    frame = pd.DataFrame(
        {
            name: pd.to_datetime(values, utc=True)
            if name in ("starts_at", "ends_at")
            else pd.Series(values, dtype=object)
            for name, values in columns.items()
        }
    )
    frame["all_day"] = frame["all_day"].astype(bool)
    frame["is_private"] = frame["is_private"].astype(bool)
    return list(transform.fingerprints(frame))


def as_written(row: dict[str, Any], record: AppointmentWrite) -> dict[str, Any] | None:
    """The row's values as Exchange will report them back (zone, reminder, all-day instants),
    or None when they already are."""
    starts_at, ends_at = row["starts_at"], row["ends_at"]
    zone = ZoneInfo(record.time_zone)
    if record.is_all_day and record.start_date and record.end_date:
        starts_at = datetime.combine(record.start_date, time(0), tzinfo=zone).astimezone(UTC)
        ends_at = datetime.combine(
            record.end_date + timedelta(days=1), time(0), tzinfo=zone
        ).astimezone(UTC)
        start_date, end_date = record.start_date, record.end_date
    else:  # transform's rule: the local dates of start and end in the item's zone
        start_date = starts_at.astimezone(zone).date()
        end_date = ends_at.astimezone(zone).date()
    wanted = {
        "id": row["appointment_id"],
        "version": row["version"],
        "time_zone": record.time_zone,
        "reminder_minutes": record.reminder_minutes,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "start_date": start_date,
        "end_date": end_date,
    }
    same = all(row.get(key) == wanted[key] for key in list(wanted)[2:])
    return None if same else wanted


def _occurrence_key(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


# --- the executor -------------------------------------------------------------------------------


@dataclass
class PushReport:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    adopted: int = 0
    acknowledged: int = 0
    occurrences_changed: int = 0
    occurrences_deleted: int = 0
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    not_pushed: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    settled: bool = False

    @property
    def wrote(self) -> bool:
        return bool(
            self.created or self.updated or self.deleted or self.occurrences_changed
            or self.occurrences_deleted
        )  # fmt: skip

    def counts(self) -> dict[str, int]:
        return {
            "pushed_created": self.created,
            "pushed_updated": self.updated,
            "pushed_deleted": self.deleted,
            "pushed_adopted": self.adopted,
            "pushed_acknowledged": self.acknowledged,
            "pushed_occurrences_changed": self.occurrences_changed,
            "pushed_occurrences_deleted": self.occurrences_deleted,
            "push_conflicts": len(self.conflicts),
            "not_pushed": len(self.not_pushed),
            "push_failed": len(self.failed),
            "push_settled": int(self.settled),
        }


class Pusher:
    """One push: the user's app changes -> the connection's calendar.

    :param crash: a test hook called with a point's name ('after_exchange_write'); raising
        there simulates the process dying between Exchange accepting a write and Postgres
        recording it.
    """

    def __init__(
        self,
        settings: SyncSettings,
        dsn: str,
        calendar: CalendarTarget,
        user_id: int,
        window: tuple[datetime, datetime],
        *,
        allow_mass_delete: bool = False,
        max_delete_share: float = 0.5,
        min_delete_guard: int = 20,
        crash=None,
    ):
        self.settings = settings
        self.conn_id = settings.conn_id
        self.dsn = dsn
        self.calendar = calendar
        self.user_id = user_id
        self.window = window
        self.allow_mass_delete = allow_mass_delete
        self.max_delete_share = max_delete_share
        self.min_delete_guard = min_delete_guard
        self.crash = crash or (lambda point: None)
        self.report = PushReport()

    # --- the steps ------------------------------------------------------------------------

    def run(self) -> PushReport:
        self.resolve_intents()
        with store.connect(self.dsn) as conn:
            rows = store.push_pairs(conn, self.conn_id, self.user_id, *self.window)
            linked = store.linked_items_count(conn, self.conn_id)
        decided = [(row, self.decide(row)) for row in rows]
        deletes = [d for _, d in decided if d.action is Action.PUSH_DELETE]
        if (
            not self.allow_mass_delete
            and len(deletes) > self.min_delete_guard
            and linked
            and len(deletes) / linked > self.max_delete_share
        ):
            raise SafetyStop(
                f"connection {self.conn_id!r}: this push would delete {len(deletes)} of {linked} "
                f"synced items in Exchange (more than {self.max_delete_share:.0%}); nothing was "
                "deleted. If the app really removed them, trigger the DAG with "
                "allow_mass_delete=true."
            )
        by_action: dict[Action, list[tuple[dict, reconcile.Decision]]] = {}
        for row, decision in decided:
            by_action.setdefault(decision.action, []).append((row, decision))
            if decision.action is Action.SKIP:
                self.report.not_pushed.append(
                    {"appointment_id": row["appointment_id"], "title": row.get("title"),
                     "reason": decision.reason}
                )  # fmt: skip
        self.acknowledge(by_action.get(Action.ACKNOWLEDGE, []))
        self.forget(by_action.get(Action.FORGET, []))
        self.create(by_action.get(Action.PUSH_CREATE, []))
        self.update(by_action.get(Action.PUSH_UPDATE, []))
        self.delete(by_action.get(Action.PUSH_DELETE, []))
        if self.report.wrote:
            self.settle()
        return self.report

    def settle(self) -> None:
        """Move the saved SyncFolderItems state past push's own writes (one request).

        Without it, the next run would be told about them, and worse: an item push created
        and someone deleted before that run would never be reported (Exchange folds a create
        and a delete after a state into nothing). Only when every change since the saved state
        is push's own (see extract.drop_own_writes) does the state move; new series always
        leave it, so the next run reads their occurrences.
        """
        with store.connect(self.dsn) as conn:
            saved = store.get_sync_state(conn, self.conn_id)
        if not saved or not saved["ews_sync_state"]:
            return
        state, changes = extract.drain_changes(
            self.calendar, saved["ews_sync_state"], tuple(self.window)
        )
        with store.connect(self.dsn) as conn:
            if not extract.drop_own_writes(conn, self.conn_id, changes):
                self.report.settled = store.advance_sync_state(
                    conn, self.conn_id, saved["ews_sync_state"], state
                )

    def decide(self, row: dict[str, Any]) -> reconcile.Decision:
        is_series = bool(row.get("recurrence_rule"))
        unsupported = None
        if is_series:
            unsupported = rules.unsupported_reason(
                row["recurrence_rule"], row["starts_at"], row.get("time_zone") or "UTC"
            )
        app = AppSide(
            appointment_id=row["appointment_id"],
            version=row["version"],
            deleted=row["deleted"],
            updated_at=row["updated_at"],
            fields=row["content"],
            in_window=row["in_window"] or is_series,
            unsupported=unsupported,
        )
        link = None
        exchange = None
        if row.get("ews_item_id"):
            link = LinkState(
                row["ews_item_id"], row["local_version"], row["ews_fingerprint"], row["synced"]
            )
            exchange = ExchangeSide(row["ews_item_id"], ExchangeState.UNCHANGED)
        return reconcile.decide(
            Pair(app, exchange, link),
            self.settings.conflict_policy,
            sync_private=self.settings.sync_private,
        )

    # --- crash adoption ---------------------------------------------------------------------

    def resolve_intents(self) -> None:
        """Creates an earlier push announced but did not record: adopt what Exchange has."""
        with store.connect(self.dsn) as conn:
            pending = store.push_intents(conn, self.conn_id)
        if not pending:
            return
        found = self.calendar.find_stamped([str(appointment_id) for appointment_id in pending])
        with store.connect(self.dsn) as conn:
            # Exchange's content is unknown here: synced None makes the next decision rewrite
            # every field from the app row, which is what the create meant.
            store.save_pushed_links(
                conn,
                self.conn_id,
                [
                    {
                        "appointment_id": int(stamp),
                        "ews_item_id": item.item_id,
                        "change_key": item.change_key,
                        "uid": None,
                        "recurrence_id": None,
                        "item_type": item.item_type,
                        "master_item_id": None,
                        "fingerprint": None,
                        "version": None,
                        "starts_at": None,
                        "ends_at": None,
                        "synced": None,
                    }  # fmt: skip
                    for stamp, item in found.items()
                ],
            )
            store.drop_push_intents(conn, self.conn_id, pending)
        self.report.adopted += len(found)
        log.info(
            "connection %s: %d of %d unrecorded creates found in Exchange and adopted",
            self.conn_id, len(found), len(pending),
        )  # fmt: skip

    # --- actions --------------------------------------------------------------------------

    def acknowledge(self, items: list[tuple[dict, reconcile.Decision]]) -> None:
        if not items:
            return
        with store.connect(self.dsn) as conn:
            for row, _ in items:
                store.acknowledge_link(
                    conn, self.conn_id, row["appointment_id"], row["version"], row["content"]
                )
        self.report.acknowledged += len(items)

    def forget(self, items: list[tuple[dict, reconcile.Decision]]) -> None:
        if not items:
            return
        with store.connect(self.dsn) as conn:
            for row, _ in items:
                store.drop_link(conn, self.conn_id, row["appointment_id"])

    def _link(self, row, record, result: WriteResult, **extra) -> dict[str, Any]:
        """A link for ``_save_links`` (its fingerprint is computed there, for the batch)."""
        return {
            "appointment_id": row["appointment_id"],
            "ews_item_id": result.item_id,
            "change_key": result.change_key,
            "uid": extra.get("uid"),
            "recurrence_id": extra.get("recurrence_id"),
            "item_type": extra.get("item_type", "Single"),
            "master_item_id": extra.get("master_item_id"),
            "fingerprint": None,
            "version": row["version"],
            "starts_at": row["starts_at"],
            "ends_at": row["ends_at"],
            "synced": row["content"],
            "_written": (row, record),
        }

    def _save_links(self, conn, links: list[dict[str, Any]]) -> None:
        """Record the links of a batch, and give the rows the values Exchange reports back."""
        prints = written_fingerprints([link["_written"] for link in links])
        rows = []
        for link, fingerprint in zip(links, prints, strict=True):
            link["fingerprint"] = fingerprint
            rows.append(link.pop("_written"))
        store.save_pushed_links(conn, self.conn_id, links)
        store.normalize_pushed(
            conn, self.conn_id, [n for n in (as_written(r, rec) for r, rec in rows) if n]
        )

    def _not_pushed(self, row: dict, reason: str) -> None:
        self.report.not_pushed.append(
            {"appointment_id": row["appointment_id"], "title": row.get("title"), "reason": reason}
        )

    def create(self, items: list[tuple[dict, reconcile.Decision]]) -> None:
        singles: list[tuple[dict, AppointmentWrite]] = []
        occurrences: list[dict] = []
        for row, decision in items:
            if decision.conflict is not None:
                self.report.conflicts.append(self._conflict_row(row, decision))
            if row.get("ews_item_id"):
                # recreated after Exchange deleted it: the old link goes first
                with store.connect(self.dsn) as conn:
                    store.drop_link(conn, self.conn_id, row["appointment_id"])
            if row.get("series_key") and row.get("occurrence_key") and not row["recurrence_rule"]:
                occurrences.append(row)
                continue
            record, why = to_write(row, self.settings, new=True)
            if why:
                self._not_pushed(row, why)
                continue
            singles.append((row, record))
        for low in range(0, len(singles), MAX_BATCH):
            self._create_batch(singles[low : low + MAX_BATCH])
        if occurrences:
            self._create_occurrences(occurrences)

    def _create_batch(self, batch: list[tuple[dict, AppointmentWrite]]) -> None:
        with store.connect(self.dsn) as conn:  # committed before Exchange sees the creates
            store.add_push_intents(conn, self.conn_id, [row["appointment_id"] for row, _ in batch])
        results = self.calendar.create_items([record for _, record in batch])
        self.crash("after_exchange_write")
        links = []
        for (row, record), result in zip(batch, results, strict=True):
            if not result.ok:
                self.report.failed.append(
                    {"appointment_id": row["appointment_id"], "action": "create",
                     "error": result.error, "message": result.message}
                )  # fmt: skip
                continue
            series = record.recurrence is not None
            links.append(self._link(row, record, result, uid=record.uid,
                                    item_type="RecurringMaster" if series else "Single"))  # fmt: skip
            if result.message:
                self._not_pushed(row, result.message)
        with store.connect(self.dsn) as conn:  # the links and the end of the intents: one commit
            self._save_links(conn, links)
            store.drop_push_intents(conn, self.conn_id, [r["appointment_id"] for r, _ in batch])
        self.report.created += len(links)

    def _create_occurrences(self, rows: list[dict]) -> None:
        """Occurrence rows the app inserted for a series: exceptions of its Exchange series."""
        with store.connect(self.dsn) as conn:
            masters = store.series_links(conn, self.conn_id, {r["series_key"] for r in rows})
            existing = store.occurrence_links(conn, self.conn_id, {r["series_key"] for r in rows})
        updates: list[tuple[dict, OccurrenceUpdate, datetime, dict]] = []
        for row in rows:
            master = masters.get(row["series_key"])
            original = _occurrence_key(row["occurrence_key"])
            if master is None or original is None:
                self._not_pushed(
                    row, "occurrence of a series not in Exchange (yet): series_key names no "
                    "pushed series, or occurrence_key is not an ISO-8601 UTC start",
                )  # fmt: skip
                continue
            other = existing.get((row["series_key"], original))
            if other is not None and other["appointment_id"] != row["appointment_id"]:
                self._not_pushed(
                    row, f"this occurrence already has a row (appointment {other['appointment_id']})"
                    ": edit that row instead of adding a second",
                )  # fmt: skip
                continue
            try:
                recurrence, _ = rules.to_recurrence(
                    master["recurrence_rule"], master["starts_at"], master["time_zone"]
                )
                index = rules.occurrence_index(
                    recurrence, master["starts_at"], master["time_zone"], original
                )
            except ValueError as exc:
                self._not_pushed(row, f"not an occurrence of its series: {exc}")
                continue
            record, _ = to_write(row, self.settings, new=False)
            fields = tuple(f for f in write_fields(reconcile.CONTENT_FIELDS) if f != "recurrence")
            ref = OccurrenceRef(master["ews_item_id"], original, index)
            updates.append((row, OccurrenceUpdate(ref, record, fields), original, master))
        if not updates:
            return
        results = self.calendar.update_occurrences([u for _, u, _, _ in updates])
        self.crash("after_exchange_write")
        links = []
        lone: list[tuple[dict, AppointmentWrite]] = []
        for (row, update, original, master), result in zip(updates, results, strict=True):
            if result.error == NOT_FOUND:
                # The occurrence was deleted from its series (in Outlook) and the app's edit won:
                # Exchange cannot restore it, so the app's version becomes a single appointment.
                lone.append((row, to_write(row, self.settings, new=True)[0]))
                continue
            if not result.ok:
                self.report.failed.append(
                    {"appointment_id": row["appointment_id"], "action": "occurrence",
                     "error": result.error, "message": result.message}
                )  # fmt: skip
                continue
            links.append(self._link(row, update.record, result, uid=row["series_key"],
                                    recurrence_id=original, item_type="Exception",
                                    master_item_id=master["ews_item_id"]))  # fmt: skip
        with store.connect(self.dsn) as conn:
            self._save_links(conn, links)
        self.report.occurrences_changed += len(links)
        if lone:
            log.info(
                "connection %s: %d occurrences deleted in Exchange but kept in the app are "
                "created as single appointments", self.conn_id, len(lone),
            )  # fmt: skip
            self._create_batch(lone)

    def update(self, items: list[tuple[dict, reconcile.Decision]], retry: bool = True) -> None:
        planned: list[tuple[dict, reconcile.Decision, ItemUpdate]] = []
        exdate_deletes: list[tuple[dict, OccurrenceRef]] = []
        for row, decision in items:
            if decision.conflict is not None:
                self.report.conflicts.append(self._conflict_row(row, decision))
            record, why = to_write(row, self.settings, new=False)
            if why:
                self._not_pushed(row, why)
                continue
            fields = write_fields(decision.fields)
            if "recurrence" in fields and not row.get("recurrence_rule"):
                # a single item has no pattern to write (a series cannot become a single one)
                fields = tuple(f for f in fields if f != "recurrence")
                if row.get("item_type") == "RecurringMaster":
                    self._not_pushed(row, "recurrence_rule removed from a series: delete the "
                                          "series and create a single appointment instead")  # fmt: skip
            if "recurrence" in fields:
                fields, refs = self._series_change(row, record, fields)
                exdate_deletes.extend((row, ref) for ref in refs)
            if not fields:
                continue
            planned.append((row, decision, ItemUpdate(row["ews_item_id"], row["change_key"],
                                                      record, fields)))  # fmt: skip
        conflicted: list[tuple[dict, reconcile.Decision]] = []
        for low in range(0, len(planned), MAX_BATCH):
            batch = planned[low : low + MAX_BATCH]
            results = self.calendar.update_items([update for _, _, update in batch])
            self.crash("after_exchange_write")
            links = []
            for (row, decision, update), result in zip(batch, results, strict=True):
                if result.ok:
                    links.append(self._link(row, update.record, result, uid=row.get("uid"),
                                            recurrence_id=row.get("recurrence_id"),
                                            item_type=row.get("item_type") or "Single"))  # fmt: skip
                elif result.error == CONFLICT and retry:
                    conflicted.append((row, decision))
                else:
                    self.report.failed.append(
                        {"appointment_id": row["appointment_id"], "action": "update",
                         "error": result.error, "message": result.message}
                    )  # fmt: skip
            with store.connect(self.dsn) as conn:
                self._save_links(conn, links)
            self.report.updated += len(links)
        if conflicted:
            self._resolve_stale(conflicted)
        if exdate_deletes:
            results = self.calendar.delete_occurrences([ref for _, ref in exdate_deletes])
            self.report.occurrences_deleted += sum(1 for r in results if r.ok)

    def _series_change(self, row, record: AppointmentWrite, fields: tuple[str, ...]):
        """A changed recurrence_rule: new EXDATEs become deleted occurrences; the pattern is
        rewritten only when the RRULE itself changed."""
        before = (row.get("synced") or {}).get("recurrence_rule") or ""
        zone = record.time_zone
        try:
            old = rules.parse_rule(before, zone) if before else None
        except (rules.UnsupportedRule, ValueError):
            old = None
        new = rules.parse_rule(row["recurrence_rule"], zone)
        keep = tuple(f for f in fields if f != "recurrence")
        if old is None or old.rrule_line.strip().upper() != new.rrule_line.strip().upper():
            keep = (*keep, "recurrence")
        refs = []
        added = set(new.exdates) - set(old.exdates if old else ())
        restored = set(old.exdates if old else ()) - set(new.exdates)
        if restored:
            self._not_pushed(row, "an EXDATE was removed: Exchange cannot restore a deleted "
                                  "occurrence (delete and recreate the series instead)")  # fmt: skip
        for original in sorted(added):
            try:
                index = rules.occurrence_index(record.recurrence, row["starts_at"], zone, original)
            except ValueError:
                continue
            refs.append(OccurrenceRef(row["ews_item_id"], original, index))
        return keep, refs

    def _resolve_stale(self, items: list[tuple[dict, reconcile.Decision]]) -> None:
        """Updates Exchange refused for a stale change key: re-read the items, decide again
        with what Exchange holds now, then write (or leave it to the next pull)."""
        ids = [row["ews_item_id"] for row, _ in items]
        records, missing = self.calendar.fetch(ids)
        by_id = {record["item_id"]: record for record in records}
        normalized = {}
        if records:
            frame = transform.normalize(
                pd.DataFrame(records).reindex(columns=list(transform.RAW_COLUMNS)),
                keep_html=self.settings.keep_html,
                sync_private=True,
                fallback_zone=self.settings.exchange_timezone,
            )
            for _, staged in frame.iterrows():
                normalized[staged["ews_item_id"]] = staged
        retry: list[tuple[dict, reconcile.Decision]] = []
        for row, _ in items:
            item_id = row["ews_item_id"]
            if item_id in missing or item_id not in by_id:
                self.report.failed.append(
                    {"appointment_id": row["appointment_id"], "action": "update",
                     "error": NOT_FOUND, "message": "gone from Exchange; the next run decides"}
                )  # fmt: skip
                continue
            staged = normalized.get(item_id)
            theirs = _content(staged, row.get("recurrence_rule")) if staged is not None else None
            fresh = {**row, "change_key": by_id[item_id]["change_key"]}
            if theirs is not None and not reconcile.changed_fields(theirs, row.get("synced")):
                # only the change key moved (a series-wide change, a read flag): not a conflict
                retry.append((fresh, self._decision_for(fresh)))
                continue
            exchange = ExchangeSide(
                item_id, ExchangeState.CHANGED, staged["fingerprint"] if staged is not None else "?",
                by_id[item_id].get("last_modified"), theirs,
            )  # fmt: skip
            link = LinkState(item_id, row["local_version"], row["ews_fingerprint"], row["synced"])
            app = AppSide(row["appointment_id"], row["version"], row["deleted"], row["updated_at"],
                          row["content"], True)  # fmt: skip
            decision = reconcile.decide(
                Pair(app, exchange, link), self.settings.conflict_policy,
                sync_private=self.settings.sync_private,
            )  # fmt: skip
            if decision.conflict is not None:
                self.report.conflicts.append(self._conflict_row(row, decision, at_push=True))
            if decision.action is Action.PUSH_UPDATE:
                fresh = {**fresh, "change_key": None}  # the app won: overwrite
                retry.append((fresh, decision))
            # otherwise Exchange won: its change reaches the app through the next pull
        if retry:
            self.update(retry, retry=False)

    def _decision_for(self, row: dict) -> reconcile.Decision:
        return self.decide(row)

    def delete(self, items: list[tuple[dict, reconcile.Decision]]) -> None:
        for row, decision in items:
            if decision.conflict is not None:
                self.report.conflicts.append(self._conflict_row(row, decision))
        for low in range(0, len(items), MAX_BATCH):
            batch = items[low : low + MAX_BATCH]
            ids = [row["ews_item_id"] for row, _ in batch]
            results = self.calendar.delete_items(ids, self.settings.send_cancellations)
            self.crash("after_exchange_write")
            with store.connect(self.dsn) as conn:
                done = []
                for (row, _), result in zip(batch, results, strict=True):
                    if result.ok:
                        store.drop_link(conn, self.conn_id, row["appointment_id"])
                        done.append(row["ews_item_id"])
                    else:
                        self.report.failed.append(
                            {"appointment_id": row["appointment_id"], "action": "delete",
                             "error": result.error, "message": result.message}
                        )  # fmt: skip
                store.add_pushed_deletions(conn, self.conn_id, done)
            self.report.deleted += len(done)

    def _conflict_row(self, row: dict, decision: reconcile.Decision, at_push: bool = False):
        conflict = decision.conflict
        return {
            "appointment_id": row["appointment_id"],
            "ews_item_id": row.get("ews_item_id"),
            "title": row.get("title"),
            "kind": conflict.kind,
            "app_fields": list(conflict.app_fields),
            "exchange_fields": list(conflict.exchange_fields),
            "winner": conflict.winner,
            "policy": conflict.policy,
            "found": "push (stale change key)" if at_push else "push",
        }


def _content(staged, recurrence_rule: str | None) -> dict[str, Any]:
    """A normalised Exchange row as ewssync.content() would render it."""

    def instant(value):
        return None if pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%dT%H:%M:%SZ")

    def day(value):
        return None if value is None or pd.isna(value) else str(value)[:10]

    def text(value):
        return value if isinstance(value, str) and value != "" else None

    reminder = staged["reminder_minutes"]
    return {
        "title": text(staged["title"]),
        "location": text(staged["location"]),
        "notes": text(staged["notes"]),
        "notes_html": text(staged["notes_html"]),
        "starts_at": instant(staged["starts_at"]),
        "ends_at": instant(staged["ends_at"]),
        "all_day": bool(staged["all_day"]),
        "start_date": day(staged["start_date"]),
        "end_date": day(staged["end_date"]),
        "time_zone": staged["time_zone"],
        "is_private": bool(staged["is_private"]),
        "reminder_minutes": None if pd.isna(reminder) else int(reminder),
        "show_as": staged["show_as"],
        "category": text(staged["category"]),
        "recurrence_rule": recurrence_rule or None,
    }
