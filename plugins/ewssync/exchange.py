"""The Exchange side behind one small interface; EWS through exchangelib (a Graph backend can sit
beside it). Only this module and hook.py import exchangelib.

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
"""

from __future__ import annotations

import logging
import socket
import warnings
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import requests
from exchangelib import (
    BASIC,
    DELEGATE,
    Account,
    CalendarItem,
    Configuration,
    Credentials,
    EWSDate,
    EWSDateTime,
    EWSTimeZone,
    FaultTolerance,
    HTMLBody,
    Version,
)
from exchangelib import errors as ews_errors
from exchangelib.fields import TimeZoneField
from exchangelib.protocol import BaseProtocol, NoVerifyHTTPAdapter
from exchangelib.util import create_element
from exchangelib.version import EXCHANGE_2007_SP1, EXCHANGE_2016

from ewssync.errors import ExchangeError
from ewssync.settings import SyncSettings
from ewssync.timezones import iana_to_windows, windows_to_iana

log = logging.getLogger(__name__)

VIEW_PAGE_SIZE = 1000  # Exchange's default limit for one FindItem
FETCH_CHUNK = 100
MIN_SPLIT = timedelta(hours=1)

FETCH_FIELDS = (
    "subject", "location", "body", "uid", "recurrence_id", "type", "start", "end", "is_all_day",
    "sensitivity", "reminder_is_set", "reminder_minutes_before_start", "legacy_free_busy_status",
    "categories", "last_modified_time", "is_recurring",
)  # fmt: skip
INDEX_FIELDS = ("id", "changekey", "type", "start", "end", "is_all_day")
SYNC_FIELDS = ("id", "changekey", "type")


# --- Exchange2007_SP1 ---------------------------------------------------------------------------
# exchangelib writes <t:MeetingTimeZone Id="…"/>, which Microsoft's schema rejects (TimeZoneType
# has only a TimeZoneName attribute), and reading the schema-valid form
# <t:MeetingTimeZone TimeZoneName="…"> makes it call from_ms_id(None) and crash with a TypeError.
# This field writes and reads TimeZoneName. It replaces the field on CalendarItem; the field is
# only used for servers older than Exchange 2010, so newer dialects are untouched.
# Reported upstream as: "MeetingTimeZone: Id attribute not in schema; TimeZoneName not parsed".


class MeetingTimeZoneField(TimeZoneField):
    """calendar:MeetingTimeZone as Exchange 2007's schema defines it (TimeZoneName)."""

    def from_xml(self, elem, account):
        field_elem = elem.find(self.response_tag())
        if field_elem is None:
            return self.default
        name = field_elem.get("TimeZoneName") or field_elem.get("Id")
        zone = windows_to_iana(name)
        if zone is None:
            return None
        return EWSTimeZone(zone)

    def to_xml(self, value, version):
        return create_element(self.request_tag(), attrs={"TimeZoneName": value.ms_id})


def _install_meeting_timezone_field() -> None:
    current = CalendarItem.get_field_by_fieldname("_meeting_timezone")
    if isinstance(current, MeetingTimeZoneField):
        return
    replacement = MeetingTimeZoneField(
        name=current.name,
        field_uri=current.field_uri,
        deprecated_from=current.deprecated_from,
        is_searchable=False,
    )
    index = CalendarItem.FIELDS.index(current)
    CalendarItem.FIELDS[index] = replacement
    CalendarItem.FIELDS._dict[replacement.name] = replacement  # keep the name lookup in step


_install_meeting_timezone_field()


# --- the connection report ----------------------------------------------------------------------


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
            lines.append(f"{part.name}: {state}" + (f" - {part.message}" if part.message else ""))
        return "\n".join(lines)


GENERAL = "General connection"
SEND_RECEIVE = "Send/receive data"


