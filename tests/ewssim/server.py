"""The wire: EWS SOAP over HTTP, Basic auth, one handler per operation."""

from __future__ import annotations

import base64
import collections
import json
import re
import threading
import time
from datetime import UTC, date, datetime, timedelta
from html import unescape
from http.server import ThreadingHTTPServer
from xml.sax.saxutils import escape

from lxml import etree

from tests.ewssim import recurrence_xml
from tests.ewssim.mailbox import Item, Mailbox
from tests.ewssim.signin import Principal, SignIn
from tests.ewssim.throttling import (
    THROTTLING_KINDS,
    busy_in_messages,
    retry_after_header,
    server_busy_fault,
)
from tests.ewssim.zones import WINDOWS_ZONES, definition_xml, display_name, zone_of
from tests.simserver import QuietHandler, ServedOverHttp

S = "http://schemas.xmlsoap.org/soap/envelope/"
M = "http://schemas.microsoft.com/exchange/services/2006/messages"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
NS = {"s": S, "m": M, "t": T}

VERSIONS = {
    "Exchange2016": ('MajorVersion="15" MinorVersion="1" MajorBuildNumber="2507" '
                     'MinorBuildNumber="6" Version="V2017_07_11"'),
    "Exchange2007_SP1": ('MajorVersion="8" MinorVersion="1" MajorBuildNumber="240" '
                         'MinorBuildNumber="6" Version="Exchange2007_SP1"'),
}  # fmt: skip
ROOT_ID = base64.b64encode(b"folder:root").decode()
CALENDAR_ID = base64.b64encode(b"folder:calendar").decode()


def utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def html_to_plain(html: str) -> str:
    """A crude text rendering, as Exchange gives for BodyType=Text (tags dropped)."""
    text = re.sub(r"<(style|script)[^>]*>.*?</\1>", "", html, flags=re.S | re.I)
    text = re.sub(r"<br\s*/?>|</p>", "\n", text, flags=re.I)
    return unescape(re.sub(r"<[^>]+>", "", text)).strip()


def xs_boolean(text: str) -> bool:
    """xs:boolean: 'true'/'false' or '1'/'0' (exchangelib sends the digits)."""
    return text.strip() in ("true", "1")


