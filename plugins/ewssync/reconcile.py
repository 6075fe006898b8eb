"""Two-way decisions: each appointment's app side and Exchange side, against what the pair looked
like at the last sync, -> one action (pure: no I/O).

The model is vdirsyncer's status-based sync. ``ewssync.links`` is the status: for each pair it
remembers the Exchange fingerprint and the app version the last sync left behind, and the app
fields as they were then. A side *changed* when it differs from that status; what the pipeline
itself wrote is recorded there, so it never comes back as a change (no echoes).

| app side | Exchange side | action |
|---|---|---|
| new (no link), live, in the window | — | PUSH_CREATE (SKIP if private without sync_private, or unsupported) |
| — | new (no link) | PULL_CREATE |
| unchanged | unchanged | NOTHING |
| unchanged | changed | PULL_UPDATE |
| unchanged | gone | PULL_DELETE |
| changed | unchanged | PUSH_UPDATE of the changed fields (ACKNOWLEDGE when no field differs) |
| deleted | unchanged | PUSH_DELETE |
| made private (sync_private off) | unchanged | PUSH_DELETE: private items do not exist on the other side |
| deleted | gone | FORGET (both sides agree) |
| changed | changed | conflict (same content on both sides: PULL_UPDATE, no conflict) |
| deleted | changed | conflict |
| changed | gone | conflict |

Conflicts follow the connection's ``conflict_policy``: ``exchange_wins``, ``app_wins`` or
``newest_wins`` (the later modification: app ``updated_at`` against Exchange
``LastModifiedTime``). A deletion against a modification follows the same policy; under
``newest_wins`` an app deletion is dated by its tombstone, while an Exchange deletion carries no
time, so the modified copy wins (nothing is lost that someone just edited). Every conflict is
returned with the decision (fields changed on each side, winner) for the run report.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

POLICIES = ("exchange_wins", "app_wins", "newest_wins")

# The app's content columns: what a push writes and a pull overwrites.
CONTENT_FIELDS = (
    "title", "location", "notes", "notes_html", "starts_at", "ends_at", "all_day", "start_date",
    "end_date", "time_zone", "is_private", "reminder_minutes", "show_as", "category",
    "recurrence_rule",
)  # fmt: skip


class Action(StrEnum):
    NOTHING = "nothing"
    ACKNOWLEDGE = "acknowledge"  # the app row was touched without a content change
    PULL_CREATE = "pull_create"  # new in Exchange -> insert into the app
    PULL_UPDATE = "pull_update"  # Exchange's content -> the app row (restores a tombstone)
    PULL_DELETE = "pull_delete"  # gone from Exchange -> tombstone the app row
    PUSH_CREATE = "push_create"  # new in the app (or recreated: its item is gone) -> create
    PUSH_UPDATE = "push_update"  # the app's changed fields -> the item
    PUSH_DELETE = "push_delete"  # deleted in the app -> delete the item
    FORGET = "forget"  # deleted on both sides: drop the link
    SKIP = "skip"  # not synced; ``reason`` says why


PULL_ACTIONS = frozenset({Action.PULL_CREATE, Action.PULL_UPDATE, Action.PULL_DELETE})
PUSH_ACTIONS = frozenset({Action.PUSH_CREATE, Action.PUSH_UPDATE, Action.PUSH_DELETE})


class ExchangeState(StrEnum):
    UNCHANGED = "unchanged"  # not read this run, or read with the fingerprint the link has
    CHANGED = "changed"  # read this run (new or changed content)
    GONE = "gone"  # confirmed deleted in Exchange


@dataclass(frozen=True)
class AppSide:
    """The app row now.

    :param updated_at: its last modification (for a tombstone: the deletion).
    :param fields: CONTENT_FIELDS values.
    :param in_window: it overlaps the connection's window (new rows outside are not pushed).
    :param unsupported: why it cannot be pushed (an RRULE EWS cannot express...), else None.
    """

    appointment_id: int
    version: int
    deleted: bool = False
    updated_at: datetime | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    in_window: bool = True
    unsupported: str | None = None

    @property
    def is_private(self) -> bool:
        return bool(self.fields.get("is_private"))


@dataclass(frozen=True)
class ExchangeSide:
    """The Exchange item now, as this run saw it.

    :param fields: CONTENT_FIELDS values of its normalised form (CHANGED only).
    """

    item_id: str
    state: ExchangeState
    fingerprint: str | None = None
    last_modified: datetime | None = None
    fields: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class LinkState:
    """What the pair looked like at the last sync (ewssync.links).

    :param synced: CONTENT_FIELDS values of the app row at the last sync; None when unknown
        (every field then counts as changed).
    """

    item_id: str
    local_version: int | None
    ews_fingerprint: str | None
    synced: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Pair:
    app: AppSide | None = None
    exchange: ExchangeSide | None = None
    link: LinkState | None = None


@dataclass(frozen=True)
class Conflict:
    """Both sides changed since the last sync.

    :param kind: 'both_changed', 'deleted_in_app' or 'deleted_in_exchange'.
    :param app_fields: the fields the app changed (empty for a deletion).
    :param exchange_fields: the fields Exchange changed (empty for a deletion).
    :param winner: 'app' or 'exchange'.
    """

    kind: str
    app_fields: tuple[str, ...]
    exchange_fields: tuple[str, ...]
    winner: str
    policy: str


@dataclass(frozen=True)
class Decision:
    action: Action
    appointment_id: int | None = None
    item_id: str | None = None
    fields: tuple[str, ...] = ()  # PUSH_UPDATE: the app fields to write
    conflict: Conflict | None = None
    reason: str = ""

    def as_row(self) -> dict[str, Any]:
        """The decision as a plain dict (the plan staged for the run)."""
        conflict = None
        if self.conflict is not None:
            conflict = {
                "kind": self.conflict.kind,
                "app_fields": list(self.conflict.app_fields),
                "exchange_fields": list(self.conflict.exchange_fields),
                "winner": self.conflict.winner,
                "policy": self.conflict.policy,
            }
        return {
            "action": str(self.action),
            "appointment_id": self.appointment_id,
            "item_id": self.item_id,
            "fields": list(self.fields),
            "conflict": conflict,
            "reason": self.reason,
        }


# --- rules ---------------------------------------------------------------------------------------


def changed_fields(now: Mapping[str, Any], before: Mapping[str, Any] | None) -> tuple[str, ...]:
    """CONTENT_FIELDS whose value differs between ``now`` and ``before`` (all when unknown)."""
    if before is None:
        return tuple(name for name in CONTENT_FIELDS if name in now)
    return tuple(
        name
        for name in CONTENT_FIELDS
        if name in now and _value(now[name]) != _value(before.get(name))
    )


def _value(value: Any) -> Any:
    """Compare datetimes as instants, treat '' and None alike (the app stores '' for no text)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.timestamp()
    if isinstance(value, list | tuple):
        return tuple(value)
    return value


