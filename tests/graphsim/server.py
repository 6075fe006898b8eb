"""The wire: Microsoft Graph's calendar endpoints as JSON over HTTP, bearer tokens from
tests/identitysim, delta state, paging, throttling and error bodies as Microsoft documents them."""

from __future__ import annotations

import collections
import json
import re
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

from tests.ewssim.mailbox import Item, Mailbox
from tests.ewssim.server import EwsSimulator
from tests.graphsim import csdl, events
from tests.identitysim.server import GRAPH, InvalidToken
from tests.simserver import QuietHandler, ServedOverHttp

READ_ROLES = {"Calendars.Read", "Calendars.ReadWrite"}
WRITE_ROLE = "Calendars.ReadWrite"
DEFAULT_PAGE = 100  # events per page without Prefer: odata.maxpagesize
MAX_PAGE = 1000
POLICY_DENIED = (
    "Access to OData is disabled: Blocked by tenant configured AppOnly AccessPolicy settings."
)
FAULT_KINDS = {"throttle429", "http503", "http500", "drop_connection", "latency"}


class GraphError(Exception):
    """An answer Graph gives as an OData error body."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def parse_instant(text: str) -> datetime:
    """startDateTime / endDateTime: ISO 8601; without an offset it is UTC."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class GraphSimulator(ServedOverHttp):
    """A local Microsoft Graph (calendar endpoints) over real HTTP; see README.md.

    :param source: an EWS simulator whose mailboxes this one serves (the same content through
        both APIs); None: its own, seeded with add_mailbox / load_fixture.
    """

    def __init__(self, source: EwsSimulator | None = None, latency: float = 0.0):
        self.source = source or EwsSimulator()
        self.latency = latency
        self.identity = None
        self.audiences = {GRAPH, "https://127.0.0.1"}
        # client id -> mailboxes an application access policy lets it reach (absent: all)
        self.access_policies: dict[str, set[str]] = {}
        self.request_counts: collections.Counter = collections.Counter()
        self.arrivals: collections.defaultdict = collections.defaultdict(list)
        self.recorded: list[tuple[str, int, dict]] | None = None  # record_answers()
        self._lock = threading.Lock()
        self._faults: list[dict] = []
        self._delta_states: dict[str, dict] = {}  # $deltatoken -> window, select, snapshot
        self._pages: dict[str, dict] = {}  # $skiptoken -> the rest of a listing
        self._server: ThreadingHTTPServer | None = None

    # --- control API ------------------------------------------------------------------------

    @property
    def mailboxes(self) -> dict[str, Mailbox]:
        return self.source.mailboxes

    def add_mailbox(self, email: str, calendar_access: bool = True) -> Mailbox:
        return self.source.add_mailbox(email, password="unused", calendar_access=calendar_access)

    def mailbox(self, email: str) -> Mailbox:
        return self.source.mailbox(email)

    def load_fixture(self, path, shift_to=None, default_mailbox: str | None = None) -> None:
        self.source.load_fixture(path, shift_to=shift_to, default_mailbox=default_mailbox)

    def trust(self, identity) -> None:
        """Accept bearer tokens this identity simulator issues (and no others)."""
        self.identity = identity

    def restrict_app(self, client_id: str, mailboxes: set[str] | list[str]) -> None:
        """An application access policy: this app reaches only these mailboxes."""
        self.access_policies[client_id] = {m.lower() for m in mailboxes}

    def expire_delta_tokens(self) -> None:
        """Forget every delta state (as Exchange does after a while): their next use gets 410."""
        with self._lock:
            self._delta_states.clear()
            self._pages.clear()

    def record_answers(self) -> list[tuple[str, int, dict]]:
        """From now on keep (path, status, JSON body) of every answer; returns the list."""
        self.recorded = []
        return self.recorded

    def inject_fault(self, kind: str, route: str | None = None, count: int = 1, **params) -> None:
        """The next ``count`` requests to ``route`` (delta, calendarView, event, calendar, batch,
        create, update, delete; None: any) fail: throttle429 / http503 (Retry-After:
        ``retry_after`` seconds, default 1), http500, drop_connection, latency (``seconds``)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {sorted(FAULT_KINDS)}")
        with self._lock:
            self._faults.append({"kind": kind, "route": route, "left": count, **params})

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_counters(self) -> None:
        with self._lock:
            self.request_counts.clear()
            self.arrivals.clear()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def host(self) -> str:
        return self._server.server_address[0]

    def _take_fault(self, route: str) -> dict | None:
        with self._lock:
            for fault in self._faults:
                if fault["left"] > 0 and fault["route"] in (None, route):
                    fault["left"] -= 1
                    return dict(fault)
        return None

    # --- HTTP ---------------------------------------------------------------------------------

    def start(self, port: int = 0, host: str = "127.0.0.1") -> GraphSimulator:
        simulator = self

        class Handler(QuietHandler):
            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers_in: dict[str, str] = {}
                for name, value in self.headers.items():  # repeated headers (Prefer) joined
                    headers_in[name] = (
                        f"{headers_in[name]}, {value}" if name in headers_in else value
                    )
                # throttling and 500 refuse the request before it is processed (a retried write
                # does not happen twice), as Graph does; drop_connection processes it and loses
                # the answer (what transactionId is for)
                route = simulator.route_of(method, self.path)
                fault = simulator._take_fault(route) if route else None
                if fault and fault["kind"] == "latency":
                    time.sleep(float(fault.get("seconds", 1.0)))
                    fault = None
                if fault and fault["kind"] != "drop_connection":
                    status, document, headers = simulator.fault_answer(fault)
                else:
                    status, document, headers, route = simulator.answer(
                        method, self.path, headers_in, body
                    )
                if fault and fault["kind"] == "drop_connection":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b'{"value": [')
                    self.wfile.flush()
                    self.close_connection = True
                    return
                with simulator._lock:
                    simulator.request_counts[route or "unknown"] += 1
                    simulator.arrivals[route or "unknown"].append(
                        (time.monotonic(), status in (429, 503))
                    )
                if simulator.latency:
                    time.sleep(simulator.latency)
                payload = b"" if document is None else json.dumps(document).encode()
                if simulator.recorded is not None and document is not None:
                    simulator.recorded.append((self.path, status, document))
                self.send_response(status)
                if document is not None:
                    self.send_header("Content-Type", "application/json; odata.metadata=minimal")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("request-id", str(uuid.uuid4()))
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):  # noqa: N802
                self._serve("GET")

            def do_POST(self):  # noqa: N802
                self._serve("POST")

            def do_PATCH(self):  # noqa: N802
                self._serve("PATCH")

            def do_DELETE(self):  # noqa: N802
                self._serve("DELETE")

        self.serve(Handler, host, port)
        return self

    # --- answers ------------------------------------------------------------------------------

    @staticmethod
    def error_body(code: str, message: str) -> dict:
        """Graph's error body (https://learn.microsoft.com/graph/errors)."""
        return {
            "error": {
                "code": code,
                "message": message,
                "innerError": {
                    "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                    "request-id": str(uuid.uuid4()),
                    "client-request-id": str(uuid.uuid4()),
                },
            }
        }

    def fault_answer(self, fault: dict) -> tuple[int, dict, dict]:
        retry_after = str(fault.get("retry_after", 1))
        if fault["kind"] == "throttle429":
            return 429, self.error_body(
                "ApplicationThrottled", "Application is over its MailboxConcurrency limit."
            ), {"Retry-After": retry_after}  # fmt: skip
        if fault["kind"] == "http503":
            return 503, self.error_body(
                "ServiceNotAvailable", "The service is temporarily unavailable. Try again later."
            ), {"Retry-After": retry_after}  # fmt: skip
        return 500, self.error_body(
            "InternalServerError", "An internal server error occurred. The operation failed."
        ), {}  # fmt: skip

    def answer(
        self, method: str, raw_path: str, headers: dict, body: bytes
    ) -> tuple[int, dict | None, dict, str | None]:
        """(status, JSON body or None, headers, route) for one request."""
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        segments = [unquote(s) for s in parts.path.strip("/").split("/")]
        route = self._route_name(method, segments)
        try:
            if route is None:
                raise GraphError(400, "BadRequest", f"Resource not found for the segment "
                                 f"'{segments[-1] if segments else ''}'.")  # fmt: skip
            prefer = _prefer(headers)
            claims = self._authenticate(headers)
            if route == "batch":
                return (*self._batch(claims, body, headers), route)
            mailbox = self._mailbox(claims, segments[2], write=method != "GET")
            handler = getattr(self, f"_op_{route}")
            status, document, extra = handler(
                mailbox, segments, query, prefer, body, raw_path=raw_path, headers=headers
            )
            return status, document, extra, route
        except GraphError as error:
            return error.status, self.error_body(error.code, error.message), error.headers, route

    def route_of(self, method: str, raw_path: str) -> str | None:
        segments = [unquote(s) for s in urlsplit(raw_path).path.strip("/").split("/")]
        return self._route_name(method, segments)

    @staticmethod
    def _route_name(method: str, segments: list[str]) -> str | None:
        if segments[:1] != ["v1.0"]:
            return None
        rest = segments[1:]
        if rest == ["$batch"] and method == "POST":
            return "batch"
        if len(rest) < 3 or rest[0] != "users":
            return None
        tail = rest[2:]
        if method == "GET":
            if tail == ["calendarView", "delta"]:
                return "delta"
            if tail == ["calendarView"]:
                return "calendarView"
            if tail == ["calendar"]:
                return "calendar"
            if tail == ["events"]:
                return "events"
            if len(tail) == 2 and tail[0] == "events":
                return "event"
            if len(tail) == 3 and tail[0] == "events" and tail[2] == "instances":
                return "instances"
        if method == "POST" and tail == ["events"]:
            return "create"
        if method == "POST" and len(tail) == 3 and tail[0] == "events" and tail[2] == "cancel":
            return "cancel"
        if method == "PATCH" and len(tail) == 2 and tail[0] == "events":
            return "update"
        if method == "DELETE" and len(tail) == 2 and tail[0] == "events":
            return "delete"
        return None

    def _authenticate(self, headers: dict) -> dict:
        header = _header(headers, "Authorization") or ""
        if not header.startswith("Bearer ") or not header[7:].strip():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        if self.identity is None:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.")
        try:
            return self.identity.verify(header[7:].strip(), self.audiences)
        except InvalidToken as exc:
            message = {
                "expired": "Lifetime validation failed, the token is expired.",
                "audience": "Access token validation failure. Invalid audience.",
            }.get(exc.reason, "Access token validation failure. Invalid token.")
            raise GraphError(401, "InvalidAuthenticationToken", message) from None

    def _mailbox(self, claims: dict, address: str, write: bool) -> Mailbox:
        roles = set(claims.get("roles") or ())
        if not roles & READ_ROLES or (write and WRITE_ROLE not in roles):
            # Graph's answer to an app without the application permission (or its consent)
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")  # fmt: skip
        address = address.lower()
        allowed = self.access_policies.get(claims.get("appid"))
        if allowed is not None and address not in allowed:
            raise GraphError(403, "ErrorAccessDenied", POLICY_DENIED)
        mailbox = self.mailboxes.get(address)
        if mailbox is None:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{address}' is invalid.")
        if not mailbox.calendar_access:
            raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")  # fmt: skip
        return mailbox

    # --- reading --------------------------------------------------------------------------

    def _render(self, mailbox: Mailbox, item: Item, prefer: dict, select: set | None,
                expand: bool = False) -> dict:  # fmt: skip
        try:
            zone_name, zone = events.preferred_zone(prefer.get("outlook.timezone"))
        except ValueError:
            zone_name, zone = events.preferred_zone(None)
        return events.to_event(
            item, mailbox, zone_name=zone_name, zone=zone,
            body_type=prefer.get("outlook.body-content-type"), select=select, expand_stamp=expand,
        )  # fmt: skip

    @staticmethod
    def _item_id(segment: str) -> str:
        """The model's id for an id in a path; an id not in Graph's form is refused as Graph
        refuses an EWS id."""
        item_id = events.ews_id(segment)
        if item_id is None:
            raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
        return item_id

    @staticmethod
    def _select(query: dict) -> set[str] | None:
        if "$select" not in query:
            return None
        names = {n.strip() for n in query["$select"].split(",") if n.strip()}
        unknown = names - set(events.PROPERTIES) - {"id"}
        if unknown:
            name = sorted(unknown)[0]
            raise GraphError(400, "RequestBroker--ParseUri",
                             f"Could not find a property named '{name}' on type "
                             "'microsoft.graph.event'.")  # fmt: skip
        return names

    @staticmethod
    def _expand(query: dict) -> list[str]:
        """$expand=singleValueExtendedProperties($filter=id eq '…' or id eq '…'): the ids."""
        text = query.get("$expand")
        if not text:
            return []
        ids = re.findall(r"id eq '([^']+)'", text)
        if text.startswith("singleValueExtendedProperties(") and ids:
            return ids
        raise GraphError(400, "BadRequest", f"Parsing OData Select and Expand failed: {text}")

    @staticmethod
    def _window(query: dict) -> tuple[datetime, datetime]:
        try:
            start = parse_instant(query["startDateTime"])
            end = parse_instant(query["endDateTime"])
        except KeyError:
            raise GraphError(400, "ErrorInvalidParameter", "This request requires a time window "
                             "specified by the query string parameters StartDateTime and "
                             "EndDateTime.") from None  # fmt: skip
        except ValueError:
            raise GraphError(400, "ErrorInvalidParameter",
                             "The value of the parameter 'StartDateTime' is invalid.") from None  # fmt: skip
        return start, end

    def _page(self, mailbox: Mailbox, listing: dict, prefer: dict, base: str) -> tuple[int, dict, dict]:  # fmt: skip
        """One page of a listing: its entries from ``offset``, then a nextLink or the end."""
        size = DEFAULT_PAGE
        headers = {}
        if "odata.maxpagesize" in prefer:
            size = max(1, min(int(prefer["odata.maxpagesize"]), MAX_PAGE))
            headers["Preference-Applied"] = f"odata.maxpagesize={size}"
        applied = [p for p in ("outlook.timezone", "outlook.body-content-type") if p in prefer]
        if applied:
            headers["Preference-Applied"] = ", ".join(
                [
                    *(headers.get("Preference-Applied", "").split(", ") if headers else []),
                    *(f'{p}="{prefer[p]}"' for p in applied),
                ]  # fmt: skip
            ).strip(", ")
        entries = listing["entries"]
        offset = listing["offset"]
        page = entries[offset : offset + size]
        values = []
        for entry in page:
            if isinstance(entry, str):  # an id that left the view: @removed
                values.append({"@odata.type": "#microsoft.graph.event", "id": entry,
                               "@removed": {"reason": "deleted"}})  # fmt: skip
            else:
                values.append(
                    self._render(mailbox, entry, prefer, listing["select"], listing["expand"])
                )
        document: dict = {
            "@odata.context": f"{self.url}/v1.0/$metadata#Collection(event)",
            "value": values,
        }
        if offset + size < len(entries):
            token = secrets.token_urlsafe(16)
            with self._lock:
                self._pages[token] = {**listing, "offset": offset + size}
            document["@odata.nextLink"] = f"{self.url}{base}?$skiptoken={token}"
        elif listing.get("delta_token"):
            document["@odata.deltaLink"] = f"{self.url}{base}?$deltatoken={listing['delta_token']}"
        return 200, document, headers

    def _continued(self, query: dict) -> dict | None:
        token = query.get("$skiptoken")
        if token is None:
            return None
        with self._lock:
            listing = self._pages.pop(token, None)
        if listing is None:
            raise GraphError(410, "syncStateNotFound", "The sync state generation is not found.")
        return listing

    def _op_delta(self, mailbox, segments, query, prefer, body, raw_path, **_):
        base = "/" + "/".join(quote(s, safe="@.") for s in segments)
        listing = self._continued(query)
        if listing is None:
            token = query.get("$deltatoken")
            if token is not None:
                with self._lock:
                    state = self._delta_states.get(token)
                if state is None or state["mailbox"] != mailbox.email:
                    raise GraphError(410, "syncStateNotFound",
                                     "The sync state generation is not found.")  # fmt: skip
                start, end, select, expand = state["start"], state["end"], state["select"], state["expand"]  # fmt: skip
                known: dict[str, str] = state["snapshot"]
            else:
                start, end = self._window(query)
                select, expand, known = self._select(query), self._expand(query), {}
            current = mailbox.occurrences(start, end)
            snapshot = {events.graph_id(i.item_id): i.change_key for i in current}
            entries: list = [
                i for i in current if known.get(events.graph_id(i.item_id)) != i.change_key
            ]
            entries.extend(sorted(set(known) - set(snapshot)))  # removed from the view
            new_token = secrets.token_urlsafe(24)
            with self._lock:
                self._delta_states[new_token] = {
                    "mailbox": mailbox.email, "start": start, "end": end, "select": select,
                    "expand": expand, "snapshot": snapshot,
                }  # fmt: skip
            listing = {"entries": entries, "offset": 0, "select": select, "expand": expand,
                       "delta_token": new_token}  # fmt: skip
        return self._page(mailbox, listing, prefer, base)

    def _op_calendarView(self, mailbox, segments, query, prefer, body, raw_path, **_):  # noqa: N802
        base = "/" + "/".join(quote(s, safe="@.") for s in segments)
        listing = self._continued(query)
        if listing is None:
            start, end = self._window(query)
            listing = {"entries": mailbox.occurrences(start, end), "offset": 0,
                       "select": self._select(query), "expand": self._expand(query)}  # fmt: skip
        return self._page(mailbox, listing, prefer, base)

    def _op_event(self, mailbox, segments, query, prefer, body, raw_path, **_):
        item = mailbox.get(self._item_id(segments[4]))
        if item is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")  # fmt: skip
        document = self._render(mailbox, item, prefer, self._select(query), self._expand(query))
        document["@odata.context"] = f"{self.url}/v1.0/$metadata#users('{mailbox.email}')/events/$entity"  # fmt: skip
        return 200, document, {}

    def _op_calendar(self, mailbox, segments, query, prefer, body, raw_path, **_):
        return 200, {
            "@odata.context": f"{self.url}/v1.0/$metadata#users('{mailbox.email}')/calendar/$entity",
            "id": events.graph_id("folder:calendar"),
            "name": "Calendar",
            "color": "auto",
            "hexColor": "",
            "isDefaultCalendar": True,
            "changeKey": "cal1",
            "canShare": True,
            "canViewPrivateItems": True,
            "canEdit": True,
            "allowedOnlineMeetingProviders": ["teamsForBusiness"],
            "defaultOnlineMeetingProvider": "teamsForBusiness",
            "isTallyingResponses": True,
            "isRemovable": False,
            "owner": {"name": mailbox.email, "address": mailbox.email},
        }, {}  # fmt: skip

    # --- writing ------------------------------------------------------------------------------

    def _body(self, body: bytes) -> dict:
        """A write's JSON body, checked against the schema as Graph checks it."""
        try:
            event = json.loads(body or b"{}")
        except ValueError:
            raise GraphError(400, "BadRequest", "Unable to read JSON request payload.") from None
        try:
            csdl.load().validate(event, "graph.event")
        except csdl.SchemaViolation as exc:
            raise GraphError(400, "BadRequest", f"Invalid request body: {exc}") from None
        return event

    def _fields(self, event: dict) -> dict:
        try:
            return events.fields_of(event)
        except (ValueError, KeyError) as exc:
            raise GraphError(400, "ErrorInvalidRequest", f"Invalid event: {exc}") from None

    def _op_create(self, mailbox, segments, query, prefer, body, raw_path, **_):
        event = self._body(body)
        for name in ("start", "end"):
            if name not in event:
                raise GraphError(400, "ErrorInvalidRequest", f"Your request can't be completed. The {name.title()} property is required.")  # fmt: skip
        fields = self._fields(event)
        with mailbox.lock:
            transaction = event.get("transactionId")
            if transaction:
                # a retried POST with the same transactionId: the event it created, not a second
                for item in mailbox.items():
                    if item.extended.get("graph:transactionId") == transaction:
                        return 201, self._created(mailbox, item.item_id, prefer), {}
            start, end = fields.pop("start"), fields.pop("end")
            fields.setdefault("body_type", "HTML")
            item_id = mailbox.create(fields.pop("subject", ""), start, end, **fields)
        return 201, self._created(mailbox, item_id, prefer), {}

    def _created(self, mailbox: Mailbox, item_id: str, prefer: dict) -> dict:
        document = self._render(mailbox, mailbox.get(item_id), prefer, None, True)
        document["@odata.context"] = f"{self.url}/v1.0/$metadata#users('{mailbox.email}')/events/$entity"  # fmt: skip
        return document

    def _op_update(self, mailbox, segments, query, prefer, body, raw_path, headers=None, **_):
        item_id = self._item_id(segments[4])
        event = self._body(body)
        fields = self._fields(event)
        with mailbox.lock:
            item = mailbox.get(item_id)
            if item is None:
                raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")  # fmt: skip
            if_match = _header(headers or {}, "If-Match")
            if if_match and if_match not in ("*", f'W/"{item.change_key}"'):
                raise GraphError(412, "ErrorIrresolvableConflict", "The send or update operation could not be performed because the change key passed in the request does not match the current change key for the item.")  # fmt: skip
            master, original = mailbox.resolve_occurrence(item_id)
            if master is not None:
                fields.pop("timezone", None)
                fields.pop("extended", None)
                mailbox.modify_occurrence(master.item_id, original, **fields)
            else:
                if "extended" in fields:
                    fields["extended"] = {**item.extended, **fields["extended"]}
                mailbox.update(item_id, **fields)
        return 200, self._created(mailbox, item_id, prefer), {}

    def _op_delete(self, mailbox, segments, query, prefer, body, raw_path, **_):
        item_id = self._item_id(segments[4])
        with mailbox.lock:
            if mailbox.get(item_id) is None:
                raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")  # fmt: skip
            mailbox.delete(item_id)
        return 204, None, {}

    def _op_cancel(self, mailbox, segments, query, prefer, body, raw_path, **_):
        """POST /events/{id}/cancel: the organizer cancels a meeting (attendees notified; the
        model records nothing of the notification) and it leaves the calendar."""
        item_id = self._item_id(segments[4])
        with mailbox.lock:
            item = mailbox.get(item_id)
            if item is None:
                raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")  # fmt: skip
            if item.organizer is not None and item.my_response != "Organizer":
                raise GraphError(400, "ErrorAccessDenied", "Your request can't be completed. You need to be an organizer to cancel a meeting.")  # fmt: skip
            mailbox.delete(item_id)
        return 202, None, {}

    def _op_events(self, mailbox, segments, query, prefer, body, raw_path, **_):
        """GET /events?$filter=singleValueExtendedProperties/any(ep: ep/id eq '…' and ep/value
        eq '…'): the calendar's items (singles and series masters) carrying that value."""
        text = query.get("$filter", "")
        match = re.fullmatch(
            r"singleValueExtendedProperties/any\(ep: ep/id eq '([^']+)' and ep/value eq "
            r"'((?:[^']|'')*)'\)",
            text,
        )
        if text and not match:
            raise GraphError(400, "BadRequest", f"Invalid filter clause: {text}")
        found = mailbox.items()
        if match:
            key = events.extended_key(match.group(1))
            value = match.group(2).replace("''", "'")
            found = [i for i in found if key and i.extended.get(key) == value]
        found = [mailbox.get(i.item_id) for i in found]
        base = "/" + "/".join(quote(s, safe="@.") for s in segments)
        listing = {"entries": found, "offset": 0, "select": self._select(query),
                   "expand": self._expand(query)}  # fmt: skip
        return self._page(mailbox, listing, prefer, base)

    def _op_instances(self, mailbox, segments, query, prefer, body, raw_path, **_):
        """GET /events/{master}/instances?startDateTime&endDateTime: a series' occurrences and
        exceptions in the range."""
        master = mailbox.store.get(self._item_id(segments[4]))
        if master is None or not master.recurrence:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")  # fmt: skip
        start, end = self._window(query)
        found = [
            i for i in mailbox.occurrences(start, end)
            if i.item_type in ("Occurrence", "Exception")
            and mailbox.resolve_occurrence(i.item_id)[0] is not None
            and mailbox.resolve_occurrence(i.item_id)[0].item_id == master.item_id
        ]  # fmt: skip
        base = "/" + "/".join(quote(s, safe="@.") for s in segments)
        listing = {"entries": found, "offset": 0, "select": self._select(query),
                   "expand": self._expand(query)}  # fmt: skip
        return self._page(mailbox, listing, prefer, base)

    # --- $batch ------------------------------------------------------------------------------

    def _batch(self, claims: dict, body: bytes, headers: dict) -> tuple[int, dict, dict]:
        """JSON batching (https://learn.microsoft.com/graph/json-batching): up to 20 requests,
        each answered on its own; the batch itself answers 200."""
        try:
            requests_ = json.loads(body or b"{}")["requests"]
        except (ValueError, KeyError, TypeError):
            raise GraphError(400, "BadRequest", "Invalid batch payload format.") from None
        if len(requests_) > 20:
            raise GraphError(400, "BadRequest",
                             "Number of batch request steps exceeds the maximum of 20.")  # fmt: skip
        answers = []
        auth = {"Authorization": _header(headers, "Authorization")}
        for request in requests_:
            inner_headers = {**auth, **(request.get("headers") or {})}
            inner_body = json.dumps(request["body"]).encode() if "body" in request else b""
            url = request["url"] if request["url"].startswith("/") else "/" + request["url"]
            route = self.route_of(request["method"].upper(), "/v1.0" + url)
            fault = self._take_fault(route) if route else None
            if fault and fault["kind"] in ("throttle429", "http503", "http500"):
                status, document, extra = self.fault_answer(fault)  # refused, not processed
            else:
                status, document, extra, route = self.answer(
                    request["method"].upper(), "/v1.0" + url, inner_headers, inner_body
                )
            with self._lock:
                self.request_counts[f"batch:{route}"] += 1
            answer = {"id": request["id"], "status": status, "headers": extra}
            if document is not None:
                answer["body"] = document
            answers.append(answer)
        return 200, {"responses": answers}, {}


def _header(headers: dict, name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value
    return None


def _prefer(headers: dict) -> dict[str, str]:
    """Prefer: a=1, b="x" (one or several headers) -> {"a": "1", "b": "x"}."""
    found: dict[str, str] = {}
    for key, value in headers.items():
        if key.lower() != "prefer":
            continue
        for part in value.split(","):
            name, _, setting = part.strip().partition("=")
            if name:
                found[name.strip()] = setting.strip().strip('"')
    return found


__all__ = ["GraphError", "GraphSimulator"]