def parse_dt(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


FAULT_KINDS = {
    "http500", "drop_connection", "malformed_xml", "truncated", "latency", *THROTTLING_KINDS,
}  # fmt: skip

SCHEMA_FAULT = (
    f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{S}"><s:Body><s:Fault>'
    f'<faultcode xmlns:a="{T}">a:ErrorSchemaValidation</faultcode>'
    '<faultstring xml:lang="en-US">The request failed schema validation: The '
    "'Version' attribute is invalid - The value '{version}' is invalid according to its "
    "datatype.</faultstring><detail>"
    '<e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">'
    "ErrorSchemaValidation</e:ResponseCode>"
    '<e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">The request '
    "failed schema validation.</e:Message></detail></s:Fault></s:Body></s:Envelope>"
)
INTERNAL_ERROR = (
    f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{S}"><s:Body><s:Fault>'
    "<faultcode>s:Server</faultcode><faultstring>An internal server error occurred. The operation "
    "failed.</faultstring></s:Fault></s:Body></s:Envelope>"
)


_ERROR_CODE = re.compile(r"<m:ResponseCode>(Error\w+)</m:ResponseCode>")


def _operation_of(body: bytes) -> str:
    try:
        return etree.QName(etree.fromstring(body).find("s:Body", NS)[0]).localname
    except (etree.XMLSyntaxError, IndexError, TypeError):
        return ""


def _faulty(fault: dict, payload: bytes) -> tuple[int, bytes]:
    kind = fault["kind"]
    if kind == "http500":
        return 500, INTERNAL_ERROR.encode()
    if kind == "malformed_xml":
        return 200, payload[: len(payload) // 3] + b"<t:Broken attr=>&&"
    if kind == "truncated":  # an answer cut short, e.g. by a proxy: well-formed up to the cut
        cut = int(len(payload) * float(fault.get("keep", 0.4)))
        return 200, payload[:cut]
    return 200, payload


def _shift_local(instant: datetime, shift: timedelta, zone) -> datetime:
    """Move an instant by whole weeks keeping its wall-clock time in its zone (DST-safe)."""
    local = instant.astimezone(zone).replace(tzinfo=None) + shift
    return local.replace(tzinfo=zone).astimezone(UTC)


class EwsError(Exception):
    def __init__(self, code: str, text: str):
        super().__init__(text)
        self.code, self.text = code, text


# What an error response message of an operation still carries, as Exchange sends it (and
# exchangelib reads it: SyncFolderItems' SyncState is read before the response code).
_ERROR_EXTRAS = {
    "GetFolder": "<m:Folders/>",
    "GetItem": "<m:Items/>",
    "SyncFolderItems": (
        "<m:SyncState/><m:IncludesLastItemInRange>true</m:IncludesLastItemInRange>"
    ),
}


def error_message(operation: str, code: str, text: str, inner: str = "") -> str:
    return (
        f'<m:{operation}ResponseMessage ResponseClass="Error"><m:MessageText>{escape(text)}'
        f"</m:MessageText><m:ResponseCode>{code}</m:ResponseCode>"
        f"<m:DescriptiveLinkKey>0</m:DescriptiveLinkKey>{inner}</m:{operation}ResponseMessage>"
    )


def fields_of(element) -> dict:
    """The settable fields in a <t:CalendarItem> (CreateItem, SetItemField) as model fields."""
    fields: dict = {}
    text = lambda tag: element.findtext(f"t:{tag}", None, NS)  # noqa: E731
    if text("Subject") is not None:
        fields["subject"] = text("Subject")
    body = element.find("t:Body", NS)
    if body is not None:
        fields["body"], fields["body_type"] = body.text or "", body.get("BodyType", "HTML")
    if text("Sensitivity"):
        fields["sensitivity"] = text("Sensitivity")
    categories = element.find("t:Categories", NS)
    if categories is not None:
        fields["categories"] = [c.text or "" for c in categories]
    if text("ReminderIsSet") is not None:
        fields["reminder_minutes"] = (
            int(text("ReminderMinutesBeforeStart") or 15)
            if xs_boolean(text("ReminderIsSet"))
            else None
        )
    elif text("ReminderMinutesBeforeStart") is not None:
        fields["reminder_minutes"] = int(text("ReminderMinutesBeforeStart"))
    for tag, name in (("Start", "start"), ("End", "end")):
        if text(tag):
            fields[name] = parse_dt(text(tag))
    if text("IsAllDayEvent") is not None:
        fields["is_all_day"] = xs_boolean(text("IsAllDayEvent"))
    if text("LegacyFreeBusyStatus"):
        fields["legacy_free_busy"] = text("LegacyFreeBusyStatus")
    if text("Location") is not None:
        fields["location"] = text("Location")
    recurrence = element.find("t:Recurrence", NS)
    if recurrence is not None:
        fields["recurrence"] = recurrence_xml.parse(recurrence)
    if text("UID"):
        fields["uid"] = text("UID")
    extended = {
        extended_key(prop.find("t:ExtendedFieldURI", NS)): prop.findtext("t:Value", "", NS)
        for prop in element.findall("t:ExtendedProperty", NS)
    }
    if extended:
        fields["extended"] = extended
    for tag in ("StartTimeZone", "MeetingTimeZone"):
        zone = element.find(f"t:{tag}", NS)
        if zone is not None:
            name = zone.get("Id") or zone.get("TimeZoneName")
            fields["timezone"] = name if name in WINDOWS_ZONES else "UTC"
    return fields


def appointment_state(item: Item) -> int:
    """AppointmentState's flags: 1 meeting, 2 received (the owner is an attendee), 4 cancelled."""
    if item.organizer is None:
        return 0
    received = 2 if item.my_response != "Organizer" else 0
    return 1 | received | (4 if item.is_cancelled else 0)


def meeting_xml(item: Item, want) -> list[str]:
    """MyResponseType, Organizer, RequiredAttendees, OptionalAttendees (schema order)."""
    if item.organizer is None:
        return []

    def mailbox(email: str, name: str | None) -> str:
        return (
            f"<t:Mailbox><t:Name>{escape(name or email)}</t:Name><t:EmailAddress>{escape(email)}"
            "</t:EmailAddress><t:RoutingType>SMTP</t:RoutingType><t:MailboxType>Mailbox"
            "</t:MailboxType></t:Mailbox>"
        )

    out = []
    if want("calendar:MyResponseType"):
        out.append(f"<t:MyResponseType>{item.my_response}</t:MyResponseType>")
    if want("calendar:Organizer"):
        out.append(f"<t:Organizer>{mailbox(item.organizer, item.organizer_name)}</t:Organizer>")
    for tag, optional in (("RequiredAttendees", False), ("OptionalAttendees", True)):
        attendees = [a for a in item.attendees if bool(a.get("optional")) == optional]
        if want(f"calendar:{tag}") and attendees:
            inner = "".join(
                f"<t:Attendee>{mailbox(a['email'], a.get('name'))}<t:ResponseType>"
                f"{a.get('response', 'Unknown')}</t:ResponseType></t:Attendee>"
                for a in attendees
            )
            out.append(f"<t:{tag}>{inner}</t:{tag}>")
    return out


def extended_key(uri) -> str:
    """A named extended property's key: "PropertySet:PropertyName" (set id or distinguished)."""
    property_set = uri.get("DistinguishedPropertySetId") or uri.get("PropertySetId") or ""
    name = uri.get("PropertyName") or uri.get("PropertyTag") or uri.get("PropertyId") or ""
    return f"{property_set}:{name}"


def matches(item: Item, restriction) -> bool:
    """A FindItem <m:Restriction>'s search expression over named extended properties (what push
    searches by): IsEqualTo, Exists, Or, And, Not."""
    kind = etree.QName(restriction).localname
    if kind in ("Restriction", "Not", "And", "Or"):
        results = [matches(item, child) for child in restriction]
        if kind == "Or":
            return any(results)
        if kind == "Not":
            return not results[0]
        return all(results)
    uri = restriction.find("t:ExtendedFieldURI", NS)
    if uri is None:
        return False
    value = item.extended.get(extended_key(uri))
    if kind == "Exists":
        return value is not None
    if kind == "IsEqualTo":
        constant = restriction.find("t:FieldURIOrConstant/t:Constant", NS)
        return constant is not None and value == constant.get("Value")
    return False


def resolve_ref(mailbox: Mailbox, ref) -> str | None:
    """An item id from <t:ItemId> or <t:OccurrenceItemId RecurringMasterId InstanceIndex>."""
    if etree.QName(ref).localname == "OccurrenceItemId":
        return mailbox.occurrence_at(ref.get("RecurringMasterId"), int(ref.get("InstanceIndex")))
    return ref.get("Id")


# FieldURI of a DeleteItemField -> the model field and its cleared value
CLEARED = {
    "calendar:Location": ("location", ""),
    "item:Body": ("body", ""),
    "item:Categories": ("categories", []),
    "calendar:Recurrence": ("recurrence", None),
    "item:ReminderMinutesBeforeStart": ("reminder_minutes", None),
}


class EwsSimulator(ServedOverHttp):
    """A local Exchange server; the control API is described in tests/ewssim/README.md."""

    def __init__(self, dialect: str = "Exchange2016", max_view_items: int = 1000,
                 latency: float = 0.0, tls: bool = False):  # fmt: skip
        self.dialect = dialect
        self.tls = tls  # HTTPS with a throwaway self-signed certificate (self.certificate)
        self.certificate = None
        self.max_view_items = max_view_items
        self.latency = latency
        self.mailboxes: dict[str, Mailbox] = {}
        self.request_counts: collections.Counter = collections.Counter()
        # operation -> [(monotonic arrival time, refused by throttling)]
        self.arrivals: collections.defaultdict = collections.defaultdict(list)
        # operation -> the error ResponseCodes of its last answer (what the wire said)
        self.last_error_codes: dict[str, list[str]] = {}
        self.bytes_in = 0
        self.bytes_out = 0
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()
        self._faults: list[dict] = []
        self._hooks: list[dict] = []  # on(): actions run around chosen requests
        self.sync_page_cap = 0  # the most changes one SyncFolderItems page holds (0: as asked)
        self.sign_in = SignIn(self)  # Basic unless told otherwise (signin.py)

    # --- control API ----------------------------------------------------------------------

    def add_mailbox(self, email: str, password: str, calendar_access: bool = True) -> Mailbox:
        mailbox = Mailbox(email.lower(), password, calendar_access)
        self.mailboxes[email.lower()] = mailbox
        self.sign_in.mailbox_added(email.lower(), password)
        return mailbox

    def mailbox(self, email: str) -> Mailbox:
        return self.mailboxes[email.lower()]

    def load_fixture(self, path, shift_to=None, default_mailbox: str | None = None) -> None:
        """Seed mailboxes from a fixture file (see fixtures/realistic.json).

        :param shift_to: a date; every item moves by whole weeks so that the fixture's anchor
            week becomes that date's week (weekdays, wall-clock times and zones are kept).
        :param default_mailbox: the mailbox for fixture items that name none.
        """
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        shift = timedelta(0)
        if shift_to is not None:
            anchor = date.fromisoformat(data["anchor"])
            shift = timedelta(weeks=round((shift_to - anchor).days / 7))
        for box in data["mailboxes"]:
            email = box.get("email") or default_mailbox
            mailbox = self.mailboxes.get(email.lower()) or self.add_mailbox(
                email, box.get("password", "secret")
            )
            seeds: collections.Counter = collections.Counter()
            for spec in box["items"]:
                spec = dict(spec)
                # ids and UIDs follow from the fixture, not from chance: a restarted simulator
                # with the same fixture answers with the same ids (the shift does not matter).
                seed = spec.pop("id", None) or f"{spec['subject']}|{spec['start']}"
                seeds[seed] += 1
                if seeds[seed] > 1:
                    seed = f"{seed}|{seeds[seed]}"
                zone = zone_of(spec.get("timezone"), spec.get("timezone_rules"))
                start = _shift_local(parse_dt(spec.pop("start")), shift, zone)
                end = _shift_local(parse_dt(spec.pop("end")), shift, zone)
                occurrences = spec.pop("modified_occurrences", [])
                deleted = spec.pop("deleted_occurrences", [])
                if spec.get("recurrence"):
                    rule = spec["recurrence"] = dict(spec["recurrence"])
                    for key in ("start", "end"):
                        if rule.get(key):
                            rule[key] = date.fromisoformat(rule[key]) + shift
                item_id = mailbox.create(start=start, end=end, seed=seed, **spec)
                for change in occurrences:
                    change = dict(change)
                    original = _shift_local(parse_dt(change.pop("original_start")), shift, zone)
                    for key in ("start", "end"):
                        if key in change:
                            change[key] = _shift_local(parse_dt(change[key]), shift, zone)
                    mailbox.modify_occurrence(item_id, original, **change)
                for original in deleted:
                    mailbox.delete_occurrence(
                        item_id, _shift_local(parse_dt(original), shift, zone)
                    )

    def inject_fault(
        self, kind: str, operation: str | None = None, count: int = 1, **params
    ) -> None:
        """Make the next ``count`` matching requests fail.

        kinds: http500, drop_connection (mid-response), malformed_xml, truncated (keep: the
        share of the answer sent, default 0.4, with a correct Content-Length), latency
        (seconds), and throttling in Exchange's three forms, the request left unprocessed:
        server_busy (HTTP 500 SOAP fault, back_off_ms), http503 (no body; retry_after seconds or
        "date:<seconds>" for an HTTP-date), busy_in_message (HTTP 200, ErrorInternalServerError
        with the inner error ErrorServerBusy in every ResponseMessage; back_off_ms optional).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {sorted(FAULT_KINDS)}")
        with self._lock:
            self._faults.append({"kind": kind, "operation": operation, "left": count, **params})

    def _take_fault(self, operation: str) -> dict | None:
        with self._lock:
            for fault in self._faults:
                if fault["left"] > 0 and fault["operation"] in (None, operation):
                    fault["left"] -= 1
                    return dict(fault)
        return None

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def on(
        self, operation: str, action, *, when: str = "before", count: int = 1, skip: int = 0
    ) -> None:
        """Call ``action()`` in the handler's thread before (or after) the next ``count``
        requests of ``operation`` are answered, after ``skip`` more of them: a test's way to
        change the mailbox at a chosen moment of a client's run, as a user would."""
        if when not in ("before", "after"):
            raise ValueError(f"when is 'before' or 'after', not {when!r}")
        with self._lock:
            self._hooks.append({"operation": operation, "when": when, "left": count,
                                "skip": skip, "action": action})  # fmt: skip

    def _run_hooks(self, operation: str, when: str) -> None:
        with self._lock:
            due = []
            for hook in self._hooks:
                if hook["left"] > 0 and hook["operation"] == operation and hook["when"] == when:
                    if hook["skip"] > 0:
                        hook["skip"] -= 1
                        continue
                    hook["left"] -= 1
                    due.append(hook["action"])
        for action in due:  # outside the lock: an action may wait for another request
            action()

    def _count(self, operation: str, throttled: bool = False) -> None:
        with self._lock:
            self.request_counts[operation] += 1
            self.arrivals[operation].append((time.monotonic(), throttled))

    def reset_counters(self) -> None:
        with self._lock:
            self.request_counts.clear()
            self.arrivals.clear()
            self.bytes_in = self.bytes_out = 0

    @property
    def host(self) -> str:
        return self._server.server_address[0]

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{port}/EWS/Exchange.asmx"

    def start(self, port: int = 0, host: str = "127.0.0.1") -> EwsSimulator:
        simulator = self

        class Handler(QuietHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                principal, refusal = simulator.sign_in.check(self, self.headers, body)
                if refusal is not None:
                    self.send_response(refusal.status)
                    for name, value in refusal.headers:
                        self.send_header(name, value)
                    self.send_header("Content-Type", "text/xml; charset=utf-8")
                    self.send_header("Content-Length", str(len(refusal.payload)))
                    self.end_headers()
                    self.wfile.write(refusal.payload)
                    return
                fault = simulator._take_fault(_operation_of(body))
                if fault and fault["kind"] == "latency":
                    time.sleep(float(fault.get("seconds", 1.0)))
                    fault = None
                if fault and fault["kind"] in THROTTLING_KINDS:
                    self._throttle(fault, body)
                    return
                operation = _operation_of(body)
                simulator._run_hooks(operation, "before")
                status, payload = simulator.handle(principal, body)
                simulator._run_hooks(operation, "after")
                if fault:
                    status, payload = _faulty(fault, payload)
                    if fault["kind"] == "drop_connection":
                        # headers promise the whole body; half of it arrives, then the socket closes
                        self.send_response(200)
                        self.send_header("Content-Type", "text/xml; charset=utf-8")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload[: len(payload) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                self.send_response(status)
                self.send_header("Content-Type", "text/xml; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                if status == 401:
                    self.send_header("WWW-Authenticate", 'Basic realm="ews"')
                self.end_headers()
                self.wfile.write(payload)

            def _throttle(self, fault: dict, body: bytes) -> None:
                """Refuse the request unprocessed, in one of Exchange's throttling forms."""
                simulator._count(_operation_of(body), throttled=True)
                kind, back_off_ms = fault["kind"], fault.get("back_off_ms")
                headers = {"Content-Type": "text/xml; charset=utf-8"}
                if kind == "http503":  # IIS / the front end: no body, maybe Retry-After
                    status, payload, headers = 503, b"", {}
                    retry_after = retry_after_header(fault.get("retry_after"))
                    if retry_after:
                        headers["Retry-After"] = retry_after
                elif kind == "server_busy":
                    status, payload = 500, server_busy_fault(back_off_ms or 1000)
                else:
                    status = 200
                    payload = busy_in_messages(body, VERSIONS[simulator.dialect], back_off_ms)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.certificate = self.serve(Handler, host, port, tls=self.tls)
        if self.tls:
            from tests.ewssim.signin import certificate_hash

            self.sign_in.channel_bindings = certificate_hash(self.certificate)
        return self

    # --- dispatch -------------------------------------------------------------------------

    def _authenticate(self, header: str) -> Mailbox | None:
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        mailbox = self.mailboxes.get(user.lower())
        return mailbox if mailbox and mailbox.password == password else None

    def handle(self, auth: str | Principal | None, body: bytes) -> tuple[int, bytes]:
        if self.latency:
            time.sleep(self.latency)
        user = auth.mailbox if isinstance(auth, Principal) else self._authenticate(auth or "")
        if user is None:
            return 401, b""
        root = etree.fromstring(body)
        asked = root.find("s:Header/t:RequestServerVersion", NS)
        if (
            self.dialect == "Exchange2007_SP1"
            and asked is not None
            and (asked.get("Version") not in ("Exchange2007", "Exchange2007_SP1"))
        ):
            # Exchange 2007 knows no later version names: the request fails schema validation.
            return 500, SCHEMA_FAULT.replace("{version}", escape(asked.get("Version", ""))).encode()
        request = root.find("s:Body", NS)[0]
        operation = etree.QName(request).localname
        address = self._target_address(root, request)
        mailbox = self.mailboxes.get(address.lower()) if address else user
        handler = getattr(self, f"op_{operation}", None)
        if mailbox is None:
            # Exchange answers for an SMTP address it has no mailbox for; it never falls back
            # to the signed-in user's own mailbox.
            inner = error_message(
                operation, "ErrorNonExistentMailbox",
                "The SMTP address has no mailbox associated with it.",
                _ERROR_EXTRAS.get(operation, ""),
            )  # fmt: skip
        elif handler is None:
            inner = error_message(operation, "ErrorInvalidRequest", f"{operation} not supported")
        else:
            inner = handler(mailbox, request)
        payload = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f'<s:Envelope xmlns:s="{S}" xmlns:m="{M}" xmlns:t="{T}"><s:Header>'
            f"<t:ServerVersionInfo {VERSIONS[self.dialect]}/></s:Header><s:Body>"
            f"<m:{operation}Response><m:ResponseMessages>{inner}</m:ResponseMessages>"
            f"</m:{operation}Response></s:Body></s:Envelope>"
        ).encode()
        self._count(operation)
        with self._lock:
            self.last_error_codes[operation] = _ERROR_CODE.findall(inner)
            self.bytes_in += len(body)
            self.bytes_out += len(payload)
        return 200, payload

    def _target_address(self, root, request) -> str | None:
        """The SMTP address the request names (delegate access or impersonation), if any."""
        address = request.find(".//t:Mailbox/t:EmailAddress", NS)
        if address is None:
            address = root.find(".//t:ExchangeImpersonation//t:PrimarySmtpAddress", NS)
        return address.text.strip() if address is not None and address.text else None

    # --- operations -----------------------------------------------------------------------

    def op_GetFolder(self, mailbox: Mailbox, request) -> str:  # noqa: N802
        parts = []
        for folder in request.find("m:FolderIds", NS):
            name = folder.get("Id")
            if etree.QName(folder).localname == "FolderId":
                name = "calendar" if name == CALENDAR_ID else "root"
            if name == "calendar" and not mailbox.calendar_access:
                parts.append(error_message("GetFolder", "ErrorAccessDenied", "Access is denied.",
                                           "<m:Folders/>"))  # fmt: skip
                continue
            if name == "calendar":
                count = len(mailbox.store)
                xml = (f'<t:CalendarFolder><t:FolderId Id="{CALENDAR_ID}" ChangeKey="AQ=="/>'
                       "<t:FolderClass>IPF.Appointment</t:FolderClass>"
                       f"<t:DisplayName>Calendar</t:DisplayName><t:TotalCount>{count}</t:TotalCount>"
                       "<t:ChildFolderCount>0</t:ChildFolderCount></t:CalendarFolder>")  # fmt: skip
            else:
                xml = (f'<t:Folder><t:FolderId Id="{ROOT_ID}" ChangeKey="AQ=="/>'
                       "<t:DisplayName>Root</t:DisplayName><t:TotalCount>0</t:TotalCount>"
                       "<t:ChildFolderCount>1</t:ChildFolderCount></t:Folder>")  # fmt: skip
            parts.append(
                '<m:GetFolderResponseMessage ResponseClass="Success"><m:ResponseCode>NoError'
                f"</m:ResponseCode><m:Folders>{xml}</m:Folders></m:GetFolderResponseMessage>"
            )
        return "".join(parts)

    def op_FindItem(self, mailbox: Mailbox, request) -> str:  # noqa: N802
        if not mailbox.calendar_access:
            return error_message("FindItem", "ErrorAccessDenied", "Access is denied.")
        view = request.find("m:CalendarView", NS)
        fields = self._fields(request)
        if view is None:
            items = sorted((mailbox.get(i.item_id) for i in mailbox.items()), key=lambda i: i.start)
            restriction = request.find("m:Restriction", NS)
            if restriction is not None:
                items = [item for item in items if matches(item, restriction)]
            paging = request.find("m:IndexedPageItemView", NS)
            offset = int(paging.get("Offset", "0")) if paging is not None else 0
            size = paging.get("MaxEntriesReturned") if paging is not None else None
            limit = min(int(size) if size else self.max_view_items, self.max_view_items)
            total = len(items)
            items = items[offset : offset + limit]
            last = offset + len(items) >= total
            body = "".join(self.item_xml(i, fields) for i in items)
            return (
                '<m:FindItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError'
                f'</m:ResponseCode><m:RootFolder IndexedPagingOffset="{offset + len(items)}" '
                f'TotalItemsInView="{total}" IncludesLastItemInRange="{str(last).lower()}">'
                f"<t:Items>{body}</t:Items></m:RootFolder></m:FindItemResponseMessage>"
            )
        else:
            start, end = parse_dt(view.get("StartDate")), parse_dt(view.get("EndDate"))
            if (end - start).days > 731:
                return error_message("FindItem", "ErrorCalendarViewRangeTooBig",
                                     "The calendar view range is too big.")  # fmt: skip
            items = mailbox.occurrences(start, end)
            maximum = view.get("MaxEntriesReturned")
            if maximum is None and len(items) > self.max_view_items:
                return error_message("FindItem", "ErrorExceededFindCountLimit",
                                     "The view exceeded the find count limit.")  # fmt: skip
            limit = min(int(maximum or self.max_view_items), self.max_view_items)
            last = len(items) <= limit
            # TotalItemsInView counts the whole view, also when MaxEntriesReturned cuts the
            # answer short (Microsoft's documented answer: 5 items of TotalItemsInView="33")
            total = len(items)
            items = items[:limit]
        body = "".join(self.item_xml(i, fields) for i in items)
        return (
            '<m:FindItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError'
            f'</m:ResponseCode><m:RootFolder TotalItemsInView="{total}" '
            f'IncludesLastItemInRange="{str(last).lower()}"><t:Items>{body}</t:Items>'
            "</m:RootFolder></m:FindItemResponseMessage>"
        )

    def op_GetItem(self, mailbox: Mailbox, request) -> str:  # noqa: N802
        fields = self._fields(request)
        parts = []
        for ref in request.find("m:ItemIds", NS):
            if not mailbox.calendar_access:
                parts.append(error_message("GetItem", "ErrorAccessDenied", "Access is denied.",
                                           "<m:Items/>"))  # fmt: skip
                continue
            item_id = resolve_ref(mailbox, ref)
            item = mailbox.get(item_id) if item_id else None
            if item is None:
                parts.append(
                    self._not_found("GetItem", mailbox, item_id or ref.get("Id"), "<m:Items/>")
                )
                continue
            parts.append(
                '<m:GetItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError'
                f"</m:ResponseCode><m:Items>{self.item_xml(item, fields)}</m:Items>"
                "</m:GetItemResponseMessage>"
            )
        return "".join(parts)

    def op_SyncFolderItems(self, mailbox: Mailbox, request) -> str:  # noqa: N802
        if not mailbox.calendar_access:
            return error_message("SyncFolderItems", "ErrorAccessDenied", "Access is denied.",
                                 _ERROR_EXTRAS["SyncFolderItems"])  # fmt: skip
        state = request.find("m:SyncState", NS)
        since = 0
        if state is not None and state.text:
            try:
                epoch, _, number = base64.b64decode(state.text).decode().partition(":")
                since = int(number)
            except ValueError:
                epoch = None
            if epoch != mailbox.epoch:
                # Exchange still sends an empty SyncState (exchangelib reads it before the error)
                return error_message(
                    "SyncFolderItems", "ErrorInvalidSyncStateData",
                    "Synchronization state data is corrupt or otherwise invalid.",
                    _ERROR_EXTRAS["SyncFolderItems"],
                )  # fmt: skip
        maximum = int(request.findtext("m:MaxChangesReturned", "512", NS))
        if self.sync_page_cap:  # a server that hands out fewer changes a page than asked
            maximum = min(maximum, self.sync_page_cap)
        changes, current = mailbox.changes_since(since)
        page, last = changes[:maximum], len(changes) <= maximum
        if not last:  # the state after the page: the last change of the page's last item
            current = page[-1][2]
        page = [(kind, item_id) for kind, item_id, _ in page]
        fields = self._fields(request)
        body = []
        for kind, item_id in page:
            if kind == "Delete":
                body.append(f'<t:Delete><t:ItemId Id="{item_id}" ChangeKey="AA=="/></t:Delete>')
            elif kind == "ReadFlagChange":
                is_read = str(mailbox.is_read.get(item_id, True)).lower()
                body.append(
                    f'<t:ReadFlagChange><t:ItemId Id="{item_id}" ChangeKey='
                    f'"{mailbox.change_key_of(item_id)}"/><t:IsRead>{is_read}</t:IsRead>'
                    "</t:ReadFlagChange>"
                )
            else:
                item = mailbox.get(item_id)
                body.append(f"<t:{kind}>{self.item_xml(item, fields)}</t:{kind}>")
        token = base64.b64encode(f"{mailbox.epoch}:{current}".encode()).decode()
        return (
            '<m:SyncFolderItemsResponseMessage ResponseClass="Success"><m:ResponseCode>NoError'
            f"</m:ResponseCode><m:SyncState>{token}</m:SyncState><m:IncludesLastItemInRange>"
            f"{str(last).lower()}</m:IncludesLastItemInRange><m:Changes>{''.join(body)}"
            "</m:Changes></m:SyncFolderItemsResponseMessage>"
        )

    def op_CreateItem(self, mailbox: Mailbox, request) -> str:  # noqa: N802
        parts = []
        for element in request.find("m:Items", NS):
            if not mailbox.calendar_access:
                parts.append(error_message("CreateItem", "ErrorAccessDenied", "Access is denied.",
                                           "<m:Items/>"))  # fmt: skip
                continue
            fields = fields_of(element)
            item_id = mailbox.create(
                subject=fields.pop("subject", ""),
                start=fields.pop("start"),
                end=fields.pop("end"),
                **{"timezone": "UTC", "reminder_minutes": None, **fields},
            )
            item = mailbox.get(item_id)
            parts.append(
                '<m:CreateItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError'
                f'</m:ResponseCode><m:Items><t:CalendarItem><t:ItemId Id="{item.item_id}" '
                f'ChangeKey="{item.change_key}"/></t:CalendarItem></m:Items>'
                "</m:CreateItemResponseMessage>"
            )
        return "".join(parts)

    def op_UpdateItem(self, mailbox: Mailbox, request) -> str:  # noqa: N802
        overwrite = request.get("ConflictResolution", "AutoResolve") == "AlwaysOverwrite"
        parts = []
        for change in request.find("m:ItemChanges", NS):
            ref = change.find("t:ItemId", NS)
            if ref is None:
                ref = change.find("t:OccurrenceItemId", NS)
            item_id = resolve_ref(mailbox, ref)
            current = mailbox.change_key_of(item_id) if item_id else None
            if current is None or not mailbox.calendar_access:
                code = "ErrorItemNotFound" if current is None else "ErrorAccessDenied"
                parts.append(error_message("UpdateItem", code, "The item cannot be updated.",
                                           "<m:Items/>"))  # fmt: skip
                continue
            if ref.get("ChangeKey") and ref.get("ChangeKey") != current and not overwrite:
                parts.append(error_message(
                    "UpdateItem", "ErrorIrresolvableConflict",
                    "The send or update operation could not be performed because the change key "
                    "passed in the request does not match the current change key for the item.",
                    "<m:Items/>",
                ))  # fmt: skip
                continue
            fields: dict = {}
            for update in change.find("t:Updates", NS):
                kind = etree.QName(update).localname
                uri = update.find("t:FieldURI", NS)
                if kind == "DeleteItemField" and uri is not None and uri.get("FieldURI") in CLEARED:
                    name, value = CLEARED[uri.get("FieldURI")]
                    fields[name] = value
                elif kind in ("SetItemField", "AppendToItemField"):
                    fields.update(fields_of(update.find("t:CalendarItem", NS)))
            master, original = mailbox.resolve_occurrence(item_id)
            if master is not None:  # an edited occurrence becomes an exception
                item_id = mailbox.modify_occurrence(master.item_id, original, **fields)
            else:
                mailbox.update(item_id, **fields)
            item = mailbox.get(item_id)
            parts.append(
                '<m:UpdateItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError'
                f'</m:ResponseCode><m:Items><t:CalendarItem><t:ItemId Id="{item.item_id}" '
                f'ChangeKey="{item.change_key}"/></t:CalendarItem></m:Items><m:ConflictResults>'
                "<t:Count>0</t:Count></m:ConflictResults></m:UpdateItemResponseMessage>"
            )
        return "".join(parts)

    def op_DeleteItem(self, mailbox: Mailbox, request) -> str:  # noqa: N802
        parts = []
        for ref in request.find("m:ItemIds", NS):
            item_id = resolve_ref(mailbox, ref)
            if item_id is None or mailbox.get(item_id) is None:
                parts.append(self._not_found("DeleteItem", mailbox, item_id or ref.get("Id")))
                continue
            mailbox.delete(item_id)
            parts.append(
                '<m:DeleteItemResponseMessage ResponseClass="Success"><m:ResponseCode>NoError'
                "</m:ResponseCode></m:DeleteItemResponseMessage>"
            )
        return "".join(parts)

    @staticmethod
    def _not_found(operation: str, mailbox: Mailbox, item_id: str, inner: str = "") -> str:
        """The error for an id the mailbox does not have: an occurrence deleted from its series
        has its own code (ErrorCalendarOccurrenceIsDeletedFromRecurrence), as in Exchange."""
        if mailbox.is_deleted_occurrence(item_id):
            return error_message(
                operation, "ErrorCalendarOccurrenceIsDeletedFromRecurrence",
                "Occurrence with this index was previously deleted from the recurrence.", inner,
            )  # fmt: skip
        return error_message(operation, "ErrorItemNotFound",
                             "The specified object was not found in the store.", inner)  # fmt: skip

    # --- serialisation --------------------------------------------------------------------

    def _occurrence_info(self, master: Item, want) -> list[str]:
        """FirstOccurrence, LastOccurrence, ModifiedOccurrences, DeletedOccurrences of a master
        (a series without an end has no LastOccurrence)."""
        mailbox = next((m for m in self.mailboxes.values() if master.item_id in m.store), None)
        if mailbox is None:
            return []
        rule = master.recurrence
        bounded = bool(rule.get("end") or rule.get("count"))
        horizon = master.start + timedelta(days=366 * 5)
        originals = mailbox.expand(master.item_id, horizon)
        live = [o for o in originals if o not in master.deleted]

        def info(tag: str, original: datetime) -> str:
            occurrence = mailbox.instance(mailbox.store[master.item_id], original)
            return (
                f'<t:{tag}><t:ItemId Id="{occurrence.item_id}" ChangeKey="{occurrence.change_key}"/>'
                f"<t:Start>{utc(occurrence.start)}</t:Start><t:End>{utc(occurrence.end)}</t:End>"
                f"<t:OriginalStart>{utc(original)}</t:OriginalStart></t:{tag}>"
            )

        out = []
        if want("calendar:FirstOccurrence") and live:
            out.append(info("FirstOccurrence", live[0]))
        if want("calendar:LastOccurrence") and live and bounded:
            out.append(info("LastOccurrence", live[-1]))
        modified = sorted(o for o in master.modified if o in live)
        if want("calendar:ModifiedOccurrences") and modified:
            inner = "".join(info("Occurrence", o) for o in modified)
            out.append(f"<t:ModifiedOccurrences>{inner}</t:ModifiedOccurrences>")
        if want("calendar:DeletedOccurrences") and master.deleted:
            inner = "".join(
                f"<t:DeletedOccurrence><t:Start>{utc(o)}</t:Start></t:DeletedOccurrence>"
                for o in sorted(master.deleted)
            )
            out.append(f"<t:DeletedOccurrences>{inner}</t:DeletedOccurrences>")
        return out

    def _fields(self, request) -> set[str] | None:
        """FieldURIs asked for; None = all properties. Notes the BodyType asked for."""
        shape = request.find(".//m:ItemShape", NS)
        self._body_type = "Best"
        if shape is None:
            return None
        self._body_type = shape.findtext("t:BodyType", "Best", NS)
        base = shape.findtext("t:BaseShape", "AllProperties", NS)
        asked = {f.get("FieldURI") for f in shape.iterfind(".//t:FieldURI", NS)}
        asked |= {f"ext|{extended_key(f)}" for f in shape.iterfind(".//t:ExtendedFieldURI", NS)}
        return None if base in ("AllProperties", "Default") and not asked else asked

    def item_xml(self, item: Item, fields: set[str] | None) -> str:
        def want(uri: str) -> bool:
            return fields is None or uri in fields

        out = [f'<t:ItemId Id="{item.item_id}" ChangeKey="{item.change_key}"/>']
        if want("item:Subject"):
            out.append(f"<t:Subject>{escape(item.subject)}</t:Subject>")
        if want("item:Sensitivity"):
            out.append(f"<t:Sensitivity>{item.sensitivity}</t:Sensitivity>")
        if want("item:Body"):
            body_type, body = item.body_type, item.body or ""
            if self._body_type == "Text" and body_type == "HTML":
                body_type, body = "Text", html_to_plain(body)
            elif self._body_type == "HTML" and body_type == "Text":
                body_type, body = "HTML", f"<html><body><pre>{escape(body)}</pre></body></html>"
            out.append(f'<t:Body BodyType="{body_type}">{escape(body)}</t:Body>')
        if want("item:Categories") and item.categories:
            strings = "".join(f"<t:String>{escape(c)}</t:String>" for c in item.categories)
            out.append(f"<t:Categories>{strings}</t:Categories>")
        if want("item:ReminderIsSet"):
            out.append(
                f"<t:ReminderIsSet>{str(item.reminder_minutes is not None).lower()}</t:ReminderIsSet>"
            )
        if want("item:ReminderMinutesBeforeStart"):
            out.append(
                f"<t:ReminderMinutesBeforeStart>{item.reminder_minutes or 0}</t:ReminderMinutesBeforeStart>"
            )
        for key in sorted(k for k in fields or () if k.startswith("ext|")):
            # a named property is returned only when asked for by its ExtendedFieldURI
            value = item.extended.get(key[4:])
            if value is not None:
                property_set, _, name = key[4:].partition(":")
                out.append(
                    f'<t:ExtendedProperty><t:ExtendedFieldURI DistinguishedPropertySetId="'
                    f'{property_set}" PropertyName="{escape(name)}" PropertyType="String"/>'
                    f"<t:Value>{escape(value)}</t:Value></t:ExtendedProperty>"
                )
        if want("item:LastModifiedTime"):
            out.append(f"<t:LastModifiedTime>{utc(item.last_modified)}</t:LastModifiedTime>")
        if want("calendar:UID") and item.uid:
            out.append(f"<t:UID>{escape(item.uid)}</t:UID>")
        if want("calendar:RecurrenceId") and item.recurrence_id:
            out.append(f"<t:RecurrenceId>{utc(item.recurrence_id)}</t:RecurrenceId>")
        if want("calendar:Start"):
            out.append(f"<t:Start>{utc(item.start)}</t:Start>")
        if want("calendar:End"):
            out.append(f"<t:End>{utc(item.end)}</t:End>")
        if want("calendar:IsAllDayEvent"):
            out.append(f"<t:IsAllDayEvent>{str(item.is_all_day).lower()}</t:IsAllDayEvent>")
        if want("calendar:LegacyFreeBusyStatus"):
            out.append(f"<t:LegacyFreeBusyStatus>{item.legacy_free_busy}</t:LegacyFreeBusyStatus>")
        if want("calendar:Location"):
            out.append(f"<t:Location>{escape(item.location or '')}</t:Location>")
        if want("calendar:IsMeeting"):
            out.append(f"<t:IsMeeting>{str(item.organizer is not None).lower()}</t:IsMeeting>")
        if want("calendar:IsCancelled"):
            out.append(f"<t:IsCancelled>{str(item.is_cancelled).lower()}</t:IsCancelled>")
        if want("calendar:IsRecurring"):
            # Exchange answers false for the master itself, true for its occurrences/exceptions
            recurring = item.item_type in ("Occurrence", "Exception")
            out.append(f"<t:IsRecurring>{str(recurring).lower()}</t:IsRecurring>")
        if want("calendar:CalendarItemType"):
            out.append(f"<t:CalendarItemType>{item.item_type}</t:CalendarItemType>")
        out.extend(meeting_xml(item, want))
        if want("calendar:TimeZone") and item.zone_on_wire != "none":
            name = display_name(item.timezone, item.timezone_rules, item.timezone_name)
            out.append(f"<t:TimeZone>{escape(name)}</t:TimeZone>")
        if want("calendar:AppointmentState"):
            out.append(f"<t:AppointmentState>{appointment_state(item)}</t:AppointmentState>")
        if want("calendar:Recurrence") and item.recurrence:
            out.append(recurrence_xml.render(item.recurrence))
        if item.item_type == "RecurringMaster":
            out.extend(self._occurrence_info(item, want))
        if item.zone_on_wire != "full":
            pass  # Exchange 2019 omits StartTimeZone in some answers
        elif self.dialect == "Exchange2007_SP1":
            if want("calendar:MeetingTimeZone"):
                out.append(f'<t:MeetingTimeZone TimeZoneName="{escape(item.timezone)}"/>')
        else:
            year = item.start.astimezone(zone_of(item.timezone, item.timezone_rules)).year
            for tag in ("StartTimeZone", "EndTimeZone"):
                if want(f"calendar:{tag}"):
                    out.append(
                        definition_xml(
                            tag, item.timezone, item.timezone_rules, year, item.timezone_name
                        )
                    )
        return f"<t:CalendarItem>{''.join(out)}</t:CalendarItem>"


__all__ = ["EwsSimulator", "zone_of"]
