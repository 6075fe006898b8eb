"""Model-based test of the two-way sync (hypothesis, stateful): random interleavings of edits on
both sides (create, retitle, move within and out of the window, delete; the same appointment
edited on both sides; series created in the app with occurrences edited or deleted on either
side) with sync runs and injected crashes (after Exchange accepted a write and before Postgres
recorded it; between load and push), against PostgreSQL and the simulator over HTTP.

After every sync: both sides hold the same appointments (the model's, under the conflict
policy), no duplicates on either side, nothing lost but by an explicit delete, and one more sync
with no edits changes nothing (no app row, no Exchange item, no request beyond the 2 of a
no-change run).

Profiles: ``EWSSYNC_MODEL_PROFILE=ci`` (default; 200 examples, derandomized: the same cases
every run) or ``nightly`` (2,000 examples, random seeds, longer programs), e.g.
``EWSSYNC_MODEL_PROFILE=nightly .venv/bin/python -m pytest tests/integration/test_twoway_model.py``.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from ewssync.exchange import open_calendar
from ewssync.push import Crash
from tests.conftest import create_database
from tests.ewssim import EwsSimulator
from tests.integration.twoway_support import add_user, new_run_key, resume, settings_for, sync

BASE = datetime(2026, 11, 23, 8, tzinfo=UTC)  # the Monday of NOW's week, 08:00 UTC
FAR = timedelta(days=200)  # beyond weeks_ahead: out of the window
STAMP = "PublicStrings:ewssyncAppointmentId"

PROFILES = {
    "ci": {"max_examples": 200, "stateful_step_count": 4, "derandomize": True},
    "nightly": {"max_examples": 2000, "stateful_step_count": 25, "derandomize": False},
    "quick": {"max_examples": 10, "stateful_step_count": 8, "derandomize": True},
}
PROFILE = dict(PROFILES[os.environ.get("EWSSYNC_MODEL_PROFILE", "ci")])
if os.environ.get("EWSSYNC_MODEL_EXAMPLES"):  # e.g. a short random hunt: profile nightly + 50
    PROFILE["max_examples"] = int(os.environ["EWSSYNC_MODEL_EXAMPLES"])
_titles = itertools.count(1)
_examples = itertools.count(1)


@dataclass
class Entity:
    """One appointment as the model expects it: content, and the edits since the last sync."""

    title: str
    start: datetime
    app_id: int | None = None
    item_id: str | None = None
    app_edit: object = None  # None | "delete" | (title, start)
    exchange_edit: object = None
    app_edit_time: int = 0
    exchange_edit_time: int = 0
    gone: bool = False
    master_id: str | None = None  # an occurrence of a series: its master and original start
    original: datetime | None = None

    def content(self) -> tuple[str, datetime]:
        return (self.title, self.start)


class Shared:
    """One database and one simulator for all examples (each example starts clean)."""

    dsn: str | None = None
    drop = None
    sim: EwsSimulator | None = None


@pytest.fixture(scope="module", autouse=True)
def shared(pg_server):
    Shared.dsn, Shared.drop = create_database(pg_server, "ewssync_model")
    from ewssync import store

    store.migrate(Shared.dsn)
    Shared.sim = EwsSimulator()
    Shared.sim.start()
    yield
    Shared.sim.stop()
    Shared.drop()


slots = st.integers(min_value=0, max_value=20)  # hours after BASE, in steps of 7 hours


class TwoWaySync(RuleBasedStateMachine):
    entities = Bundle("entities")

    def __init__(self):
        super().__init__()
        # Each example has its own connection, app user and mailbox: nothing to clean up.
        self.name = f"m{next(_examples)}"
        self.email = f"{self.name}@example.com"
        self.mailbox = Shared.sim.add_mailbox(self.email, "secret")
        self.user = add_user(Shared.dsn, self.name, self.email)
        self.clock = 0
        self.all: list[Entity] = []
        self.series = 0
        self.series_dirty = False  # a series changed from the app side: read back once more

    @initialize(policy=st.sampled_from(["exchange_wins", "app_wins"]))
    def configure(self, policy):
        self.policy = policy
        self.settings = settings_for(
            Shared.sim, conn_id=f"ews_{self.name}", login=self.name, email=self.email,
            conflict_policy=policy, weeks_ahead=8,
        )  # fmt: skip
        self.calendar = open_calendar(self.settings)
        self.checked = False

    # --- edits in the app ---------------------------------------------------------------

    def _sql(self, statement: str, params=()):
        with psycopg2.connect(Shared.dsn) as conn, conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchone() if cur.description else None

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    @rule(target=entities, slot=slots)
    def create_in_app(self, slot):
        start = BASE + timedelta(hours=7 * slot)
        entity = Entity(f"A{next(_titles)}", start)
        (entity.app_id,) = self._sql(
            "INSERT INTO calendar.appointments (owner_user_id, title, starts_at, ends_at) "
            "VALUES (%s, %s, %s, %s) RETURNING id",
            (self.user, entity.title, start, start + timedelta(hours=1)),
        )
        entity.app_edit = ("created",)
        self.all.append(entity)
        return entity

    @rule(target=entities, slot=slots)
    def create_in_exchange(self, slot):
        start = BASE + timedelta(hours=7 * slot)
        entity = Entity(f"X{next(_titles)}", start)
        entity.item_id = self.mailbox.create(
            subject=entity.title, start=start, end=start + timedelta(hours=1),
            timezone="W. Europe Standard Time",
        )  # fmt: skip
        entity.exchange_edit = ("created",)
        self.all.append(entity)
        return entity

    def _on_app(self, entity: Entity) -> bool:
        return entity.app_id is not None and not entity.gone and entity.app_edit != "delete"

    def _on_exchange(self, entity: Entity) -> bool:
        return entity.item_id is not None and not entity.gone and entity.exchange_edit != "delete"

    @rule(entity=entities, far=st.booleans(), hours=st.integers(-14, 14))
    def edit_in_app(self, entity, far, hours):
        if not self._on_app(entity):
            return
        # a new item outside the window is not synced; occurrences stay near their series
        far = far and entity.app_edit != ("created",) and entity.master_id is None
        title = f"{entity.title.split('~')[0]}~a{next(_titles)}"
        start = self._moved(self._current(entity, "app")[1], far, hours)
        self._sql(
            "UPDATE calendar.appointments SET title = %s, starts_at = %s, ends_at = %s "
            "WHERE id = %s",
            (title, start, start + timedelta(hours=1), entity.app_id),
        )
        if entity.app_edit != ("created",):
            entity.app_edit = (title, start)
        entity.app_edit_time = self._tick()
        self._pending_content(entity, "app", title, start)
        self.series_dirty |= entity.master_id is not None

    @rule(entity=entities, far=st.booleans(), hours=st.integers(-14, 14))
    def edit_in_exchange(self, entity, far, hours):
        if not self._on_exchange(entity):
            return
        far = far and entity.exchange_edit != ("created",) and entity.master_id is None
        title = f"{entity.title.split('~')[0]}~x{next(_titles)}"
        start = self._moved(self._current(entity, "exchange")[1], far, hours)
        if entity.master_id:  # an occurrence edited in Outlook becomes an exception
            self.mailbox.modify_occurrence(
                entity.master_id, entity.original, subject=title, start=start,
                end=start + timedelta(hours=1),
            )  # fmt: skip
        else:
            self.mailbox.update(
                entity.item_id, subject=title, start=start, end=start + timedelta(hours=1)
            )
        if entity.exchange_edit != ("created",):
            entity.exchange_edit = (title, start)
        entity.exchange_edit_time = self._tick()
        self._pending_content(entity, "exchange", title, start)

    @rule(entity=entities)
    def delete_in_app(self, entity):
        if not self._on_app(entity):
            return
        self._sql("DELETE FROM calendar.appointments WHERE id = %s", (entity.app_id,))
        self._deleted(entity, "app")
        self.series_dirty |= entity.master_id is not None

    @rule(entity=entities)
    def delete_in_exchange(self, entity):
        if not self._on_exchange(entity) or self.mailbox.get(entity.item_id) is None:
            return
        if entity.master_id:  # a deleted occurrence of its series
            self.mailbox.delete_occurrence(entity.master_id, entity.original)
        else:
            self.mailbox.delete(entity.item_id)
        self._deleted(entity, "exchange")

    @rule(target=entities, slot=slots)
    def create_series_in_app(self, slot):
        """A series written in the app (daily, 3 occurrences): one series in Exchange, whose
        occurrences come back as rows; each is then an entity of its own (edited or deleted on
        either side like any appointment)."""
        if self.series >= 2:
            return multiple()
        self.series += 1
        start = BASE + timedelta(hours=7 * slot)
        title = f"S{next(_titles)}"
        self._sql(
            "INSERT INTO calendar.appointments (owner_user_id, title, starts_at, ends_at, "
            "time_zone, series_key, recurrence_rule) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (self.user, title, start, start + timedelta(hours=1), "Europe/Berlin",
             f"{title}@{self.name}", "FREQ=DAILY;COUNT=3"),
        )  # fmt: skip
        self.series_dirty = True
        occurrences = []
        for day in range(3):
            entity = Entity(title, start + timedelta(days=day))
            entity.app_edit = ("series",)  # exists once the series is synced and read back
            self.all.append(entity)
            occurrences.append(entity)
        return multiple(*occurrences)

    def _moved(self, start: datetime, far: bool, hours: int) -> datetime:
        if far:  # out of the window, or back into it
            return start - FAR if start > BASE + FAR / 2 else start + FAR
        return start + timedelta(hours=hours)

    def _deleted(self, entity: Entity, side: str) -> None:
        edit = getattr(entity, f"{side}_edit")
        if edit == ("created",):
            entity.gone = True  # never synced: it simply never existed for the other side
            return
        setattr(entity, f"{side}_edit", "delete")
        setattr(entity, f"{side}_edit_time", self._tick())

    # pending content per side (what that side shows now), kept beside the synced content
    def _pending_content(self, entity, side, title, start):
        setattr(entity, f"_{side}_now", (title, start))

    def _current(self, entity, side):
        return getattr(entity, f"_{side}_now", entity.content())

    # --- syncs ----------------------------------------------------------------------------

    def _first(self) -> bool:
        """The example's first run also runs the check step (schema, user, one GetFolder)."""
        first, self.checked = not self.checked, True
        return first

    @rule()
    def sync_once(self):
        sync(self.settings, Shared.dsn, check=self._first(), calendar=self.calendar)
        self._resolve()

    @rule(point=st.sampled_from(["after_exchange_write", "between_load_and_push"]))
    def sync_with_a_crash_then_recover(self, point):
        def die(where):
            raise Crash(where)

        run_key = new_run_key()
        try:
            if point == "between_load_and_push":
                sync(self.settings, Shared.dsn, stop_after="load", check=self._first(),
                     calendar=self.calendar, run_key=run_key)  # fmt: skip
            else:
                sync(self.settings, Shared.dsn, crash=die, check=self._first(),
                     calendar=self.calendar, run_key=run_key)  # fmt: skip
        except Crash:
            pass
        # Airflow retries the task that died (the same run): push again, then report
        resume(self.settings, Shared.dsn, run_key, calendar=self.calendar)
        self._resolve()

    def _resolve(self) -> None:
        """What the model expects after a sync: each entity's content under the policy."""
        for entity in self.all:
            if entity.gone:
                continue
            app, exchange = entity.app_edit, entity.exchange_edit
            app_now = self._current(entity, "app")
            exchange_now = self._current(entity, "exchange")
            if app in (("created",), ("series",)):
                entity.title, entity.start = app_now
            elif exchange == ("created",):
                entity.title, entity.start = exchange_now
            elif app is not None and exchange is not None:
                winner = "app" if self.policy == "app_wins" else "exchange"
                if app == "delete" and exchange == "delete":
                    entity.gone = True
                elif winner == "app":
                    entity.gone = app == "delete"
                    entity.title, entity.start = app_now
                else:
                    entity.gone = exchange == "delete"
                    entity.title, entity.start = exchange_now
            elif app is not None:
                entity.gone = app == "delete"
                entity.title, entity.start = app_now
            elif exchange is not None:
                entity.gone = exchange == "delete"
                entity.title, entity.start = exchange_now
            entity.app_edit = entity.exchange_edit = None
            for side in ("app", "exchange"):
                if hasattr(entity, f"_{side}_now"):
                    delattr(entity, f"_{side}_now")
        if self.series_dirty:
            # A series changed from the app side is read back in the next run (its occurrences
            # get rows, exceptions their new change keys): that run is part of the sync.
            sync(self.settings, Shared.dsn, check=self._first(), calendar=self.calendar)
            self.series_dirty = False
        self._check_converged()
        self._check_quiet()

    # --- checks ---------------------------------------------------------------------------

    def _app_side(self) -> list[tuple[str, datetime]]:
        """The app's appointments: singles and occurrence rows (a series' definition row is
        not an appointment of its own)."""
        with psycopg2.connect(Shared.dsn) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT title, starts_at, id FROM calendar.live_appointments "
                "WHERE owner_user_id = %s AND recurrence_rule IS NULL ORDER BY title",
                (self.user,),
            )
            return [(title, start) for title, start, _ in cur.fetchall()]

    def _exchange_items(self):
        """What Outlook shows: singles, occurrences and exceptions, near and far."""
        return self.mailbox.occurrences(BASE - timedelta(days=60), BASE + 2 * FAR)

    def _exchange_side(self) -> list[tuple[str, datetime]]:
        return sorted((item.subject, item.start) for item in self._exchange_items())

    def _check_converged(self) -> None:
        expected = sorted(e.content() for e in self.all if not e.gone)
        app, exchange = sorted(self._app_side()), self._exchange_side()
        assert app == expected, f"app side {app} != model {expected}"
        assert exchange == expected, f"Exchange side {exchange} != model {expected}"
        # the model's ids follow the items (a recreated item has a new id; an occurrence
        # recreated as a single appointment is no longer an occurrence)
        shown = {(item.subject, item.start): item for item in self._exchange_items()}
        for entity in self.all:
            if entity.gone:
                continue
            item = shown[entity.content()]
            entity.item_id = item.item_id
            entity.master_id = entity.original = None
            if item.item_type in ("Occurrence", "Exception"):
                master, original = self.mailbox.resolve_occurrence(item.item_id)
                entity.master_id, entity.original = master.item_id, original
            entity.app_id = self._sql(
                "SELECT appointment_id FROM ewssync.links WHERE conn_id = %s AND ews_item_id = %s",
                (self.settings.conn_id, item.item_id),
            )[0]

    def _versions(self) -> int:
        return self._sql(
            "SELECT coalesce(sum(version), 0) FROM calendar.appointments WHERE owner_user_id = %s",
            (self.user,),
        )[0]

    def _check_quiet(self) -> None:
        """One more sync with no edits changes nothing on either side."""
        versions = self._versions()
        keys = sorted((item.item_id, item.change_key) for item in self._exchange_items())
        Shared.sim.reset_counters()
        report = sync(self.settings, Shared.dsn, check=self._first(), calendar=self.calendar)
        assert self._versions() == versions, f"a no-edit sync changed the app: {report['counts']}"
        assert sorted((i.item_id, i.change_key) for i in self._exchange_items()) == keys
        # a no-change run: SyncFolderItems only (+ the check's GetFolder, skipped here)
        assert dict(Shared.sim.request_counts) == {"SyncFolderItems": 1}, (
            f"a no-edit sync sent {dict(Shared.sim.request_counts)}"
        )

    def teardown(self):
        if getattr(self, "calendar", None) is not None:
            self.calendar.close()

    @invariant()
    def no_duplicates(self):
        stamps = [i.extended.get(STAMP) for i in self.mailbox.items() if i.extended.get(STAMP)]
        assert len(stamps) == len(set(stamps)), "an appointment was created twice in Exchange"
        rows = self._sql("SELECT count(*), count(DISTINCT ews_item_id) FROM ewssync.links")
        assert rows[0] == rows[1]


TwoWaySync.TestCase.settings = settings(
    max_examples=PROFILE["max_examples"],
    stateful_step_count=PROFILE["stateful_step_count"],
    derandomize=PROFILE["derandomize"],
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 200 examples take minutes, more on a loaded machine
def test_two_way_sync_model(shared):
    TwoWaySync.TestCase().runTest()


# keep unused-import checkers quiet about the helpers the rules use
_ = (consumes, precondition)
