"""The Exchange side's interface and its backend-neutral records (no exchangelib here).

Record dicts returned by ``fetch`` (the pipeline depends on exactly these keys):

| key | meaning |
|---|---|
| item_id, change_key | EWS ids |
| item_type | 'Single', 'Occurrence', 'Exception' or 'RecurringMaster' |
| uid, recurrence_id | iCalendar UID; original start (UTC) of an occurrence/exception, else None |
| master_item_id | None (EWS GetItem does not name an occurrence's master) |
| subject, location, body, body_type | body_type 'HTML' or 'Text' |
| start, end | aware UTC datetimes; for all-day items local midnight in the item's zone |
| is_all_day, start_date, end_date | dates for all-day items, end inclusive; else None |
| timezone_windows, timezone_iana | the zone the server named, and its IANA name (None if unknown) |
| sensitivity | 'Normal', 'Personal', 'Private' or 'Confidential' |
| reminder_is_set, reminder_minutes | |
| legacy_free_busy | 'Free', 'Tentative', 'Busy', 'OOF', 'WorkingElsewhere' or 'NoData' |
| categories, last_modified, is_recurring | |
| is_cancelled, my_response, organizer | a meeting's cancellation (IsCancelled), the owner's answer (MyResponseType: 'Organizer', 'Accept', 'Tentative', 'Decline', 'NoResponseReceived', 'Unknown'; None for plain appointments on some servers) and the organizer's address (None: not a meeting) |
| stamp | the app appointment id push stamped on the item when it created it (``AppointmentWrite.stamp``), else None |

The write side (push) is below the protocol: backend-neutral records in, one ``WriteResult`` per
item out, in batches of up to ``MAX_BATCH``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol

from ewssync.errors import ExchangeError

GENERAL = "General connection"
SEND_RECEIVE = "Send/receive data"


class ExchangeCalendar(Protocol):
    """One mailbox's calendar, whatever the API behind it."""

    def probe(self) -> None: ...

    def close(self) -> None: ...

    def test(self, write: bool = True, app_user_email: str | None = None) -> ConnectionReport: ...

    def sync_changes(
        self,
        state: str | None,
        max_changes: int = 512,
        window: tuple[datetime, datetime] | None = None,
    ) -> tuple[str, list[dict[str, Any]], bool]:
        """Changes since ``state`` (None: a new full round). ``window``: the run's window; EWS
        reports the whole folder and ignores it, Graph's delta is bound to it (a state taken
        for another window raises SyncStateExpired)."""
        ...

    def read_index(self, start: datetime, end: datetime) -> list[dict[str, Any]]: ...

    def fetch(self, item_ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]: ...

    def create(self, record: dict[str, Any]) -> tuple[str, str]:
        """Create one plain item (the connection test); returns (item id, change key)."""
        ...

    def delete(self, item_id: str) -> None:
        """Delete one item for good (the connection test); an item already gone is fine."""
        ...

    # --- the write side (push); see the records below -------------------------------------

    def create_items(self, records: Sequence[AppointmentWrite]) -> list[WriteResult]:
        """Create single items and series masters (no invitations sent), stamped with
        ``record.stamp``; a series' ``deleted_occurrences`` are deleted after it is created.

        :return: one result per record, in order; ``item_id`` is the new item (the master for a
            series). A series whose occurrence deletions failed is still ok (the master exists);
            the message says which failed.
        """
        ...

    def update_items(self, updates: Sequence[ItemUpdate]) -> list[WriteResult]:
        """Set ``fields`` of existing items (no meeting updates sent).

        A stale ``change_key`` gives CONFLICT for that item and leaves it unchanged; the caller
        re-reads it (``fetch``) and decides by its conflict policy.
        """
        ...

    def delete_items(
        self, item_ids: Sequence[str], send_cancellations: bool = False
    ) -> list[WriteResult]:
        """Delete items for good. An occurrence's id deletes just that occurrence (it becomes a
        deleted occurrence of its series); a master's id deletes the whole series. An item
        already gone is ok (error NOT_FOUND).

        :param send_cancellations: send meeting cancellations to attendees (off by default).
        """
        ...

    def update_occurrences(self, updates: Sequence[OccurrenceUpdate]) -> list[WriteResult]:
        """Turn occurrences (addressed by master + position) into exceptions with ``fields``.

        :return: per update, the exception's own item id and change key.
        """
        ...

    def delete_occurrences(self, occurrences: Sequence[OccurrenceRef]) -> list[WriteResult]:
        """Delete single occurrences of series (addressed by master + position); one already
        deleted is ok (NOT_FOUND)."""
        ...

    def find_stamped(self, stamps: Sequence[str]) -> dict[str, StampedItem]:
        """The calendar's items carrying these stamps (``AppointmentWrite.stamp``), whatever
        their dates: how a create whose answer was lost (the process died after Exchange
        accepted it) is found again. Few requests: EWS asks one FindItem per 100 stamps.

        :return: stamp -> the item; stamps with no item are absent.
        """
        ...