def explain(exc: BaseException, settings: SyncSettings) -> str:
    """A likely cause and what to do, for an exception from exchangelib or the network."""
    text = str(exc)
    if settings.password and settings.password in text:
        text = text.replace(settings.password, "***")
    server = settings.service_endpoint
    if isinstance(exc, ews_errors.UnauthorizedError):
        return f"the server refused the user name or password of {settings.username!r} (HTTP 401)"
    if isinstance(exc, ews_errors.ErrorAccessDenied):
        return (
            f"no permission on the calendar of {settings.mailbox} (ErrorAccessDenied): grant "
            f"{settings.username!r} at least reviewer (read) and editor (write) rights"
        )
    if isinstance(exc, ews_errors.ErrorNonExistentMailbox):
        return f"the mailbox {settings.mailbox!r} does not exist on {server}"
    if isinstance(exc, ews_errors.ErrorServerBusy | ews_errors.RateLimitError):
        return "the server is throttling this account (ErrorServerBusy); try again later"
    if isinstance(exc, ews_errors.ErrorInvalidServerVersion | ews_errors.ErrorSchemaValidation):
        hint = (
            "turn on 'use 2007 protocol'"
            if not settings.use_2007_protocol
            else "turn off 'use 2007 protocol'"
        )
        return f"the server does not accept this protocol version ({type(exc).__name__}): {hint}"
    if isinstance(exc, requests.exceptions.SSLError):
        return f"the TLS certificate of {server} is not valid: {text[:200]}"
    if isinstance(exc, requests.exceptions.ConnectionError | socket.gaierror):
        if "Name or service not known" in text or "getaddrinfo" in text or "resolve" in text:
            return f"the server name in {server} cannot be resolved: check 'server'"
        return f"cannot reach {server}: {text[:200]}"
    if isinstance(exc, requests.exceptions.Timeout):
        return f"{server} did not answer within {settings.timeout_seconds} s"
    if isinstance(exc, ews_errors.TransportError) and "version" in text.lower():
        return f"the server's answer has no usable version ({text[:160]}): try 'use 2007 protocol'"
    return f"{type(exc).__name__}: {text[:300]}"


# --- the calendar ---------------------------------------------------------------------------------


