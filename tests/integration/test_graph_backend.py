"""The Graph backend over real HTTP against the Graph simulator (tokens from identitysim): the
same mailbox gives the same records as through EWS; delta, paging, expiry, throttling and the
connection test's explanations."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace

import pandas as pd
import pytest

from ewssync.errors import SettingsError, SyncStateExpired
from ewssync.exchange import oauth, open_calendar
from ewssync.exchange.graph import GraphCalendar
from ewssync.extract import drain_changes
from ewssync.settings import SyncSettings
from ewssync.transform import notes_columns
from tests.conftest import REPO
from tests.ewssim import EwsSimulator
from tests.graphsim import GraphSimulator
from tests.identitysim import IdentitySimulator

FIXTURE = REPO / "tests" / "ewssim" / "fixtures" / "realistic.json"
MAILBOX = "alice@example.com"
RESOURCE = "https://127.0.0.1"  # the simulator's host: the scope is https://{Graph host}/.default
COMPARED = (
    "item_type", "uid", "recurrence_id", "subject", "location", "notes", "start", "end",
    "is_all_day", "start_date", "end_date", "timezone_iana", "sensitivity", "reminder_is_set",
    "reminder_minutes", "legacy_free_busy", "categories", "is_recurring", "is_cancelled",
    "my_response", "organizer", "stamp",
)  # fmt: skip


@pytest.fixture
def world():
    with IdentitySimulator(tls=True) as idp:
        idp.add_resource(RESOURCE, ["Calendars.Read", "Calendars.ReadWrite"])
        ews = EwsSimulator()
        ews.add_mailbox(MAILBOX, password="secret")
        ews.load_fixture(FIXTURE, shift_to=date.today(), default_mailbox=MAILBOX)
        graph = GraphSimulator(source=ews)
        graph.trust(idp)
        with ews.start(), graph:
            yield SimpleNamespace(idp=idp, ews=ews, graph=graph)
            ews.stop()
    oauth.forget()


def conn(host: str, login: str, password: str, **extra) -> SimpleNamespace:
    extra = {"app_user": "alice", "timeout_seconds": 5, "throttle_wait_seconds": 30, **extra}
    return SimpleNamespace(
        conn_id="graph_alice", conn_type="ews", host=host, login=login, password=password,
        description="", port=None, schema=None, extra=json.dumps(extra),
    )  # fmt: skip


def graph_settings(world, roles=("Calendars.ReadWrite",), **extra) -> SyncSettings:
    app = world.idp.add_app(roles={RESOURCE: list(roles)} if roles else {})
    return SyncSettings.from_connection(
        conn(
            world.graph.url,
            "",
            app.secret,
            api="graph",
            auth_method="oauth",
            tenant_id=app.tenant_id,
            client_id=app.client_id,
            authority=world.idp.authority,
            verify_tls=False,  # the identity simulator's throwaway certificate
            **{"mailbox": MAILBOX, **extra},
        )  # fmt: skip
    )


def ews_settings(world) -> SyncSettings:
    return SyncSettings.from_connection(conn(world.ews.url, MAILBOX, "secret"))


def by_instance(records: list[dict]) -> dict:
    """Records by (UID, original start), with the notes the app would get from the body."""
    found = {}
    for record in records:
        notes, _ = notes_columns(
            pd.Series([record["body"]]), pd.Series([record["body_type"]]), keep_html=False
        )
        found[(record["uid"], record["recurrence_id"])] = {**record, "notes": notes[0]}
    return found


def test_the_same_mailbox_gives_the_same_records_through_ews_and_graph(world):
    settings = graph_settings(world)
    window = settings.window(datetime.now(UTC))
    ews = open_calendar(ews_settings(world))
    graph = open_calendar(settings)
    assert isinstance(graph, GraphCalendar)
    through_ews = by_instance(ews.read_window(*window))
    state, _ = drain_changes(graph, None, window)
    sent = graph.requests_sent
    index = graph.read_index(*window)
    records, missing = graph.fetch([entry["item_id"] for entry in index])
    # the full read is the delta's pages: nothing more was asked
    assert graph.requests_sent == sent and missing == [] and state
    through_graph = by_instance(records)
    assert set(through_graph) == set(through_ews) and len(through_ews) > 20
    # Graph gives every body as HTML (Prefer: outlook.body-content-type="html"; a Text body
    # comes wrapped), so the notes are compared, not the raw bodies.
    # Graph names every item's zone (originalStartTimeZone); EWS answers without one for items
    # whose answers carry no zone (Exchange 2019 omits it in some shapes: zone_on_wire "none"),
    # so there the Graph record knows more. An all-day event in a customized zone Graph cannot
    # name ("tzone://Microsoft/Custom") keeps its dates, placed at midnight in the connection's
    # zone (EWS sends that zone's own midnights). Everything else is equal, field by field.
    unnamed = {i.subject for i in world.ews.mailbox(MAILBOX).items() if i.zone_on_wire == "none"}
    assert unnamed
    for key, expected in through_ews.items():
        got = through_graph[key]
        for name in COMPARED:
            if name == "timezone_iana" and expected["subject"] in unnamed:
                assert expected[name] is None and got[name] is not None
                continue
            if name in ("start", "end") and got["is_all_day"] and got["timezone_windows"] is None:
                day = got["start_date"] if name == "start" else got["end_date"] + timedelta(1)
                assert got[name] == datetime.combine(day, datetime.min.time(), tzinfo=UTC)
                continue
            assert got[name] == expected[name], (expected["subject"], name)
    graph.close()
    ews.close()


def test_delta_reports_changes_then_expiry_means_a_full_read(world):
    settings = graph_settings(world)
    window = settings.window(datetime.now(UTC))
    graph = GraphCalendar(settings, page_size=5)
    state, first = drain_changes(graph, None, window)
    assert len(first) > 5  # several pages
    mailbox = world.graph.mailbox(MAILBOX)
    now = datetime.now(UTC)
    single = next(i for i in mailbox.items() if not i.recurrence and i.start > now)
    mailbox.update(single.item_id, subject="Neu")
    series = next(i for i in mailbox.items() if i.recurrence)
    starts = [s for s in mailbox.expand(series.item_id, window[1]) if s >= window[0]]
    mailbox.delete_occurrence(series.item_id, starts[0])
    state, changes = drain_changes(graph, state, window)
    kinds = {(c["item_type"], c["change_key"] is None) for c in changes.values()}
    assert ("Single", False) in kinds and (None, True) in kinds  # a change and a @removed
    records, missing = graph.fetch(list(changes))
    assert [r["subject"] for r in records if r["item_type"] == "Single"] == ["Neu"]
    assert len(missing) == 1  # the deleted occurrence, confirmed by its id
    world.graph.expire_delta_tokens()
    with pytest.raises(SyncStateExpired):
        drain_changes(graph, state, window)
    moved = (window[0] + timedelta(days=1), window[1] + timedelta(days=1))
    with pytest.raises(SyncStateExpired, match="window moved"):
        drain_changes(graph, state, moved)


def test_throttling_is_waited_out(world):
    graph = GraphCalendar(graph_settings(world))
    world.graph.inject_fault("throttle429", route="delta", retry_after=1)
    world.graph.inject_fault("http503", route="batch", retry_after=1)
    state, changes = drain_changes(graph, None)
    assert changes and world.graph.request_counts["delta"] >= 2
    graph._events.clear()
    records, _ = graph.fetch(list(changes)[:3])
    assert len(records) == 3


def test_connection_test_explains_graph_failures(world):
    ok = open_calendar(graph_settings(world)).test(write=True)
    assert ok.ok, str(ok)
    assert "read and write" in ok.parts[1].message

    no_consent = open_calendar(graph_settings(world, roles=())).test(write=False)
    assert not no_consent.ok and "admin consent is missing" in no_consent.parts[0].message

    read_only = open_calendar(graph_settings(world, roles=("Calendars.Read",))).test()
    assert "Calendars.ReadWrite is not granted" in read_only.parts[0].message

    settings = graph_settings(world)
    world.graph.restrict_app(settings.client_id, ["bob@example.com"])
    policy = open_calendar(settings).test(write=False)
    assert policy.parts[0].ok and not policy.parts[1].ok
    assert "application access policy" in policy.parts[1].message

    nobody = graph_settings(world, mailbox="nobody@example.com", allow_mailbox_mismatch=True)
    report = open_calendar(nobody).test(write=False)
    assert "does not exist" in report.parts[1].message


def test_settings_for_graph_name_their_field(world):
    with pytest.raises(SettingsError, match="'auth_method'.*api graph"):
        SyncSettings.from_connection(conn(world.graph.url, MAILBOX, "x", api="graph"))
    with pytest.raises(SettingsError, match="'api'"):
        SyncSettings.from_connection(conn(world.graph.url, MAILBOX, "x", api="rest"))
    with pytest.raises(SettingsError, match="'server'.*https"):
        graph_settings(world).__class__.from_connection(
            conn("http://graph.example.com", "", "s", api="graph", auth_method="oauth",
                 tenant_id="contoso.onmicrosoft.com",
                 client_id="0a1b2c3d-1111-2222-3333-444455556666", mailbox=MAILBOX)
        )  # fmt: skip
    cloud = SyncSettings.from_connection(
        conn("graph.microsoft.us", "", "s", api="graph", auth_method="oauth",
             tenant_id="contoso.onmicrosoft.com", authority="usgov",
             client_id="0a1b2c3d-1111-2222-3333-444455556666", mailbox=MAILBOX)
    )  # fmt: skip
    assert cloud.service_endpoint == "https://graph.microsoft.us"
    assert GraphCalendar(cloud).scope == "https://graph.microsoft.us/.default"


def test_the_test_button_on_a_graph_connection(world, monkeypatch):
    """EwsHook.test_connection (the UI's Test button, `airflow connections test`) for api=graph:
    both parts, and the fix for a missing permission."""
    from ewssync.hook import EwsHook

    def answer(settings: SyncSettings) -> tuple[bool, str]:
        monkeypatch.setenv(
            "AIRFLOW_CONN_GRAPH_BUTTON",
            json.dumps({
                "conn_type": "ews", "host": settings.service_endpoint, "login": "",
                "password": settings.password,
                "extra": {"app_user": "alice", "api": "graph", "auth_method": "oauth",
                          "tenant_id": settings.tenant_id, "client_id": settings.client_id,
                          "authority": settings.authority, "mailbox": MAILBOX,
                          "verify_tls": False, "timeout_seconds": 5},
            }),
        )  # fmt: skip
        return EwsHook(ews_conn_id="graph_button").test_connection()

    ok, message = answer(graph_settings(world))
    assert ok, message
    assert "Microsoft Graph" in message and "read and write" in message
    ok, message = answer(graph_settings(world, roles=("Calendars.Read",)))
    assert not ok and "Calendars.ReadWrite is not granted" in message
