"""The mailbox model: items, series with modified and deleted occurrences, a change log."""

from __future__ import annotations

import base64
import hashlib
import itertools
import threading
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

from tests.ewssim.zones import zone_of

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def new_id(kind: str = "item", seed: str | None = None) -> str:
    """An opaque item id; the same ``seed`` gives the same id (fixture items keep their ids
    across restarts), no seed a fresh random one."""
    key = hashlib.sha256(seed.encode()).hexdigest()[:32] if seed else uuid.uuid4().hex
    return base64.b64encode(f"{kind}:{key}".encode()).decode()


# PidLidGlobalObjectId's class id ([MS-OXOCAL] 2.2.1.27): Exchange's UID for an item Outlook or
# EWS created is this BLOB in hex, with the instance date zeroed (the series / item, not one
# occurrence), a FILETIME creation time, 8 reserved bytes and a 16-byte random payload.
GLOBAL_OBJECT_ID_CLASS = "040000008200E00074C5B7101A82E008"
_FILETIME_EPOCH = datetime(1601, 1, 1, tzinfo=UTC)


def global_object_id(seed: str | None = None, created: datetime | None = None) -> str:
    """A UID in Exchange's GlobalObjectId hex form; stable for a ``seed``, random without."""
    payload = hashlib.sha256(seed.encode()).digest()[:16] if seed else uuid.uuid4().bytes
    if created is None:
        created = datetime(2026, 1, 5, 9, tzinfo=UTC) if seed else datetime.now(UTC)
    ticks = int((created - _FILETIME_EPOCH).total_seconds() * 10_000_000)
    return (
        GLOBAL_OBJECT_ID_CLASS
        + "00000000"  # year (2 bytes), month, day of an exception's instance: 0 for the item
        + ticks.to_bytes(8, "little").hex().upper()
        + "0000000000000000"
        + len(payload).to_bytes(4, "little").hex().upper()
        + payload.hex().upper()
    )


def occurrence_id(master_id: str, original_start: datetime) -> str:
    raw = f"occ|{master_id}|{original_start.astimezone(UTC):%Y%m%dT%H%M%SZ}"
    return base64.b64encode(raw.encode()).decode()


@dataclass
class Item:
    item_id: str
    change_key: str
    uid: str | None  # None: an item Exchange returns without a UID
    subject: str
    start: datetime  # UTC
    end: datetime  # UTC
    timezone: str = "UTC"  # Windows id, or a customized zone's name
    timezone_rules: str | None = None  # IANA rules behind a customized zone's definition
    timezone_name: str | None = None  # display name, if not the Windows zone's own
    # what answers carry of the zone: "full" (StartTimeZone/EndTimeZone definitions and the
    # TimeZone display name), "name" (only the display name: Exchange 2019 omits StartTimeZone
    # in some answers) or "none"
    zone_on_wire: str = "full"
    is_all_day: bool = False
    body: str = ""
    body_type: str = "HTML"
    location: str = ""
    sensitivity: str = "Normal"
    reminder_minutes: int | None = None
    categories: list[str] = field(default_factory=list)
    legacy_free_busy: str = "Busy"
    # named extended properties: "PropertySet:PropertyName" -> value (what push stamps)
    extended: dict[str, str] = field(default_factory=dict)
    recurrence: dict | None = None
    modified: dict[datetime, dict] = field(default_factory=dict)  # original start -> overrides
    deleted: set[datetime] = field(default_factory=set)
    last_modified: datetime = field(default_factory=lambda: datetime.now(UTC))
    # meetings: the organizer's address (None: an appointment, not a meeting), the attendees
    # ({"email", "name", "response", "optional"}), the mailbox owner's response (Organizer,
    # Accept, Tentative, Decline, NoResponseReceived, Unknown) and a cancellation received
    organizer: str | None = None
    organizer_name: str | None = None
    attendees: list[dict] = field(default_factory=list)
    my_response: str = "Unknown"
    is_cancelled: bool = False
    # set on expanded occurrences only
    item_type: str = "Single"
    recurrence_id: datetime | None = None


WEEK_INDEX = {"First": 0, "Second": 1, "Third": 2, "Fourth": 3, "Last": -1}


