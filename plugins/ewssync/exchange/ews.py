"""The EWS backend: one mailbox's calendar through exchangelib (with ews_patches installed)."""

from __future__ import annotations

import logging
import re
import socket
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from time import sleep
from typing import Any
from zoneinfo import ZoneInfo

import requests
from exchangelib import (
    Account,
    CalendarItem,
    Configuration,
    EWSDateTime,
    EWSTimeZone,
    HTMLBody,
    Version,
)
from exchangelib import errors as ews_errors
from exchangelib.fields import InvalidFieldForVersion
from exchangelib.folders import Calendar, DistinguishedFolderId, Root
from exchangelib.items import ID_ONLY
from exchangelib.properties import Mailbox as EwsMailbox
from exchangelib.protocol import BaseProtocol, NoVerifyHTTPAdapter
from exchangelib.services import GetItem
from exchangelib.version import EXCHANGE_2007_SP1, EXCHANGE_2010, EXCHANGE_2016

from ewssync.errors import ExchangeError, SyncStateExpired
from ewssync.exchange import ews_lean, ews_signin
from ewssync.exchange.base import (
    GENERAL,
    SEND_RECEIVE,
    ConnectionReport,
    ReportPart,
    exercise_calendar,
)
from ewssync.exchange.ews_patches import (
    RetryPolicy,
    drop_stale_protocol,
    dropped_nul_characters,
    instants_of,
    reading_without_end_zone,
    reset_dropped_nul_characters,
    reset_view_pages,
    tune_protocol,
    view_pages,
    zone_from_display,
    zone_is_known,
)
from ewssync.exchange.ews_write import STAMP_FIELD, EwsWriter
from ewssync.exchange.redact import SECRET_FILTER, install_secret_filter
from ewssync.settings import SyncSettings
from ewssync.timezones import iana_to_windows

log = logging.getLogger(__name__)
install_secret_filter()  # exchangelib's loggers exist only now that it is imported


VIEW_PAGE_SIZE = 1000  # Exchange's default limit for one FindItem
FETCH_CHUNK = 100
MAX_VIEW_PARTS = 64  # the most parts read_index cuts the rest of a big window into
MIN_SPLIT = timedelta(hours=1)

FETCH_FIELDS = (
    "subject", "location", "body", "uid", "recurrence_id", "type", "start", "end", "is_all_day",
    "sensitivity", "reminder_is_set", "reminder_minutes_before_start", "legacy_free_busy_status",
    "categories", "last_modified_time", "is_recurring", "ewssync_zone_name", "is_cancelled",
    "my_response_type", "organizer", STAMP_FIELD,
)  # fmt: skip
INDEX_FIELDS = ("id", "changekey", "type", "start", "end", "is_all_day", "ewssync_zone_name")
SYNC_FIELDS = ("id", "changekey", "type", "last_modified_time")

# What GetItem / DeleteItem answer for an item that is no longer there: a deleted item, or an
# occurrence deleted from its series (an occurrence id stays resolvable, so Exchange says why).
_GONE = (
    ews_errors.ErrorItemNotFound,
    ews_errors.ErrorCalendarOccurrenceIsDeletedFromRecurrence,
)

# Errors about the mailbox, not the connection: the server answered and accepted the user.
_MAILBOX_ERRORS = (
    ews_errors.ErrorAccessDenied,
    ews_errors.ErrorFolderNotFound,
    ews_errors.ErrorNonExistentMailbox,
    ews_errors.ErrorMailRecipientNotFound,
    ews_errors.ErrorImpersonateUserDenied,
)


