"""The mailbox model (tests/ewssim/mailbox.py) as Microsoft Graph ``event`` JSON: ids, types,
times in the zone the client prefers, bodies in the content type it prefers, $select."""

from __future__ import annotations

import base64
import re
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from tests.ewssim.mailbox import GLOBAL_OBJECT_ID_CLASS, Item, Mailbox
from tests.ewssim.server import html_to_plain
from tests.ewssim.zones import WINDOWS_ZONES, zone_of

# The stamp push keeps on an item: the same named property EWS writes (PublicStrings
# ewssyncAppointmentId), addressed as Graph names a named string property.
PUBLIC_STRINGS = "{00020329-0000-0000-C000-000000000046}"
STAMP_PROPERTY_ID = f"String {PUBLIC_STRINGS} Name ewssyncAppointmentId"
STAMP_KEY = "PublicStrings:ewssyncAppointmentId"  # the model's key (tests/ewssim)
_NAMED = re.compile(r"^String \{00020329-0000-0000-C000-000000000046\} Name (\S+)$", re.I)


def extended_key(property_id: str) -> str | None:
    """A named string property's Graph id -> the model's key ("PublicStrings:Name")."""
    match = _NAMED.match(property_id.strip())
    return f"PublicStrings:{match.group(1)}" if match else None


TYPES = {"Single": "singleInstance", "Occurrence": "occurrence", "Exception": "exception",
         "RecurringMaster": "seriesMaster"}  # fmt: skip
SENSITIVITY = {"Normal": "normal", "Personal": "personal", "Private": "private",
               "Confidential": "confidential"}  # fmt: skip
SHOW_AS = {"Free": "free", "Tentative": "tentative", "Busy": "busy", "OOF": "oof",
           "WorkingElsewhere": "workingElsewhere", "NoData": "unknown"}  # fmt: skip
RESPONSES = {"Organizer": "organizer", "Accept": "accepted", "Tentative": "tentativelyAccepted",
             "Decline": "declined", "NoResponseReceived": "notResponded", "Unknown": "none"}  # fmt: skip
NEVER = "0001-01-01T00:00:00Z"  # Graph's responseStatus.time when nobody answered

# Every property the simulator can send, in Graph's order (the answer without $select).
PROPERTIES = (
    "createdDateTime", "lastModifiedDateTime", "changeKey", "categories", "transactionId",
    "originalStartTimeZone", "originalEndTimeZone", "iCalUId", "reminderMinutesBeforeStart",
    "isReminderOn", "hasAttachments", "subject", "bodyPreview", "importance", "sensitivity",
    "isAllDay", "isCancelled", "isOrganizer", "responseRequested", "seriesMasterId", "showAs",
    "type", "webLink", "originalStart", "responseStatus", "body", "start", "end", "location",
    "locations", "recurrence", "attendees", "organizer",
)  # fmt: skip


GRAPH_ID_PREFIX = "AAMk"  # how Graph's REST ids of mailbox items begin


def graph_id(ews_id: str) -> str:
    """An item's Graph id: not its EWS id (the APIs' ids differ), URL-safe (no '/' in a path)."""
    return GRAPH_ID_PREFIX + ews_id.replace("+", "-").replace("/", "_")


def ews_id(graph_id_: str) -> str | None:
    """The model's id for a Graph id; None for an id not in Graph's form (an EWS id)."""
    if not graph_id_.startswith(GRAPH_ID_PREFIX):
        return None
    return graph_id_[len(GRAPH_ID_PREFIX) :].replace("-", "+").replace("_", "/")