def _days_in_month(rule: dict, year: int, month: int, first_day: date) -> list[date]:
    """The day a monthly/yearly pattern falls on in one month: a day number (skipped when the
    month is too short, as Outlook does for the 31st) or the n-th / last given weekday."""
    if rule["pattern"].startswith("absolute"):
        try:
            return [date(year, month, int(rule.get("day_of_month", first_day.day)))]
        except ValueError:
            return []
    weekday = WEEKDAYS.index(rule.get("weekdays", [WEEKDAYS[first_day.weekday()]])[0])
    first = date(year, month, 1)
    matching = [
        first + timedelta(days=offset)
        for offset in range(31)
        if (first + timedelta(days=offset)).month == month
        and (first + timedelta(days=offset)).weekday() == weekday
    ]
    return [matching[WEEK_INDEX[rule.get("week_index", "First")]]]


def _expand_starts(master: Item, limit_end: datetime) -> list[datetime]:
    """Original starts (UTC) of a series, expanded in the series' own zone (wall-clock time is
    kept across DST changes)."""
    rule = master.recurrence
    zone = zone_of(master.timezone, master.timezone_rules)
    local_start = master.start.astimezone(zone)
    first_day: date = rule.get("start") or local_start.date()
    last_day: date | None = rule.get("end")
    count: int | None = rule.get("count")
    interval = int(rule.get("interval", 1))
    pattern = rule["pattern"]
    starts: list[datetime] = []
    for n in itertools.count():
        if pattern == "daily":
            day = first_day + timedelta(days=n * interval)
            days = [day]
        elif pattern == "weekly":
            week_start = (
                first_day - timedelta(days=first_day.weekday()) + timedelta(weeks=n * interval)
            )
            days = [
                week_start + timedelta(days=WEEKDAYS.index(name))
                for name in rule.get("weekdays", [WEEKDAYS[first_day.weekday()]])
            ]
            days = sorted(d for d in days if d >= first_day)
        elif pattern in ("absolute_monthly", "relative_monthly"):
            month_index = first_day.month - 1 + n * interval
            year, month = first_day.year + month_index // 12, month_index % 12 + 1
            days = _days_in_month(rule, year, month, first_day)
        elif pattern in ("absolute_yearly", "relative_yearly"):
            year, month = first_day.year + n * interval, int(rule.get("month", first_day.month))
            days = _days_in_month(rule, year, month, first_day)
        else:
            raise ValueError(f"pattern {pattern!r} not supported by this simulator")
        for day in days:
            if day < first_day:
                continue
            if last_day and day > last_day:
                return starts
            start = datetime.combine(day, local_start.timetz().replace(tzinfo=None), tzinfo=zone)
            if start.astimezone(UTC) >= limit_end:
                return starts
            starts.append(start.astimezone(UTC))
            if count and len(starts) >= count:
                return starts
    return starts


