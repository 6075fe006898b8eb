"""One connection per mailbox and app user: the claim check takes in the real calendar database,
against the simulator (a second connection is refused naming the first; gone holders release)."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import pytest

from ewssync import pipeline
from ewssync.errors import ConnectionTestError, SettingsError
from ewssync.settings import SyncSettings


def connection(sim, conn_id: str, password: str = "secret", host: str | None = None, **extra):  # noqa: S107
    extra = {"app_user": "alice", "timeout_seconds": 5, **extra}
    return SimpleNamespace(
        conn_id=conn_id, conn_type="ews", host=host or sim.url, login="alice@example.com",
        password=password, description="", port=None, schema=None, extra=json.dumps(extra),
    )  # fmt: skip


class Airflow:
    """The connections Airflow knows, by id: what check asks for a claim's holder."""

    def __init__(self, *connections):
        self.connections = {c.conn_id: c for c in connections}

    def add(self, conn):
        self.connections[conn.conn_id] = conn
        return conn

    def lookup(self, conn_id):
        return self.connections.get(conn_id)


@pytest.fixture
def alice_db(db, pg_dsn):
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO calendar.users (login, email) VALUES ('alice', 'alice@example.com'), "
            "('bob', 'alice@example.com')"
        )
    db.commit()
    return pg_dsn


def check(conn, dsn, airflow: Airflow) -> dict:
    settings = SyncSettings.from_connection(conn)
    return pipeline.check(settings, dsn, pipeline.open_calendar(settings), lookup=airflow.lookup)


def holders(db) -> list[tuple]:
    db.rollback()
    with db.cursor() as cur:
        cur.execute(
            "SELECT c.conn_id, c.mailbox, u.login FROM ewssync.mailbox_claims c "
            "JOIN calendar.users u ON u.id = c.user_id ORDER BY c.conn_id"
        )
        return cur.fetchall()


def test_the_second_connection_is_refused_naming_the_first(sim, alice_db, db):
    airflow = Airflow()
    first = airflow.add(connection(sim, "ews_first"))
    second = airflow.add(
        connection(sim, "ews_second", host=sim.url.upper().replace("HTTP", "http"))
    )
    check(first, alice_db, airflow)
    check(first, alice_db, airflow)  # the holder's own check passes again

    with pytest.raises(SettingsError) as refused:
        check(second, alice_db, airflow)
    assert refused.value.field == "mailbox"
    message = str(refused.value)
    assert "'ews_first'" in message and "'ews_second'" in message
    assert "allow_duplicate_mailbox" in message
    assert holders(db) == [("ews_first", "alice@example.com", "alice")]


def test_the_mailbox_address_is_compared_case_insensitively(sim, alice_db):
    airflow = Airflow()
    check(airflow.add(connection(sim, "ews_first")), alice_db, airflow)
    shouting = airflow.add(connection(sim, "ews_caps", mailbox="ALICE@Example.COM"))
    with pytest.raises(SettingsError, match="ews_first"):
        check(shouting, alice_db, airflow)


def test_allow_duplicate_mailbox_lets_the_second_one_run_without_taking_the_claim(
    sim, alice_db, db
):
    airflow = Airflow()
    check(airflow.add(connection(sim, "ews_first")), alice_db, airflow)
    check(airflow.add(connection(sim, "ews_copy", allow_duplicate_mailbox=True)), alice_db, airflow)
    assert holders(db) == [("ews_first", "alice@example.com", "alice")]


def test_another_app_user_or_mailbox_is_no_duplicate(sim, alice_db, db):
    sim.add_mailbox("carol@example.com", password="secret", calendar_access=True)
    airflow = Airflow()
    check(airflow.add(connection(sim, "ews_first")), alice_db, airflow)
    check(airflow.add(connection(sim, "ews_bob", app_user="bob")), alice_db, airflow)
    carol = connection(sim, "ews_carol", mailbox="carol@example.com", allow_mailbox_mismatch=True)
    check(airflow.add(carol), alice_db, airflow)
    assert [row[0] for row in holders(db)] == ["ews_bob", "ews_carol", "ews_first"]


