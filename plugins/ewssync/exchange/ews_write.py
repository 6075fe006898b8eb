"""The EWS backend's write side: base.py's write records -> exchangelib bulk calls (100 a request).

Mixed into ``EwsCalendar``; only this module and ews.py turn write records into exchangelib
items. Every created item carries the app's appointment id in a named extended property
(PublicStrings / ``ewssyncAppointmentId``): Exchange keeps it through edits in Outlook, FindItem
can search it, and a create whose answer was lost is found again by it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime

from exchangelib import CalendarItem, EWSDate, EWSDateTime, EWSTimeZone, ExtendedProperty, HTMLBody
from exchangelib import errors as ews_errors
from exchangelib.properties import Body, OccurrenceItemId
from exchangelib.recurrence import (
    AbsoluteMonthlyPattern,
    AbsoluteYearlyPattern,
    DailyPattern,
    RelativeMonthlyPattern,
    RelativeYearlyPattern,
    WeeklyPattern,
)
from exchangelib.recurrence import Recurrence as EwsRecurrence

import ewssync.exchange.ews_patches  # noqa: F401  (per-item write errors)
from ewssync.errors import ExchangeError
from ewssync.exchange.base import (
    CONFLICT,
    MAX_BATCH,
    NOT_FOUND,
    REFUSED,
    AppointmentWrite,
    ItemUpdate,
    OccurrenceRef,
    OccurrenceUpdate,
    Recurrence,
    StampedItem,
    WriteResult,
    delete_new_series_occurrences,
)
from ewssync.timezones import iana_to_windows

log = logging.getLogger(__name__)

STAMP_FIELD = "ewssync_stamp"


class AppointmentStamp(ExtendedProperty):
    """The app's appointment id on an item push created (see the module docstring)."""

    distinguished_property_set_id = "PublicStrings"
    property_name = "ewssyncAppointmentId"
    property_type = "String"


with contextlib.suppress(ValueError):  # registered already (the module was reloaded)
    CalendarItem.register(STAMP_FIELD, AppointmentStamp)

# base.UPDATABLE_FIELDS -> the exchangelib fields they are written to
_EWS_FIELDS = {
    "subject": ("subject",),
    "location": ("location",),
    "body": ("body",),
    "sensitivity": ("sensitivity",),
    "reminder_minutes": ("reminder_is_set", "reminder_minutes_before_start"),
    "legacy_free_busy": ("legacy_free_busy_status",),
    "categories": ("categories",),
    "recurrence": ("recurrence",),
}
_TIME_FIELDS = ("start", "end", "time_zone", "is_all_day")

_PATTERNS = {
    "daily": lambda r: DailyPattern(interval=r.interval),
    "weekly": lambda r: WeeklyPattern(interval=r.interval, weekdays=list(r.weekdays)),
    "absolute_monthly": lambda r: AbsoluteMonthlyPattern(
        interval=r.interval, day_of_month=r.day_of_month
    ),
    "relative_monthly": lambda r: RelativeMonthlyPattern(
        interval=r.interval, weekday=r.weekdays[0], week_number=r.week_index
    ),
    "absolute_yearly": lambda r: AbsoluteYearlyPattern(day_of_month=r.day_of_month, month=r.month),
    "relative_yearly": lambda r: RelativeYearlyPattern(
        weekday=r.weekdays[0], week_number=r.week_index, month=r.month
    ),
}


def ews_recurrence(recurrence: Recurrence) -> EwsRecurrence:
    """base.Recurrence -> exchangelib's Recurrence (pattern + range)."""
    pattern = _PATTERNS[recurrence.pattern](recurrence)
    start = EWSDate.from_date(recurrence.start)
    if recurrence.count:
        return EwsRecurrence(pattern=pattern, start=start, number=recurrence.count)
    if recurrence.end:
        return EwsRecurrence(pattern=pattern, start=start, end=EWSDate.from_date(recurrence.end))
    return EwsRecurrence(pattern=pattern, start=start)


# Per-item answers that mean "no such item (any more)": a deleted occurrence has its own code.
_GONE = (ews_errors.ErrorItemNotFound, ews_errors.ErrorCalendarOccurrenceIsDeletedFromRecurrence)


