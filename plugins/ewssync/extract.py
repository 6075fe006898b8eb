"""Exchange -> raw records in staging: the window, read fully (first run) or incrementally."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from ewssync import store
from ewssync.errors import SyncStateExpired
from ewssync.transform import PRIVATE_SENSITIVITIES, apply_meeting_rules

log = logging.getLogger(__name__)

# A connection's folder can hold many changes; SyncFolderItems hands out 512 at most per call.
MAX_SYNC_PAGES = 1000
# read_whole_window: how far Exchange's clock (an item's LastModifiedTime) may be behind ours,
# and how many single items changed during a full read are fetched by id before the window is
# listed again instead.
CLOCK_SKEW = timedelta(minutes=15)
MAX_UNLISTED = 500
# read_whole_window: how often it looks for bodies it may read while the drain runs, and how
# many it reads before it looks again
EARLY_POLL_SECONDS = 0.02
EARLY_BATCH = 800


class CalendarSource(Protocol):
    """What extract needs of the Exchange side (ewssync.exchange.ews.EwsCalendar provides it)."""

    def sync_changes(
        self,
        state: str | None,
        max_changes: int = 512,
        window: tuple[datetime, datetime] | None = None,
    ) -> tuple[str, list[dict[str, Any]], bool]: ...

    def read_index(self, start: datetime, end: datetime) -> list[dict[str, Any]]: ...

    def fetch(self, item_ids: list[str]) -> tuple[list[dict[str, Any]], list[str]]: ...


@dataclass
class Plan:
    """What one run reads from Exchange, decided before any body is fetched."""

    mode: str  # full | incremental | no_change
    sync_state: str | None
    to_fetch: list[str] = field(default_factory=list)  # new or changed items, bodies wanted
    to_confirm: list[str] = field(default_factory=list)  # linked items not seen where expected
    gone: set[str] = field(default_factory=set)  # linked items Exchange reported deleted
    index_size: int = 0
    changes: int = 0
    fetched: list[dict[str, Any]] = field(default_factory=list)  # bodies read while planning
    missing: list[str] = field(default_factory=list)  # ids those reads found gone


def drain_changes(
    calendar: CalendarSource,
    state: str | None,
    window: tuple[datetime, datetime] | None = None,
    on_change: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """Follow SyncFolderItems from ``state`` to the folder's current state.

    :param window: the run's window (Graph's delta is bound to one; EWS reads the whole folder).
    :param on_change: called with each change as soon as its answer is read (EWS only; a change
        may be reported again if a read is repeated after a failure).

    :return: the new state and the last change reported per item id.
    """
    changes: dict[str, dict[str, Any]] = {}
    for _ in range(MAX_SYNC_PAGES):
        if on_change is None:
            state, page, complete = calendar.sync_changes(state, window=window)
        else:
            state, page, complete = calendar.sync_changes(state, window=window, on_change=on_change)
        for change in page:
            changes[change["item_id"]] = change
        if complete:
            return state, changes
    raise RuntimeError(f"SyncFolderItems did not complete after {MAX_SYNC_PAGES} pages")


def overlaps(record: dict[str, Any], start: datetime, end: datetime) -> bool:
    return record["start"] < end and record["end"] > start


@dataclass
class WindowRead:
    """What read_whole_window found: the state, the window's index and the bodies read so far."""

    sync_state: str | None
    index: list[dict[str, Any]]
    to_fetch: list[str]  # ids whose bodies are still to be read
    fetched: list[dict[str, Any]] = field(default_factory=list)  # records already read
    missing: list[str] = field(default_factory=list)  # ids those reads found gone


