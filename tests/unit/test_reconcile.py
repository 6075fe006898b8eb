"""reconcile: the pure two-way planner, case by case (the module's table) and by property."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ewssync.reconcile import (
    CONTENT_FIELDS,
    POLICIES,
    Action,
    AppSide,
    ExchangeSide,
    ExchangeState,
    LinkState,
    Pair,
    changed_fields,
    decide,
    plan,
    summarize,
)

T0 = datetime(2026, 11, 25, 8, tzinfo=UTC)
SYNCED = {"title": "Visit", "location": "Hall", "starts_at": T0, "ends_at": T0 + timedelta(hours=1)}
EDITED = {**SYNCED, "title": "Visit (moved)"}
THEIRS = {**SYNCED, "location": "Annex"}
EARLY, LATE = T0 - timedelta(hours=2), T0 + timedelta(hours=2)


def app(version=7, fields=SYNCED, *, deleted=False, updated_at=EARLY, **kw) -> AppSide:
    return AppSide(1, version, deleted=deleted, updated_at=updated_at, fields=fields, **kw)


def link(version=7, fingerprint="fp-synced", synced=SYNCED) -> LinkState:
    return LinkState("item-1", version, fingerprint, synced)


def changed(fields=THEIRS, fingerprint="fp-new", last_modified=LATE) -> ExchangeSide:
    return ExchangeSide("item-1", ExchangeState.CHANGED, fingerprint, last_modified, fields)


GONE = ExchangeSide("item-1", ExchangeState.GONE)
SAME = ExchangeSide("item-1", ExchangeState.UNCHANGED)
# Exchange re-read with the fingerprint the link already has (e.g. a window re-read): no change
ECHO = ExchangeSide("item-1", ExchangeState.CHANGED, "fp-synced", LATE, SYNCED)

# (case, pair, policy, expected action, expected winner or None)
CASES = [
    ("new in app", Pair(app(fields=EDITED)), "exchange_wins", Action.PUSH_CREATE, None),
    ("new in app, deleted already", Pair(app(deleted=True)), "exchange_wins", Action.NOTHING, None),
    ("new in app, outside the window", Pair(app(in_window=False)), "app_wins", Action.NOTHING, None),
    ("new in app, private", Pair(app(fields={**SYNCED, "is_private": True})), "app_wins",
     Action.SKIP, None),
    ("new in app, unsupported rule", Pair(app(unsupported="FREQ=HOURLY")), "app_wins",
     Action.SKIP, None),
    ("new in Exchange", Pair(exchange=changed()), "app_wins", Action.PULL_CREATE, None),
    ("nothing changed", Pair(app(), SAME, link()), "exchange_wins", Action.NOTHING, None),
    ("nothing changed, Exchange re-read", Pair(app(), ECHO, link()), "app_wins", Action.NOTHING,
     None),
    ("Exchange changed", Pair(app(), changed(), link()), "app_wins", Action.PULL_UPDATE, None),
    ("Exchange deleted", Pair(app(), GONE, link()), "app_wins", Action.PULL_DELETE, None),
    ("app changed", Pair(app(8, EDITED), SAME, link()), "exchange_wins", Action.PUSH_UPDATE, None),
    ("app changed, outside the window", Pair(app(8, EDITED, in_window=False), SAME, link()),
     "exchange_wins", Action.PUSH_UPDATE, None),
    ("app touched, same content", Pair(app(8), SAME, link()), "exchange_wins", Action.ACKNOWLEDGE,
     None),
    ("app deleted", Pair(app(8, deleted=True), SAME, link()), "exchange_wins", Action.PUSH_DELETE,
     None),
    ("app made private", Pair(app(8, {**SYNCED, "is_private": True}), SAME, link()),
     "exchange_wins", Action.PUSH_DELETE, None),
    ("both deleted", Pair(app(8, deleted=True), GONE, link()), "app_wins", Action.FORGET, None),
    ("row purged, Exchange unchanged", Pair(None, SAME, link()), "exchange_wins",
     Action.PUSH_DELETE, None),
    ("both made the same change", Pair(app(8, THEIRS), changed(), link()), "app_wins",
     Action.PULL_UPDATE, None),
    # conflicts: both changed
    ("both changed, exchange_wins", Pair(app(8, EDITED), changed(), link()), "exchange_wins",
     Action.PULL_UPDATE, "exchange"),
    ("both changed, app_wins", Pair(app(8, EDITED), changed(), link()), "app_wins",
     Action.PUSH_UPDATE, "app"),
    ("both changed, newest_wins: Exchange later", Pair(app(8, EDITED), changed(), link()),
     "newest_wins", Action.PULL_UPDATE, "exchange"),
    ("both changed, newest_wins: app later",
     Pair(app(8, EDITED, updated_at=LATE + timedelta(minutes=1)), changed(), link()),
     "newest_wins", Action.PUSH_UPDATE, "app"),
    # conflicts: deleted on one side, modified on the other
    ("deleted in app, changed in Exchange, exchange_wins",
     Pair(app(8, deleted=True), changed(), link()), "exchange_wins", Action.PULL_UPDATE,
     "exchange"),
    ("deleted in app, changed in Exchange, app_wins", Pair(app(8, deleted=True), changed(), link()),
     "app_wins", Action.PUSH_DELETE, "app"),
    ("deleted in app later than Exchange's change, newest_wins",
     Pair(app(8, deleted=True, updated_at=LATE + timedelta(minutes=1)), changed(), link()),
     "newest_wins", Action.PUSH_DELETE, "app"),
    ("deleted in app before Exchange's change, newest_wins",
     Pair(app(8, deleted=True), changed(), link()), "newest_wins", Action.PULL_UPDATE, "exchange"),
    ("changed in app, deleted in Exchange, exchange_wins", Pair(app(8, EDITED), GONE, link()),
     "exchange_wins", Action.PULL_DELETE, "exchange"),
    ("changed in app, deleted in Exchange, app_wins", Pair(app(8, EDITED), GONE, link()),
     "app_wins", Action.PUSH_CREATE, "app"),
    ("changed in app, deleted in Exchange, newest_wins keeps the edit",
     Pair(app(8, EDITED), GONE, link()), "newest_wins", Action.PUSH_CREATE, "app"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("pair", "policy", "action", "winner"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decision_table(pair, policy, action, winner):
    decision = decide(pair, policy)
    assert decision.action is action
    if winner is None:
        assert decision.conflict is None
    else:
        assert decision.conflict is not None
        assert decision.conflict.winner == winner
        assert decision.conflict.policy == policy


def test_push_update_sends_only_the_changed_fields():
    decision = decide(Pair(app(8, EDITED), SAME, link()))
    assert decision.fields == ("title",)
    assert decision.item_id == "item-1" and decision.appointment_id == 1


def test_app_wins_conflict_rewrites_every_field_either_side_changed():
    decision = decide(Pair(app(8, EDITED), changed(), link()), "app_wins")
    assert decision.fields == ("title", "location")
    conflict = decision.conflict
    assert (conflict.kind, conflict.app_fields, conflict.exchange_fields) == (
        "both_changed", ("title",), ("location",),
    )  # fmt: skip


def test_unknown_synced_state_counts_every_field_as_changed():
    decision = decide(Pair(app(8, EDITED), SAME, link(synced=None)))
    assert decision.action is Action.PUSH_UPDATE
    assert set(decision.fields) == set(EDITED)


def test_private_items_are_pushed_with_sync_private():
    private = {**SYNCED, "is_private": True}
    assert decide(Pair(app(fields=private)), sync_private=True).action is Action.PUSH_CREATE
    made_private = Pair(app(8, private), SAME, link())
    assert decide(made_private, sync_private=True).action is Action.PUSH_UPDATE


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="conflict policy"):
        decide(Pair(app()), "first_wins")


def test_changed_fields_compares_instants_and_blank_text():
    berlin = T0.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Berlin"))
    assert changed_fields({"starts_at": berlin, "location": ""}, {"starts_at": T0}) == ()
    assert changed_fields({"title": "a"}, None) == ("title",)


def test_summary_counts_actions_and_conflicts():
    decisions = plan(
        [Pair(app(8, EDITED), changed(), link()), Pair(app()), Pair(exchange=changed())],
        "app_wins",
    )
    assert summarize(decisions) == {"push_update": 1, "conflicts": 1, "push_create": 1,
                                    "pull_create": 1}  # fmt: skip
    row = decisions[0].as_row()
    assert row["conflict"]["winner"] == "app" and row["action"] == "push_update"


# --- properties ----------------------------------------------------------------------------------

app_states = st.sampled_from(["absent", "unchanged", "changed", "deleted"])
exchange_states = st.sampled_from(["absent", "unchanged", "changed", "gone"])


def build(app_state: str, exchange_state: str, linked: bool, later: bool) -> Pair:
    stamp = LATE + timedelta(minutes=1) if later else EARLY
    sides = {
        "absent": None,
        "unchanged": app(7 if linked else 3, SYNCED, updated_at=stamp),
        "changed": app(8, EDITED, updated_at=stamp),
        "deleted": app(8, deleted=True, updated_at=stamp),
    }
    theirs = {"absent": None, "unchanged": SAME, "changed": changed(), "gone": GONE}
    exchange = theirs[exchange_state]
    if not linked and exchange is not None and exchange.state is not ExchangeState.CHANGED:
        exchange = None  # an unlinked item is only known when it was read
    return Pair(sides[app_state], exchange, link() if linked else None)


@settings(max_examples=300, derandomize=True)
@given(app_states, exchange_states, st.booleans(), st.booleans(), st.sampled_from(POLICIES))
def test_every_combination_gets_one_coherent_decision(app_state, exchange_state, linked, later,
                                                      policy):  # fmt: skip
    pair = build(app_state, exchange_state, linked, later)
    decision = decide(pair, policy)
    # a conflict exists exactly when both sides changed since a sync and they disagree
    # a purged row (absent, yet linked) counts as deleted in the app
    app_moved = linked and app_state in ("changed", "deleted", "absent")
    exchange_moved = linked and exchange_state in ("changed", "gone")
    both_deleted = app_state in ("deleted", "absent") and exchange_state == "gone"
    if decision.conflict is not None:
        assert app_moved and exchange_moved and not both_deleted
        assert decision.conflict.winner in ("app", "exchange")
    elif app_moved and exchange_moved:
        assert both_deleted or app_state == "absent"  # a purged row has nothing to keep
    # never push what Exchange deleted unless the app's edit won; never pull over an app edit
    # unless Exchange won
    if decision.action in (Action.PULL_UPDATE, Action.PULL_DELETE) and app_moved:
        assert decision.conflict is not None and decision.conflict.winner == "exchange"
    if decision.action in (Action.PUSH_UPDATE, Action.PUSH_DELETE) and exchange_moved:
        assert decision.conflict is not None and decision.conflict.winner == "app"
    # a side that did not move is never overwritten by a stale copy of the other
    if not app_moved and not exchange_moved and linked:
        assert decision.action is Action.NOTHING
    # deletions are never resurrected by an unchanged copy
    if app_state in ("deleted", "absent") and linked and exchange_state in ("unchanged", "absent"):
        assert decision.action is Action.PUSH_DELETE
    if exchange_state == "gone" and linked and app_state == "unchanged":
        assert decision.action is Action.PULL_DELETE
    # the policy decides the winner
    if decision.conflict is not None and policy != "newest_wins" and app_state != "absent":
        assert decision.conflict.winner == policy.removesuffix("_wins")


def test_every_content_field_can_be_diffed():
    before = dict.fromkeys(CONTENT_FIELDS, "x")
    for name in CONTENT_FIELDS:
        assert changed_fields({**before, name: "y"}, before) == (name,)
