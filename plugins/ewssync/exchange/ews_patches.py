"""exchangelib 5.6 adaptations, each with why: zone fields, response parsing, retries, protocol cache.

Installed once on import; only the EWS backend imports this module.
"""

from __future__ import annotations

import logging
import re
import threading
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from queue import Empty
from typing import Any
from zoneinfo import ZoneInfo

import requests
from exchangelib import CalendarItem, Configuration, EWSTimeZone, FaultTolerance
from exchangelib import errors as ews_errors
from exchangelib.errors import SessionPoolMinSizeReached
from exchangelib.fields import CharField, TimeZoneField
from exchangelib.folders import BaseFolder
from exchangelib.protocol import BaseProtocol, Protocol
from exchangelib.queryset import QuerySet
from exchangelib.services.common import EWSService
from exchangelib.util import TNS, create_element

from ewssync.timezones import all_day_dates, display_name_offset, windows_to_iana

log = logging.getLogger(__name__)

# --- time zones on items: what exchangelib gets wrong ------------------------------------------
# 1. Exchange2007_SP1: exchangelib writes <t:MeetingTimeZone Id="…"/>, which Microsoft's schema
#    rejects (TimeZoneType has a TimeZoneName attribute, no Id), and reading the schema-valid form
#    <t:MeetingTimeZone TimeZoneName="…"> makes it call from_ms_id(None) and crash (TypeError).
# 2. Unknown or "Customized Time Zone" names: exchangelib warns and forgets the name, so we could
#    neither report nor fall back knowingly.
# 3. All-day items: exchangelib turns start/end into dates in the item's StartTimeZone, which is
#    None on 2007 (MeetingTimeZone) or when not requested -- and then the host's zone is used.
# The field below reads Id, TimeZoneName or Name and keeps the raw name (ms_id) on a private zone
# instance; unknown names give the connection's zone marked unknown. The from_xml below computes
# all-day dates in the item's known zone, else the account's default zone, never the host's.
# To report upstream (ecederstrand/exchangelib): "MeetingTimeZone: Id attribute is not in the
# 2007 schema, TimeZoneName is not parsed; all-day dates use the host zone when
# _start_timezone is None".