def read_whole_window(calendar: CalendarSource, window: tuple[datetime, datetime]) -> WindowRead:
    """The sync state of the whole folder and the window's index, for a full read.

    The state must not be newer than what is read, or a change made in between is in the state
    yet was never read, and no later run reports it. Taking the state first (SyncFolderItems
    from nothing, 512 changes a request, one after another) and listing the window afterwards is
    safe but adds the drain's round trips to every full read. A calendar that can
    (``index_beside_drain``, EWS) lists the window while the state is drained, and reads bodies
    as soon as the drain has reported their version; the drain's changes then say what the
    listing and those reads may have missed:

    - every item the state holds was listed at that version when its change key is in the list
      (an occurrence carries its master's change key: "the ChangeKey is the same for the
      recurring master and all occurrences", EWS reference, OccurrenceItemIdType);
    - an item the list does not show at that version either last changed before the run began
      (it was outside the window then and still is at that version), or it changed during the
      run: it is read after the drain, a single item by id, a series (whose occurrences only a
      view shows) by listing the window again;
    - a body read before the drain ended whose change key is not the one the state holds
      changed after the drain reported it: a single item is read again, a series' occurrence
      makes the window be listed again.

    Every other body is read after the drain, so every record is at least as new as the state.
    """
    window_start, window_end = window
    if not getattr(calendar, "index_beside_drain", False):
        new_state, _ = drain_changes(calendar, None, window)
        index = calendar.read_index(window_start, window_end)
        return WindowRead(new_state, index, [entry["item_id"] for entry in index])
    calendar.prepare()  # account and folder built once, before two threads share them
    began = datetime.now(UTC)
    reported: set[str] = set()  # change keys the drain has reported so far

    def note(change: dict[str, Any]) -> None:
        if change.get("change_key"):
            reported.add(change["change_key"])

    early: dict[str, dict[str, Any]] = {}  # bodies read while the drain ran, by item id
    early_missing: set[str] = set()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ewssync-drain") as pool:
        drained = pool.submit(drain_changes, calendar, None, window, on_change=note)
        index = calendar.read_index(window_start, window_end)
        waiting = index
        while waiting and not drained.done():
            # a batch a few requests deep: once the drain ends, what is left is read at once
            ready = [entry for entry in waiting if entry["change_key"] in reported][:EARLY_BATCH]
            if not ready:
                wait([drained], timeout=EARLY_POLL_SECONDS)
                continue
            records, missing = calendar.fetch([entry["item_id"] for entry in ready])
            early.update((record["item_id"], record) for record in records)
            early_missing.update(missing)
            taken = {entry["item_id"] for entry in ready}
            waiting = [entry for entry in waiting if entry["item_id"] not in taken]
        new_state, changes = drained.result()

    held = {
        change["change_key"]
        for change in changes.values()
        if change["kind"] in ("create", "update")
    }
    stale = [record for record in early.values() if record["change_key"] not in held]
    listed = {entry["change_key"] for entry in index}
    singles: list[str] = []
    series = sum(record["item_type"] not in (None, "Single") for record in stale)
    for item_id, change in changes.items():
        if change["kind"] not in ("create", "update") or change.get("change_key") in listed:
            continue
        modified = change.get("last_modified")
        if modified is not None and modified < began - CLOCK_SKEW:
            continue  # this version is older than the run: not in the window, and never was
        if change.get("item_type") in (None, "Single"):
            singles.append(item_id)
        else:
            series += 1
    if series or len(singles) > MAX_UNLISTED:
        log.info(
            "%d series and %d items changed while the window was read: listing it again",
            series, len(singles),
        )  # fmt: skip
        index = calendar.read_index(window_start, window_end)
        current = {entry["item_id"]: entry["change_key"] for entry in index}
        kept = [
            record
            for item_id, record in early.items()
            if record["change_key"] in held and current.get(item_id) == record["change_key"]
        ]
        kept_ids = {record["item_id"] for record in kept}
        return WindowRead(
            new_state,
            index,
            [item_id for item_id in current if item_id not in kept_ids],
            kept,
            sorted(early_missing - set(current)),
        )
    stale_ids = {record["item_id"] for record in stale}
    return WindowRead(
        new_state,
        index,
        [entry["item_id"] for entry in waiting] + singles + sorted(stale_ids),
        [record for item_id, record in early.items() if item_id not in stale_ids],
        sorted(early_missing),
    )