class Mailbox:
    def __init__(self, email: str, password: str, calendar_access: bool = True):
        self.email = email
        self.password = password
        self.calendar_access = calendar_access
        self.store: dict[str, Item] = {}
        self.log: list[tuple[int, str]] = []  # (sequence, item id) of every change
        self.sequence = 0
        # read-flag changes (Outlook marking an item read or unread): (sequence, item id); they
        # change no content and no change key, and SyncFolderItems reports them on their own
        self.read_log: list[tuple[int, str]] = []
        self.is_read: dict[str, bool] = {}
        # sync states name the mailbox instance: another server's state is not accepted
        self.epoch = uuid.uuid4().hex[:12]
        self.lock = threading.RLock()
        # series expansions: master id -> (what the expansion depends on, its horizon, starts,
        # the same as a set); a big CalendarView asks for every occurrence of every series
        self._expansions: dict[str, tuple[tuple, datetime, list[datetime], frozenset]] = {}

    # --- changes, as Outlook would make them ---------------------------------------------

    def _touch(self, item: Item) -> None:
        self.sequence += 1
        item.change_key = base64.b64encode(f"ck{self.sequence}".encode()).decode()
        item.last_modified = datetime.now(UTC)
        self.log.append((self.sequence, item.item_id))

    def create(
        self, subject: str, start: datetime, end: datetime, *, seed: str | None = None, **fields
    ) -> str:
        """Add an item; ``seed`` makes its id and UID the same on every run (fixtures).

        ``uid=None`` (given explicitly) stores an item without a UID.
        """
        with self.lock:
            timezone = fields.pop("timezone", "UTC")
            seed = f"{self.email}|{seed}" if seed else None
            uid = fields.pop("uid") if "uid" in fields else global_object_id(seed)
            item_id = new_id(seed=seed)
            if item_id in self.store:
                raise ValueError(f"item id of seed {seed!r} exists already")
            item = Item(
                item_id=item_id,
                change_key="",
                uid=uid,
                subject=subject,
                start=start.astimezone(UTC),
                end=end.astimezone(UTC),
                timezone=timezone,
                **fields,
            )
            if item.recurrence and not item.recurrence.get("start"):
                # as Exchange stores it: the range starts on the first occurrence's local date
                local = item.start.astimezone(zone_of(item.timezone, item.timezone_rules))
                item.recurrence = {**item.recurrence, "start": local.date()}
            self.store[item.item_id] = item
            self._touch(item)
            return item.item_id

    def update(self, item_id: str, **fields) -> None:
        with self.lock:
            item = self.store[item_id]
            for name, value in fields.items():
                if name in ("start", "end") and value is not None:
                    value = value.astimezone(UTC)
                setattr(item, name, value)
            self._touch(item)

    def mark_read(self, item_id: str, is_read: bool = True) -> None:
        """Mark an item read or unread: a ReadFlagChange for SyncFolderItems, nothing else."""
        with self.lock:
            if item_id not in self.store:
                raise KeyError(item_id)
            self.sequence += 1
            self.is_read[item_id] = is_read
            self.read_log.append((self.sequence, item_id))

    def change_key_of(self, item_id: str) -> str | None:
        item = self.get(item_id)
        return item.change_key if item else None

    def move(self, item_id: str, start: datetime, end: datetime) -> None:
        self.update(item_id, start=start, end=end)

    def delete(self, item_id: str) -> None:
        with self.lock:
            master, original = self.resolve_occurrence(item_id)
            if master is not None:
                self.delete_occurrence(master.item_id, original)
                return
            item = self.store.pop(item_id)
            self.sequence += 1
            self.log.append((self.sequence, item.item_id))

    def modify_occurrence(self, master_id: str, original_start: datetime, **fields) -> str:
        with self.lock:
            master = self.store[master_id]
            original = original_start.astimezone(UTC)
            overrides = master.modified.setdefault(original, {})
            for name, value in fields.items():
                overrides[name] = value.astimezone(UTC) if isinstance(value, datetime) else value
            self._touch(master)
            return occurrence_id(master_id, original)

    def delete_occurrence(self, master_id: str, original_start: datetime) -> None:
        with self.lock:
            master = self.store[master_id]
            original = original_start.astimezone(UTC)
            master.deleted.add(original)
            master.modified.pop(original, None)
            self._touch(master)

    # --- reading ------------------------------------------------------------------------

    def _starts(self, master: Item, limit_end: datetime) -> tuple[list[datetime], frozenset]:
        """``_expand_starts`` of the series up to at least ``limit_end``, kept until the master
        changes (the caller filters by ``limit_end``: an expansion's starts only grow)."""
        depends = (
            master.change_key, master.start, master.timezone, master.timezone_rules,
            repr(master.recurrence),
        )  # fmt: skip
        cached = self._expansions.get(master.item_id)
        if cached is not None and cached[0] == depends and cached[1] >= limit_end:
            return cached[2], cached[3]
        if cached is not None and cached[0] == depends:
            limit_end = max(limit_end, cached[1])
        starts = _expand_starts(master, limit_end)
        self._expansions[master.item_id] = (depends, limit_end, starts, frozenset(starts))
        return starts, self._expansions[master.item_id][3]

    def occurrence_at(self, master_id: str, index: int) -> str | None:
        """The id of a series' occurrence by its 1-based position in the pattern (EWS
        OccurrenceItemId InstanceIndex; deleted occurrences keep their positions)."""
        with self.lock:
            master = self.store.get(master_id)
            if master is None or not master.recurrence or index < 1:
                return None
            horizon = master.start + timedelta(days=366 * 30)
            starts = [s for s in self._starts(master, horizon)[0] if s < horizon]
            if index > len(starts):
                return None
            return occurrence_id(master_id, starts[index - 1])

    def resolve_occurrence(self, item_id: str) -> tuple[Item | None, datetime | None]:
        try:
            raw = base64.b64decode(item_id).decode()
        except ValueError:
            return None, None
        if not raw.startswith("occ|"):
            return None, None
        _, master_id, stamp = raw.split("|")
        master = self.store.get(master_id)
        original = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        return master, original

    def is_deleted_occurrence(self, item_id: str) -> bool:
        """True for the id of an occurrence deleted from its (still existing) series."""
        with self.lock:
            master, original = self.resolve_occurrence(item_id)
            return master is not None and original in master.deleted

    def instance(self, master: Item, original: datetime) -> Item | None:
        """One occurrence or exception of a series, or None if it does not exist."""
        if original in master.deleted:
            return None
        if original not in self._starts(master, original + timedelta(seconds=1))[1]:
            return None
        duration = master.end - master.start
        overrides = master.modified.get(original, {})
        return replace(
            master,
            item_id=occurrence_id(master.item_id, original),
            # "The ChangeKey is the same for the recurring master and all occurrences"
            # (OccurrenceItemIdType.ChangeKey, EWS reference)
            change_key=master.change_key,
            start=overrides.get("start", original),
            end=overrides.get("end", original + duration),
            recurrence=None,
            modified={},
            deleted=set(),
            item_type="Exception" if overrides else "Occurrence",
            recurrence_id=original,
            **{k: v for k, v in overrides.items() if k not in ("start", "end")},
        )

    def expand(self, master_id: str, until: datetime) -> list[datetime]:
        """Original starts (UTC) of a series before ``until``, deleted ones included."""
        with self.lock:
            return [s for s in self._starts(self.store[master_id], until)[0] if s < until]

    def get(self, item_id: str) -> Item | None:
        with self.lock:
            if item_id in self.store:
                item = self.store[item_id]
                if item.recurrence:
                    return replace(item, item_type="RecurringMaster")
                return item
            master, original = self.resolve_occurrence(item_id)
            if master is None:
                return None
            return self.instance(master, original)

    def occurrences(self, start: datetime, end: datetime) -> list[Item]:
        """What a CalendarView over [start, end) returns: singles, occurrences, exceptions."""
        found: list[Item] = []
        with self.lock:
            for item in self.store.values():
                if not item.recurrence:
                    if item.start < end and item.end > start:
                        found.append(item)
                    continue
                horizon = end + timedelta(days=366)  # exceptions may move later
                duration = item.end - item.start
                for original in self._starts(item, horizon)[0]:
                    if original >= horizon:
                        break
                    unmoved = original not in item.modified
                    if unmoved and not (original < end and original + duration > start):
                        continue  # an occurrence outside the view (only exceptions move)
                    occurrence = self.instance(item, original)
                    if occurrence and occurrence.start < end and occurrence.end > start:
                        found.append(occurrence)
        return sorted(found, key=lambda i: (i.start, i.item_id))

    def changes_since(self, sequence: int) -> tuple[list[tuple[str, str, int]], int]:
        """(kind, item id, its last change) per item changed after ``sequence``, ordered by that
        last change: create, update or delete, or ReadFlagChange for an item whose only change
        since is its read flag. A page that ends at an item's last change has reported
        everything up to that sequence, so paging by it loses nothing."""
        with self.lock:
            first_seen: dict[str, int] = {}
            last_change: dict[str, int] = {}
            for seq, item_id in self.log:
                if seq <= sequence:
                    first_seen.setdefault(item_id, seq)
                    continue
                last_change[item_id] = seq
            result = []
            for item_id, seq in sorted(last_change.items(), key=lambda pair: pair[1]):
                existed_before = item_id in first_seen
                if item_id in self.store:
                    result.append(("Update" if existed_before else "Create", item_id, seq))
                elif existed_before:
                    result.append(("Delete", item_id, seq))
            read_only: dict[str, int] = {}
            for seq, item_id in self.read_log:
                if seq > sequence and item_id not in last_change and item_id in self.store:
                    read_only[item_id] = seq
            result += [("ReadFlagChange", item_id, seq) for item_id, seq in read_only.items()]
            result.sort(key=lambda change: change[2])
            return result, self.sequence

    def items(self) -> list[Item]:
        with self.lock:
            return list(self.store.values())
