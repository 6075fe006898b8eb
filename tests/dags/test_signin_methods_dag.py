"""Each sign-in method in the generated DAG, run for real (dag.test) over plain HTTP and HTTPS:
basic, ntlm and oauth each succeed, and fail the right way (`check` fails with the General
connection part of the report, naming the fix); auto picks what the server offers. No secret
(password, its Basic header, client secret, bearer token) in the task log at DEBUG, in XCom or
in ewssync.sync_runs."""

from __future__ import annotations

import base64
import logging
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from ewssync.exchange import ews_signin, oauth
from tests.dags.conftest import ews_connection, run_dag, task_states
from tests.dags.test_signin_dag import stored_text, titles
from tests.ewssim import EwsSimulator
from tests.identitysim import IdentitySimulator

pytestmark = pytest.mark.slow

NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)
PASSWORD = "Dag-Right-Pa55!"  # noqa: S105
WRONG = "Dag-Wrong-Pa55?"  # noqa: S105
WRONG_SECRET = "sim~the-secret-id-not-its-value"  # noqa: S105
STEPS = ["check", "extract", "transform", "load", "push", "report"]
FAILED_CHECK = dict.fromkeys(STEPS[1:], "upstream_failed") | {"check": "failed"}
# dag.test() runs tasks through Airflow's InProcessSupervisorComms, which logs every message to
# its in-process supervisor at DEBUG, among them Airflow's own MaskSecret(value=<the connection's
# password>) (airflow/sdk/execution_time/supervisor.py, "Sending request"). A deployed worker's
# task runner has no such line; these lines are Airflow's test harness, not ewssync's logging.
HARNESS_LINE = re.compile(r"^.*Sending request.*msg=MaskSecret\(value=.*$", re.MULTILINE)


@pytest.fixture(params=["http", "https"])
def scheme(request, monkeypatch):
    if request.param == "http":
        # oauthlib sends bearer tokens to Exchange only over https unless told this is a test
        monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    return request.param


@pytest.fixture
def servers(scheme, airflow_env, db, pg_dsn):
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO calendar.users (login, email) VALUES ('alice', 'alice@example.com')"
        )
    db.commit()
    ews = EwsSimulator(tls=scheme == "https")
    ews.add_mailbox("alice@example.com", password=PASSWORD)
    ews.add_mailbox("bob@example.com", password="Bob-Pa55word!y")
    ews.start()
    start = datetime(2026, 11, 26, 8, tzinfo=UTC)
    ews.mailbox("alice@example.com").create(
        subject="Visit", start=start, end=start + timedelta(hours=1)
    )
    # the identity platform is HTTPS whatever Exchange speaks (msal takes nothing else)
    idp = IdentitySimulator(tls=True).start()
    ews.sign_in.trust(idp)
    idp.add_resource(f"https://{ews.host}", ["full_access_as_app"])
    ews_signin._probed.clear()
    oauth.forget()
    yield {"ews": ews, "idp": idp, "dsn": pg_dsn, "env": airflow_env}
    ews.stop()
    idp.stop()
    oauth.forget()


@dataclass
class Case:
    offer: tuple[str, ...]  # what the simulated server accepts
    method: str  # auth_method
    login: str = "alice@example.com"
    password: str = PASSWORD
    app: str | None = None  # "full": an Entra app granted full_access_as_app
    wrong_secret: bool = False
    rbac_scope: set[str] | None = None  # RBAC for Applications: the app's mailboxes
    fails_with: tuple[str, ...] = ()  # the check's report (General connection part) says these
    signed_in: str | None = None  # the simulator's count of the method that got in
    not_used: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)


CASES = {
    "basic": Case(("basic",), "basic", signed_in="basic"),
    "basic_wrong_password": Case(
        ("basic",), "basic", password=WRONG,
        fails_with=("the server refused the user name 'alice@example.com' or its password "
                    "(HTTP 401): check 'User name' and 'Password'",),
    ),
    "ntlm": Case(("ntlm",), "ntlm", login="EXAMPLE\\alice", signed_in="ntlm"),
    "ntlm_wrong_password": Case(
        ("ntlm",), "ntlm", login="EXAMPLE\\alice", password=WRONG,
        fails_with=("NTLM sign-in of 'EXAMPLE\\alice'",), signed_in="ntlm_refused",
    ),
    "oauth": Case(("bearer",), "oauth", login="", app="full", signed_in="bearer"),
    "oauth_wrong_secret": Case(
        ("bearer",), "oauth", login="", app="full", wrong_secret=True,
        fails_with=("AADSTS7000215", "Value (not its Secret ID)"),
    ),
    "oauth_app_not_granted_the_mailbox": Case(
        ("bearer",), "oauth", login="", app="full", rbac_scope={"bob@example.com"},
        fails_with=("HTTP 403", "not granted this mailbox", "RBAC for Applications"),
    ),
    "auto_picks_ntlm": Case(
        ("ntlm", "basic"), "auto", signed_in="ntlm", not_used=("basic", "bearer")
    ),
    "auto_picks_oauth_for_an_app": Case(
        ("bearer", "basic"), "auto", login="", app="full", signed_in="bearer",
        not_used=("basic", "ntlm"),
    ),
    "auto_picks_basic": Case(("basic",), "auto", signed_in="basic", not_used=("ntlm", "bearer")),
}  # fmt: skip


