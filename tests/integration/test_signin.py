"""Signing in through exchangelib over real HTTP and HTTPS: NTLM (a real handshake with pyspnego's
acceptor), OAuth app-only tokens from the identity simulator with impersonation, auto; and each
failure explained in the connection test by its fix, with no secret in the text or the logs."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from ewssync.exchange import ews_signin, oauth, open_calendar
from ewssync.settings import SyncSettings
from tests.ewssim import EwsSimulator
from tests.identitysim import IdentitySimulator

PASSWORD = "Ntlm-Pa55word!x"  # noqa: S105


@pytest.fixture(params=["http", "https"])
def scheme(request, monkeypatch):
    if request.param == "http":
        # oauthlib refuses to send a bearer token over plain http (InsecureTransportError, see
        # test_oauth_over_plain_http_is_refused); the plain-http simulator needs its test switch
        monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    return request.param


@pytest.fixture
def ews(scheme):
    simulator = EwsSimulator(tls=scheme == "https")
    simulator.add_mailbox("alice@example.com", password=PASSWORD)
    simulator.add_mailbox("bob@example.com", password="Bob-Pa55word!y")
    simulator.start()
    ews_signin._probed.clear()
    yield simulator
    simulator.stop()
    oauth.forget()


@pytest.fixture
def idp(ews):
    # the identity platform is HTTPS whatever Exchange speaks (msal takes nothing else)
    with IdentitySimulator(tls=True) as identity:
        ews.sign_in.trust(identity)
        # the EWS simulator is the resource https://127.0.0.1, as Exchange Online is
        # https://outlook.office365.com: the app's full_access_as_app is granted there
        identity.add_resource(f"https://{ews.host}", ["full_access_as_app"])
        yield identity


def settings_for(ews, login="alice@example.com", password=PASSWORD, **extra) -> SyncSettings:
    extra = {"app_user": "alice", "timeout_seconds": 5, **extra}
    if ews.tls:
        extra["verify_tls"] = False  # the throwaway certificate (test systems only)
    conn = SimpleNamespace(
        conn_id="ews_signin", conn_type="ews", host=ews.url, login=login, password=password,
        description="", port=None, schema=None, extra=json.dumps(extra),
    )  # fmt: skip
    return SyncSettings.from_connection(conn)


def app_settings(ews, idp, app, secret=None, **extra) -> SyncSettings:
    fields = {
        "auth_method": "oauth",
        "tenant_id": app.tenant_id,
        "client_id": app.client_id,
        "authority": idp.authority,
        "mailbox": "alice@example.com",
        "verify_tls": False,  # the simulators' throwaway certificates (test systems only)
        **extra,
    }
    password = secret if secret is not None else app.secret
    return settings_for(ews, login="", password=password, **fields)


def full_app(ews, idp, **options):
    return idp.add_app(roles={f"https://{ews.host}": ["full_access_as_app"]}, **options)


# --- NTLM ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("login", ["alice@example.com", "EXAMPLE\\alice"])
def test_ntlm_handshake_signs_in(ews, login):
    ews.sign_in.offer("ntlm")
    settings = settings_for(ews, login=login, auth_method="ntlm", mailbox="alice@example.com")
    report = open_calendar(settings).test(write=True)
    assert report.ok, str(report)
    assert "(NTLM)" in report.parts[0].message
    assert ews.sign_in.counts["ntlm"] >= 3  # every request, on an NTLM-authenticated connection
    assert PASSWORD not in str(report)


def test_ntlm_wrong_password_is_refused_by_the_acceptor(ews):
    ews.sign_in.offer("ntlm")
    settings = settings_for(ews, password="Wrong-Pa55word!", auth_method="ntlm")
    report = open_calendar(settings).test(write=False)
    assert not report.ok
    assert ews.sign_in.counts["ntlm_refused"] >= 1  # the NTLMv2 response did not verify
    assert "NTLM sign-in of 'alice@example.com'" in report.parts[0].message
    assert "Wrong-Pa55word!" not in str(report)


def test_ntlm_over_https_checks_the_channel_binding(ews, scheme):
    if scheme == "http":
        pytest.skip("channel binding is a TLS matter")
    ews.sign_in.offer("ntlm")
    # Extended Protection: the client binds its NTLM answer to the server's certificate; a
    # server seeing another binding (a TLS-terminating man in the middle) refuses it
    ews.sign_in.channel_bindings = b"\x00" * 32
    report = open_calendar(settings_for(ews, auth_method="ntlm")).test(write=False)
    assert not report.ok and ews.sign_in.counts["ntlm_refused"] == 1


def test_basic_against_an_ntlm_only_server_is_refused(ews):
    ews.sign_in.offer("ntlm")
    report = open_calendar(settings_for(ews)).test(write=False)
    assert not report.ok and "HTTP 401" in report.parts[0].message


# --- OAuth app-only -----------------------------------------------------------------------------


def test_oauth_app_only_impersonates_the_mailbox(ews, idp):
    ews.sign_in.offer("bearer")
    app = full_app(ews, idp)
    settings = app_settings(ews, idp, app)
    calendar = open_calendar(settings)
    report = calendar.test(write=True)
    assert report.ok, str(report)
    assert f"app {app.client_id} as alice@example.com" in report.parts[0].message
    assert "(OAuth app-only)" in report.parts[0].message
    # every request: ExchangeImpersonation of alice, X-AnchorMailbox alice
    assert ews.sign_in.anchors and set(ews.sign_in.anchors) == {
        ("alice@example.com", "alice@example.com")
    }
    assert idp.request_counts["token"] == 1  # one token for all requests of this process
    assert idp.issued[0]["aud"] == f"https://{ews.host}"
    token = oauth.get_token(
        oauth.AppCredential.from_settings(settings), f"https://{ews.host}/.default"
    )
    assert token.value not in str(report) and app.secret not in str(report)


def test_oauth_with_a_certificate(ews, idp):
    ews.sign_in.offer("bearer")
    app = full_app(ews, idp, certificate=True)
    report = open_calendar(app_settings(ews, idp, app, secret=app.credential_pem)).test(write=True)
    assert report.ok, str(report)
    assert idp.issued[-1]["appidacr"] == "2"  # signed in with the certificate, not a secret
    assert "BEGIN PRIVATE KEY" not in str(report)


def test_oauth_token_refreshed_through_exchangelib(ews, idp):
    ews.sign_in.offer("bearer")
    idp.token_lifetime = oauth.REFRESH_BEFORE + 5
    calendar = open_calendar(app_settings(ews, idp, full_app(ews, idp)))
    now = datetime.now(UTC)
    calendar.read_index(now, now + timedelta(days=1))
    first = idp.request_counts["token"]
    time.sleep(6)  # the session's token is now due for renewal
    calendar.read_index(now, now + timedelta(days=1))
    assert idp.request_counts["token"] > first  # exchangelib's session took a fresh token
    assert ews.sign_in.counts.get("token_expired", 0) == 0  # renewed before the server saw it


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("wrong_secret", "AADSTS7000215"),
        ("unknown_app", "AADSTS700016"),
        ("no_consent", "full_access_as_app"),
        ("not_granted_mailbox", "RBAC for Applications"),
        ("ews_off", "1 April 2027"),
        ("not_on_allow_list", "EWSAllowedAppIDs"),
    ],
)
def test_oauth_failures_explained_by_their_fix(ews, idp, case, says):
    ews.sign_in.offer("bearer")
    app = full_app(ews, idp)
    settings = app_settings(ews, idp, app)
    if case == "wrong_secret":
        settings = app_settings(ews, idp, app, secret="sim~the-secret-id-not-its-value")
    elif case == "unknown_app":
        settings = app_settings(ews, idp, app, client_id="0a1b2c3d-1111-2222-3333-444455556666")
    elif case == "no_consent":
        settings = app_settings(ews, idp, idp.add_app(tenant_id=app.tenant_id))
    elif case == "not_granted_mailbox":
        ews.sign_in.app_mailboxes[app.client_id] = {"bob@example.com"}
    elif case == "ews_off":
        ews.sign_in.ews_enabled = False
    elif case == "not_on_allow_list":
        ews.sign_in.allowed_app_ids = {"11111111-2222-3333-4444-555555555555"}
    report = open_calendar(settings).test(write=False)
    assert not report.ok
    assert says in report.parts[0].message, str(report)
    assert settings.password not in str(report)
    if case in ("ews_off", "not_on_allow_list"):
        assert "1 October 2026" in report.parts[0].message
        assert "api=graph" in report.parts[0].message


def test_rbac_for_applications_scope_without_entra_consent(ews, idp):
    ews.sign_in.offer("bearer")
    app = idp.add_app()  # no Entra permission: Exchange's RBAC for Applications grants access
    ews.sign_in.app_mailboxes[app.client_id] = {"alice@example.com"}
    assert open_calendar(app_settings(ews, idp, app)).test(write=True).ok
    outside = app_settings(ews, idp, app, mailbox="bob@example.com", allow_mailbox_mismatch=True)
    report = open_calendar(outside).test(write=False)
    assert not report.ok and "not granted this mailbox" in report.parts[0].message


def test_token_for_another_audience_or_expired_is_explained(ews, idp):
    ews.sign_in.offer("bearer")
    app = full_app(ews, idp)
    ews.sign_in.trust(idp, audiences=["https://outlook.office365.com"])  # another resource
    report = open_calendar(app_settings(ews, idp, app)).test(write=False)
    assert "another resource" in report.parts[0].message, str(report)
    ews.sign_in.trust(idp)
    oauth.forget()
    idp.token_lifetime = -60  # a clock far ahead of the issuer's: tokens arrive expired
    report = open_calendar(app_settings(ews, idp, app)).test(write=False)
    assert not report.ok and "clock" in report.parts[0].message, str(report)


def test_a_token_for_another_resource_is_quoted_as_exchange_does(ews, idp):
    """On the wire: 401, the Bearer challenge with error="invalid_token", and x-ms-diagnostics
    naming the token's audience and the request URL (Exchange's InvalidAudienceForResource
    wording, tests/ewssim/README.md)."""
    import requests

    ews.sign_in.offer("bearer")
    token = idp.issue(full_app(ews, idp), "https://graph.microsoft.com")
    answer = requests.post(
        ews.url, data=b"<x/>", headers={"Authorization": f"Bearer {token}"},
        verify=str(ews.certificate) if ews.tls else True, timeout=10,
    )  # fmt: skip
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["WWW-Authenticate"]
    assert answer.headers["x-ms-diagnostics"] == (
        '2000003;reason="The audience claim value is invalid for current resource. Audience '
        f"claim is 'https://graph.microsoft.com', request url is '{ews.url}' and resource type "
        'is \'Exchange\'.";error_category="invalid_resource"'
    )


def test_basic_against_exchange_online_says_use_oauth(ews, idp):
    ews.sign_in.offer("bearer")  # like Exchange Online: bearer tokens only
    report = open_calendar(settings_for(ews)).test(write=False)
    assert not report.ok
    assert "Exchange Online does not accept Basic authentication" in report.parts[0].message
    assert "auth_method=oauth" in report.parts[0].message


def test_untrusted_authority_certificate(ews, idp):
    ews.sign_in.offer("bearer")
    settings = app_settings(ews, idp, full_app(ews, idp))
    settings = SyncSettings(**{**settings.__dict__, "verify_tls": True})
    report = open_calendar(settings).test(write=False)
    assert not report.ok and "TLS certificate" in report.parts[0].message


def test_oauth_over_plain_http_is_refused(ews, idp, scheme, monkeypatch):
    if scheme == "https":
        pytest.skip("plain http only")
    monkeypatch.delenv("OAUTHLIB_INSECURE_TRANSPORT")
    ews.sign_in.offer("bearer")
    report = open_calendar(app_settings(ews, idp, full_app(ews, idp))).test(write=False)
    assert not report.ok and "only over https" in report.parts[0].message


# --- auto ---------------------------------------------------------------------------------------


def test_auto_picks_ntlm_from_one_probe_and_says_so(ews):
    ews.sign_in.offer("ntlm", "basic")
    report = open_calendar(settings_for(ews, auth_method="auto")).test(write=False)
    assert report.ok, str(report)
    assert "(NTLM; auto: the server offers Negotiate, NTLM, Basic)" in report.parts[0].message
    probes = ews.sign_in.counts["401"]
    open_calendar(settings_for(ews, auth_method="auto")).probe()  # probed once per process
    assert ews.sign_in.counts["401"] == probes


def test_auto_picks_oauth_when_an_app_is_configured(ews, idp):
    ews.sign_in.offer("bearer", "basic")
    app = full_app(ews, idp)
    settings = app_settings(ews, idp, app, auth_method="auto")
    report = open_calendar(settings).test(write=False)
    assert report.ok, str(report)
    assert "(OAuth app-only; auto: the server offers OAuth, Basic)" in report.parts[0].message


def test_auto_against_bearer_only_without_an_app(ews, idp):
    ews.sign_in.offer("bearer")
    report = open_calendar(settings_for(ews, auth_method="auto")).test(write=False)
    assert not report.ok and "accepts only OAuth" in report.parts[0].message


# --- secrets ------------------------------------------------------------------------------------


def test_no_secret_in_debug_logs(ews, idp, caplog):
    ews.sign_in.offer("bearer", "ntlm")
    app = full_app(ews, idp)
    with caplog.at_level(logging.DEBUG):
        assert open_calendar(app_settings(ews, idp, app)).test(write=True).ok
        assert open_calendar(settings_for(ews, auth_method="ntlm")).test(write=True).ok
        open_calendar(app_settings(ews, idp, app, secret="wrong-secret-value-42")).test()
    tokens = list(oauth._cache.values())
    text = caplog.text
    assert "exchangelib" in text  # the DEBUG log was really captured
    for secret in [app.secret, PASSWORD, "wrong-secret-value-42", *(t.value for t in tokens)]:
        if secret in text:
            at = text.index(secret)
            raise AssertionError(f"secret in the log: {text[max(at - 400, 0) : at + 40]}")


# --- the UI's Test button (EwsHook.test_connection) ---------------------------------------------


def hook_answer(monkeypatch, conn_id: str, settings: SyncSettings) -> tuple[bool, str]:
    from ewssync.hook import EwsHook

    extra = {
        key: value
        for key, value in settings.public_dict().items()
        if key in ("app_user", "auth_method", "tenant_id", "client_id", "mailbox", "verify_tls")
    }
    extra["authority"] = settings.authority
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps({
            "conn_type": "ews", "host": settings.service_endpoint, "login": settings.username,
            "password": settings.password, "extra": {**extra, "timeout_seconds": 5},
        }),
    )  # fmt: skip
    return EwsHook(ews_conn_id=conn_id).test_connection()


def test_test_button_with_each_method(ews, idp, monkeypatch):
    ews.sign_in.offer("bearer", "ntlm", "basic")
    app = full_app(ews, idp)
    for conn_id, settings, method in [
        ("ews_btn_basic", settings_for(ews), "(Basic)"),
        ("ews_btn_ntlm", settings_for(ews, auth_method="ntlm"), "(NTLM)"),
        ("ews_btn_app", app_settings(ews, idp, app), "(OAuth app-only)"),
    ]:
        ok, message = hook_answer(monkeypatch, conn_id, settings)
        assert ok, message
        assert method in message.splitlines()[0]
        assert settings.password not in message


def test_test_button_explains_a_wrong_client_secret(ews, idp, monkeypatch):
    ews.sign_in.offer("bearer")
    app = full_app(ews, idp)
    wrong = "sim~wrong-client-secret-value"
    ok, message = hook_answer(monkeypatch, "ews_btn_bad", app_settings(ews, idp, app, secret=wrong))
    assert not ok
    assert "AADSTS7000215" in message and "Send/receive data: not run" in message
    assert wrong not in message