def explain(exc: BaseException, settings: SyncSettings, method: str | None = None) -> str:
    """A likely cause and what to do, for an exception from exchangelib or the network.

    :param method: the sign-in method in use (auth_method, with auto resolved).
    The text never carries the password (nor its base64 form), a client secret or a token.
    """
    server = settings.service_endpoint
    # exchangelib re-raises network failures after its retries as ErrorTimeoutExpired with
    # the cause in the text; look at the whole chain and text.
    chain = [exc]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        nxt = chain[-1].__cause__ or chain[-1].__context__
        if nxt in chain or len(chain) > 5:
            break
        chain.append(nxt)
    text = SECRET_FILTER.scrub(" | ".join(str(e) for e in chain))
    short = text[:240]

    def caught(*kinds: type) -> bool:
        return any(isinstance(e, kinds) for e in chain)

    sign_in = ews_signin.explain_sign_in(chain, settings, method or settings.auth_method)
    if sign_in is not None:
        return sign_in
    if caught(ews_errors.UnauthorizedError):
        return (
            f"the server refused the user name '{settings.username}' or its password (HTTP 401): "
            "check 'User name' and 'Password'"
        )
    if caught(ews_errors.ErrorAccessDenied, ews_errors.ErrorFolderNotFound):
        return (
            f"no permission to read the calendar of {settings.mailbox} ({type(exc).__name__}). "
            f"Ask the mailbox owner to grant '{settings.username}' access to the calendar "
            "(Editor, so the sync can write), or fix 'Mailbox'"
        )
    if caught(ews_errors.ErrorNonExistentMailbox, ews_errors.ErrorMailRecipientNotFound):
        return f"the mailbox {settings.mailbox!r} does not exist on {server}: check 'Mailbox'"
    if caught(ews_errors.ErrorServerBusy, ews_errors.RateLimitError):
        return "the server is throttling this account (ErrorServerBusy): try again later"
    if caught(
        InvalidFieldForVersion,
        ews_errors.ErrorInvalidServerVersion,
        ews_errors.ErrorSchemaValidation,
        ews_errors.ErrorInvalidSchemaVersionForMailboxVersion,
    ) or ("version" in text.lower() and caught(ews_errors.TransportError)):
        hint = (
            "an old server (Exchange 2007): turn on 'Use 2007 protocol'"
            if not settings.use_2007_protocol
            else "the server is newer than Exchange 2007: turn off 'Use 2007 protocol'"
        )
        return f"the server does not accept this protocol version ({type(exc).__name__}): {hint}"
    if caught(requests.exceptions.SSLError) or "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            f"the TLS certificate of {server} is not valid ({short}): fix the certificate, or "
            "(test systems only) set verify_tls=false"
        )
    lowered = text.lower()
    if caught(socket.gaierror) or any(
        marker in lowered
        for marker in ("name or service not known", "failed to resolve", "nodename nor servname")
    ):
        return f"the server name in {server} cannot be resolved: check 'Server'"
    if "connection refused" in lowered:
        return f"nothing answers at {server} (connection refused): check 'Server' and the port"
    if caught(requests.exceptions.Timeout) or "timed out" in lowered:
        return (
            f"{server} did not answer within {settings.timeout_seconds} s "
            "(timeout_seconds): the server or the network is too slow or unreachable"
        )
    if caught(requests.exceptions.ConnectionError) or "connection aborted" in lowered:
        return f"the connection to {server} failed ({short}): try again; check 'Server'"
    if caught(ews_errors.ErrorTimeoutExpired):
        return f"{server} did not answer in time ({short})"
    if caught(ews_errors.MalformedResponseError):
        # e.g. a web server that refuses POST (HTTP 405) or a login page: no SOAP at all
        status = re.search(r"Code: (\d{3})", text)
        what = f"HTTP {status.group(1)}" if status else "no SOAP answer"
        return (
            f"this URL does not answer like an EWS endpoint ({what} from {server}): check "
            "'Server'; EWS is usually https://<mail server>/EWS/Exchange.asmx"
        )
    return f"{type(exc).__name__}: {short}"


# --- the calendar -------------------------------------------------------------------------------