@pytest.mark.parametrize("name", CASES)
def test_each_sign_in_method_in_the_dag(servers, name, capfd, caplog):
    case = CASES[name]
    ews, idp, env = servers["ews"], servers["idp"], servers["env"]
    ews.sign_in.offer(*case.offer)
    extra = {
        "app_user": "alice", "mailbox": "alice@example.com", "auth_method": case.method,
        "timeout_seconds": 5, "verify_tls": False, **case.extra,
    }  # fmt: skip
    password = case.password
    secrets = {password}
    if case.app:
        app = idp.add_app(roles={f"https://{ews.host}": ["full_access_as_app"]})
        extra |= {
            "tenant_id": app.tenant_id, "client_id": app.client_id, "authority": idp.authority,
        }  # fmt: skip
        password = WRONG_SECRET if case.wrong_secret else app.secret
        secrets = {password, app.secret}
        if case.rbac_scope is not None:
            ews.sign_in.app_mailboxes[app.client_id] = case.rbac_scope
    if case.login:
        secrets.add(base64.b64encode(f"{case.login}:{password}".encode()).decode())
    conn_id = f"ews_{name}"
    env.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        ews_connection(ews.url, case.login, password, **extra),
    )
    env.setenv("AIRFLOW__LOGGING__LOGGING_LEVEL", "DEBUG")  # the task log at DEBUG
    caplog.set_level(logging.DEBUG)
    # Airflow sets its console handler up once per process: after an earlier DAG test in this
    # process it writes, at INFO, to the stream that test's capture had; point it at this run's
    # stdout, at DEBUG, for this run
    console = [h for h in logging.root.handlers if type(h) is logging.StreamHandler]
    before = [(handler, handler.stream, handler.level) for handler in console]
    for handler in console:
        handler.setStream(sys.stdout)
        handler.setLevel(logging.DEBUG)
    capfd.readouterr()

    dag_run = run_dag(f"ewssync__{conn_id}", NOW)

    for handler, stream, level in before:
        handler.setStream(stream)
        handler.setLevel(level)
    log = capfd.readouterr().out + caplog.text
    assert "exchangelib" in log and "[debug" in log  # the DEBUG task log was captured
    states = task_states(dag_run)
    if case.fails_with:
        assert states == FAILED_CHECK, states
        assert titles(servers["dsn"]) == []
        # the check task's error: the report, its General connection part naming the fix
        report = log[log.index("General connection: FAILED") :]
        general = report.splitlines()[0]
        for words in case.fails_with:
            assert words in general, general
        assert "Send/receive data: not run" in report
    else:
        assert states == dict.fromkeys(STEPS, "success"), states
        assert titles(servers["dsn"]) == ["Visit"]
    if case.signed_in:
        assert ews.sign_in.counts.get(case.signed_in, 0) >= 1, ews.sign_in.counts
    for other in case.not_used:
        assert ews.sign_in.counts.get(other, 0) == 0, ews.sign_in.counts
    if case.app and not case.wrong_secret:
        assert set(ews.sign_in.anchors) == {("alice@example.com", "alice@example.com")}

    tokens = {token.value for token in oauth._cache.values()}  # bearer tokens of the run
    assert bool(tokens) == bool(case.app and not case.wrong_secret)  # checked below
    secrets |= tokens
    task_log = HARNESS_LINE.sub("", log)
    left = stored_text(servers["dsn"], dag_run)
    for secret in secrets:
        for where, text in (("task log", task_log), ("XCom or sync_runs", left)):
            if secret in text:
                at = text.index(secret)
                raise AssertionError(f"secret in the {where}: {text[max(at - 300, 0) : at + 40]}")
