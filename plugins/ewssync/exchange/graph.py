"""The Microsoft Graph backend: one mailbox's calendar through Graph's REST API (plain HTTP with
requests, app-only tokens from oauth.py), giving the same records as the EWS backend.

Reading follows ``/users/{mailbox}/calendarView/delta`` over the connection's window: its
deltaLink is the sync state (with the window it is bound to), its pages carry whole events, so a
full read and an incremental run need no further requests for what the delta delivered.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import requests

from ewssync.errors import ExchangeError, SyncStateExpired
from ewssync.exchange import oauth
from ewssync.exchange.base import (
    GENERAL,
    SEND_RECEIVE,
    ConnectionReport,
    ReportPart,
    exercise_calendar,
)
from ewssync.exchange.graph_write import STAMP_PROPERTY_ID, UID_PROPERTY_ID, GraphWriter
from ewssync.exchange.redact import SECRET_FILTER
from ewssync.settings import SyncSettings
from ewssync.timezones import windows_to_iana

log = logging.getLogger(__name__)

API_VERSION = "v1.0"
PAGE_SIZE = 500  # Prefer: odata.maxpagesize for delta and calendarView pages
BATCH_SIZE = 20  # JSON batching's limit (https://learn.microsoft.com/graph/json-batching)
WRITE_ROLE = "Calendars.ReadWrite"
# The stamp push keeps on an item (ews_write.AppointmentStamp: the same named property) and the
# UID push wanted (graph_write): read with every event.
EXPAND_STAMP = (
    f"singleValueExtendedProperties($filter=id eq '{STAMP_PROPERTY_ID}' or id eq "
    f"'{UID_PROPERTY_ID}')"
)

# $select: exactly what the records hold
RECORD_FIELDS = (
    "id", "changeKey", "type", "seriesMasterId", "originalStart", "iCalUId", "subject",
    "location", "body", "start", "end", "isAllDay", "originalStartTimeZone", "sensitivity",
    "isReminderOn", "reminderMinutesBeforeStart", "showAs", "categories",
    "lastModifiedDateTime", "isCancelled", "responseStatus", "organizer", "isOrganizer",
    "attendees",
)  # fmt: skip
INDEX_FIELDS = ("id", "changeKey", "type", "start", "end", "isAllDay", "originalStartTimeZone")

TYPES = {"singleInstance": "Single", "occurrence": "Occurrence", "exception": "Exception",
         "seriesMaster": "RecurringMaster"}  # fmt: skip
SENSITIVITY = {"normal": "Normal", "personal": "Personal", "private": "Private",
               "confidential": "Confidential"}  # fmt: skip
SHOW_AS = {"free": "Free", "tentative": "Tentative", "busy": "Busy", "oof": "OOF",
           "workingElsewhere": "WorkingElsewhere", "unknown": "NoData"}  # fmt: skip
RESPONSES = {"organizer": "Organizer", "accepted": "Accept", "tentativelyAccepted": "Tentative",
             "declined": "Decline", "notResponded": "NoResponseReceived", "none": "Unknown"}  # fmt: skip
# Exchange's UID form ([MS-OXOCAL] 2.2.1.27 PidLidGlobalObjectId): an instance's carries its
# date in bytes 16-19; the series' has them zero.
GLOBAL_OBJECT_ID_CLASS = "040000008200E00074C5B7101A82E008"
POLICY_MARKER = "AccessPolicy"


class GraphError(ExchangeError):
    """Graph answered with an error body; ``status`` and ``code`` say which."""

    def __init__(self, message: str, status: int = 0, code: str = ""):
        super().__init__(message)
        self.status = status
        self.code = code


def series_uid(ical_uid: str | None) -> str | None:
    """The series' UID for an instance's iCalUId: Exchange's GlobalObjectId with the instance
    date zeroed (the form EWS's UID has); any other UID is the same for every instance."""
    if ical_uid and ical_uid.upper().startswith(GLOBAL_OBJECT_ID_CLASS) and len(ical_uid) >= 40:
        return ical_uid[:32] + "00000000" + ical_uid[40:]
    return ical_uid


def parse_wall_clock(value: dict | None) -> datetime | None:
    """A dateTimeTimeZone asked for in UTC (Prefer: outlook.timezone="UTC") as an aware datetime."""
    if not value:
        return None
    text = value["dateTime"]
    head, _, fraction = text.partition(".")
    moment = datetime.fromisoformat(head)
    if fraction:
        moment = moment.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_instant(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def token_claims(token: str) -> dict[str, Any]:
    """The claims of our own access token (read, not verified: the resource verifies it), to
    say which application permissions it carries."""
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


class GraphCalendar(GraphWriter):
    """One mailbox's calendar over Microsoft Graph.

    :param settings: the connection's settings (api graph, auth_method oauth).
    :param page_size: events per delta / calendarView page (Prefer: odata.maxpagesize).
    """

    def __init__(self, settings: SyncSettings, page_size: int = PAGE_SIZE, **_options: Any):
        self.settings = settings
        self.page_size = page_size
        self.app = oauth.AppCredential.from_settings(settings)
        host = settings.service_endpoint.split("://", 1)[1].split("/")[0].split(":")[0]
        self.scope = f"https://{host}/.default"
        self.root = f"{settings.service_endpoint}/{API_VERSION}"
        self.user_path = f"/users/{quote(settings.mailbox)}"
        self._session: requests.Session | None = None
        self._throttle_budget = float(settings.throttle_wait_seconds)
        # events read in full this run (delta pages): fetch serves them without a request
        self._events: dict[str, dict[str, Any]] = {}
        self._delta_window: tuple[datetime, datetime] | None = None  # a full round drained
        self.requests_sent = 0
        self.dropped_nul_characters = 0  # the EWS backend's count; JSON keeps NULs
        SECRET_FILTER.add_secret(settings.password)

    # --- HTTP -----------------------------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
            self._session.verify = self.settings.verify_tls
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _token(self, force: bool = False) -> str:
        return oauth.get_token(self.app, self.scope, force=force).value

    def _send(
        self,
        method: str,
        url: str,
        *,
        json_body: Any = None,
        prefer: tuple[str, ...] = (),
        params: dict[str, str] | None = None,
        retry_transient: bool = True,
    ) -> requests.Response:
        """One request, with the bearer token (fetched again once if Graph refuses it), waits of
        the Retry-After Graph asks on 429/503 within throttle_wait_seconds, and (reads) retries
        after a dropped connection.

        :raises GraphError: Graph answered an error (its code and message, explained).
        """
        if not url.startswith("http"):
            url = self.root + url
        refreshed = False
        attempt = 0
        while True:
            headers = {"Authorization": f"Bearer {self._token(force=refreshed)}"}
            if prefer:
                headers["Prefer"] = ", ".join(prefer)
            try:
                self.requests_sent += 1
                # verify per request: a session's own verify loses to $REQUESTS_CA_BUNDLE
                response = self.session.request(
                    method, url, json=json_body, params=params, headers=headers,
                    timeout=self.settings.timeout_seconds, verify=self.settings.verify_tls,
                )  # fmt: skip
            except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:  # fmt: skip
                attempt += 1
                if not retry_transient or attempt >= 3:
                    raise self._network_error(exc) from None
                log.warning(
                    "connection %s: %s, retrying", self.settings.conn_id, type(exc).__name__
                )
                time.sleep(0.5 * 2**attempt)
                continue
            except requests.exceptions.RequestException as exc:
                raise self._network_error(exc) from None
            if response.status_code in (429, 503) or (
                response.status_code in (500, 502, 504) and retry_transient and attempt < 2
            ):
                attempt += 1
                self._wait(response)
                continue
            if response.status_code == 401 and not refreshed:
                refreshed = True  # a token revoked or expired early: one fresh try
                continue
            if response.status_code >= 400:
                raise self._graph_error(response)
            return response

    def _wait(self, response: requests.Response) -> None:
        """Sleep the Retry-After Graph asked (seconds; default 1 s for a 5xx without it)."""
        header = response.headers.get("Retry-After", "")
        try:
            seconds = float(header)
        except ValueError:
            seconds = 1.0 if response.status_code != 429 else 5.0
        if seconds > self._throttle_budget:
            raise GraphError(
                f"connection {self.settings.conn_id!r}: Microsoft Graph is throttling this app "
                f"(HTTP {response.status_code}, Retry-After {header or '-'} s) beyond "
                f"throttle_wait_seconds ({self.settings.throttle_wait_seconds} s): a later try "
                "continues",
                status=response.status_code,
                code="throttled",
            )
        self._throttle_budget -= seconds
        log.info(
            "connection %s: Graph asked to wait %.1f s (HTTP %s)", self.settings.conn_id,
            seconds, response.status_code,
        )  # fmt: skip
        time.sleep(seconds)

    def _network_error(self, exc: BaseException) -> GraphError:
        endpoint = self.settings.service_endpoint
        text = SECRET_FILTER.scrub(str(exc))[:200]
        if isinstance(exc, requests.exceptions.SSLError):
            why = f"the TLS certificate of {endpoint} is not valid ({text})"
        elif isinstance(exc, requests.exceptions.Timeout):
            why = f"{endpoint} did not answer within {self.settings.timeout_seconds} s"
        elif "refused" in text.lower():
            why = f"nothing answers at {endpoint} (connection refused): check 'Server'"
        else:
            why = f"the connection to {endpoint} failed ({type(exc).__name__}: {text})"
        return GraphError(f"connection {self.settings.conn_id!r}: {why}")

    def _graph_error(self, response: requests.Response) -> GraphError:
        try:
            error = response.json().get("error", {})
        except ValueError:
            error = {}
        code = error.get("code", "") or f"HTTP {response.status_code}"
        message = SECRET_FILTER.scrub(error.get("message", "") or response.reason or "")
        return GraphError(
            f"connection {self.settings.conn_id!r}: {self.explain(response.status_code, code, message)}",
            status=response.status_code,
            code=code,
        )

    def explain(self, status: int, code: str, message: str) -> str:
        """What a Graph error means for this connection, and what to do."""
        mailbox = self.settings.mailbox
        client = self.settings.client_id
        if status == 403 and POLICY_MARKER in message:
            return (
                f"the mailbox {mailbox} is outside the app's application access policy "
                f"(Graph: {message}). Add the mailbox to the group the policy for app {client} "
                "names (Exchange Online PowerShell: Get-ApplicationAccessPolicy; "
                "Test-ApplicationAccessPolicy -Identity <mailbox> -AppId <client_id>), or fix "
                "'mailbox'"
            )
        if status == 403:
            return (
                f"Graph refused the app access to the calendar of {mailbox} ({code}: {message}). "
                f"The app {client} needs the application permission {WRITE_ROLE} on Microsoft "
                "Graph with admin consent (Entra ID: App registrations -> API permissions -> "
                "Add -> Microsoft Graph -> Application permissions, then 'Grant admin consent')"
            )
        if status == 404 and code in ("ErrorInvalidUser", "ResourceNotFound", "MailboxNotEnabledForRESTAPI"):  # fmt: skip
            return (
                f"the mailbox {mailbox!r} does not exist in this tenant ({code}): check 'mailbox'"
            )
        if status == 401:
            return (
                f"Graph refused the app's token ({code}: {message}): check that 'Server' is "
                "Microsoft Graph of the same cloud as 'authority'"
            )
        if status == 410:
            return f"Graph no longer knows the saved delta state ({code}): a full read follows"
        return f"Graph answered HTTP {status} {code}: {message}"

    def _pages(self, url: str, params: dict | None, prefer: tuple[str, ...]):
        """Yield each page's document of a listing, following @odata.nextLink."""
        while url:
            document = self._send("GET", url, params=params, prefer=prefer).json()
            yield document
            url, params = document.get("@odata.nextLink"), None

    def _prefer(self, body: bool = True) -> tuple[str, ...]:
        prefer = ['outlook.timezone="UTC"', f"odata.maxpagesize={self.page_size}"]
        if body:
            prefer.append('outlook.body-content-type="html"')
        return tuple(prefer)

    # --- the interface: reading -------------------------------------------------------------

    def probe(self) -> None:
        """One request (the mailbox's calendar): token, permission and mailbox in one go.

        :raises ExchangeError: with the likely cause; ``test()`` gives the two-part report.
        """
        self._send("GET", f"{self.user_path}/calendar", params={"$select": "id"})

    def sync_changes(
        self,
        state: str | None,
        max_changes: int = 512,
        window: tuple[datetime, datetime] | None = None,
    ) -> tuple[str, list[dict[str, Any]], bool]:
        """One page of calendarView delta over the connection's window.

        :param state: the state of the last call (the deltaLink or nextLink, and the window);
            None for a new full round.
        :param window: the run's window (default: the settings' window around now).
        :return: the new state, the changes (kind update, item_id, change_key, item_type; an
            ``@removed`` entry is kind update with item_type None: Graph says the same for an
            instance deleted and one moved out of the window, so extract reads it by id and
            only then knows) and whether the round reached its deltaLink.
        :raises SyncStateExpired: Graph answers 410 (the token expired or is unknown), or the
            window moved since the state was taken (a delta is bound to its window).
        """
        window = tuple(window) if window else self.settings.window(datetime.now(UTC))
        if state is None:
            url = f"{self.root}{self.user_path}/calendarView/delta"
            params = {
                "startDateTime": _iso(window[0]), "endDateTime": _iso(window[1]),
                "$select": ",".join(RECORD_FIELDS), "$expand": EXPAND_STAMP,
            }  # fmt: skip
            full_round = True
        else:
            try:
                saved = json.loads(state)
                url, saved_window = saved["link"], tuple(saved["window"])
            except (ValueError, KeyError, TypeError):
                raise SyncStateExpired(
                    f"connection {self.settings.conn_id!r}: the saved sync state is not a Graph "
                    "delta state (was the connection's api changed?); reading the whole window"
                ) from None
            if saved_window != (_iso(window[0]), _iso(window[1])):
                raise SyncStateExpired(
                    f"connection {self.settings.conn_id!r}: the window moved since the delta "
                    "state was taken; reading the whole window"
                )
            params = None
            full_round = saved.get("full", False)
        prefer = ['outlook.timezone="UTC"', 'outlook.body-content-type="html"',
                  f"odata.maxpagesize={min(max_changes, self.page_size) or self.page_size}"]  # fmt: skip
        try:
            document = self._send("GET", url, params=params, prefer=tuple(prefer)).json()
        except GraphError as exc:
            if exc.status == 410:
                raise SyncStateExpired(str(exc)) from None
            raise
        changes = []
        for entry in document.get("value", []):
            if "@removed" in entry:
                self._events.pop(entry["id"], None)
                changes.append(
                    {
                        "kind": "update",
                        "item_id": entry["id"],
                        "change_key": None,
                        "item_type": None,
                    }  # fmt: skip
                )
                continue
            self._events[entry["id"]] = entry
            changes.append(
                {
                    "kind": "update",
                    "item_id": entry["id"],
                    "change_key": entry.get("changeKey"),
                    "item_type": TYPES.get(entry.get("type"), "Single"),
                }  # fmt: skip
            )
        complete = "@odata.deltaLink" in document
        link = document["@odata.deltaLink"] if complete else document["@odata.nextLink"]
        if complete and full_round:
            self._delta_window = window
        new_state = json.dumps(
            {
                "link": link,
                "window": [_iso(window[0]), _iso(window[1])],
                "full": full_round and not complete,
            }  # fmt: skip
        )
        return new_state, changes, complete

    def read_index(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Every instance in [start, end): ids, change keys, types, instants (calendarView,
        pages of ``page_size``); served from this run's full delta round when it covered it."""
        if self._delta_window is not None and self._delta_window == (start, end):
            events = [e for e in self._events.values() if e.get("type") != "seriesMaster"]
        else:
            events = []
            params = {"startDateTime": _iso(start), "endDateTime": _iso(end),
                      "$select": ",".join(INDEX_FIELDS)}  # fmt: skip
            url = f"{self.root}{self.user_path}/calendarView"
            for document in self._pages(url, params, self._prefer(body=False)):
                events.extend(document.get("value", []))
        index: dict[str, dict[str, Any]] = {}
        for event in events:
            start_utc, end_utc = self._instants(event)
            index[event["id"]] = {
                "item_id": event["id"],
                "change_key": event.get("changeKey"),
                "item_type": TYPES.get(event.get("type"), "Single"),
                "start": start_utc,
                "end": end_utc,
                "is_all_day": bool(event.get("isAllDay")),
            }
        return list(index.values())

    def fetch(self, item_ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        """Full records for the ids: those this run's delta delivered from memory, the others by
        id, 20 per $batch request.

        :return: the records, and the ids Graph no longer has (404).
        """
        records: dict[str, dict[str, Any]] = {}
        missing: list[str] = []
        wanted = []
        for item_id in item_ids:
            event = self._events.get(item_id)
            if event is not None and "changeKey" in event:
                records[item_id] = self._record(event)
            else:
                wanted.append(item_id)
        select = ",".join(RECORD_FIELDS)
        for offset in range(0, len(wanted), BATCH_SIZE):
            chunk = wanted[offset : offset + BATCH_SIZE]
            requests_ = [
                {"id": str(n), "method": "GET",
                 "url": f"{self.user_path}/events/{quote(item_id, safe='')}"
                        f"?$select={select}&$expand={EXPAND_STAMP}",
                 "headers": {"Prefer": 'outlook.timezone="UTC", '
                             'outlook.body-content-type="html"'}}
                for n, item_id in enumerate(chunk)
            ]  # fmt: skip
            for n, status, body in self._batch(requests_):
                item_id = chunk[n]
                if status == 200:
                    self._events[item_id] = body
                    records[item_id] = self._record(body)
                elif status == 404 or (status == 400 and _code(body) == "ErrorInvalidIdMalformed"):
                    # gone; or an id of another API (EWS, before the connection moved to
                    # Graph): not an item here, so the load re-keys its link by UID
                    missing.append(item_id)
                else:
                    error = (body or {}).get("error", {})
                    raise GraphError(
                        f"connection {self.settings.conn_id!r}: reading an item: "
                        f"{self.explain(status, error.get('code', ''), error.get('message', ''))}",
                        status=status,
                        code=error.get("code", ""),
                    )
        return [records[i] for i in item_ids if i in records], missing

    def _batch(self, requests_: list[dict]) -> list[tuple[int, int, dict | None]]:
        """Send up to 20 requests as one $batch; requests Graph throttled inside the batch are
        sent again after the Retry-After it asked. Returns (index, status, body) per request."""
        pending = {int(r["id"]): r for r in requests_}
        answers: dict[int, tuple[int, dict | None]] = {}
        while pending:
            document = self._send("POST", f"{self.root}/$batch",
                                  json_body={"requests": list(pending.values())}).json()  # fmt: skip
            retry_after = 0.0
            for response in document.get("responses", []):
                n, status = int(response["id"]), response["status"]
                if status in (429, 503):
                    headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
                    retry_after = max(retry_after, float(headers.get("retry-after", 1)))
                    continue
                answers[n] = (status, response.get("body"))
                pending.pop(n, None)
            if pending:
                fake = requests.Response()
                fake.status_code = 429
                fake.headers["Retry-After"] = str(retry_after or 1)
                self._wait(fake)
        return [(n, *answers[n]) for n in sorted(answers)]

    # --- records --------------------------------------------------------------------------

    def _zone_iana(self, event: dict[str, Any]) -> str | None:
        return windows_to_iana(event.get("originalStartTimeZone"))

    def _instants(self, event: dict[str, Any]) -> tuple[datetime, datetime]:
        """UTC start and end; an all-day event's dates at midnight in its own zone (else the
        connection's), as the EWS backend gives them."""
        if event.get("isAllDay"):
            zone = ZoneInfo(self._zone_iana(event) or self.settings.exchange_timezone)
            first, after = _all_day_dates(event)
            return (
                datetime.combine(first, clock(0), tzinfo=zone).astimezone(UTC),
                datetime.combine(after, clock(0), tzinfo=zone).astimezone(UTC),
            )
        return parse_wall_clock(event.get("start")), parse_wall_clock(event.get("end"))

    def _record(self, event: dict[str, Any]) -> dict[str, Any]:
        """A Graph event as the backend-neutral record (base.py's table)."""
        item_type = TYPES.get(event.get("type"), "Single")
        start_utc, end_utc = self._instants(event)
        all_day = bool(event.get("isAllDay"))
        start_date = end_date = None
        if all_day:
            first, after = _all_day_dates(event)
            start_date, end_date = first, after - timedelta(days=1)
        body = event.get("body") or {}
        attendees = event.get("attendees") or []
        is_meeting = bool(attendees) or event.get("isOrganizer") is False
        organizer = ((event.get("organizer") or {}).get("emailAddress") or {}).get("address")
        response = (event.get("responseStatus") or {}).get("response")
        props = {
            p.get("id", "").lower(): p.get("value")
            for p in event.get("singleValueExtendedProperties") or ()
        }
        stamp = props.get(STAMP_PROPERTY_ID.lower())
        # the UID push gave the series (Graph cannot set iCalUId), else Exchange's own
        uid = props.get(UID_PROPERTY_ID.lower()) or series_uid(event.get("iCalUId"))
        zone_name = event.get("originalStartTimeZone")
        reminder_on = bool(event.get("isReminderOn"))
        return {
            "item_id": event["id"],
            "change_key": event.get("changeKey"),
            "item_type": item_type,
            "uid": uid,
            "recurrence_id": parse_instant(event.get("originalStart"))
            if item_type in ("Occurrence", "Exception")
            else None,
            "master_item_id": event.get("seriesMasterId"),
            "subject": event.get("subject"),
            "location": (event.get("location") or {}).get("displayName") or None,
            "body": body.get("content") or None,
            "body_type": "HTML" if body.get("contentType", "html") == "html" else "Text",
            "start": start_utc,
            "end": end_utc,
            "is_all_day": all_day,
            "start_date": start_date,
            "end_date": end_date,
            "timezone_windows": zone_name if zone_name and "://" not in zone_name else None,
            "timezone_iana": self._zone_iana(event),
            "sensitivity": SENSITIVITY.get(event.get("sensitivity"), "Normal"),
            "reminder_is_set": reminder_on,
            "reminder_minutes": event.get("reminderMinutesBeforeStart") if reminder_on else None,
            "legacy_free_busy": SHOW_AS.get(event.get("showAs"), "Busy"),
            "categories": list(event.get("categories") or []),
            "last_modified": parse_instant(event.get("lastModifiedDateTime")),
            "is_recurring": item_type in ("Occurrence", "Exception"),
            "is_cancelled": bool(event.get("isCancelled")),
            "my_response": RESPONSES.get(response, "Unknown") if is_meeting else None,
            "organizer": organizer if is_meeting else None,
            "stamp": stamp,
        }

    # --- connection test ------------------------------------------------------------------

    def test(self, write: bool = True, app_user_email: str | None = None) -> ConnectionReport:
        """The two-part connection test for Graph: the token and its permissions (General
        connection); the mailbox's calendar read, and written when ``write`` (Send/receive)."""
        report = ConnectionReport()
        try:
            token = self._token()
        except ExchangeError as exc:
            report.parts.append(ReportPart(GENERAL, False, f"getting a token: {exc}"))
            report.parts.append(ReportPart(SEND_RECEIVE, None, "the general connection failed"))
            return report
        roles = set(token_claims(token).get("roles") or ())
        client = self.settings.client_id
        if not roles:
            message = (
                f"the token for {self.scope} carries no application permissions: admin consent "
                f"is missing. In Entra ID, give app {client} the Microsoft Graph application "
                f"permission {WRITE_ROLE} and press 'Grant admin consent'"
            )
            report.parts.append(ReportPart(GENERAL, False, message))
            report.parts.append(ReportPart(SEND_RECEIVE, None, "the general connection failed"))
            return report
        if WRITE_ROLE not in roles:
            message = (
                f"{WRITE_ROLE} is not granted to app {client} on Microsoft Graph (the token has "
                f"{', '.join(sorted(roles))}); the sync writes to the calendar: add the "
                "application permission and grant admin consent"
            )
            report.parts.append(ReportPart(GENERAL, False, message))
            report.parts.append(ReportPart(SEND_RECEIVE, None, "the general connection failed"))
            return report
        report.parts.append(
            ReportPart(
                GENERAL,
                True,
                f"app {client} @ {self.root} (Microsoft Graph, app-only OAuth, {WRITE_ROLE})",
            )  # fmt: skip
        )
        steps: list[str] = ["reading the calendar"]
        try:
            self.probe()
            done = exercise_calendar(
                self, self.settings, write=write, app_user_email=app_user_email, steps=steps
            )
            report.parts.append(
                ReportPart(SEND_RECEIVE, True, f"calendar of {self.settings.mailbox}: {done}")
            )
        except ExchangeError as exc:
            text = str(exc).removeprefix(f"connection {self.settings.conn_id!r}: ")
            report.parts.append(ReportPart(SEND_RECEIVE, False, f"{steps[-1]}: {text}"))
        return report

    # --- writing (the connection test) ------------------------------------------------------

    def create(self, record: dict[str, Any]) -> tuple[str, str]:
        """Create a single event (no invitations: no attendees); returns (id, change key)."""
        zone = record.get("time_zone") or "UTC"
        event = {
            "subject": record.get("subject") or "",
            "start": {"dateTime": _wall(record["start"], zone), "timeZone": zone},
            "end": {"dateTime": _wall(record["end"], zone), "timeZone": zone},
            "isReminderOn": record.get("reminder_minutes") is not None,
        }
        if record.get("reminder_minutes") is not None:
            event["reminderMinutesBeforeStart"] = int(record["reminder_minutes"])
        if record.get("location"):
            event["location"] = {"displayName": record["location"]}
        if record.get("body"):
            event["body"] = {"contentType": "html", "content": record["body"]}
        answer = self._send(
            "POST", f"{self.user_path}/events", json_body=event, retry_transient=False
        ).json()
        return answer["id"], answer.get("changeKey")

    def delete(self, item_id: str) -> None:
        """Delete an event for good; one already gone is fine."""
        try:
            self._send("DELETE", f"{self.user_path}/events/{quote(item_id, safe='')}")
        except GraphError as exc:
            if exc.status != 404:
                raise


def _code(body: dict | None) -> str:
    return ((body or {}).get("error") or {}).get("code", "")


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _wall(value: datetime, zone: str) -> str:
    return value.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M:%S")


def _all_day_dates(event: dict[str, Any]) -> tuple[date, date]:
    """An all-day event's first date and the date after its last (Graph sends floating
    midnights)."""
    first = date.fromisoformat(event["start"]["dateTime"][:10])
    after = date.fromisoformat(event["end"]["dateTime"][:10])
    return first, max(after, first + timedelta(days=1))


def open_calendar(settings: SyncSettings, **options: Any) -> GraphCalendar:
    """The calendar of the connection's mailbox over Microsoft Graph (nothing sent yet)."""
    return GraphCalendar(settings, **options)