def plan_run(
    calendar: CalendarSource,
    conn,
    conn_id: str,
    window: tuple[datetime, datetime],
    *,
    full_resync: bool = False,
) -> Plan:
    """Decide what to read. The sync state is never newer than what is read (see
    read_whole_window for a full read), so a change made while we read shows up again next run
    instead of being lost."""
    window_start, window_end = window
    saved = store.get_sync_state(conn, conn_id)
    if full_resync or not saved or not saved["ews_sync_state"]:
        read = read_whole_window(calendar, window)
        expected = store.links_in_window(conn, conn_id, window_start, window_end)
        seen = (
            {entry["item_id"] for entry in read.index}
            | set(read.to_fetch)
            | {record["item_id"] for record in read.fetched}
            | set(read.missing)
        )
        return Plan(
            mode="full",
            sync_state=read.sync_state,
            to_fetch=sorted(set(read.to_fetch)),
            to_confirm=sorted(set(expected) - seen),
            index_size=len(read.index),
            fetched=read.fetched,
            missing=read.missing,
        )

    try:
        new_state, changes = drain_changes(calendar, saved["ews_sync_state"], window)
    except SyncStateExpired:
        # Exchange forgot our place (states expire; the mailbox may have been moved): re-read
        # the window. Safe: items we no longer see are confirmed gone by id before deletion.
        log.warning("connection %s: sync state expired, reading the whole window", conn_id)
        return plan_run(calendar, conn, conn_id, window, full_resync=True)
    changes = drop_own_writes(conn, conn_id, changes)
    window_moved = (saved["window_start"], saved["window_end"]) != (window_start, window_end)
    if not changes and not window_moved:
        return Plan(mode="no_change", sync_state=new_state)

    deleted = [item_id for item_id, c in changes.items() if c["kind"] == "delete"]
    touched = {item_id: c for item_id, c in changes.items() if c["kind"] in ("create", "update")}
    gone_links = store.links_by_item(conn, conn_id, deleted)
    gone = set(gone_links)
    # A deleted id we never linked is a series master (we link its occurrences, not it, unless
    # the series came from the app): its occurrences are only visible, or seen missing, through
    # a view.
    series_touched = (
        len(gone) < len(deleted)
        or any(link.get("item_type") == "RecurringMaster" for link in gone_links.values())
        or any(c.get("item_type") not in (None, "Single") for c in touched.values())
    )
    if not window_moved and not series_touched:
        # Only single items changed: read exactly those, no view needed.
        return Plan(
            mode="incremental",
            sync_state=new_state,
            to_fetch=sorted(touched),
            gone=gone,
            changes=len(changes),
        )

    # A series changed (its occurrences are only visible through a view) or the window moved:
    # list the window cheaply, then fetch bodies only of what is new or has a new change key.
    index = calendar.read_index(window_start, window_end)
    linked = store.links_in_window(conn, conn_id, window_start, window_end)
    seen = {entry["item_id"]: entry for entry in index}
    to_fetch = {
        item_id
        for item_id, entry in seen.items()
        if item_id not in linked or linked[item_id]["change_key"] != entry["change_key"]
    }
    # Changed singles that are no longer in the window were moved out of it: read them too.
    to_fetch.update(
        item_id
        for item_id, change in touched.items()
        if item_id not in seen and change.get("item_type") in (None, "Single")
    )
    to_confirm = set(linked) - set(seen) - gone - to_fetch
    return Plan(
        mode="incremental",
        sync_state=new_state,
        to_fetch=sorted(to_fetch - gone),
        to_confirm=sorted(to_confirm),
        gone=gone,
        index_size=len(index),
        changes=len(changes),
    )