class EwsCalendar:
    """One mailbox's calendar over EWS."""

    def __init__(self, settings: SyncSettings):
        self.settings = settings
        self._account: Account | None = None

    # exchangelib keeps these on the protocol class: set them before the first request.
    def _configure_transport(self) -> None:
        BaseProtocol.TIMEOUT = self.settings.timeout_seconds
        if not self.settings.verify_tls:
            BaseProtocol.HTTP_ADAPTER_CLS = NoVerifyHTTPAdapter

    @property
    def account(self) -> Account:
        if self._account is None:
            self._configure_transport()
            build = EXCHANGE_2007_SP1 if self.settings.use_2007_protocol else EXCHANGE_2016
            config = Configuration(
                service_endpoint=self.settings.service_endpoint,
                credentials=Credentials(self.settings.username, self.settings.password),
                auth_type=BASIC,
                version=Version(build=build),
                retry_policy=FaultTolerance(max_wait=max(60, self.settings.timeout_seconds * 4)),
                max_connections=4,
            )
            self._account = Account(
                primary_smtp_address=self.settings.mailbox,
                config=config,
                autodiscover=False,
                access_type=DELEGATE,
                default_timezone=EWSTimeZone(self.settings.exchange_timezone),
            )
        return self._account

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.settings.exchange_timezone)

    # --- connection test ------------------------------------------------------------------

    def test(self, write: bool | None = None) -> ConnectionReport:
        """General connection (server, TLS, credentials), then Send/receive data (read the
        calendar and, when ``write``, create and delete a test item)."""
        write = self.settings.test_write if write is None else write
        report = ConnectionReport()
        try:
            self.account.root.refresh()
        except Exception as exc:
            report.parts.append(ReportPart(GENERAL, False, explain(exc, self.settings)))
            report.parts.append(ReportPart(SEND_RECEIVE, None, "skipped: no connection"))
            return report
        report.parts.append(
            ReportPart(
                GENERAL, True, f"{self.settings.username} @ {self.settings.service_endpoint}"
            )
        )
        step = "reading the calendar"
        try:
            now = datetime.now(UTC)
            self.read_index(now - timedelta(days=1), now + timedelta(days=1))
            done = "read"
            if write:
                step = "writing a test item"
                start = datetime.combine(now.date() + timedelta(days=1), time(5), tzinfo=UTC)
                item_id, _ = self.create(
                    {
                        "subject": "ewssync connection test (deleted again)",
                        "start": start,
                        "end": start + timedelta(minutes=5),
                        "time_zone": self.settings.exchange_timezone,
                        "reminder_minutes": None,
                    }
                )
                step = "deleting the test item"
                self.delete(item_id)
                done = "read and write"
            report.parts.append(ReportPart(SEND_RECEIVE, True, f"calendar {done} OK"))
        except Exception as exc:
            report.parts.append(
                ReportPart(SEND_RECEIVE, False, f"{step}: {explain(exc, self.settings)}")
            )
        return report

    # --- reading --------------------------------------------------------------------------

    def read_index(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Ids, change keys and times of every item in [start, end): one FindItem per
        sub-window, split whenever the server's limits or a full page say it was cut."""
        found: dict[str, dict[str, Any]] = {}
        pending = [(start, end)]
        while pending:
            low, high = pending.pop()
            try:
                page = list(
                    self.account.calendar.view(
                        start=EWSDateTime.from_datetime(low),
                        end=EWSDateTime.from_datetime(high),
                        max_items=VIEW_PAGE_SIZE,
                    ).only(*INDEX_FIELDS)
                )
                cut = len(page) >= VIEW_PAGE_SIZE
            except (
                ews_errors.ErrorExceededFindCountLimit,
                ews_errors.ErrorCalendarViewRangeTooBig,
            ):
                page, cut = [], True
            if cut:
                if high - low <= MIN_SPLIT:
                    raise ExchangeError(
                        f"connection {self.settings.conn_id!r}: more than {VIEW_PAGE_SIZE} items "
                        f"between {low} and {high}; cannot split the calendar view further"
                    )
                middle = low + (high - low) / 2
                pending.extend([(low, middle), (middle, high)])
                continue
            for item in page:
                if isinstance(item, Exception):
                    raise ExchangeError(f"calendar view failed: {item}")
                start_utc, end_utc = self._instants(item)
                found[item.id] = {
                    "item_id": item.id,
                    "change_key": item.changekey,
                    "item_type": item.type,
                    "start": start_utc,
                    "end": end_utc,
                    "is_all_day": bool(item.is_all_day),
                }
        return list(found.values())

    def fetch(self, item_ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        """Full records for the ids (GetItem, 100 per request); ids Exchange no longer has are
        returned apart."""
        records: list[dict[str, Any]] = []
        missing: list[str] = []
        if not item_ids:
            return records, missing
        calendar = self.account.calendar
        with warnings.catch_warnings():
            # Unknown zone names warn and come back as None: the fallback zone handles them.
            warnings.simplefilter("ignore", UserWarning)
            results = self.account.fetch(
                ids=[(item_id, None) for item_id in item_ids],
                folder=calendar,
                only_fields=[*FETCH_FIELDS, *self._zone_fields()],
                chunk_size=FETCH_CHUNK,
            )
            for item_id, result in zip(item_ids, results, strict=True):
                if isinstance(result, ews_errors.ErrorItemNotFound):
                    missing.append(item_id)
                elif isinstance(result, Exception):
                    raise ExchangeError(
                        f"connection {self.settings.conn_id!r}: reading item failed: {result}"
                    )
                else:
                    records.append(self._record(result))
        return records, missing

    def _zone_fields(self) -> tuple[str, ...]:
        if self.settings.use_2007_protocol:
            return ("_meeting_timezone",)
        return ("_start_timezone", "_end_timezone")

    def _item_zone(self, item) -> EWSTimeZone | None:
        if self.settings.use_2007_protocol:
            return getattr(item, "_meeting_timezone", None)
        return getattr(item, "_start_timezone", None)

    def _instants(self, item) -> tuple[datetime, datetime]:
        """UTC start and end; all-day dates become local midnights in the item's zone."""
        start, end = item.start, item.end
        if isinstance(start, date) and not isinstance(start, datetime):
            zone = self._item_zone(item) or EWSTimeZone(self.settings.exchange_timezone)
            tz = ZoneInfo(zone.key)
            # exchangelib made the end date inclusive; the instant is the next local midnight.
            end_date = end if end is not None else start
            return (
                datetime.combine(start, time(0), tzinfo=tz).astimezone(UTC),
                datetime.combine(end_date + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC),
            )
        return start.astimezone(UTC), end.astimezone(UTC)

    def _record(self, item) -> dict[str, Any]:
        zone = self._item_zone(item)
        start_utc, end_utc = self._instants(item)
        all_day = bool(item.is_all_day)
        start_date = end_date = None
        if all_day:
            if isinstance(item.start, date) and not isinstance(item.start, datetime):
                start_date, end_date = _plain_date(item.start), _plain_date(item.end or item.start)
            else:
                tz = ZoneInfo(zone.key) if zone else self.zone
                start_date = start_utc.astimezone(tz).date()
                end_date = (end_utc.astimezone(tz) - timedelta(days=1)).date()
        body = item.body
        recurrence_id = item.recurrence_id
        return {
            "item_id": item.id,
            "change_key": item.changekey,
            "item_type": item.type or "Single",
            "uid": item.uid,
            "recurrence_id": recurrence_id.astimezone(UTC) if recurrence_id else None,
            "master_item_id": None,
            "subject": item.subject,
            "location": item.location,
            "body": str(body) if body is not None else None,
            "body_type": "HTML" if isinstance(body, HTMLBody) else "Text",
            "start": start_utc,
            "end": end_utc,
            "is_all_day": all_day,
            "start_date": start_date,
            "end_date": end_date,
            "timezone_windows": zone.ms_id if zone else None,
            "timezone_iana": zone.key if zone else None,
            "sensitivity": item.sensitivity or "Normal",
            "reminder_is_set": bool(item.reminder_is_set),
            "reminder_minutes": item.reminder_minutes_before_start,
            "legacy_free_busy": item.legacy_free_busy_status or "Busy",
            "categories": list(item.categories or []),
            "last_modified": item.last_modified_time.astimezone(UTC)
            if item.last_modified_time
            else None,
            "is_recurring": bool(item.is_recurring),
        }

    def sync_changes(
        self, state: str | None, max_changes: int = 512
    ) -> tuple[str, list[dict[str, Any]], bool]:
        """Changes since ``state`` (SyncFolderItems, ids and types only), drained to the end.

        :return: the new state, the changes, and True (the folder's changes were all read).
        """
        calendar = self.account.calendar
        calendar.item_sync_state = state
        changes: list[dict[str, Any]] = []
        try:
            for kind, item in calendar.sync_items(
                sync_state=state,
                only_fields=list(SYNC_FIELDS),
                max_changes_returned=max_changes,
            ):
                item_id = item.id
                changes.append(
                    {
                        "kind": {"read_flag_change": "read_flag"}.get(kind, kind),
                        "item_id": item_id,
                        "change_key": getattr(item, "changekey", None),
                        "item_type": getattr(item, "type", None),
                    }
                )
        except ews_errors.ErrorInvalidSyncStateData:
            raise ExchangeError(
                f"connection {self.settings.conn_id!r}: Exchange no longer accepts the saved sync "
                "state; trigger the DAG with full_resync=true"
            ) from None
        return calendar.item_sync_state, changes, True

    # --- writing ----------------------------------------------------------------------------

    def create(self, record: dict[str, Any]) -> tuple[str, str]:
        """Create a single appointment; return its item id and change key."""
        zone_name = record.get("time_zone") or self.settings.exchange_timezone
        zone = EWSTimeZone(zone_name)
        if iana_to_windows(zone_name) is None:
            raise ExchangeError(f"time zone {zone_name!r} has no Windows equivalent")
        item = CalendarItem(
            account=self.account,
            folder=self.account.calendar,
            subject=record.get("subject") or "",
            location=record.get("location") or None,
            body=HTMLBody(record["body"]) if record.get("body") else None,
            start=EWSDateTime.from_datetime(record["start"]).astimezone(zone),
            end=EWSDateTime.from_datetime(record["end"]).astimezone(zone),
            reminder_is_set=record.get("reminder_minutes") is not None,
            reminder_minutes_before_start=record.get("reminder_minutes") or 0,
        )
        item.save(send_meeting_invitations="SendToNone")
        return item.id, item.changekey

    def delete(self, item_id: str) -> None:
        results = self.account.bulk_delete(
            ids=[(item_id, None)], send_meeting_cancellations="SendToNone"
        )
        for result in results:
            if isinstance(result, Exception) and not isinstance(
                result, ews_errors.ErrorItemNotFound
            ):
                raise ExchangeError(f"deleting item failed: {result}")


def _plain_date(value) -> date:
    if isinstance(value, EWSDate):
        return date(value.year, value.month, value.day)
    return value


def open_calendar(settings: SyncSettings) -> EwsCalendar:
    return EwsCalendar(settings)
