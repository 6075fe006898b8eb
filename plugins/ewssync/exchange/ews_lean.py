"""A lean reading of the hot answers (GetItem, FindItem with a CalendarView, SyncFolderItems):
calendar items straight from the XML, without exchangelib's per-item object building.

Why: profiling the initial sync (cProfile, 2,000 items from the out-of-process simulator) put
~85 % of the client's CPU in exchangelib's ``CalendarItem.from_xml`` (field objects, EWSTimeZone
per item, strptime). Requests, retries, throttling, sessions, per-item errors, the
incomplete-answer checks (ews_patches) all stay exchangelib's: only the step from a
``<t:CalendarItem>`` element to an item is replaced, while reading, by ``LeanItem`` -- an object
with exactly the attributes ``ews.EwsCalendar`` reads, holding exactly the values exchangelib
would give them (same defaults, same text-to-value rules, same all-day reading via
``ews_patches.all_day_reading``, same zones via ``ews_patches.server_zone``), so both readings
produce the same records (tests/integration/test_ews_lean.py compares them).

Switched by the connection setting ``lean_parser`` (on by default).
"""

from __future__ import annotations

import copy
import threading
from datetime import UTC, datetime

from exchangelib import CalendarItem
from exchangelib.properties import Body, HTMLBody
from exchangelib.services import GetItem, SyncFolderItems
from exchangelib.services.find_item import FindItem
from exchangelib.util import MNS, TNS
from lxml import etree

from ewssync.exchange.ews_patches import all_day_reading, server_zone, thread_value
from ewssync.exchange.ews_write import AppointmentStamp

_T = f"{{{TNS}}}"
_CALENDAR_ITEM = f"{_T}CalendarItem"
_ITEM_ID = f"{_T}ItemId"
_ITEM_TYPE = f"{_T}CalendarItemType"
_LAST_MODIFIED = f"{_T}LastModifiedTime"
_M_ITEM_IDS = f"{{{MNS}}}ItemIds"
_CREATE_OR_UPDATE = (f"{_T}Create", f"{_T}Update")
_BOOL = {"true": True, "on": True, "false": False, "off": False}  # exchangelib's; else None


class LeanItem:
    """A calendar item as ews.EwsCalendar reads it (exchangelib's attribute names). Unset
    attributes read the class's defaults: an item costs only what its answer carries."""

    FIELDS = (
        "id", "changekey", "type", "subject", "location", "body", "uid", "recurrence_id",
        "start", "end", "is_all_day", "sensitivity", "reminder_is_set",
        "reminder_minutes_before_start", "legacy_free_busy_status", "categories",
        "last_modified_time", "is_recurring", "is_cancelled", "my_response_type", "organizer",
        "ewssync_zone_name", "ewssync_stamp", "_start_timezone", "_meeting_timezone",
        "_end_timezone", "_ewssync_instants", "_ewssync_display_zone",
    )  # fmt: skip


class LeanChange:
    """A created or updated item as SyncFolderItems reports it to ews.EwsCalendar.sync_changes
    (IdOnly, the item type and when it last changed: exchangelib's CalendarItem builds every
    field of the model for each change, 8 of the 9 s of client CPU of draining a 7,300-item
    folder)."""

    __slots__ = ("id", "changekey", "type", "last_modified_time")

    def __init__(self, elem, reader: Reader) -> None:
        self.id = self.changekey = self.type = self.last_modified_time = None
        for child in elem:
            if child.tag == _ITEM_ID:
                self.id = child.get("Id") or None
                self.changekey = child.get("ChangeKey") or None
            elif child.tag == _ITEM_TYPE:
                self.type = child.text or None
            elif child.tag == _LAST_MODIFIED and child.text:
                self.last_modified_time = reader.instant(child.text)


class Organizer:
    __slots__ = ("email_address",)

    def __init__(self, email_address: str | None):
        self.email_address = email_address


# exchangelib's defaults for a field the answer does not carry (or carries empty)
_DEFAULTS = {
    name: CalendarItem.get_field_by_fieldname(name).default
    for name in LeanItem.FIELDS
    if not name.startswith("_ewssync") and name not in ("ewssync_stamp",)
}
_DEFAULTS["ewssync_stamp"] = None
_DEFAULTS["_ewssync_instants"] = None
_DEFAULTS["_ewssync_display_zone"] = None
for _name, _default in _DEFAULTS.items():
    setattr(LeanItem, _name, _default)