def drop_own_writes(
    conn, conn_id: str, changes: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """The changes that are not push's own writes. SyncFolderItems reports what push wrote like
    anyone's change: an item whose change key is the one push recorded in its link, or an id
    push deleted, is ours and needs no reading (no echo). Series masters always count: their
    occurrences are read through a view."""
    if not changes:
        return changes
    keys = store.links_change_keys(conn, conn_id, changes)
    deleted_by_us = store.pushed_deletions(
        conn, conn_id, [i for i, c in changes.items() if c["kind"] == "delete"]
    )
    kept = {}
    for item_id, change in changes.items():
        link = keys.get(item_id)
        if change["kind"] == "delete" and item_id in deleted_by_us:
            continue
        if (
            change["kind"] in ("create", "update")
            and link is not None
            and link["item_type"] != "RecurringMaster"
            and change.get("change_key")
            and link["change_key"] == change["change_key"]
        ):
            continue
        kept[item_id] = change
    return kept


def execute_plan(
    calendar: CalendarSource,
    conn,
    conn_id: str,
    run_key: str,
    window: tuple[datetime, datetime],
    plan: Plan,
    *,
    sync_private: bool = True,
    skip_declined: bool = False,
) -> dict[str, int]:
    """Fetch what the plan names and stage it for the run; return counts.

    With ``sync_private`` off, private items are dropped here, before anything is written: their
    subject, body and location never reach the database (a linked one is staged as gone, so it
    leaves the app).
    """
    window_start, window_end = window
    records: list[dict[str, Any]] = []
    gone = set(plan.gone)
    if plan.to_fetch or plan.fetched or plan.missing:
        fetched, missing = calendar.fetch(plan.to_fetch) if plan.to_fetch else ([], [])
        if plan.fetched or plan.missing:
            # in item id order, as one fetch of every id would give them
            fetched = sorted([*plan.fetched, *fetched], key=lambda record: record["item_id"])
            missing = [*plan.missing, *missing]
        linked = store.links_by_item(conn, conn_id, [r["item_id"] for r in fetched])
        # New items outside the window are not ours (yet); linked ones moved and are updated.
        records.extend(
            r for r in fetched if overlaps(r, window_start, window_end) or r["item_id"] in linked
        )
        gone.update(store.links_by_item(conn, conn_id, missing))
    moved_out = 0
    if plan.to_confirm:
        # Linked items the view did not show: moved out of the window (update) or deleted.
        found, missing = calendar.fetch(plan.to_confirm)
        records.extend(found)
        moved_out = len(found)
        gone.update(missing)
    records = [r for r in records if r.get("item_type") != "RecurringMaster"]
    skipped_private = 0
    if not sync_private:
        private = {r["item_id"] for r in records if r.get("sensitivity") in PRIVATE_SENSITIVITIES}
        if private:
            records = [r for r in records if r["item_id"] not in private]
            gone.update(store.links_by_item(conn, conn_id, private))
            skipped_private = len(private)
    # cancelled (and, with skip_declined, declined) meetings: left out, a linked one leaves the app
    records, skipped_meetings = apply_meeting_rules(records, skip_declined=skip_declined)
    if skipped_meetings:
        gone.update(store.links_by_item(conn, conn_id, list(skipped_meetings)))
    store.stage_ews_items(conn, conn_id, run_key, records)
    store.stage_seen(conn, conn_id, run_key, sorted(gone), "gone")
    store.put_staging_run(
        conn,
        conn_id,
        run_key,
        mode=plan.mode,
        ews_sync_state=plan.sync_state,
        window_start=window_start,
        window_end=window_end,
    )
    return {
        "exchange_listed": plan.index_size,
        "exchange_changes": plan.changes,
        "exchange_fetched": len(records),
        "exchange_moved_out_of_window": moved_out,
        "exchange_gone": len(gone),
        "skipped_private": skipped_private,
        "skipped_cancelled": sum(r == "cancelled" for r in skipped_meetings.values()),
        "skipped_declined": sum(r == "declined" for r in skipped_meetings.values()),
    }


def extract(
    calendar: CalendarSource,
    conn,
    conn_id: str,
    run_key: str,
    window: tuple[datetime, datetime],
    *,
    full_resync: bool = False,
    sync_private: bool = True,
    skip_declined: bool = False,
) -> tuple[str, dict[str, int]]:
    """Stage the run's Exchange side. Idempotent: a re-run replaces what the run staged before
    (only this run's staging: other runs' and other connections' are never touched)."""
    store.clear_staging(conn, conn_id, run_key)
    plan = plan_run(calendar, conn, conn_id, window, full_resync=full_resync)
    counts = execute_plan(
        calendar, conn, conn_id, run_key, window, plan,
        sync_private=sync_private, skip_declined=skip_declined,
    )  # fmt: skip
    log.info("connection %s: %s extract, %s", conn_id, plan.mode, counts)
    return plan.mode, counts