# --- the write side ------------------------------------------------------------------------------
#
# Push hands the backend backend-neutral records (below) in batches; the backend writes them with
# as few requests as its API allows (EWS: up to MAX_BATCH items per CreateItem / UpdateItem /
# DeleteItem) and answers one WriteResult per input, in input order. Per-item failures come back
# as results, never as exceptions; an exception means the whole call failed (connection, auth)
# and nothing is known about the items not answered. Throttling is the backend's business: it
# waits for the back-off the server asks for and retries.
#
# Values use the same vocabulary as the read records above (Sensitivity, LegacyFreeBusyStatus,
# Windows-free IANA zone names), so a record written and read back compares equal field by field.

MAX_BATCH = 100  # items per write request (EWS; exchangelib's chunk_size)

# WriteResult.error kinds
CONFLICT = "conflict"  # the change key was stale: someone changed the item since we read it
NOT_FOUND = "not_found"  # no such item (for deletes this counts as done: ok=True)
REFUSED = "refused"  # the server refused this item (invalid value, access denied, ...): see message

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
WEEK_INDEXES = ("First", "Second", "Third", "Fourth", "Last")
PATTERNS = (
    "daily", "weekly", "absolute_monthly", "relative_monthly", "absolute_yearly",
    "relative_yearly",
)  # fmt: skip


@dataclass(frozen=True)
class Recurrence:
    """A series' pattern and range, in the terms EWS (<t:Recurrence>) and Graph
    (patternedRecurrence) share. Dates are local dates in the series' time zone.

    :param pattern: one of PATTERNS.
    :param interval: every n days / weeks / months (yearly: always 1 year; ignored).
    :param weekdays: weekly: the days (WEEKDAYS names); relative_*: exactly one day.
    :param day_of_month: absolute_monthly / absolute_yearly: 1-31.
    :param month: absolute_yearly / relative_yearly: 1-12.
    :param week_index: relative_*: one of WEEK_INDEXES.
    :param start: the first day of the range (the first occurrence's local date).
    :param end: the last day of the range, inclusive (EndDateRecurrence), or None.
    :param count: the number of occurrences (NumberedRecurrence), or None; neither end nor
        count: no end.
    """

    pattern: str
    start: date
    interval: int = 1
    weekdays: tuple[str, ...] = ()
    day_of_month: int | None = None
    month: int | None = None
    week_index: str | None = None
    end: date | None = None
    count: int | None = None