_TEXT = {  # element -> attribute, text as exchangelib keeps it (empty -> the default)
    "Subject": "subject", "Location": "location", "UID": "uid", "CalendarItemType": "type",
    "Sensitivity": "sensitivity", "LegacyFreeBusyStatus": "legacy_free_busy_status",
    "MyResponseType": "my_response_type", "TimeZone": "ewssync_zone_name",
}  # fmt: skip
_FLAG = {
    "IsAllDayEvent": "is_all_day", "ReminderIsSet": "reminder_is_set",
    "IsRecurring": "is_recurring", "IsCancelled": "is_cancelled",
}  # fmt: skip
_INSTANT = {
    "Start": "start", "End": "end", "RecurrenceId": "recurrence_id",
    "LastModifiedTime": "last_modified_time",
}  # fmt: skip
_ZONE = {
    "StartTimeZone": "_start_timezone", "EndTimeZone": "_end_timezone",
    "MeetingTimeZone": "_meeting_timezone",
}  # fmt: skip
# every element read, by its full tag: (how it is read, the attribute it sets)
_READS = {
    **{f"{_T}{tag}": ("text", name) for tag, name in _TEXT.items()},
    **{f"{_T}{tag}": ("flag", name) for tag, name in _FLAG.items()},
    **{f"{_T}{tag}": ("instant", name) for tag, name in _INSTANT.items()},
    **{f"{_T}{tag}": ("zone", name) for tag, name in _ZONE.items()},
    _ITEM_ID: ("id", None),
    f"{_T}Body": ("body", "body"),
    f"{_T}ReminderMinutesBeforeStart": ("minutes", "reminder_minutes_before_start"),
    f"{_T}Categories": ("categories", "categories"),
    f"{_T}Organizer": ("organizer", "organizer"),
    f"{_T}ExtendedProperty": ("extended", None),
}
_SKIP = (None, None)
# a zone definition's Period biases, compiled once (plain strings: no reference to the tree)
_PERIOD_BIASES = etree.XPath("t:Periods/t:Period/@Bias", namespaces={"t": TNS}, smart_strings=False)
_STRING, _MAILBOX, _EMAIL_ADDRESS = f"{_T}String", f"{_T}Mailbox", f"{_T}EmailAddress"
_STAMP_NAME = AppointmentStamp.property_name
_STAMP_SET = AppointmentStamp.distinguished_property_set_id


class ZoneCache:
    """server_zone() per distinct zone the answers name: building an EWSTimeZone is the costly
    part. The key is everything the zone is read from -- id, display name, the definition's
    period offsets -- and the fallback, so two definitions that differ never share a zone."""

    def __init__(self) -> None:
        self._zones: dict = {}
        self._lock = threading.Lock()

    def zone(self, elem, fallback: str):
        raw = elem.get("Id") or elem.get("TimeZoneName") or elem.get("Name")
        # the raw Bias texts: server_zone's reading of them is part of what is cached
        periods = tuple(_PERIOD_BIASES(elem))
        key = (raw, elem.get("Name"), periods, fallback)
        zone = self._zones.get(key)
        if zone is None and key not in self._zones:
            from ewssync.exchange.ews_patches import _bias_offset

            offsets = [o for bias in periods if (o := _bias_offset(bias)) is not None]
            zone = server_zone(raw, fallback, display=elem.get("Name"), periods=offsets)
            with self._lock:
                self._zones[key] = zone
        return zone