def test_a_deleted_or_repointed_holder_releases_its_claim(sim, alice_db, db):
    airflow = Airflow()
    check(airflow.add(connection(sim, "ews_first")), alice_db, airflow)
    del airflow.connections["ews_first"]  # deleted (or renamed: the old id is gone)
    check(airflow.add(connection(sim, "ews_renamed")), alice_db, airflow)
    assert holders(db) == [("ews_renamed", "alice@example.com", "alice")]

    # the holder now names another app user: the mailbox is free for alice again
    airflow.add(connection(sim, "ews_renamed", app_user="bob"))
    check(airflow.add(connection(sim, "ews_third")), alice_db, airflow)
    assert holders(db) == [("ews_third", "alice@example.com", "alice")]
    # and the edited connection, checked again, claims what it names now and drops the rest
    check(airflow.connections["ews_renamed"], alice_db, airflow)
    assert holders(db) == [
        ("ews_renamed", "alice@example.com", "bob"),
        ("ews_third", "alice@example.com", "alice"),
    ]


def test_a_holder_with_broken_settings_keeps_its_claim(sim, alice_db):
    airflow = Airflow()
    check(airflow.add(connection(sim, "ews_first")), alice_db, airflow)
    airflow.add(connection(sim, "ews_first", weeks_back=500))  # edited into an invalid state
    with pytest.raises(SettingsError, match="ews_first"):
        check(airflow.add(connection(sim, "ews_second")), alice_db, airflow)


def test_a_connection_that_cannot_sign_in_claims_nothing(sim, alice_db, db):
    airflow = Airflow()
    with pytest.raises(ConnectionTestError, match="General connection: FAILED"):
        check(airflow.add(connection(sim, "ews_badpw", password="wrong")), alice_db, airflow)
    assert holders(db) == []
    check(airflow.add(connection(sim, "ews_good")), alice_db, airflow)
    assert holders(db) == [("ews_good", "alice@example.com", "alice")]


def test_two_checks_at_once_let_exactly_one_connection_in(sim, alice_db, db):
    airflow = Airflow()
    conns = [airflow.add(connection(sim, f"ews_race_{n}")) for n in range(4)]
    outcomes: dict[str, str] = {}

    def run(conn):
        try:
            check(conn, alice_db, airflow)
            outcomes[conn.conn_id] = "ok"
        except SettingsError as exc:
            outcomes[conn.conn_id] = str(exc)

    threads = [threading.Thread(target=run, args=(conn,)) for conn in conns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [conn_id for conn_id, outcome in outcomes.items() if outcome == "ok"]
    assert len(winners) == 1, outcomes
    assert all(f"{winners[0]!r}" in outcome for outcome in outcomes.values() if outcome != "ok")
    assert holders(db) == [(winners[0], "alice@example.com", "alice")]


def test_the_connection_test_names_the_connection_holding_the_mailbox(sim, alice_db, monkeypatch):
    from ewssync.hook import EwsHook

    def as_env(conn) -> str:
        return json.dumps(
            {"conn_type": "ews", "host": conn.host, "login": conn.login,
             "password": conn.password, "extra": json.loads(conn.extra)}
        )  # fmt: skip

    monkeypatch.setenv("AIRFLOW_CONN_EWSSYNC_DB", alice_db)
    first, second = connection(sim, "ews_first"), connection(sim, "ews_second", test_write=False)
    for conn in (first, second):
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn.conn_id.upper()}", as_env(conn))
    # before any check ran, nobody holds the mailbox
    assert EwsHook(ews_conn_id="ews_second").test_connection()[0] is True
    settings = SyncSettings.from_connection(first)
    pipeline.check(settings, alice_db, pipeline.open_calendar(settings))  # Airflow's lookup

    ok, message = EwsHook(ews_conn_id="ews_second").test_connection()
    assert ok is False
    lines = message.splitlines()
    assert lines[0].startswith("General connection: OK")
    assert lines[1].startswith("Send/receive data: OK")
    assert lines[2].startswith("One connection per mailbox: FAILED")
    assert "'ews_first'" in lines[2] and "allow_duplicate_mailbox" in lines[2]

    # the holder's own test passes, under its id or under the UI's temporary one
    assert EwsHook(ews_conn_id="ews_first").test_connection()[0] is True
    monkeypatch.setenv("AIRFLOW_CONN_XQZTRANSIENT", as_env(first))
    assert EwsHook(ews_conn_id="xqztransient").test_connection()[0] is True
    # and the duplicate passes once allowed
    allowed = connection(sim, "ews_second", test_write=False, allow_duplicate_mailbox=True)
    monkeypatch.setenv("AIRFLOW_CONN_EWS_SECOND", as_env(allowed))
    assert EwsHook(ews_conn_id="ews_second").test_connection()[0] is True