@dataclass(frozen=True)
class AppointmentWrite:
    """One appointment as push wants it in Exchange: a single item or a series master.

    :param stamp: the app's appointment id. The backend keeps it on the item in a property
        Exchange preserves (EWS: a named extended property), returns it as the ``stamp`` key of
        read records, and finds items by it (``find_stamped``): a create whose answer was lost
        is adopted by the next run instead of being created twice.
    :param start: aware datetime; for all-day items the local midnight of ``start_date`` in
        ``time_zone``.
    :param end: aware datetime; for all-day items the local midnight after ``end_date``.
    :param time_zone: IANA name; the item's start and end zone in Exchange.
    :param start_date: all-day items only: the first local date.
    :param end_date: all-day items only: the last local date, inclusive.
    :param body: the notes; ``body_type`` 'HTML' or 'Text'.
    :param sensitivity: 'Normal' or 'Private'.
    :param reminder_minutes: minutes before start; None: no reminder.
    :param legacy_free_busy: 'Free', 'Tentative', 'Busy', 'OOF' or 'WorkingElsewhere'.
    :param categories: Exchange categories (the app's category, when set).
    :param recurrence: set for a series master; None for a single item.
    :param uid: the iCalendar UID to give a new item (push always sets one: a series' is the
        app's ``series_key``, so occurrences read back name it); None lets the server choose.
        A backend that cannot set it (Graph) ignores it and reports the server's UID when read.
    :param deleted_occurrences: series only: original starts (aware, UTC) of occurrences to
        delete right after the series is created (RRULE EXDATEs).
    """

    stamp: str
    subject: str
    start: datetime
    end: datetime
    time_zone: str
    location: str = ""
    body: str = ""
    body_type: str = "Text"
    is_all_day: bool = False
    start_date: date | None = None
    end_date: date | None = None
    sensitivity: str = "Normal"
    reminder_minutes: int | None = None
    legacy_free_busy: str = "Busy"
    categories: tuple[str, ...] = ()
    recurrence: Recurrence | None = None
    deleted_occurrences: tuple[datetime, ...] = ()
    uid: str | None = None


# The names ItemUpdate.fields may hold: AppointmentWrite's content fields. 'start' and 'end' are
# always sent together with 'time_zone' and 'is_all_day' (EWS needs the zone to place times).
UPDATABLE_FIELDS = (
    "subject", "location", "body", "start", "end", "time_zone", "is_all_day", "sensitivity",
    "reminder_minutes", "legacy_free_busy", "categories", "recurrence",
)  # fmt: skip


@dataclass(frozen=True)
class ItemUpdate:
    """Change some fields of an existing item (a single, a series master, or an occurrence
    addressed by its own item id — which turns it into an exception).

    :param item_id: the item's id.
    :param change_key: the change key last seen; a stale one gives a CONFLICT result.
        None: overwrite whatever the item holds now (used after a conflict was decided).
    :param record: the full wanted state; only ``fields`` of it are sent.
    :param fields: UPDATABLE_FIELDS names to write; the item's other fields are left alone.
    """

    item_id: str
    change_key: str | None
    record: AppointmentWrite
    fields: tuple[str, ...]


@dataclass(frozen=True)
class OccurrenceRef:
    """One occurrence of a series, addressed without its own item id.

    :param master_item_id: the series master's item id.
    :param original_start: the occurrence's original start (aware, UTC): Graph finds it by this.
    :param index: its 1-based position in the series' pattern, counting deleted occurrences
        too (EWS's OccurrenceItemId InstanceIndex).
    """

    master_item_id: str
    original_start: datetime
    index: int


@dataclass(frozen=True)
class OccurrenceUpdate:
    """Turn one occurrence into an exception with these fields (see ItemUpdate)."""

    occurrence: OccurrenceRef
    record: AppointmentWrite
    fields: tuple[str, ...]


@dataclass(frozen=True)
class WriteResult:
    """The answer for one item of a bulk write.

    :param ok: the write took effect (a delete of an item already gone is ok, with NOT_FOUND).
    :param item_id: the item's id after the write (a created item's new id; an updated
        occurrence's exception id), else None.
    :param change_key: its change key after the write (the basis of the next update).
    :param error: None, CONFLICT, NOT_FOUND or REFUSED.
    :param message: the server's text for an error, for the run report.
    """

    ok: bool
    item_id: str | None = None
    change_key: str | None = None
    error: str | None = None
    message: str = ""


