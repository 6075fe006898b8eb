"""The Graph backend's write side: base.py's write records -> Graph JSON, 20 requests per $batch.

Mixed into ``GraphCalendar``. Every created event carries the app's appointment id in the same
named property the EWS backend writes (PublicStrings ``ewssyncAppointmentId``), and the UID push
wants in ``ewssyncUid`` (Graph cannot set ``iCalUId``; the read side reports this one, so the
occurrences of an app series name the app's series key, as through EWS). A create also carries a
``transactionId`` derived from the record, so a POST retried after a lost answer does not create
the event twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from ewssync.errors import ExchangeError
from ewssync.exchange.base import (
    CONFLICT,
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

PUBLIC_STRINGS = "{00020329-0000-0000-C000-000000000046}"
STAMP_PROPERTY_ID = f"String {PUBLIC_STRINGS} Name ewssyncAppointmentId"
UID_PROPERTY_ID = f"String {PUBLIC_STRINGS} Name ewssyncUid"
TRANSACTION_NAMESPACE = uuid.UUID("5d0f3c1e-4d0b-4c55-9a51-5b8f0f0b6a13")

_SENSITIVITY = {"Normal": "normal", "Personal": "personal", "Private": "private",
                "Confidential": "confidential"}  # fmt: skip
_SHOW_AS = {"Free": "free", "Tentative": "tentative", "Busy": "busy", "OOF": "oof",
            "WorkingElsewhere": "workingElsewhere", "NoData": "unknown"}  # fmt: skip
_PATTERN_TYPES = {"daily": "daily", "weekly": "weekly", "absolute_monthly": "absoluteMonthly",
                  "relative_monthly": "relativeMonthly", "absolute_yearly": "absoluteYearly",
                  "relative_yearly": "relativeYearly"}  # fmt: skip
# how far around an occurrence's original start its instance is looked for (an exception may
# have been moved away from it)
INSTANCE_SEARCH = timedelta(days=7)


def patterned_recurrence(recurrence: Recurrence, zone: str) -> dict[str, Any]:
    """base.Recurrence -> Graph's patternedRecurrence."""
    # dayOfMonth, month and numberOfOccurrences are non-nullable in Graph's schema: 0 = unused
    pattern: dict[str, Any] = {
        "type": _PATTERN_TYPES[recurrence.pattern],
        "interval": recurrence.interval if not recurrence.pattern.endswith("yearly") else 1,
        "dayOfMonth": 0,
        "month": 0,
    }
    if recurrence.weekdays:
        pattern["daysOfWeek"] = [day.lower() for day in recurrence.weekdays]
    if recurrence.day_of_month:
        pattern["dayOfMonth"] = recurrence.day_of_month
    if recurrence.month:
        pattern["month"] = recurrence.month
    if recurrence.week_index:
        pattern["index"] = recurrence.week_index.lower()
    rng: dict[str, Any] = {
        "type": "noEnd", "startDate": recurrence.start.isoformat(), "recurrenceTimeZone": zone,
        "numberOfOccurrences": 0,
    }  # fmt: skip
    if recurrence.count:
        rng.update(type="numbered", numberOfOccurrences=recurrence.count)
    elif recurrence.end:
        rng.update(type="endDate", endDate=recurrence.end.isoformat())
    return {"pattern": pattern, "range": rng}


