"""The generated DAG signing in with NTLM and with OAuth app-only over HTTPS, for real (dag.test):
the appointments land; a refused sign-in fails `check` with the fix; no secret in XCom, the run
log table or the error."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from ewssync.errors import ConnectionTestError
from ewssync.exchange import ews_signin, oauth, open_calendar
from ewssync.settings import SyncSettings
from tests.dags.conftest import ews_connection, run_dag, task_states
from tests.ewssim import EwsSimulator
from tests.identitysim import IdentitySimulator

NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)
PASSWORD = "Dag-Ntlm-Pa55!"  # noqa: S105
STEPS = ["check", "extract", "transform", "load", "push", "report"]


@pytest.fixture
def servers(airflow_env, db, pg_dsn):
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO calendar.users (login, email) VALUES ('alice', 'alice@example.com')"
        )
    db.commit()
    ews = EwsSimulator(tls=True)
    ews.add_mailbox("alice@example.com", password=PASSWORD)
    ews.start()
    mailbox = ews.mailbox("alice@example.com")
    start = datetime(2026, 11, 26, 8, tzinfo=UTC)
    mailbox.create(subject="Visit", start=start, end=start + timedelta(hours=1))
    idp = IdentitySimulator(tls=True).start()
    ews.sign_in.trust(idp)
    idp.add_resource(f"https://{ews.host}", ["full_access_as_app"])
    ews_signin._probed.clear()
    yield {"ews": ews, "idp": idp, "dsn": pg_dsn, "env": airflow_env}
    ews.stop()
    idp.stop()
    oauth.forget()


def titles(dsn: str) -> list[str]:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT title FROM calendar.live_appointments ORDER BY title")
        return [row[0] for row in cur.fetchall()]


def stored_text(dsn: str, dag_run) -> str:
    """Everything the run left behind that a person could read: XCom values and the run log."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        values = [
            str(row.value)
            for row in session.query(XComModel).filter(
                XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id
            )
        ]
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT row_to_json(r)::text FROM ewssync.sync_runs r")
        values += [row[0] for row in cur.fetchall()]
    return "\n".join(values)


def connect(servers, conn_id: str, login: str, password: str, **extra) -> str:
    servers["env"].setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        ews_connection(
            servers["ews"].url, login, password, app_user="alice", verify_tls=False,
            timeout_seconds=5, **extra,
        ),
    )  # fmt: skip
    return f"ewssync__{conn_id}"


def test_dag_syncs_with_ntlm(servers):
    servers["ews"].sign_in.offer("ntlm")
    dag_id = connect(servers, "ews_ntlm", "EXAMPLE\\alice", PASSWORD, auth_method="ntlm",
                     mailbox="alice@example.com")  # fmt: skip
    dag_run = run_dag(dag_id, NOW)
    assert task_states(dag_run) == dict.fromkeys(STEPS, "success")
    assert titles(servers["dsn"]) == ["Visit"]
    assert servers["ews"].sign_in.counts["ntlm"] >= 3
    assert PASSWORD not in stored_text(servers["dsn"], dag_run)


def test_dag_syncs_with_oauth_app_only(servers):
    ews, idp = servers["ews"], servers["idp"]
    ews.sign_in.offer("bearer")
    app = idp.add_app(roles={f"https://{ews.host}": ["full_access_as_app"]})
    dag_id = connect(
        servers, "ews_app", "", app.secret, auth_method="oauth", tenant_id=app.tenant_id,
        client_id=app.client_id, authority=idp.authority, mailbox="alice@example.com",
    )  # fmt: skip
    dag_run = run_dag(dag_id, NOW)
    assert task_states(dag_run) == dict.fromkeys(STEPS, "success")
    assert titles(servers["dsn"]) == ["Visit"]
    assert set(ews.sign_in.anchors) == {("alice@example.com", "alice@example.com")}
    left = stored_text(servers["dsn"], dag_run)
    assert app.secret not in left
    for token in oauth._cache.values():
        assert token.value not in left


def test_dag_with_a_wrong_client_secret_fails_check_with_the_fix(servers):
    ews, idp = servers["ews"], servers["idp"]
    ews.sign_in.offer("bearer")
    app = idp.add_app(roles={f"https://{ews.host}": ["full_access_as_app"]})
    wrong = "sim~a-secret-that-is-not-the-value"
    extra = {
        "auth_method": "oauth", "tenant_id": app.tenant_id, "client_id": app.client_id,
        "authority": idp.authority, "mailbox": "alice@example.com",
    }  # fmt: skip
    dag_id = connect(servers, "ews_app_bad", "", wrong, **extra)
    dag_run = run_dag(dag_id, NOW)
    states = task_states(dag_run)
    assert states["check"] == "failed" and states["load"] != "success"
    assert titles(servers["dsn"]) == []
    # what the check task raised
    from ewssync import pipeline

    settings = SyncSettings.from_connection(
        type("Conn", (), {
            "conn_id": "ews_app_bad", "conn_type": "ews", "host": ews.url, "login": "",
            "password": wrong, "description": "", "port": None, "schema": None,
            "extra": json.dumps({"app_user": "alice", "verify_tls": False, **extra}),
        })()
    )  # fmt: skip
    with pytest.raises(ConnectionTestError) as failed:
        pipeline.check(settings, servers["dsn"], open_calendar(settings))
    assert "AADSTS7000215" in str(failed.value) and "Value (not its Secret ID)" in str(failed.value)
    assert wrong not in str(failed.value)
    assert wrong not in stored_text(servers["dsn"], dag_run)