@dataclass(frozen=True)
class StampedItem:
    """An item found by its stamp (``find_stamped``)."""

    stamp: str
    item_id: str
    change_key: str
    item_type: str  # 'Single' or 'RecurringMaster'


@dataclass
class ReportPart:
    name: str
    ok: bool | None  # None: not run
    message: str


@dataclass
class ConnectionReport:
    """The two-part connection test: General connection, Send/receive data."""

    parts: list[ReportPart] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.parts) and all(part.ok for part in self.parts)

    def __str__(self) -> str:
        lines = []
        for part in self.parts:
            state = "OK" if part.ok else ("not run" if part.ok is None else "FAILED")
            lines.append(f"{part.name}: {state}" + (f" — {part.message}" if part.message else ""))
        return "\n".join(lines)


def delete_new_series_occurrences(
    calendar: Any,
    records: Sequence[AppointmentWrite],
    results: list[WriteResult],
    ref_for: Any,
) -> list[WriteResult]:
    """The EXDATEs of series just created (either backend): delete those occurrences, all in one
    call, then read the masters' change keys back (deleting occurrences moves them). A failed
    occurrence delete keeps the series (ok) with the failure in its message.

    :param ref_for: ``(item_id, record, original_start) -> OccurrenceRef`` of the backend.
    :return: ``results`` with the new series' change keys and messages updated.
    """
    refs: list[tuple[int, OccurrenceRef]] = []
    for position, (record, result) in enumerate(zip(records, results, strict=True)):
        if result.ok and record.recurrence is not None:
            for original in record.deleted_occurrences:
                refs.append((position, ref_for(result.item_id, record, original)))
    if not refs:
        return results
    results = list(results)
    deleted = calendar.delete_occurrences([ref for _, ref in refs])
    for (position, ref), answer in zip(refs, deleted, strict=True):
        if not answer.ok:
            result = results[position]
            results[position] = WriteResult(
                True, result.item_id, result.change_key,
                message=f"{result.message}occurrence {ref.original_start:%Y-%m-%d %H:%M}"
                f" not deleted: {answer.message}; ",
            )  # fmt: skip
    masters = sorted({results[position].item_id for position, _ in refs})
    keys = calendar._change_keys(masters)
    for position, _ in refs:
        result = results[position]
        results[position] = WriteResult(
            True, result.item_id, keys.get(result.item_id, result.change_key),
            message=result.message,
        )  # fmt: skip
    return results


def exercise_calendar(
    calendar: Any,
    settings: Any,
    *,
    write: bool,
    app_user_email: str | None,
    steps: list[str],
) -> str:
    """The connection test's part 2 on either backend: the mailbox belongs to the app user
    (unless ``allow_mailbox_mismatch``), today's window reads, and with ``write`` a test item is
    created and deleted again. Errors are the backend's; ``steps`` ends with the step that was
    running. :return: what was done, for the report."""
    steps.append("reading the calendar")
    if app_user_email is not None and not settings.allow_mailbox_mismatch:
        email = app_user_email.strip().lower()
        if email != settings.mailbox:
            raise ExchangeError(
                f"the mailbox {settings.mailbox!r} is not the app user's "
                f"({email or 'no e-mail'}); fix app_user or mailbox, or set "
                "allow_mailbox_mismatch=true for a shared calendar"
            )
    now = datetime.now(UTC)
    calendar.read_index(now - timedelta(days=1), now + timedelta(days=1))
    if not write:
        return "read"
    steps.append("writing a test item")
    start = datetime.combine(now.date() + timedelta(days=1), time(5), tzinfo=UTC)
    item_id, _ = calendar.create(
        {
            "subject": "ewssync connection test (deleted again)",
            "start": start,
            "end": start + timedelta(minutes=5),
        }
    )
    steps.append("deleting the test item")
    calendar.delete(item_id)
    return "read and write (test item created and deleted)"