class EwsCalendar(EwsWriter):
    """One mailbox's calendar over EWS (the write side: ews_write.EwsWriter).

    :param settings: the connection's settings.
    :param view_page_size: the most items one CalendarView asks for (Exchange caps it at 1000).
    """

    # extract.read_whole_window may list the window while SyncFolderItems drains: both share
    # exchangelib's pool of ``concurrency`` connections, and the drain reports each item's
    # LastModifiedTime and change key (an occurrence's is its master's)
    index_beside_drain = True

    def __init__(self, settings: SyncSettings, view_page_size: int = VIEW_PAGE_SIZE):
        self.settings = settings
        self.view_page_size = view_page_size
        self._account: Account | None = None
        self._calendar: Calendar | None = None
        # NUL characters Exchange sent in the items fetched so far (XML drops them; see
        # ews_patches): reported in the run's counts
        self.dropped_nul_characters = 0
        self._plan: ews_signin.SignInPlan | None = None
        self._lean_reader: ews_lean.Reader | None = None  # its zone cache lives with the calendar
        self._fetch_fields_of: tuple[Any, set] | None = None  # (server build, GetItem's fields)
        SECRET_FILTER.add(settings.username, settings.password)
        SECRET_FILTER.add_secret(settings.password)

    @property
    def method(self) -> str:
        """The sign-in method in use (auto resolved once the account is built)."""
        return self._plan.method if self._plan is not None else self.settings.auth_method

    @property
    def account(self) -> Account:
        """The exchangelib Account; building it sends nothing."""
        if self._account is None:
            # exchangelib keeps these on the protocol class: set them before the first request.
            # A timeout bounds every request, so a dropped connection cannot hang (issue #1375).
            BaseProtocol.TIMEOUT = self.settings.timeout_seconds
            # Set both ways: the class attribute is process-wide and must not stick from an
            # earlier connection with verify_tls off.
            BaseProtocol.HTTP_ADAPTER_CLS = (
                requests.adapters.HTTPAdapter if self.settings.verify_tls else NoVerifyHTTPAdapter
            )
            build = EXCHANGE_2007_SP1 if self.settings.use_2007_protocol else EXCHANGE_2016
            # auto asks the server once (WWW-Authenticate) and picks; the others are pinned
            self._plan = plan = ews_signin.plan(self.settings)
            config = Configuration(
                service_endpoint=self.settings.service_endpoint,
                credentials=plan.credentials,
                auth_type=plan.auth_type,  # pinned, with the version, so exchangelib won't probe
                version=Version(build=build),
                # sleeps for the BackOffMilliseconds the server asks, each up to max_wait, all
                # together up to throttle_wait_seconds
                retry_policy=RetryPolicy(
                    max_wait=self.settings.timeout_seconds * 2,
                    total_wait=self.settings.throttle_wait_seconds,
                ),
                # one HTTP session per request in flight (see fetch and read_index)
                max_connections=self.settings.concurrency,
            )
            drop_stale_protocol(config)
            self._account = Account(
                primary_smtp_address=self.settings.mailbox,
                config=config,
                autodiscover=False,
                access_type=plan.access_type,
                default_timezone=EWSTimeZone(self.settings.exchange_timezone),
            )
            # which TLS adapter this protocol's sessions use (see drop_stale_protocol)
            self._account.protocol._ewssync_adapter = BaseProtocol.HTTP_ADAPTER_CLS
            policy = self._account.protocol.retry_policy
            if isinstance(policy, RetryPolicy):  # the cached protocol's: a fresh budget
                policy.start_budget(self.settings.throttle_wait_seconds)
            tune_protocol(self._account.protocol, self.settings.concurrency)
        return self._account

    @property
    def calendar(self) -> Calendar:
        """The mailbox's calendar folder, addressed by its distinguished id.

        exchangelib's ``account.calendar`` first sends GetFolder(root) and GetFolder(calendar);
        every operation we use accepts the distinguished id, so a no-change run costs one
        request (SyncFolderItems) instead of three.
        """
        if self._calendar is None:
            mailbox = EwsMailbox(email_address=self.settings.mailbox)
            root = Root(
                account=self.account,
                _distinguished_id=DistinguishedFolderId(
                    id=Root.DISTINGUISHED_FOLDER_ID, mailbox=mailbox
                ),
            )
            self._calendar = Calendar(
                root=root,
                _distinguished_id=DistinguishedFolderId(
                    id=Calendar.DISTINGUISHED_FOLDER_ID, mailbox=mailbox
                ),
            )
        return self._calendar

    def prepare(self) -> None:
        """Build the account and the folder now (threads then share them; nothing is sent)."""
        _ = self.calendar

    def probe(self) -> None:
        """One GetFolder of the calendar: server, credentials, mailbox and the permission to
        open the calendar, in a single request (the check before every scheduled run).

        :raises ExchangeError: with the likely cause; run ``test()`` for the two-part report.
        """
        try:
            Calendar.get_distinguished(root=self.calendar.root)
        except Exception as exc:
            raise ExchangeError(
                f"connection {self.settings.conn_id!r}: {explain(exc, self.settings, self.method)}"
            ) from None

    def close(self) -> None:
        """Close the HTTP sessions."""
        if self._account is not None:
            self._account.protocol.close()

    # --- connection test ------------------------------------------------------------------

    def test(self, write: bool = True, app_user_email: str | None = None) -> ConnectionReport:
        """The two-part connection test.

        :param write: also create and delete a test item.
        :param app_user_email: the app user's e-mail, to check it owns the mailbox.
        """
        report = ConnectionReport()
        try:
            self.account.root.refresh()
        except _MAILBOX_ERRORS:
            pass  # the server accepted the credentials; part 2 says what is wrong with the mailbox
        except Exception as exc:
            report.parts.append(
                ReportPart(GENERAL, False, explain(exc, self.settings, self.method))
            )
            report.parts.append(ReportPart(SEND_RECEIVE, None, "the general connection failed"))
            return report
        server_build = self.account.version.build  # exchangelib takes it from the answer
        if server_build < EXCHANGE_2010 and not self.settings.use_2007_protocol:
            report.parts.append(
                ReportPart(
                    GENERAL,
                    False,
                    f"the server is {self.account.version.fullname or server_build}, an old "
                    "server: turn on 'Use 2007 protocol' (use_2007_protocol=true)",
                )
            )
            report.parts.append(ReportPart(SEND_RECEIVE, None, "the general connection failed"))
            return report
        report.parts.append(ReportPart(GENERAL, True, self._plan.describe(self.settings)))
        steps: list[str] = ["reading the calendar"]
        try:
            done = exercise_calendar(
                self, self.settings, write=write, app_user_email=app_user_email, steps=steps
            )
            report.parts.append(ReportPart(SEND_RECEIVE, True, f"calendar {done}"))
        except ExchangeError as exc:
            report.parts.append(ReportPart(SEND_RECEIVE, False, str(exc)))
        except Exception as exc:
            report.parts.append(
                ReportPart(
                    SEND_RECEIVE, False, f"{steps[-1]}: {explain(exc, self.settings, self.method)}"
                )
            )
        return report

    # --- reading --------------------------------------------------------------------------

    def read_index(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Ids, change keys and times of every item in [start, end), ordered by start, end, id.

        One FindItem per page (simple fields only, no GetItem). A view comes back sorted by
        start, so a full page is kept up to its last start time and the rest is read from there;
        a window is split in two only when the server refuses it as too big, or when a page
        cannot advance (more items than a page starting at one instant).

        When the first page is full, the rest of the window is cut into parts of about a page
        each (the first answer's TotalItemsInView says how many items remain) and the parts are
        read ``concurrency`` at a time. The parts depend only on what the server holds, never on
        the concurrency, and the result is sorted: the same records in the same order whatever
        the setting.
        """
        first, rest, total = self._read_range(start, end, first_only=True)
        if rest is None:
            return _index_order(first)
        low = rest[0]
        remaining = max(total - len(first), 1)
        parts = min(max(-(-remaining // self.view_page_size), 1), MAX_VIEW_PARTS)
        step = (end - low) / parts
        bounds = [low + step * n for n in range(parts)] + [end]
        ranges = list(zip(bounds[:-1], bounds[1:], strict=True))
        found = dict(first)
        for part in self._parallel(lambda bounds: self._read_range(*bounds)[0], ranges):
            found.update(part)
        return _index_order(found)

    def _read_range(
        self, start: datetime, end: datetime, first_only: bool = False
    ) -> tuple[dict[str, dict[str, Any]], tuple[datetime, datetime] | None, int]:
        """The index entries of [start, end), page after page.

        :param first_only: stop after the first page that can advance, and return the range
            still to read (None when complete) and the first answer's TotalItemsInView.
        """
        found: dict[str, dict[str, Any]] = {}
        pending = [(start, end)]
        total = 0
        while pending:
            low, high = pending.pop()
            try:
                page, server_cut, total = self._retrying(
                    lambda low=low, high=high: self._view_page(low, high)
                )
                cut = server_cut or len(page) >= self.view_page_size
            except (
                ews_errors.ErrorExceededFindCountLimit,
                ews_errors.ErrorCalendarViewRangeTooBig,
            ):
                page, cut = [], True
            except Exception as exc:
                raise self._error("reading the calendar", exc) from None
            for item in page:
                if isinstance(item, Exception):
                    raise self._error("reading the calendar", item)
            entries = [self._index_entry(item) for item in page]
            if cut and entries:
                last_start = max(entry["start"] for entry in entries)
                if last_start > low:
                    # keep what started before the last start (complete); ask again from there
                    entries = [entry for entry in entries if entry["start"] < last_start]
                    pending.append((last_start, high))
                    cut = False
            if cut:
                if high - low <= MIN_SPLIT:
                    raise ExchangeError(
                        f"connection {self.settings.conn_id!r}: more than "
                        f"{self.view_page_size} items between {low} and {high}; cannot split "
                        "the calendar view further"
                    )
                middle = low + (high - low) / 2
                pending.extend([(middle, high), (low, middle)])
                continue
            for entry in entries:
                # an item overlapping a page boundary comes back twice: keep one
                found[entry["item_id"]] = entry
            if first_only and pending:
                # pages are pushed last-first: the rest of the window is one range from here
                rest_low = min(low for low, _ in pending)
                return found, (rest_low, end), total
        return found, None, total

    def _index_entry(self, item) -> dict[str, Any]:
        start_utc, end_utc = self._instants(item)
        return {
            "item_id": item.id,
            "change_key": item.changekey,
            "item_type": item.type or "Single",
            "start": start_utc,
            "end": end_utc,
            "is_all_day": bool(item.is_all_day),
        }

    def _parallel(self, work, inputs: list) -> list:
        """``work`` of each input, ``concurrency`` at a time, the results in input order.

        The first failure (in input order) is raised; work not yet started is cancelled.
        """
        if self.settings.concurrency <= 1 or len(inputs) <= 1:
            return [work(value) for value in inputs]
        self.prepare()  # account and folder built once, before the threads share them
        pool = ThreadPoolExecutor(
            max_workers=min(self.settings.concurrency, len(inputs)),
            thread_name_prefix=f"ews-{self.settings.conn_id}",
        )
        try:
            futures = [pool.submit(work, value) for value in inputs]
            return [future.result() for future in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _view_page(self, low: datetime, high: datetime) -> tuple[list, bool, int]:
        """One CalendarView page over [low, high), checked against what the server said it
        holds; also whether the server cut the view short (IncludesLastItemInRange false) and
        how many items the server says the view holds (TotalItemsInView).

        :raises TransportError: an answer that reaches the end of the range holds fewer items
            than TotalItemsInView (cut short: read again, never taken as complete).
        """
        reset_view_pages()
        with self._reading():
            page = list(
                self.calendar.view(
                    start=EWSDateTime.from_datetime(low.astimezone(UTC)),
                    end=EWSDateTime.from_datetime(high.astimezone(UTC)),
                    max_items=self.view_page_size,
                ).only(*INDEX_FIELDS, *self._zone_fields())
            )
        pages = view_pages()
        for noted in pages:
            # TotalItemsInView counts the whole view. A page that reaches the end of the range
            # must hold all of it; a cut page (IncludesLastItemInRange false) may hold fewer
            # than asked (the server's own cap) and is continued from its last start, so what
            # it lacks is read next.
            if noted.includes_last and noted.items < noted.total_items:
                raise ews_errors.TransportError(
                    f"Connection broken: a calendar view answer holds {noted.items} of the "
                    f"{noted.total_items} items it announces"
                )
        server_cut = any(not noted.includes_last for noted in pages)
        total = max((noted.total_items for noted in pages), default=len(page))
        return page, server_cut, total

    def fetch(self, item_ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        """Full records for the ids (GetItem, 100 per request, ``concurrency`` requests at once).

        :return: the records in the order of ``item_ids``, and the ids Exchange no longer has
            (ErrorItemNotFound, or ErrorCalendarOccurrenceIsDeletedFromRecurrence for a deleted
            occurrence).
        """
        records: list[dict[str, Any]] = []
        missing: list[str] = []
        if not item_ids:
            return records, missing
        chunks = [item_ids[n : n + FETCH_CHUNK] for n in range(0, len(item_ids), FETCH_CHUNK)]
        try:
            for chunk_records, chunk_missing, nul in self._parallel(self._fetch_chunk, chunks):
                records.extend(chunk_records)
                missing.extend(chunk_missing)
                self.dropped_nul_characters += nul
        except ExchangeError:
            raise
        except Exception as exc:
            raise self._error("reading items", exc) from None
        return records, missing

    def _fetch_chunk(self, item_ids: list[str]) -> tuple[list[dict[str, Any]], list[str], int]:
        """One GetItem (retried as a whole): records, ids gone, NUL characters dropped."""
        reset_dropped_nul_characters()  # counted per thread: each chunk reads its own

        def read() -> list:
            # exchangelib's account.fetch() without validating the same fields again for every
            # request (2.4 ms each, a quarter second per 10,000 items)
            fields = self._fetch_fields()
            with self._reading():
                return list(
                    GetItem(account=self.account, chunk_size=FETCH_CHUNK).call(
                        items=[(item_id, None) for item_id in item_ids],
                        additional_fields=fields,
                        shape=ID_ONLY,
                    )
                )

        results = self._retrying(read)
        records: list[dict[str, Any]] = []
        missing: list[str] = []
        for item_id, result in zip(item_ids, results, strict=True):
            if isinstance(result, _GONE):
                missing.append(item_id)
            elif isinstance(result, Exception):
                raise self._error("reading an item", result)
            else:
                records.append(self._record(result))
        return records, missing, dropped_nul_characters()

    def read_window(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Full records of every item in [start, end): read_index, then fetch."""
        index = self.read_index(start, end)
        records, _ = self.fetch([entry["item_id"] for entry in index])
        return records

    def sync_changes(
        self,
        state: str | None,
        max_changes: int = 512,
        window: tuple[datetime, datetime] | None = None,
        on_change=None,
    ) -> tuple[str, list[dict[str, Any]], bool]:
        """Changes since ``state`` (SyncFolderItems, ids and types only).

        :param state: the sync state of the last call, or None for everything.
        :param max_changes: changes per request (Exchange caps it at 512).
        :param window: ignored: SyncFolderItems reports the whole folder.
        :param on_change: called with each change as soon as its page is read (before the
            next page is asked for); a retried read reports its changes again.
        :return: the new state, the changes (kind create|update|delete, item_id,
            change_key, item_type, last_modified) and whether all changes were read (always
            True: exchangelib pages until the server says it has no more).
        """
        calendar = self.calendar

        def read() -> list[dict[str, Any]]:
            # from the given state every time: a retry after a dropped answer repeats the read
            calendar.item_sync_state = state
            changes = []
            with self._reading():
                for kind, item in calendar.sync_items(
                    sync_state=state,
                    only_fields=list(SYNC_FIELDS),
                    max_changes_returned=max_changes,
                ):
                    if kind == "read_flag_change":
                        # a read flag changes no content (exchangelib hands back an
                        # (ItemId, is_read) pair)
                        continue
                    change = {
                        "kind": kind,
                        "item_id": item.id,
                        "change_key": getattr(item, "changekey", None),
                        "item_type": getattr(item, "type", None),
                        "last_modified": _utc(getattr(item, "last_modified_time", None)),
                    }
                    changes.append(change)
                    if on_change is not None:
                        on_change(change)
            return changes

        try:
            changes = self._retrying(read)  # a read like the others: same retries
        except ews_errors.ErrorInvalidSyncStateData:
            raise SyncStateExpired(
                f"connection {self.settings.conn_id!r}: Exchange no longer accepts the saved sync "
                "state; run a full resync"
            ) from None
        except Exception as exc:
            raise self._error("reading changes", exc) from None
        return calendar.item_sync_state, changes, True

    # --- writing ----------------------------------------------------------------------------

    def create(self, record: dict[str, Any]) -> tuple[str, str]:
        """Create a single appointment (no invitations sent).

        :param record: subject, start, end (aware datetimes), optional location, body (HTML),
            time_zone (IANA; default the connection's zone), reminder_minutes (None: no reminder).
        :return: the item id and change key.
        """
        zone_name = record.get("time_zone") or self.settings.exchange_timezone
        if iana_to_windows(zone_name) is None:
            raise ExchangeError(
                f"connection {self.settings.conn_id!r}: time zone {zone_name!r} has no "
                "Windows equivalent Exchange would accept"
            )
        zone = EWSTimeZone(zone_name)
        reminder = record.get("reminder_minutes")
        try:
            item = CalendarItem(
                account=self.account,
                folder=self.calendar,
                subject=record.get("subject") or "",
                location=record.get("location") or None,
                body=HTMLBody(record["body"]) if record.get("body") else None,
                start=EWSDateTime.from_datetime(record["start"]).astimezone(zone),
                end=EWSDateTime.from_datetime(record["end"]).astimezone(zone),
                reminder_is_set=reminder is not None,
                reminder_minutes_before_start=reminder or 0,
            )
            item.save(send_meeting_invitations="SendToNone")
        except Exception as exc:
            raise self._error("creating an item", exc) from None
        return item.id, item.changekey

    def delete(self, item_id: str) -> None:
        """Delete an item for good; an item already gone is fine."""
        try:
            results = self.account.bulk_delete(
                ids=[(item_id, None)], send_meeting_cancellations="SendToNone"
            )
        except Exception as exc:
            raise self._error("deleting an item", exc) from None
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, _GONE):
                raise self._error("deleting an item", result)

    # --- helpers ----------------------------------------------------------------------------

    @contextmanager
    def _reading(self):
        """Where calendar items of the answers are read: ews_lean (setting lean_parser), else
        exchangelib's objects. Both give the same records. Either way the reads ask for no
        EndTimeZone (see ews_patches.reading_without_end_zone)."""
        with reading_without_end_zone():
            if not self.settings.lean_parser:
                yield
                return
            if self._lean_reader is None:
                self._lean_reader = ews_lean.Reader(self.account)
            with ews_lean.lean_reading(self._lean_reader):
                yield

    def _retrying(self, read, attempts: int = 3):
        """Run an idempotent read, again after a transient failure (a connection dropped
        mid-answer, a one-off HTTP 500). Throttling is retried by exchangelib itself, with the
        back-off the server asks for."""
        for attempt in range(attempts):
            try:
                return read()
            except Exception as exc:
                if attempt + 1 == attempts or not _is_transient(exc):
                    raise
                log.warning(
                    "connection %s: transient failure (%s), retrying", self.settings.conn_id,
                    type(exc).__name__,
                )  # fmt: skip
                sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def _error(self, doing: str, exc: BaseException) -> ExchangeError:
        error = ExchangeError(
            f"connection {self.settings.conn_id!r}: {doing}: {explain(exc, self.settings, self.method)}"
        )
        error.cause = exc  # kept for callers that branch on the kind; not chained (no secrets)
        return error

    def _meeting_zone(self) -> bool:
        """True when talking to Exchange 2007: its items name one MeetingTimeZone.

        Follows the version the server answered with, which exchangelib records, so reading
        also works when the setting and the server disagree.
        """
        return self.account.version.build < EXCHANGE_2010

    def _fetch_fields(self) -> set:
        """What a GetItem asks for, validated and normalized as account.fetch() does: once per
        server version (the zone fields follow the version the server answered with)."""
        build = self.account.version.build
        if self._fetch_fields_of is None or self._fetch_fields_of[0] != build:
            only = [*FETCH_FIELDS, *self._zone_fields()]
            for field in only:
                self.calendar.validate_item_field(field=field, version=self.account.version)
            with reading_without_end_zone():
                fields = {
                    path
                    for path in self.calendar.normalize_fields(fields=only)
                    if not path.field.is_attribute
                }
            self._fetch_fields_of = (build, fields)
        return self._fetch_fields_of[1]

    def _zone_fields(self) -> tuple[str, ...]:
        if self._meeting_zone():
            return ("_meeting_timezone",)
        return ("_start_timezone",)  # exchangelib adds "_end_timezone" unless reading

    def _item_zone(self, item) -> EWSTimeZone | None:
        name = "_meeting_timezone" if self._meeting_zone() else "_start_timezone"
        return getattr(item, name, None)

    def _zone_iana(self, item) -> str | None:
        """The item's IANA zone: the one its id names, else the one its display name names."""
        zone = self._item_zone(item)
        return zone.key if zone_is_known(zone) else zone_from_display(item)

    def _local_zone(self, item) -> ZoneInfo:
        """The zone all-day dates are in: the item's, else the connection's."""
        return ZoneInfo(self._zone_iana(item) or self.settings.exchange_timezone)

    def _instants(self, item) -> tuple[datetime, datetime]:
        """UTC start and end; for all-day items the instants Exchange sent (local midnights in
        the item's own zone), else the dates' midnights in the item's zone."""
        start, end = item.start, item.end
        sent = instants_of(item)
        if sent is not None:
            return _utc(sent[0]), _utc(sent[1])
        if isinstance(start, date) and not isinstance(start, datetime):
            tz = self._local_zone(item)
            end_date = end if end is not None else start  # exchangelib made it inclusive
            return (
                datetime.combine(_plain_date(start), time(0), tzinfo=tz).astimezone(UTC),
                datetime.combine(_plain_date(end_date) + timedelta(days=1), time(0), tzinfo=tz)
                .astimezone(UTC),
            )  # fmt: skip
        return _utc(start), _utc(end)

    def _record(self, item) -> dict[str, Any]:
        zone = self._item_zone(item)
        start_utc, end_utc = self._instants(item)
        all_day = bool(item.is_all_day)
        start_date = end_date = None
        if all_day and instants_of(item) is not None:  # dated from the wire (ews_patches)
            start_date, end_date = _plain_date(item.start), _plain_date(item.end)
        elif all_day and start_utc is not None and end_utc is not None:
            # (an unreadable start or end leaves the dates empty: the load quarantines the item)
            tz = self._local_zone(item)
            start_date = start_utc.astimezone(tz).date()
            end_date = (end_utc.astimezone(tz) - timedelta(days=1)).date()
        body = item.body
        return {
            "item_id": item.id,
            "change_key": item.changekey,
            "item_type": item.type or "Single",
            "uid": item.uid,
            "recurrence_id": _utc(item.recurrence_id),
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
            "timezone_windows": zone.ms_id if zone is not None else item.ewssync_zone_name,
            "timezone_iana": self._zone_iana(item),
            "sensitivity": item.sensitivity or "Normal",
            "reminder_is_set": bool(item.reminder_is_set),
            "reminder_minutes": item.reminder_minutes_before_start
            if item.reminder_is_set
            else None,
            "legacy_free_busy": item.legacy_free_busy_status or "Busy",
            "categories": list(item.categories or []),
            "last_modified": _utc(item.last_modified_time),
            "is_recurring": bool(item.is_recurring),
            "is_cancelled": bool(item.is_cancelled),
            "my_response": item.my_response_type,
            "organizer": item.organizer.email_address if item.organizer is not None else None,
            "stamp": getattr(item, STAMP_FIELD, None),
        }


def _is_transient(exc: BaseException) -> bool:
    """A failure worth one more try: the connection broke, or the server had a passing fault."""
    if isinstance(
        exc, requests.exceptions.ChunkedEncodingError | requests.exceptions.ConnectionError
    ):
        return True
    if isinstance(exc, ews_errors.ErrorInternalServerTransientError):
        return True
    if isinstance(exc, ews_errors.TransportError) and "Connection broken" in str(exc):
        return True  # exchangelib re-raises requests' ChunkedEncodingError as a TransportError
    return isinstance(exc, ews_errors.SOAPError) and "internal server error" in str(exc).lower()


def _index_order(found: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Index entries in one order whatever the pages and threads: start, end, item id."""
    return sorted(
        found.values(), key=lambda entry: (entry["start"], entry["end"], entry["item_id"])
    )


def _utc(value: datetime | None) -> datetime | None:
    """A plain aware datetime in UTC (exchangelib's EWSDateTime subclass removed)."""
    if value is None:
        return None
    if type(value) is datetime and value.tzinfo is UTC:
        return value  # already one (what ews_lean reads)
    # EWSDateTime.astimezone() only takes EWSTimeZone; go through the POSIX timestamp instead.
    return datetime.fromtimestamp(value.timestamp(), UTC)


def _plain_date(value) -> date:
    return date(value.year, value.month, value.day)


def open_calendar(settings: SyncSettings, view_page_size: int = VIEW_PAGE_SIZE) -> EwsCalendar:
    """The calendar of the connection's mailbox (the EWS backend; nothing is sent yet)."""
    return EwsCalendar(settings, view_page_size=view_page_size)