def wall_clock(value: datetime) -> str:
    """dateTimeTimeZone.dateTime: local wall-clock time, seven fractional digits, no offset."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.0000000")


def instant(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def preferred_zone(name: str | None) -> tuple[str, ZoneInfo]:
    """The zone of ``Prefer: outlook.timezone`` (a Windows or an IANA name); UTC if none.

    :raises ValueError: a name Graph does not know.
    """
    if not name:
        return "UTC", ZoneInfo("UTC")
    if name in WINDOWS_ZONES:
        return name, ZoneInfo(WINDOWS_ZONES[name])
    try:
        return name, ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(name) from None


def ical_uid(item: Item) -> str | None:
    """iCalUId: unique per instance. For Exchange's own UIDs (a GlobalObjectId in hex) an
    occurrence's carries its original date in bytes 16-19 (year, month, day; [MS-OXOCAL]
    2.2.1.27); a series' and a single item's leave them zero."""
    uid = item.uid
    if uid is None or item.recurrence_id is None or not uid.startswith(GLOBAL_OBJECT_ID_CLASS):
        return uid
    day = item.recurrence_id.astimezone(UTC).date()
    stamp = f"{day.year:04X}{day.month:02X}{day.day:02X}"
    return uid[:32] + stamp + uid[40:]


def _times(item: Item, zone_name: str, zone: ZoneInfo) -> tuple[dict, dict]:
    if item.is_all_day:
        # all-day events are floating dates: midnights of the item's own local dates, labelled
        # with the zone the client asked for
        own = zone_of(item.timezone, item.timezone_rules)
        first: date = item.start.astimezone(own).date()
        after: date = item.end.astimezone(own).date()
        if after <= first:
            after = first + timedelta(days=1)
        return (
            {"dateTime": f"{first.isoformat()}T00:00:00.0000000", "timeZone": zone_name},
            {"dateTime": f"{after.isoformat()}T00:00:00.0000000", "timeZone": zone_name},
        )
    return (
        {"dateTime": wall_clock(item.start.astimezone(zone)), "timeZone": zone_name},
        {"dateTime": wall_clock(item.end.astimezone(zone)), "timeZone": zone_name},
    )


def original_zone(item: Item) -> str:
    """originalStartTimeZone: the Windows id; a customized zone is not one Graph can name."""
    if item.timezone in WINDOWS_ZONES:
        return item.timezone
    return "tzone://Microsoft/Custom"


def recurrence_json(rule: dict, zone: str) -> dict:
    """The model's recurrence as patternedRecurrence."""
    pattern_type = {
        "daily": "daily", "weekly": "weekly", "absolute_monthly": "absoluteMonthly",
        "relative_monthly": "relativeMonthly", "absolute_yearly": "absoluteYearly",
        "relative_yearly": "relativeYearly",
    }[rule["pattern"]]  # fmt: skip
    pattern: dict = {"type": pattern_type, "interval": int(rule.get("interval", 1)),
                     "month": 0, "dayOfMonth": 0, "firstDayOfWeek": "sunday",
                     "index": "first"}  # fmt: skip
    if rule.get("weekdays"):
        pattern["daysOfWeek"] = [d.lower() for d in rule["weekdays"]]
    if rule.get("day_of_month"):
        pattern["dayOfMonth"] = int(rule["day_of_month"])
    if rule.get("month"):
        pattern["month"] = int(rule["month"])
    if rule.get("week_index"):
        pattern["index"] = rule["week_index"].lower()
    start: date = rule["start"]
    rng = {"type": "noEnd", "startDate": start.isoformat(), "endDate": "0001-01-01",
           "recurrenceTimeZone": zone, "numberOfOccurrences": 0}  # fmt: skip
    if rule.get("end"):
        rng.update(type="endDate", endDate=rule["end"].isoformat())
    elif rule.get("count"):
        rng.update(type="numbered", numberOfOccurrences=int(rule["count"]))
    return {"pattern": pattern, "range": rng}