class ServerZoneField(TimeZoneField):
    """A calendar item's zone as the server names it (keeps the raw name in ``ms_id``)."""

    def __init__(self, *args: Any, meeting: bool = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.meeting = meeting

    def from_xml(self, elem, account):
        field_elem = elem.find(self.response_tag())
        if field_elem is None:
            return self.default
        raw = field_elem.get("Id") or field_elem.get("TimeZoneName") or field_elem.get("Name")
        fallback = account.default_timezone.key if account is not None else "UTC"
        periods = [
            offset
            for period in field_elem.iterfind(f"{{{TNS}}}Periods/{{{TNS}}}Period")
            if (offset := _bias_offset(period.get("Bias"))) is not None
        ]
        return server_zone(raw, fallback, display=field_elem.get("Name"), periods=periods)

    def to_xml(self, value, version):
        if self.meeting:  # Exchange 2007's TimeZoneType
            return create_element(self.request_tag(), attrs={"TimeZoneName": value.ms_id})
        return super().to_xml(value, version)


_DURATION = re.compile(r"^(-)?P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def _bias_offset(bias: str | None) -> timedelta | None:
    """The UTC offset of a zone definition's Period: its Bias (xs:duration, UTC minus local)
    negated. "-PT60M" -> +1 h."""
    match = _DURATION.match((bias or "").strip())
    if not match or not any(match.groups()[1:]):
        return None
    days, hours, minutes, seconds = (float(g or 0) for g in match.groups()[1:])
    bias_delta = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    return bias_delta if match.group(1) else -bias_delta


def server_zone(
    raw: str | None, fallback: str, display: str | None = None, periods: list | None = None
) -> EWSTimeZone | None:
    """A zone for what the server sent: IANA if its id or else its display name is known, else
    ``fallback`` marked unknown. Keeps the display name and the definition's period offsets
    (``ewssync_periods``), which date all-day items when the name says nothing."""
    if not raw:
        return None
    iana = windows_to_iana(raw) or (windows_to_iana(display) if display != raw else None)
    zone = EWSTimeZone.no_cache(iana or fallback)  # a private instance: ms_id is ours to set
    zone.ms_id = raw
    zone.ms_name = display or ""
    zone.ewssync_known = iana is not None
    zone.ewssync_periods = list(periods or [])
    return zone


def zone_is_known(zone: Any) -> bool:
    return zone is not None and getattr(zone, "ewssync_known", True)


def _install_zone_fields() -> None:
    for name in ("_meeting_timezone", "_start_timezone", "_end_timezone"):
        current = CalendarItem.get_field_by_fieldname(name)
        if isinstance(current, ServerZoneField):
            continue
        replacement = ServerZoneField(
            name=current.name,
            field_uri=current.field_uri,
            supported_from=current.supported_from,
            deprecated_from=current.deprecated_from,
            is_searchable=False,
            meeting=name == "_meeting_timezone",
        )
        index = CalendarItem.FIELDS.index(current)
        CalendarItem.FIELDS[index] = replacement
        CalendarItem.FIELDS._dict[replacement.name] = replacement  # keep the name lookup in step
    CalendarItem.from_xml = classmethod(_calendar_item_from_xml)


def _calendar_item_from_xml(cls, elem, account):
    item = super(CalendarItem, cls).from_xml(elem=elem, account=account)
    if not item.is_all_day:
        return item
    if not isinstance(item.start, datetime) or not isinstance(item.end, datetime):
        return item
    default = account.default_timezone if account is not None else EWSTimeZone("UTC")
    start, end, first, last, display_zone = all_day_reading(
        item.start, item.end, (item._start_timezone, item._meeting_timezone),
        item.ewssync_zone_name, default,
    )  # fmt: skip
    # the instants as Exchange sent them: ews.EwsCalendar reads them instead of recomputing
    object.__setattr__(item, "_ewssync_instants", (start, end))
    object.__setattr__(item, "_ewssync_display_zone", display_zone)
    item.start, item.end = first, last  # exchangelib's convention: the end date is inclusive
    return item


def all_day_reading(start, end, item_zones, zone_name: str | None, default):
    """An all-day item's instants (plain UTC datetimes), its first and last date (inclusive) and
    the IANA zone its display name names, from what the wire carries (also ews_lean's reading).

    :param item_zones: the item's StartTimeZone and MeetingTimeZone (server_zone values or None).
    :param zone_name: its <t:TimeZone> display name.
    :param default: the account's default zone (an EWSTimeZone).
    """
    # plain datetimes: EWSDateTime's arithmetic insists on EWSTimeZone
    start, end = (datetime.fromtimestamp(v.timestamp(), UTC) for v in (start, end))
    # All-day dates from what the wire carries, never from the host's or the connection's zone
    # alone (see timezones.all_day_dates): the named zone, the definition's periods, the display
    # name (<t:TimeZone> or the zone's Name), and the fact that the item starts at local midnight.
    zones = [z for z in item_zones if z is not None]
    display_names = [zone_name, *(z.ms_name for z in zones)]
    display_zone = next(
        (iana for name in display_names if name and (iana := windows_to_iana(name))), None
    )

    def offsets(instant: datetime) -> list[timedelta]:
        found = [ZoneInfo(z.key).utcoffset(instant) for z in zones if zone_is_known(z)]
        if display_zone:
            found.append(ZoneInfo(display_zone).utcoffset(instant))
        for zone in zones:
            found.extend(getattr(zone, "ewssync_periods", []))
        shown = [o for name in display_names if (o := display_name_offset(name)) is not None]
        return found + shown + [o + timedelta(hours=1) for o in shown]

    first, last = all_day_dates(
        start, end, offsets(start), offsets(end), preferred=default.utcoffset(start)
    )
    return start, end, first, last, display_zone


def instants_of(item) -> tuple[datetime, datetime] | None:
    """The UTC start and end Exchange sent for an all-day item (None for other items)."""
    return getattr(item, "_ewssync_instants", None)


def zone_from_display(item) -> str | None:
    """The IANA zone an item's display name (<t:TimeZone>, or its zone's Name) names."""
    cached = getattr(item, "_ewssync_display_zone", None)
    if cached:
        return cached
    zones = [z for z in (item._start_timezone, item._meeting_timezone) if z is not None]
    for name in (item.ewssync_zone_name, *(z.ms_name for z in zones)):
        if name and (iana := windows_to_iana(name)):
            return iana
    return None


def _install_zone_name_field() -> None:
    # <t:TimeZone>: the zone's display name, which Exchange sends even where it omits
    # StartTimeZone (Exchange 2019 in some shapes); exchangelib has no field for it.
    if "ewssync_zone_name" not in CalendarItem.FIELDS._dict:
        CalendarItem.add_field(
            CharField("ewssync_zone_name", field_uri="calendar:TimeZone", is_read_only=True),
            insert_after="duration",
        )


_install_zone_name_field()
_install_zone_fields()

# 4. exchangelib adds EndTimeZone to every read that names 'end' (and StartTimeZone for
#    'start'). A record has one zone, the start's; the end's definition is about a third of each
#    item's bytes in a FindItem or GetItem answer. Within reading_without_end_zone() (this
#    thread) it is asked only when named itself.
_READ_ZONES = threading.local()


@contextmanager
def thread_value(local: threading.local, name: str, value: Any):
    """``local.<name>`` is ``value`` within the block (this thread), and what it was after."""
    previous = getattr(local, name, None)
    setattr(local, name, value)
    try:
        yield
    finally:
        setattr(local, name, previous)


def reading_without_end_zone():
    return thread_value(_READ_ZONES, "skip_end", True)


def _without_end_zone(fields, asked) -> Any:
    """``fields`` (FieldPaths) without the end zone exchangelib added, unless it was ``asked``."""
    if not getattr(_READ_ZONES, "skip_end", False):
        return fields
    if any(_field_name(f) == "_end_timezone" for f in asked or ()):
        return fields
    kept = [f for f in fields if _field_name(f) != "_end_timezone"]
    return type(fields)(kept) if isinstance(fields, set | tuple) else kept


def _field_name(field) -> str | None:
    if isinstance(field, str):
        return field
    inner = getattr(field, "field", field)
    return getattr(inner, "name", None)


def _install_read_zone_fields() -> None:
    if getattr(QuerySet._additional_fields, "_ewssync", False):
        return
    additional_fields, normalize_fields = QuerySet._additional_fields, BaseFolder.normalize_fields

    def _additional_fields(self):
        return _without_end_zone(additional_fields(self), self.only_fields)

    def _normalize_fields(self, fields):
        fields = list(fields)
        return _without_end_zone(normalize_fields(self, fields), fields)

    _additional_fields._ewssync = True
    QuerySet._additional_fields = _additional_fields
    BaseFolder.normalize_fields = _normalize_fields


_install_read_zone_fields()

# --- response parsing speed ------------------------------------------------------------------------
# exchangelib parses every SOAP response with to_xml(response.iter_content()). For a response
# that was read whole (every non-streaming call), requests' iter_content() defaults to chunks of
# ONE byte, so a 10 MB GetItem batch costs ~10 million generator steps: 12 s of CPU for the
# index and 17 s for the bodies of a 10,000-item window, more than the network time. Handing it
# 64 KiB chunks changes nothing else. Reported upstream: "_get_soap_parts: iter_content() without
# chunk_size reads byte by byte".


class _ChunkedResponse:
    """A requests.Response seen through iter_content() with large chunks; remembers how the
    answer ended."""

    def __init__(self, response: requests.Response):
        self._response = response
        self.tail = b""
        self.nul_characters = 0

    def iter_content(self):
        """The answer for exchangelib's to_xml(): the whole body when it was read already (every
        non-streaming call; to_xml parses bytes from memory, a fifth faster than through its
        Python file over a generator), else 64 KiB chunks."""
        response = self._response
        if getattr(response, "_content_consumed", False) and isinstance(response.content, bytes):
            self._note(response.content)
            return response.content
        return self._chunks()

    def _chunks(self):
        for chunk in self._response.iter_content(chunk_size=64 * 1024):
            self._note(chunk)
            yield chunk

    def _note(self, chunk: bytes) -> None:
        self.tail = (self.tail + chunk[-64:])[-64:]
        if b"\x00" in chunk or b"&#" in chunk:  # two scans, not five, for nearly every chunk
            self.nul_characters += sum(chunk.count(nul) for nul in _NUL_FORMS)


# XML 1.0 cannot carry U+0000: the parser drops it, raw or as a character reference, without a
# word. We count what the answers held so a run can say its text lost characters.
_NUL_FORMS = (b"\x00", b"&#0;", b"&#x0;", b"&#x00;", b"&#X0;")
_DROPPED = threading.local()


def dropped_nul_characters() -> int:
    """NUL characters the answers this thread parsed held (and the parser dropped)."""
    return getattr(_DROPPED, "nul", 0)


def reset_dropped_nul_characters() -> None:
    _DROPPED.nul = 0


# exchangelib parses with lxml's recover=True: an answer cut short (a dropped proxy connection, a
# truncated body) parses "fine" as fewer items, and SyncFolderItems' new SyncState comes before
# its changes, so a cut there lost changes for good. A complete SOAP answer ends with its closing
# Envelope tag; anything else is refused as a broken connection (the read is retried).
TRUNCATED_ANSWER = "Connection broken: the answer ended before its SOAP envelope was complete"


def _install_chunked_parsing() -> None:
    original = EWSService._get_soap_parts.__func__
    if getattr(original, "_ewssync_chunked", False):
        return

    def _get_soap_parts(cls, response):
        if not isinstance(response, requests.Response):
            return original(cls, response)
        watched = _ChunkedResponse(response)
        parts = original(cls, watched)
        if watched.nul_characters:
            _DROPPED.nul = dropped_nul_characters() + watched.nul_characters
        if not watched.tail.rstrip().endswith(b"Envelope>"):
            raise ews_errors.TransportError(TRUNCATED_ANSWER)
        return parts

    _get_soap_parts._ewssync_chunked = True
    EWSService._get_soap_parts = classmethod(_get_soap_parts)


_install_chunked_parsing()


# --- per-item errors -------------------------------------------------------------------------------
# GetItem of an occurrence that was deleted from its series answers, for that one item,
# ErrorCalendarOccurrenceIsDeletedFromRecurrence. exchangelib returns only the per-item errors in
# ERRORS_TO_CATCH_IN_RESPONSE (ErrorItemNotFound among them) and raises every other one, so one
# deleted occurrence aborted the whole batch of 100 and with it the run. Treated like
# ErrorItemNotFound: returned in place of that item. To report upstream: "GetItem/DeleteItem:
# ErrorCalendarOccurrenceIsDeletedFromRecurrence raises instead of being returned per item".


def _install_per_item_errors() -> None:
    from exchangelib.services import DeleteItem, GetItem, UpdateItem

    for service in (GetItem, DeleteItem, UpdateItem):
        caught = service.ERRORS_TO_CATCH_IN_RESPONSE
        if ews_errors.ErrorCalendarOccurrenceIsDeletedFromRecurrence not in caught:
            service.ERRORS_TO_CATCH_IN_RESPONSE = (
                *caught,
                ews_errors.ErrorCalendarOccurrenceIsDeletedFromRecurrence,
            )


_install_per_item_errors()


# --- retries ----------------------------------------------------------------------------------


class SignInRefused(ews_errors.UnauthorizedError):
    """HTTP 401, with what the server said about it: its WWW-Authenticate challenges and
    Exchange Online's x-ms-diagnostics (why a bearer token was refused)."""

    def __init__(self, url: str, challenges: str = "", diagnostics: str = ""):
        super().__init__(f"Invalid credentials for {url}")
        self.challenges = challenges
        self.diagnostics = diagnostics


class AccessForbidden(ews_errors.TransportError):
    """HTTP 403: signed in, but Exchange refuses EWS to this caller (EWS switched off for the
    tenant or mailbox, the app not on the EWS allow list, or the app not granted the mailbox)."""

    def __init__(self, url: str):
        super().__init__(f"HTTP 403 Forbidden from {url}")


# Exchange throttles in three forms (Microsoft, "EWS throttling in Exchange"; [MS-ASHTTP]
# 3.1.5.2.3 for 503):
# 1. HTTP 500 with a SOAP fault ErrorServerBusy and BackOffMilliseconds in its MessageXml:
#    exchangelib honours it.
# 2. HTTP 503 without a body (IIS, a load balancer), perhaps with Retry-After in seconds or as an
#    HTTP-date: exchangelib honoured only the seconds form, and only when the response did not
#    also say "Connection: close" (then it counted as a dropped connection).
# 3. HTTP 200 whose ResponseMessage is ErrorInternalServerError with the inner error
#    ErrorServerBusy and BackOffMilliseconds in its MessageXml (Exchange Online): exchangelib
#    raises the inner ErrorServerBusy but drops the BackOffMilliseconds.
# Without a hint exchangelib waits protocol.RETRY_WAIT (10 s), doubled on every retry; we start at
# NO_HINT_BACK_OFF instead. Either way a wait over max_wait gives up (RateLimitError). To report
# upstream: "BackOffMilliseconds of an inner ErrorServerBusy (ErrorInternalServerError) is
# ignored; Retry-After as HTTP-date is ignored; a 503 with Connection: close ignores Retry-After".

NO_HINT_BACK_OFF = 2  # seconds before the first retry when the server names no wait


def retry_after_seconds(response) -> float | None:
    """The wait a Retry-After header asks for: delta-seconds or an HTTP-date; None if absent."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


class RetryPolicy(FaultTolerance):
    """FaultTolerance (wait as long as the server asks, retry dropped connections, up to
    max_wait), except that HTTP 401 is a login failure, 403 a refusal, and every throttling
    form is honoured.

    exchangelib's FaultTolerance treats every 401 as throttling ("EWS sometimes throws 401's
    when it wants us to throttle") and sleeps until max_wait; with Basic authentication a 401
    is nearly always a wrong user name or password, which must fail at once and say so. A 403
    would become MalformedResponseError("Unknown failure in response. Code: 403 ...").
    """

    def __init__(self, max_wait: float = 3600, total_wait: float | None = None):
        super().__init__(max_wait=max_wait)
        # exchangelib compares each back-off with max_wait, never their sum: a server that always
        # answers ErrorServerBusy kept a task waiting without end. This bounds the sum.
        self.total_wait = max_wait if total_wait is None else total_wait
        self.waited = 0.0

    def start_budget(self, total_wait: float) -> None:
        """Begin a new total-wait budget (one per task's calendar; the policy object is shared
        by exchangelib's cached protocol)."""
        with self._back_off_lock:
            self.total_wait = total_wait
            self.waited = 0.0

    def back_off(self, seconds):
        """Pause every request of the protocol until ``seconds`` from now.

        The pause is shared by the threads of a task (exchangelib sleeps until back_off_until
        before each request), so several threads throttled at once wait together: the budget
        counts only how far each back-off moves the end of the pause, and a back-off never
        shortens a longer one another thread was given (exchangelib's overwrote it).
        """
        asked = self.DEFAULT_BACKOFF if seconds is None else seconds
        log.warning(
            "EWS throttling: the server is busy, waiting %s s before retrying", f"{asked:g}"
        )
        if asked > self.max_wait:
            raise ews_errors.RateLimitError("Max timeout reached", wait=asked)
        now = datetime.now()  # naive local time, as exchangelib's back_off_until
        until = now + timedelta(seconds=asked)
        with self._back_off_lock:
            current = self._back_off_until
            paused_until = current if current is not None and current > now else now
            more = max((until - paused_until).total_seconds(), 0.0)
            if self.waited + more > self.total_wait:
                raise ews_errors.RateLimitError(
                    f"the server kept throttling (ErrorServerBusy): waited {self.waited:g} s in "
                    f"total, it asks for {asked:g} s more, the limit is {self.total_wait:g} s "
                    "(throttle_wait_seconds)",
                    wait=asked,
                )
            self.waited += more
            if until > paused_until:
                self._back_off_until = until

    def raise_response_errors(self, response):
        if response.status_code == 401:
            raise SignInRefused(
                response.url,
                challenges=response.headers.get("WWW-Authenticate", ""),
                diagnostics=response.headers.get("x-ms-diagnostics", ""),
            )
        if response.status_code == 403:
            raise AccessForbidden(response.url)
        if response.status_code in (429, 503):
            # None: exchangelib waits its own doubling delay (see NO_HINT_BACK_OFF)
            raise ews_errors.ErrorServerBusy(
                f"HTTP {response.status_code}", back_off=retry_after_seconds(response)
            )
        return super().raise_response_errors(response)


# --- the session pool under throttling, with several threads ----------------------------------------
# On every ErrorServerBusy exchangelib calls protocol.decrease_poolsize(), which takes the pool's
# lock and then get_session() to find a session to close. When every session is out with other
# threads, get_session() calls increase_poolsize() (the pool is below its maximum after an earlier
# decrease), which takes the same, non-reentrant lock: the thread waits for itself for ever, and
# every other thread that needs the lock or a session joins it. It needs two threads throttled
# close together, which concurrent reads under throttling make likely (tests/integration/
# test_concurrency.py reproduces it with the simulator's throttling). The replacement never waits
# while holding the lock: it closes one idle session if there is one, else nothing (the pool shrinks
# no further than what is idle; the shared back-off, not the pool size, is what pauses the
# requests). To report upstream (ecederstrand/exchangelib): "decrease_poolsize deadlocks: it calls
# get_session() under _session_pool_lock, and get_session() may call increase_poolsize(), which
# takes the same lock".


def _decrease_poolsize(self) -> None:
    if self._session_pool_size <= 1:
        raise SessionPoolMinSizeReached("Session pool size cannot be decreased further")
    with self._session_pool_lock:
        if self._session_pool_size <= 1:
            return
        try:
            session = self._session_pool.get(block=False)
        except Empty:
            return  # all sessions are in use; waiting for one here is the deadlock
        self._session_pool_size -= 1
    log.debug("EWS session pool lowered to %s after a back-off", self._session_pool_size)
    self.close_session(session)


def _install_pool_fix() -> None:
    if getattr(BaseProtocol.decrease_poolsize, "_ewssync_no_wait", False):
        return
    _decrease_poolsize._ewssync_no_wait = True
    BaseProtocol.decrease_poolsize = _decrease_poolsize


_install_pool_fix()


def tune_protocol(protocol, concurrency: int = 4) -> None:
    """Per-protocol settings: the first wait without a hint (exchangelib keeps it on the class)
    and one HTTP session per request in flight (a cached protocol keeps its first caller's)."""
    protocol.RETRY_WAIT = NO_HINT_BACK_OFF
    protocol.max_connections = concurrency


def _install_inner_back_off() -> None:
    original = EWSService._get_exception
    if getattr(original, "_ewssync_inner_back_off", False):
        return

    def _get_exception(code, text, msg_xml=None, rule_errors=None):
        exc = original(code, text, msg_xml=msg_xml, rule_errors=rule_errors)
        if isinstance(exc, ews_errors.ErrorServerBusy) and exc.back_off is None:
            for value in msg_xml.findall(f"{{{TNS}}}Value") if msg_xml is not None else ():
                if value.get("Name") == "BackOffMilliseconds":
                    with suppress(TypeError, ValueError):
                        exc.back_off = int(value.text) / 1000.0
        return exc

    _get_exception._ewssync_inner_back_off = True
    EWSService._get_exception = staticmethod(_get_exception)


_install_inner_back_off()


def drop_stale_protocol(config: Configuration) -> None:
    """Forget exchangelib's cached protocol for this endpoint and user if it was built otherwise.

    exchangelib caches one Protocol per (endpoint, credentials) for the life of the process,
    with the version and retry policy of the first caller. Without this, switching
    use_2007_protocol and pressing Test again would still talk the old version.
    """
    try:
        cached, _ = Protocol[config]
    except KeyError:
        return
    stale = isinstance(cached, Exception) or (
        type(cached.retry_policy) is not type(config.retry_policy)
        or cached.config.version.build != config.version.build
        or cached.config.auth_type != config.auth_type
        or getattr(cached.retry_policy, "max_wait", None) != config.retry_policy.max_wait
        or getattr(cached, "_ewssync_adapter", None) is not BaseProtocol.HTTP_ADAPTER_CLS
    )
    if stale:
        with suppress(KeyError):
            del Protocol[config]
        if not isinstance(cached, Exception):
            cached.close()


# --- calendar-view completeness ------------------------------------------------------------------
# Each FindItem page says how many items its view holds (TotalItemsInView) and whether it reaches
# the end of the range (IncludesLastItemInRange); exchangelib uses both only to decide whether to
# ask again, never to check the answer. We note them per page so read_index can refuse a page
# that holds fewer items than the server said it sent.


@dataclass
class ViewPage:
    total_items: int  # TotalItemsInView
    includes_last: bool  # IncludesLastItemInRange
    items: int  # item elements actually in the answer


_VIEW_PAGES = threading.local()


def view_pages() -> list[ViewPage]:
    """The FindItem pages this thread read since ``reset_view_pages``."""
    return list(getattr(_VIEW_PAGES, "pages", []))


def reset_view_pages() -> None:
    _VIEW_PAGES.pages = []


def _install_view_page_notes() -> None:
    from exchangelib.services.find_item import FindItem

    original = FindItem._get_page
    if getattr(original, "_ewssync_noted", False):
        return

    def _get_page(self, message):
        paging = message.find(self.paging_container_name)
        if paging is not None and paging.get("TotalItemsInView") is not None:
            container = paging.find(self.element_container_name)
            pages = getattr(_VIEW_PAGES, "pages", None)
            if pages is None:
                pages = _VIEW_PAGES.pages = []
            pages.append(
                ViewPage(
                    total_items=int(paging.get("TotalItemsInView")),
                    includes_last=(paging.get("IncludesLastItemInRange") or "true").lower()
                    in ("true", "1"),
                    items=0 if container is None else len(container),
                )
            )
        return original(self, message)

    _get_page._ewssync_noted = True
    FindItem._get_page = _get_page


_install_view_page_notes()

# --- bulk writes: every per-item error comes back in the result list ------------------------------
# CreateItem/UpdateItem/DeleteItem return per-item errors only for a short list of codes; any other
# (ErrorIrresolvableConflict for a stale change key, ErrorAccessDenied, ErrorCalendar*...) is
# raised and takes the whole batch's answers with it, although the server applied the other
# items. Push needs each item's outcome (a created item's id above all), so all response-message
# errors come back as exception instances in the result list. Faults (ErrorServerBusy and other
# SOAP faults) are unaffected: they concern the request and are retried or raised as before.


def _install_per_item_write_errors() -> None:
    from exchangelib.services import CreateItem, DeleteItem, UpdateItem

    for service in (CreateItem, UpdateItem, DeleteItem):
        service.ERRORS_TO_CATCH_IN_RESPONSE = (ews_errors.ResponseMessageError,)


_install_per_item_write_errors()