def _failure(result: BaseException) -> WriteResult:
    if isinstance(result, ews_errors.ErrorIrresolvableConflict):
        return WriteResult(False, error=CONFLICT, message=str(result))
    if isinstance(result, _GONE):
        return WriteResult(False, error=NOT_FOUND, message=str(result))
    return WriteResult(False, error=REFUSED, message=f"{type(result).__name__}: {result}")


class EwsWriter:
    """The write half of EwsCalendar (needs its ``account``, ``calendar``, ``settings``,
    ``_meeting_zone`` and ``_error``)."""

    write_batch = MAX_BATCH

    # --- records -> exchangelib items ----------------------------------------------------

    def _zone(self, name: str) -> EWSTimeZone:
        if iana_to_windows(name) is None:
            raise ExchangeError(
                f"connection {self.settings.conn_id!r}: time zone {name!r} has no Windows "
                "equivalent Exchange would accept"
            )
        return EWSTimeZone(name)

    def _calendar_item(self, record: AppointmentWrite, **ids) -> CalendarItem:
        zone = self._zone(record.time_zone or self.settings.exchange_timezone)
        if record.is_all_day:
            # exchangelib sends dates as local midnights in the item's zone, the end exclusive
            start = EWSDate.from_date(record.start_date or record.start.astimezone(zone).date())
            end = EWSDate.from_date(record.end_date or start)
        else:
            start = EWSDateTime.from_datetime(record.start.astimezone(UTC)).astimezone(zone)
            end = EWSDateTime.from_datetime(record.end.astimezone(UTC)).astimezone(zone)
        body = None
        if record.body:
            body = HTMLBody(record.body) if record.body_type == "HTML" else Body(record.body)
        item = CalendarItem(
            account=self.account,
            folder=self.calendar,
            subject=record.subject or "",
            location=record.location or None,
            body=body,
            start=start,
            end=end,
            is_all_day=record.is_all_day,
            sensitivity=record.sensitivity,
            reminder_is_set=record.reminder_minutes is not None,
            reminder_minutes_before_start=record.reminder_minutes or 0,
            legacy_free_busy_status=record.legacy_free_busy,
            categories=list(record.categories) or None,
            recurrence=ews_recurrence(record.recurrence) if record.recurrence else None,
            **ids,
        )
        if self._meeting_zone():
            item._meeting_timezone = zone
        else:
            item._start_timezone = item._end_timezone = zone
        setattr(item, STAMP_FIELD, record.stamp)
        if record.uid and not ids:  # new items only: a UID never changes
            item.uid = record.uid
        return item

    def _update_fieldnames(self, fields: Sequence[str]) -> list[str]:
        names: list[str] = []
        for field in fields:
            if field in _TIME_FIELDS:
                continue
            names.extend(_EWS_FIELDS[field])
        if any(field in _TIME_FIELDS for field in fields):
            # start and end go together with their zone (exchangelib writes the zone fields
            # from the values' tzinfo) and the all-day flag
            names.extend(("start", "end", "is_all_day"))
        return list(dict.fromkeys(names))

    # --- operations ----------------------------------------------------------------------

    def _batched(self, doing: str, call, items: list) -> list:
        """Run a bulk call over items, MAX_BATCH a request; throttling is retried by
        exchangelib's policy (it sleeps the BackOffMilliseconds the server asks)."""
        if not items:
            return []
        try:
            return list(call(items))
        except Exception as exc:
            raise self._error(doing, exc) from None

    def create_items(self, records: Sequence[AppointmentWrite]) -> list[WriteResult]:
        items = [self._calendar_item(record) for record in records]
        answers = self._batched(
            "creating items",
            lambda batch: self.account.bulk_create(
                folder=self.calendar,
                items=batch,
                send_meeting_invitations="SendToNone",
                chunk_size=self.write_batch,
            ),
            items,
        )
        results = [
            _failure(answer)
            if isinstance(answer, BaseException)
            else WriteResult(True, answer.id, answer.changekey)
            for answer in answers
        ]
        # EXDATEs of new series: delete those occurrences, all series in one request
        return delete_new_series_occurrences(self, records, results, self._ref)

    def _ref(self, master_id: str, record: AppointmentWrite, original: datetime) -> OccurrenceRef:
        from ewssync.recurrence import occurrence_index

        index = occurrence_index(record.recurrence, record.start, record.time_zone, original)
        return OccurrenceRef(master_id, original, index)

    def _change_keys(self, item_ids: list[str]) -> dict[str, str]:
        if not item_ids:
            return {}
        answers = self._batched(
            "reading change keys",
            lambda batch: self.account.fetch(
                ids=[(item_id, None) for item_id in batch],
                folder=self.calendar,
                only_fields=["id", "changekey"],
                chunk_size=self.write_batch,
            ),
            item_ids,
        )
        return {
            item_id: answer.changekey
            for item_id, answer in zip(item_ids, answers, strict=True)
            if not isinstance(answer, BaseException)
        }

    def update_items(self, updates: Sequence[ItemUpdate]) -> list[WriteResult]:
        pairs = []
        for update in updates:
            item = self._calendar_item(
                update.record, id=update.item_id, changekey=update.change_key
            )
            pairs.append((item, self._update_fieldnames(update.fields)))
        return self._updated(pairs, overwrite=[u.change_key is None for u in updates])

    def _updated(self, pairs: list, overwrite: list[bool]) -> list[WriteResult]:
        results: list[WriteResult | None] = [None] * len(pairs)
        # Items without a change key overwrite; the others must match (AutoResolve).
        for always, resolution in ((False, "AutoResolve"), (True, "AlwaysOverwrite")):
            chosen = [i for i, flag in enumerate(overwrite) if flag is always]
            answers = self._batched(
                "updating items",
                lambda batch, resolution=resolution: self.account.bulk_update(
                    items=batch,
                    conflict_resolution=resolution,
                    send_meeting_invitations_or_cancellations="SendToNone",
                    suppress_read_receipts=False,
                    chunk_size=self.write_batch,
                ),
                [pairs[i] for i in chosen],
            )
            for i, answer in zip(chosen, answers, strict=True):
                results[i] = (
                    _failure(answer)
                    if isinstance(answer, BaseException)
                    else WriteResult(True, answer[0], answer[1])
                )
        return results

    def delete_items(
        self, item_ids: Sequence[str], send_cancellations: bool = False
    ) -> list[WriteResult]:
        return self._deleted([(item_id, None) for item_id in item_ids], send_cancellations)

    def _deleted(self, ids: list, send_cancellations: bool = False) -> list[WriteResult]:
        answers = self._batched(
            "deleting items",
            lambda batch: self.account.bulk_delete(
                ids=batch,
                send_meeting_cancellations="SendToAllAndSaveCopy"
                if send_cancellations
                else "SendToNone",
                suppress_read_receipts=False,
                chunk_size=self.write_batch,
            ),
            list(ids),
        )
        results = []
        for answer in answers:
            if isinstance(answer, _GONE):
                results.append(WriteResult(True, error=NOT_FOUND, message=str(answer)))
            elif isinstance(answer, BaseException):
                results.append(_failure(answer))
            else:
                results.append(WriteResult(True))
        return results

    def update_occurrences(self, updates: Sequence[OccurrenceUpdate]) -> list[WriteResult]:
        pairs = []
        for update in updates:
            ref = update.occurrence
            item = self._calendar_item(update.record)
            item._id = OccurrenceItemId(id=ref.master_item_id, instance_index=ref.index)
            fields = [f for f in update.fields if f != "recurrence"]
            pairs.append((item, self._update_fieldnames(fields)))
        return self._updated(pairs, overwrite=[True] * len(pairs))

    def delete_occurrences(self, occurrences: Sequence[OccurrenceRef]) -> list[WriteResult]:
        ids = [OccurrenceItemId(id=r.master_item_id, instance_index=r.index) for r in occurrences]
        return self._deleted(ids)

    def find_stamped(self, stamps: Sequence[str]) -> dict[str, StampedItem]:
        found: dict[str, StampedItem] = {}
        wanted = list(dict.fromkeys(stamps))
        for low in range(0, len(wanted), self.write_batch):
            batch = wanted[low : low + self.write_batch]
            try:
                items = list(
                    self.calendar.filter(**{f"{STAMP_FIELD}__in": batch}).only(
                        "id", "changekey", "type", STAMP_FIELD
                    )
                )
            except Exception as exc:
                raise self._error("looking for stamped items", exc) from None
            for item in items:
                if isinstance(item, BaseException):
                    raise self._error("looking for stamped items", item)
                stamp = getattr(item, STAMP_FIELD, None)
                if stamp in batch and stamp not in found:
                    found[stamp] = StampedItem(
                        stamp, item.id, item.changekey, item.type or "Single"
                    )
        return found


def plain_date(value) -> date:
    return date(value.year, value.month, value.day)