class Reader:
    """Reads ``<t:CalendarItem>`` elements of one account's answers into LeanItems."""

    def __init__(self, account) -> None:
        self.default_timezone = account.default_timezone
        self.fallback = account.default_timezone.key
        self.zones = ZoneCache()

    def item(self, elem) -> LeanItem:
        item = LeanItem()
        for child in elem:
            kind, name = _READS.get(child.tag, _SKIP)
            if kind is None:
                continue
            if kind == "id":
                item.id = child.get("Id") or None
                item.changekey = child.get("ChangeKey") or None
                continue
            if kind == "zone":
                setattr(item, name, self.zones.zone(child, self.fallback))
                continue
            if kind == "categories":
                item.categories = [s.text for s in child.iterfind(_STRING) if s.text is not None]
                continue
            if kind == "organizer":
                mailbox = child.find(_MAILBOX)
                if mailbox is not None:
                    address = mailbox.find(_EMAIL_ADDRESS)
                    item.organizer = Organizer(
                        (address.text or None) if address is not None else None
                    )
                continue
            if kind == "extended":
                self._extended(item, child)
                continue
            text = child.text or None  # empty text: the default, as exchangelib keeps it
            if text is None:
                continue
            if kind == "text":
                setattr(item, name, text)
            elif kind == "flag":
                setattr(item, name, _BOOL.get(text.lower()))
            elif kind == "instant":
                setattr(item, name, self.instant(text))
            elif kind == "body":
                item.body = {"HTML": HTMLBody, "Text": Body}[child.get("BodyType")](text)
            elif kind == "minutes":
                try:
                    item.reminder_minutes_before_start = int(text)
                except ValueError:
                    item.reminder_minutes_before_start = None
        if item.is_all_day and isinstance(item.start, datetime) and isinstance(item.end, datetime):
            start, end, first, last, display_zone = all_day_reading(
                item.start, item.end, (item._start_timezone, item._meeting_timezone),
                item.ewssync_zone_name, self.default_timezone,
            )  # fmt: skip
            item._ewssync_instants = (start, end)
            item._ewssync_display_zone = display_zone
            item.start, item.end = first, last
        return item

    def instant(self, text: str) -> datetime | None:
        """exchangelib's EWSDateTime.from_string, as DateTimeField reads it: 'Z' (whole
        seconds), an offset, or naive (in the account's zone); None if it cannot be read."""
        try:
            if text.endswith("Z"):
                if len(text) == 20 and text[10] == "T":
                    return datetime.fromisoformat(text)  # "Z": tzinfo is datetime.UTC
                return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            if len(text) == 19:
                local = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S")
                return local.replace(tzinfo=self.default_timezone)
            return datetime.fromisoformat(text).astimezone(UTC)
        except ValueError:
            return None

    @staticmethod
    def _extended(item: LeanItem, elem) -> None:
        uri = elem.find(f"{_T}ExtendedFieldURI")
        if uri is None or uri.get("PropertyName") != _STAMP_NAME:
            return
        if uri.get("DistinguishedPropertySetId") != _STAMP_SET:
            return
        value = elem.find(f"{_T}Value")
        item.ewssync_stamp = (value.text if value is not None else None) or ""


# --- switching exchangelib's element-to-object step, per thread ---------------------------------

_READING = threading.local()


def lean_reading(reader: Reader):
    """Within this block (this thread only), GetItem and FindItem answers' calendar items
    become LeanItems and SyncFolderItems' created or updated ones LeanChanges; everything else
    is exchangelib's as usual."""
    return thread_value(_READING, "reader", reader)


# GetItem's payload without ids, by (shape, server version): (its additional fields, element)
_PAYLOADS: dict = {}


def _install() -> None:
    for service in (GetItem, FindItem):
        original = service._elem_to_obj
        if getattr(original, "_ewssync_lean", False):
            continue

        def _elem_to_obj(self, elem, _original=original):
            reader = getattr(_READING, "reader", None)
            if reader is not None and elem.tag == _CALENDAR_ITEM:
                return reader.item(elem)
            return _original(self, elem)

        _elem_to_obj._ewssync_lean = True
        service._elem_to_obj = _elem_to_obj
    original_payload = GetItem.get_payload
    if not getattr(original_payload, "_ewssync_lean", False):

        def get_payload(self, items, additional_fields, shape, _original=original_payload):
            items = list(items)
            reader = getattr(_READING, "reader", None)
            if reader is None or not all(isinstance(i, tuple) and len(i) == 2 for i in items):
                return _original(self, items, additional_fields, shape)
            # the same <m:ItemIds> exchangelib writes for (id, change key) pairs, without an
            # ItemId object and its validation per id (2 of the 6 s of client CPU of
            # fetching 10,000 items went there)
            # the request's shape, built once per shape, fields and server version (a
            # quarter second per 10,000 items fetched), copied for each request
            version = self.account.version
            key = (shape, str(version.build), version.api_version)
            cached = _PAYLOADS.get(key)
            if cached is None or cached[0] is not additional_fields:
                cached = _PAYLOADS[key] = (
                    additional_fields,
                    _original(self, [], additional_fields, shape),
                )
            payload = copy.deepcopy(cached[1])
            ids = payload.find(_M_ITEM_IDS)
            for item_id, change_key in items:
                attrs = (
                    {"Id": item_id}
                    if change_key is None
                    else {"Id": item_id, "ChangeKey": change_key}
                )
                etree.SubElement(ids, _ITEM_ID, attrs)
            return payload

        get_payload._ewssync_lean = True
        GetItem.get_payload = get_payload
    original_change = SyncFolderItems._elem_to_obj
    if getattr(original_change, "_ewssync_lean", False):
        return

    def _change_to_obj(self, elem, _original=original_change):
        reader = getattr(_READING, "reader", None)
        if (
            reader is not None
            and elem.tag in _CREATE_OR_UPDATE
            and len(elem)
            and elem[0].tag == _CALENDAR_ITEM
        ):
            return self.change_types_map[elem.tag], LeanChange(elem[0], reader)
        return _original(self, elem)

    _change_to_obj._ewssync_lean = True
    SyncFolderItems._elem_to_obj = _change_to_obj


_install()