def to_event(
    item: Item,
    mailbox: Mailbox,
    *,
    zone_name: str = "UTC",
    zone: ZoneInfo | None = None,
    body_type: str | None = None,
    select: set[str] | None = None,
    expand_stamp: bool | list[str] = False,
) -> dict:
    """One item as a Graph event.

    :param body_type: ``Prefer: outlook.body-content-type`` ('html' or 'text'); None: html.
    :param select: $select's property names (None: all); ``id`` always comes.
    :param expand_stamp: the property ids of $expand=singleValueExtendedProperties($filter=id eq
        ...) (True: the stamp's).
    """
    zone = zone or ZoneInfo("UTC")

    def want(name: str) -> bool:
        return select is None or name in select

    event: dict = {"@odata.etag": f'W/"{item.change_key}"', "id": graph_id(item.item_id)}
    is_meeting = item.organizer is not None
    start, end = _times(item, zone_name, zone)
    content_type = "html" if (body_type or "html") == "html" else "text"
    body = item.body or ""
    if content_type == "text" and item.body_type == "HTML":
        body = html_to_plain(body)
    elif content_type == "html" and item.body_type != "HTML":
        escaped = body.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        body = f"<html><body><pre>{escaped}</pre></body></html>"
    master_id = None
    if item.item_type in ("Occurrence", "Exception"):
        raw = base64.b64decode(item.item_id).decode()
        master_id = graph_id(raw.split("|")[1])
    organizer_address = item.organizer or mailbox.email
    values = {
        "createdDateTime": instant(item.last_modified),
        "lastModifiedDateTime": instant(item.last_modified),
        "changeKey": item.change_key,
        "categories": list(item.categories),
        "transactionId": item.extended.get("graph:transactionId"),
        "originalStartTimeZone": original_zone(item),
        "originalEndTimeZone": original_zone(item),
        "iCalUId": ical_uid(item),
        "reminderMinutesBeforeStart": item.reminder_minutes or 0,
        "isReminderOn": item.reminder_minutes is not None,
        "hasAttachments": False,
        "subject": item.subject,
        "bodyPreview": re.sub(r"\s+", " ", html_to_plain(item.body or ""))[:255],
        "importance": "normal",
        "sensitivity": SENSITIVITY[item.sensitivity],
        "isAllDay": item.is_all_day,
        "isCancelled": item.is_cancelled,
        "isOrganizer": not is_meeting or item.my_response == "Organizer",
        "responseRequested": True,
        "seriesMasterId": master_id,
        "showAs": SHOW_AS.get(item.legacy_free_busy, "busy"),
        "type": TYPES[item.item_type],
        "webLink": f"https://outlook.office365.com/owa/?itemid={graph_id(item.item_id)}",
        "originalStart": instant(item.recurrence_id) if item.recurrence_id else None,
        "responseStatus": {
            "response": RESPONSES.get(item.my_response, "none") if is_meeting else "none",
            "time": NEVER,
        },
        "body": {"contentType": content_type, "content": body},
        "start": start,
        "end": end,
        "location": {
            "displayName": item.location or "",
            "locationType": "default",
            "uniqueIdType": "unknown",
        },  # fmt: skip
        "locations": [
            {"displayName": item.location, "locationType": "default", "uniqueIdType": "unknown"}
        ]
        if item.location
        else [],  # fmt: skip
        "recurrence": recurrence_json(item.recurrence, original_zone(item))
        if item.recurrence and item.item_type == "RecurringMaster"
        else None,
        "attendees": [
            {
                "type": "optional" if a.get("optional") else "required",
                "status": {
                    "response": RESPONSES.get(a.get("response", "Unknown"), "none"),
                    "time": NEVER,
                },  # fmt: skip
                "emailAddress": {"name": a.get("name") or a["email"], "address": a["email"]},
            }
            for a in item.attendees
        ],
        "organizer": {
            "emailAddress": {
                "name": (item.organizer_name or organizer_address) if is_meeting else mailbox.email,
                "address": organizer_address,
            }
        },
    }
    for name in PROPERTIES:
        if want(name):
            event[name] = values[name]
    if expand_stamp:
        ids = [STAMP_PROPERTY_ID] if expand_stamp is True else expand_stamp
        event["singleValueExtendedProperties"] = [
            {"id": pid, "value": item.extended[key]}
            for pid in ids
            if (key := extended_key(pid)) and item.extended.get(key) is not None
        ]
    return event


# --- writes: Graph event JSON -> the model's fields ----------------------------------------------

_WINDOWS_OF = {}
for _windows, _iana in WINDOWS_ZONES.items():
    _WINDOWS_OF.setdefault(_iana, _windows)
_SENSITIVITY_IN = {v: k for k, v in SENSITIVITY.items()}
_SHOW_AS_IN = {v: k for k, v in SHOW_AS.items()}
_PATTERNS_IN = {"daily": "daily", "weekly": "weekly", "absoluteMonthly": "absolute_monthly",
                "relativeMonthly": "relative_monthly", "absoluteYearly": "absolute_yearly",
                "relativeYearly": "relative_yearly"}  # fmt: skip