def app_changed(pair: Pair) -> bool:
    return (
        pair.app is not None
        and pair.link is not None
        and (pair.app.version != pair.link.local_version)
    )


def exchange_changed(pair: Pair) -> bool:
    exchange = pair.exchange
    if exchange is None or exchange.state is not ExchangeState.CHANGED:
        return False
    return pair.link is None or exchange.fingerprint != pair.link.ews_fingerprint


def _newer_side(app: AppSide, exchange: ExchangeSide) -> str:
    """'app' or 'exchange': the later modification; a tie or an unknown time goes to Exchange
    (the pull side's long-standing rule)."""
    if app.updated_at is None or exchange.last_modified is None:
        return "exchange"
    return "app" if app.updated_at > exchange.last_modified else "exchange"


def _winner(policy: str, pair: Pair, kind: str) -> str:
    if policy == "exchange_wins":
        return "exchange"
    if policy == "app_wins":
        return "app"
    if kind == "deleted_in_exchange":
        return "app"  # an Exchange deletion has no time: keep the copy someone just edited
    return _newer_side(pair.app, pair.exchange)


def decide(pair: Pair, policy: str = "exchange_wins", *, sync_private: bool = False) -> Decision:
    """The one action for a pair (see the module's table)."""
    if policy not in POLICIES:
        raise ValueError(f"conflict policy {policy!r}; expected one of {', '.join(POLICIES)}")
    app, exchange, link = pair.app, pair.exchange, pair.link
    appointment_id = app.appointment_id if app else None
    item_id = link.item_id if link else (exchange.item_id if exchange else None)

    def decision(action: Action, **kwargs) -> Decision:
        return Decision(action, appointment_id=appointment_id, item_id=item_id, **kwargs)

    if link is None:
        if exchange is not None and exchange.state is ExchangeState.CHANGED:
            return decision(Action.PULL_CREATE)
        if app is None or app.deleted or not app.in_window:
            return decision(Action.NOTHING)
        if app.is_private and not sync_private:
            return decision(Action.SKIP, reason="private (sync_private is off)")
        if app.unsupported:
            return decision(Action.SKIP, reason=app.unsupported)
        return decision(Action.PUSH_CREATE, fields=changed_fields(app.fields, None))

    gone = exchange is not None and exchange.state is ExchangeState.GONE
    theirs = exchange_changed(pair)
    if app is None:
        # The row was purged (links cascade away with it, so only a race gets here): a purge is
        # final, whatever the policy; an Exchange edit it overrides is still reported.
        if gone:
            return decision(Action.FORGET)
        conflict = None
        if theirs:
            conflict = Conflict("deleted_in_app", (), tuple(exchange.fields or ()), "app", policy)
        return decision(Action.PUSH_DELETE, conflict=conflict, reason="purged in the app")
    ours = app_changed(pair)
    if not ours:
        if gone:
            return decision(Action.PULL_DELETE)
        return decision(Action.PULL_UPDATE if theirs else Action.NOTHING)

    # The app changed since the last sync.
    app_fields = () if app.deleted else changed_fields(app.fields, link.synced)
    if not theirs and not gone:
        if app.deleted:
            return decision(Action.PUSH_DELETE)
        if app.is_private and not sync_private:
            return decision(Action.PUSH_DELETE, reason="made private (sync_private is off)")
        if app.unsupported:
            return decision(Action.SKIP, reason=app.unsupported)
        if not app_fields:
            return decision(Action.ACKNOWLEDGE)
        return decision(Action.PUSH_UPDATE, fields=app_fields)

    # Both sides changed.
    if app.deleted and gone:
        return decision(Action.FORGET)
    if gone:
        kind, exchange_fields = "deleted_in_exchange", ()
    elif app.deleted:
        kind, exchange_fields = "deleted_in_app", changed_fields(exchange.fields or {}, link.synced)
    else:
        exchange_fields = changed_fields(exchange.fields or {}, link.synced)
        if exchange.fields is not None and not changed_fields(app.fields, exchange.fields):
            # Both made the same change: take Exchange's row (it equals the app's), no conflict.
            return decision(Action.PULL_UPDATE)
        kind = "both_changed"
    winner = _winner(policy, pair, kind)
    conflict = Conflict(kind, app_fields, exchange_fields, winner, policy)
    if winner == "exchange":
        action = Action.PULL_DELETE if gone else Action.PULL_UPDATE
        return decision(action, conflict=conflict)
    if app.deleted:
        return decision(Action.PUSH_DELETE, conflict=conflict)
    if gone:
        # Recreate from the app's copy: the old link is dropped, a new item created.
        return decision(
            Action.PUSH_CREATE, fields=changed_fields(app.fields, None), conflict=conflict
        )
    if app.unsupported:
        return decision(Action.SKIP, conflict=conflict, reason=app.unsupported)
    # Make Exchange equal the app: every field either side changed.
    wanted = set(app_fields) | set(exchange_fields)
    fields = tuple(name for name in CONTENT_FIELDS if name in wanted)
    return decision(Action.PUSH_UPDATE, fields=fields, conflict=conflict)


def plan(
    pairs: Iterable[Pair], policy: str = "exchange_wins", *, sync_private: bool = False
) -> list[Decision]:
    """One decision per pair, in the pairs' order."""
    return [decide(pair, policy, sync_private=sync_private) for pair in pairs]


def summarize(decisions: Iterable[Decision]) -> dict[str, int]:
    """Counts per action, plus conflicts, for the run report."""
    counts: dict[str, int] = {}
    for decision in decisions:
        counts[str(decision.action)] = counts.get(str(decision.action), 0) + 1
        if decision.conflict is not None:
            counts["conflicts"] = counts.get("conflicts", 0) + 1
    return counts