class GraphWriter:
    """The write half of GraphCalendar (needs its ``settings``, ``user_path``, ``_batch``,
    ``explain`` and ``_send``)."""

    # --- records -> JSON -------------------------------------------------------------------

    def _zone_name(self, record: AppointmentWrite) -> str:
        name = record.time_zone or self.settings.exchange_timezone
        windows = iana_to_windows(name)
        if windows is None:
            raise ExchangeError(
                f"connection {self.settings.conn_id!r}: time zone {name!r} has no Windows "
                "equivalent Exchange would accept"
            )
        return windows

    def _times(self, record: AppointmentWrite) -> dict[str, Any]:
        zone = self._zone_name(record)
        if record.is_all_day:
            first = record.start_date or record.start.astimezone(ZoneInfo(record.time_zone)).date()
            last = record.end_date or first
            start = f"{first.isoformat()}T00:00:00"
            end = f"{(last + timedelta(days=1)).isoformat()}T00:00:00"
        else:
            tz = ZoneInfo(record.time_zone or self.settings.exchange_timezone)
            start = record.start.astimezone(tz).strftime("%Y-%m-%dT%H:%M:%S")
            end = record.end.astimezone(tz).strftime("%Y-%m-%dT%H:%M:%S")
        return {
            "start": {"dateTime": start, "timeZone": zone},
            "end": {"dateTime": end, "timeZone": zone},
            "isAllDay": record.is_all_day,
        }

    def _event(self, record: AppointmentWrite, fields: Sequence[str] | None = None) -> dict:
        """The event JSON for a record: every field (a create) or only ``fields`` (an update)."""
        every = fields is None
        wanted = set(fields or ())
        event: dict[str, Any] = {}
        if every or "subject" in wanted:
            event["subject"] = record.subject or ""
        if every or "body" in wanted:
            event["body"] = {
                "contentType": "html" if record.body_type == "HTML" else "text",
                "content": record.body or "",
            }
        if every or "location" in wanted:
            event["location"] = {"displayName": record.location or ""}
        if every or wanted & {"start", "end", "time_zone", "is_all_day"}:
            event.update(self._times(record))
        if every or "sensitivity" in wanted:
            event["sensitivity"] = _SENSITIVITY.get(record.sensitivity, "normal")
        if every or "reminder_minutes" in wanted:
            event["isReminderOn"] = record.reminder_minutes is not None
            if record.reminder_minutes is not None:
                event["reminderMinutesBeforeStart"] = int(record.reminder_minutes)
        if every or "legacy_free_busy" in wanted:
            event["showAs"] = _SHOW_AS.get(record.legacy_free_busy, "busy")
        if every or "categories" in wanted:
            event["categories"] = list(record.categories)
        if (every and record.recurrence is not None) or "recurrence" in wanted:
            event["recurrence"] = (
                patterned_recurrence(record.recurrence, self._zone_name(record))
                if record.recurrence is not None
                else None
            )
        if every:
            props = [{"id": STAMP_PROPERTY_ID, "value": record.stamp}]
            if record.uid:
                props.append({"id": UID_PROPERTY_ID, "value": record.uid})
            event["singleValueExtendedProperties"] = props
            event["transactionId"] = str(
                uuid.uuid5(
                    TRANSACTION_NAMESPACE,
                    f"{self.settings.conn_id}|{record.stamp}|{record.start.isoformat()}|"
                    f"{record.end.isoformat()}|{record.subject}",
                )
            )
        return event

    def _events_url(self, item_id: str | None = None, tail: str = "") -> str:
        path = f"{self.user_path}/events"
        if item_id is not None:
            path += f"/{quote(item_id, safe='')}"
        return path + tail

    def _failure(self, status: int, body: dict | None) -> WriteResult:
        error = (body or {}).get("error") or {}
        code, message = error.get("code", ""), error.get("message", "")
        text = self.explain(status, code, message)
        if status == 412 or code == "ErrorIrresolvableConflict":
            return WriteResult(False, error=CONFLICT, message=text)
        if status == 404:
            return WriteResult(False, error=NOT_FOUND, message=text)
        return WriteResult(False, error=REFUSED, message=text)

    def _run(self, requests_: list[dict]) -> list[tuple[int, dict | None]]:
        """(status, body) per request, in order, 20 per $batch."""
        answers: list[tuple[int, dict | None]] = []
        for low in range(0, len(requests_), 20):
            chunk = [{**r, "id": str(n)} for n, r in enumerate(requests_[low : low + 20])]
            answers.extend((status, body) for _, status, body in self._batch(chunk))
        return answers

    # --- operations ------------------------------------------------------------------------

    def create_items(self, records: Sequence[AppointmentWrite]) -> list[WriteResult]:
        requests_ = [
            {"method": "POST", "url": self._events_url(), "body": self._event(record),
             "headers": {"Content-Type": "application/json"}}
            for record in records
        ]  # fmt: skip
        results = [
            WriteResult(True, body["id"], body.get("changeKey"))
            if status in (200, 201)
            else self._failure(status, body)
            for status, body in self._run(requests_)
        ]
        # EXDATEs of new series: delete those occurrences, then read the masters' change keys
        return delete_new_series_occurrences(
            self,
            records,
            results,
            lambda item_id, _record, original: OccurrenceRef(item_id, original, 0),
        )

    def _change_keys(self, item_ids: list[str]) -> dict[str, str]:
        answers = self._run(
            [{"method": "GET", "url": self._events_url(i, "?$select=changeKey")} for i in item_ids]
        )
        return {
            item_id: body["changeKey"]
            for item_id, (status, body) in zip(item_ids, answers, strict=True)
            if status == 200
        }

    def update_items(self, updates: Sequence[ItemUpdate]) -> list[WriteResult]:
        requests_ = []
        for update in updates:
            headers = {"Content-Type": "application/json"}
            if update.change_key is not None:
                headers["If-Match"] = f'W/"{update.change_key}"'
            requests_.append(
                {
                    "method": "PATCH",
                    "url": self._events_url(update.item_id),
                    "headers": headers,
                    "body": self._event(update.record, update.fields),
                }  # fmt: skip
            )
        return [
            WriteResult(True, body["id"], body.get("changeKey"))
            if status == 200
            else self._failure(status, body)
            for status, body in self._run(requests_)
        ]

    def delete_items(
        self, item_ids: Sequence[str], send_cancellations: bool = False
    ) -> list[WriteResult]:
        """DELETE removes an event without notifying anyone; with ``send_cancellations`` a
        meeting the mailbox organizes is cancelled instead (POST .../cancel: Graph sends the
        cancellations and removes it)."""
        requests_ = [
            {"method": "POST", "url": self._events_url(i, "/cancel"), "body": {"comment": ""},
             "headers": {"Content-Type": "application/json"}}
            if send_cancellations
            else {"method": "DELETE", "url": self._events_url(i)}
            for i in item_ids
        ]  # fmt: skip
        results = []
        for status, body in self._run(requests_):
            if status in (200, 202, 204):
                results.append(WriteResult(True))
            elif status == 404:
                results.append(WriteResult(True, error=NOT_FOUND, message="already deleted"))
            else:
                results.append(self._failure(status, body))
        return results

    def _instance_ids(self, refs: Sequence[OccurrenceRef]) -> list[str | None]:
        """The instance id of each occurrence (by its master and original start), through the
        series' instances around that start; None for one that no longer exists."""
        requests_ = []
        for ref in refs:
            low = (ref.original_start - INSTANCE_SEARCH).astimezone(UTC)
            high = (ref.original_start + INSTANCE_SEARCH).astimezone(UTC)
            requests_.append(
                {
                    "method": "GET",
                    "url": self._events_url(
                        ref.master_item_id,
                        f"/instances?startDateTime={low:%Y-%m-%dT%H:%M:%SZ}"
                        f"&endDateTime={high:%Y-%m-%dT%H:%M:%SZ}&$select=id,originalStart",
                    ),
                }  # fmt: skip
            )
        found: list[str | None] = []
        for ref, (status, body) in zip(refs, self._run(requests_), strict=True):
            match = None
            if status == 200:
                wanted = ref.original_start.astimezone(UTC)
                for event in (body or {}).get("value", []):
                    original = event.get("originalStart")
                    if original and _instant(original) == wanted:
                        match = event["id"]
                        break
            elif status != 404:
                error = (body or {}).get("error") or {}
                raise ExchangeError(
                    f"connection {self.settings.conn_id!r}: finding an occurrence: "
                    f"{self.explain(status, error.get('code', ''), error.get('message', ''))}"
                )
            found.append(match)
        return found

    def update_occurrences(self, updates: Sequence[OccurrenceUpdate]) -> list[WriteResult]:
        ids = self._instance_ids([u.occurrence for u in updates])
        results: list[WriteResult | None] = [None] * len(updates)
        requests_, positions = [], []
        for position, (update, item_id) in enumerate(zip(updates, ids, strict=True)):
            if item_id is None:
                results[position] = WriteResult(
                    False, error=NOT_FOUND, message="the occurrence no longer exists"
                )
                continue
            fields = [f for f in update.fields if f != "recurrence"]
            requests_.append(
                {
                    "method": "PATCH",
                    "url": self._events_url(item_id),
                    "headers": {"Content-Type": "application/json"},
                    "body": self._event(update.record, fields),
                }  # fmt: skip
            )
            positions.append(position)
        for position, (status, body) in zip(positions, self._run(requests_), strict=True):
            results[position] = (
                WriteResult(True, body["id"], body.get("changeKey"))
                if status == 200
                else self._failure(status, body)
            )
        return results

    def delete_occurrences(self, occurrences: Sequence[OccurrenceRef]) -> list[WriteResult]:
        ids = self._instance_ids(occurrences)
        results: list[WriteResult | None] = [None] * len(occurrences)
        requests_, positions = [], []
        for position, item_id in enumerate(ids):
            if item_id is None:
                results[position] = WriteResult(True, error=NOT_FOUND, message="already deleted")
                continue
            requests_.append({"method": "DELETE", "url": self._events_url(item_id)})
            positions.append(position)
        for position, (status, body) in zip(positions, self._run(requests_), strict=True):
            if status in (200, 204):
                results[position] = WriteResult(True)
            elif status == 404:
                results[position] = WriteResult(True, error=NOT_FOUND, message="already deleted")
            else:
                results[position] = self._failure(status, body)
        return results

    def find_stamped(self, stamps: Sequence[str]) -> dict[str, StampedItem]:
        """Events carrying these stamps: one filtered GET per stamp, 20 per $batch."""
        wanted = list(dict.fromkeys(stamps))
        requests_ = []
        for stamp in wanted:
            value = stamp.replace("'", "''")
            query = (
                "?$filter=singleValueExtendedProperties/any(ep: ep/id eq "
                f"'{STAMP_PROPERTY_ID}' and ep/value eq '{value}')&$select=id,changeKey,type"
            )
            requests_.append({"method": "GET", "url": self._events_url(None, query)})
        found: dict[str, StampedItem] = {}
        types = {"seriesMaster": "RecurringMaster"}
        for stamp, (status, body) in zip(wanted, self._run(requests_), strict=True):
            if status != 200:
                error = (body or {}).get("error") or {}
                raise ExchangeError(
                    f"connection {self.settings.conn_id!r}: looking for stamped items: "
                    f"{self.explain(status, error.get('code', ''), error.get('message', ''))}"
                )
            for event in (body or {}).get("value", []):
                found.setdefault(
                    stamp,
                    StampedItem(
                        stamp,
                        event["id"],
                        event.get("changeKey"),
                        types.get(event.get("type"), "Single"),
                    ),  # fmt: skip
                )
        return found


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