def windows_zone(name: str) -> str:
    """A write's timeZone (Windows or IANA) as the model's Windows id.

    :raises ValueError: a zone Graph would refuse.
    """
    if name in WINDOWS_ZONES:
        return name
    if name in _WINDOWS_OF:
        return _WINDOWS_OF[name]
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(name) from None
    raise ValueError(name)


def _instant_of(value: dict, all_day: bool) -> tuple[datetime, str]:
    zone_id = windows_zone(value.get("timeZone") or "UTC")
    local = datetime.fromisoformat(value["dateTime"][:19])
    return local.replace(tzinfo=zone_of(zone_id)).astimezone(UTC), zone_id


def rule_of(recurrence: dict) -> dict:
    """patternedRecurrence as the model's rule."""
    pattern, rng = recurrence["pattern"], recurrence["range"]
    rule: dict = {"pattern": _PATTERNS_IN[pattern["type"]],
                  "interval": int(pattern.get("interval") or 1)}  # fmt: skip
    if pattern.get("daysOfWeek"):
        rule["weekdays"] = [d.capitalize() for d in pattern["daysOfWeek"]]
    if pattern.get("dayOfMonth"):
        rule["day_of_month"] = int(pattern["dayOfMonth"])
    if pattern.get("month"):
        rule["month"] = int(pattern["month"])
    if pattern["type"].startswith("relative"):
        rule["week_index"] = (pattern.get("index") or "first").capitalize()
    rule["start"] = date.fromisoformat(rng["startDate"])
    if rng.get("type") == "endDate":
        rule["end"] = date.fromisoformat(rng["endDate"])
    elif rng.get("type") == "numbered":
        rule["count"] = int(rng["numberOfOccurrences"])
    return rule


def fields_of(event: dict) -> dict:
    """The model fields a POST or PATCH body sets (only those it names).

    :raises ValueError: a value Graph would refuse (the message says which).
    """
    fields: dict = {}
    all_day = bool(event.get("isAllDay"))
    if "isAllDay" in event:
        fields["is_all_day"] = all_day
    for name in ("start", "end"):
        if name in event:
            moment, zone_id = _instant_of(event[name], all_day)
            if (
                all_day
                and datetime.fromisoformat(event[name]["dateTime"][:19]).time()
                != datetime.min.time()
            ):
                raise ValueError("an all-day event's start and end must be midnights")
            fields[name] = moment
            if name == "start":
                fields["timezone"] = zone_id
    if "subject" in event:
        fields["subject"] = event["subject"] or ""
    if "body" in event:
        body = event["body"] or {}
        fields["body"] = body.get("content") or ""
        fields["body_type"] = "HTML" if body.get("contentType", "text") == "html" else "Text"
    if "location" in event:
        fields["location"] = (event["location"] or {}).get("displayName") or ""
    if "sensitivity" in event:
        fields["sensitivity"] = _SENSITIVITY_IN[event["sensitivity"]]
    if "showAs" in event:
        fields["legacy_free_busy"] = _SHOW_AS_IN[event["showAs"]]
    if "categories" in event:
        fields["categories"] = list(event["categories"] or [])
    if "isReminderOn" in event or "reminderMinutesBeforeStart" in event:
        on = event.get("isReminderOn", True)
        fields["reminder_minutes"] = (
            int(event.get("reminderMinutesBeforeStart") or 15) if on else None
        )
    if event.get("recurrence"):
        fields["recurrence"] = rule_of(event["recurrence"])
    elif "recurrence" in event:
        fields["recurrence"] = None
    extended = {}
    for prop in event.get("singleValueExtendedProperties") or ():
        key = extended_key(prop.get("id", ""))
        if key is None:
            raise ValueError(f"extended property {prop.get('id')!r} not supported here")
        extended[key] = prop.get("value")
    if event.get("transactionId"):
        extended["graph:transactionId"] = event["transactionId"]
    if extended:
        fields["extended"] = extended
    return fields
