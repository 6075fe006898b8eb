"""App-only tokens (exchange/oauth.py) against the identity-platform simulator over real HTTP(S):
issue, cache, refresh, certificate credentials, and each AADSTS failure explained by its fix."""

from __future__ import annotations

import time

import pytest

from ewssync.exchange import oauth
from ewssync.exchange.oauth import AppCredential, TokenError, get_token
from tests.identitysim import IdentitySimulator, InvalidToken
from tests.identitysim.server import EXCHANGE_ONLINE, GRAPH

EWS_SCOPE = f"{EXCHANGE_ONLINE}/.default"
GRAPH_SCOPE = f"{GRAPH}/.default"


@pytest.fixture
def idp():
    with IdentitySimulator(tls=True) as sim:
        yield sim
    oauth.forget()


def credential(idp, app, **overrides) -> AppCredential:
    fields = {
        "authority": idp.authority,
        "tenant_id": app.tenant_id,
        "client_id": app.client_id,
        "secret": app.secret,
        "verify_tls": str(idp.certificate),
        "timeout": 5,
    }
    fields.update(overrides)
    return AppCredential(**fields)


def test_token_issued_for_the_scope_and_cached_per_process(idp):
    app = idp.add_app(roles={EXCHANGE_ONLINE: ["full_access_as_app"]})
    cred = credential(idp, app)
    first = get_token(cred, EWS_SCOPE)
    claims = idp.verify(first.value, [EXCHANGE_ONLINE])
    assert claims["roles"] == ["full_access_as_app"]
    assert claims["appid"] == app.client_id and claims["tid"] == app.tenant_id
    assert get_token(cred, EWS_SCOPE) is first
    assert idp.request_counts["token"] == 1
    # the same app asking for Graph gets its own token, audience graph, no roles granted there
    graph = get_token(cred, GRAPH_SCOPE)
    graph_claims = idp.verify(graph.value, [GRAPH])
    assert "roles" not in graph_claims
    with pytest.raises(InvalidToken) as refused:
        idp.verify(graph.value, [EXCHANGE_ONLINE])
    assert refused.value.reason == "audience"
    assert idp.request_counts["token"] == 2


def test_token_refreshed_before_it_expires(idp):
    idp.token_lifetime = oauth.REFRESH_BEFORE + 6
    app = idp.add_app(roles={EXCHANGE_ONLINE: ["full_access_as_app"]})
    cred = credential(idp, app)
    first = get_token(cred, EWS_SCOPE)
    assert get_token(cred, EWS_SCOPE) is first
    time.sleep(7)  # now less than REFRESH_BEFORE seconds are left
    second = get_token(cred, EWS_SCOPE)
    assert second is not first and second.value != first.value
    assert idp.request_counts["token"] == 2
    assert get_token(cred, EWS_SCOPE, force=True).value != second.value


def test_expired_or_foreign_tokens_are_refused_by_verify(idp):
    app = idp.add_app(roles={EXCHANGE_ONLINE: ["full_access_as_app"]})
    expired = idp.issue(app, EXCHANGE_ONLINE, lifetime=-60)
    with pytest.raises(InvalidToken) as refused:
        idp.verify(expired, [EXCHANGE_ONLINE])
    assert refused.value.reason == "expired"
    with IdentitySimulator(tls=True) as other:
        foreign = other.issue(other.add_app(roles={EXCHANGE_ONLINE: ["x"]}), EXCHANGE_ONLINE)
    with pytest.raises(InvalidToken) as refused:
        idp.verify(foreign, [EXCHANGE_ONLINE])
    assert refused.value.reason == "signature"


def test_certificate_credentials(idp):
    app = idp.add_app(roles={EXCHANGE_ONLINE: ["full_access_as_app"]}, certificate=True)
    cred = credential(idp, app, secret=app.credential_pem)
    token = get_token(cred, EWS_SCOPE)
    assert idp.verify(token.value, [EXCHANGE_ONLINE])["appidacr"] == "2"
    assert "client_secret" not in idp.bodies[-1]
    # pasted into the single-line Password field: line breaks become spaces, or vanish
    for flat in (app.credential_pem.replace("\n", " "), app.credential_pem.replace("\n", "")):
        oauth.forget()
        assert get_token(credential(idp, app, secret=flat), EWS_SCOPE).value
    # a certificate the app does not have registered
    stranger = idp.add_app(certificate=True)
    wrong = credential(idp, app, secret=stranger.credential_pem)
    with pytest.raises(TokenError) as failed:
        get_token(wrong, EWS_SCOPE)
    assert failed.value.code == 700027
    assert "Certificates & secrets" in str(failed.value)


@pytest.mark.parametrize(
    ("case", "code", "fix"),
    [
        ("wrong_secret", 7000215, "Value (not its Secret ID)"),
        ("expired_secret", 7000222, "has expired"),
        ("unknown_app", 700016, "not registered in tenant"),
        ("unknown_tenant", 90002, "does not exist in this cloud"),
        ("unknown_resource", 500011, "not available in tenant"),
    ],
)
def test_each_refusal_names_its_aadsts_code_and_fix(idp, case, code, fix):
    app = idp.add_app(roles={EXCHANGE_ONLINE: ["full_access_as_app"]})
    scope = EWS_SCOPE
    cred = credential(idp, app)
    if case == "wrong_secret":
        cred = credential(idp, app, secret="not-the-secret-value-123")
    elif case == "expired_secret":
        app = idp.add_app(tenant_id=app.tenant_id, secret_expired=True)
        cred = credential(idp, app)
    elif case == "unknown_app":
        cred = credential(idp, app, client_id="0a1b2c3d-1111-2222-3333-444455556666")
    elif case == "unknown_tenant":
        cred = credential(idp, app, tenant_id="9f8e7d6c-1111-2222-3333-444455556666")
    elif case == "unknown_resource":
        scope = "https://exchange.example.invalid/.default"
    with pytest.raises(TokenError) as failed:
        get_token(cred, scope)
    message = str(failed.value)
    assert failed.value.code == code
    assert f"AADSTS{code}" in message and fix in message
    assert cred.secret not in message and app.secret not in message


def test_untrusted_authority_certificate_and_unreachable_authority(idp):
    app = idp.add_app(roles={EXCHANGE_ONLINE: ["full_access_as_app"]})
    with pytest.raises(TokenError, match="TLS certificate of the identity platform"):
        get_token(credential(idp, app, verify_tls=True), EWS_SCOPE)
    # verify_tls off (test systems only) accepts it
    assert get_token(credential(idp, app, verify_tls=False), EWS_SCOPE).value
    closed = IdentitySimulator(tls=True).start()
    authority = closed.authority
    closed.stop()
    with pytest.raises(TokenError, match="cannot reach the identity platform"):
        get_token(credential(idp, app, authority=authority), EWS_SCOPE)


def test_discovery_documents_for_msal(idp):
    import requests

    tenant = idp.add_tenant()
    verify = str(idp.certificate)
    config = requests.get(
        f"{idp.authority}/{tenant}/v2.0/.well-known/openid-configuration", verify=verify, timeout=5
    ).json()
    assert config["token_endpoint"] == idp.token_url(tenant)
    keys = requests.get(config["jwks_uri"], verify=verify, timeout=5).json()["keys"]
    assert keys[0]["kid"] == idp.key_id
    instance = requests.get(
        f"{idp.authority}/common/discovery/instance?api-version=1.1", verify=verify, timeout=5
    ).json()
    assert instance["tenant_discovery_endpoint"].startswith(idp.authority)
