"""App-only OAuth 2.0 tokens from the Microsoft identity platform (client credentials), cached and
refreshed per process; shared by the EWS and Graph backends (no exchangelib here).

The grant itself is msal's (Microsoft's library for its identity platform): discovery of the
tenant's endpoints, the client secret or the certificate assertion (x5t#S256, PS256), msal's own
token cache and its back-off on 429/5xx. Around it this module keeps what msal leaves to its
callers: one msal application per (authority, tenant, app, credential) and process, the same
token object until it is due (REFRESH_BEFORE seconds ahead of expiry, msal's own margin), our
authority setting for any cloud (msal's instance discovery is off: the authority comes from the
connection), and every failure turned into the fix (AADSTS codes, TLS, unreachable hosts).
exchangelib's own OAuth2Credentials fetch tokens with a hard-wired login.microsoftonline.com
authority and drop the token whenever a session closes; the EWS backend keeps exchangelib's
credential type and feeds it tokens from here (ews_signin.py: AppTokenCredentials).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import msal
import requests

from ewssync.errors import ExchangeError
from ewssync.exchange.redact import SECRET_FILTER

log = logging.getLogger(__name__)

REFRESH_BEFORE = 300  # seconds: a token with less left is replaced before use (msal's margin)


class TokenError(ExchangeError):
    """The identity platform refused a token; the message says what to fix.

    :ivar code: the AADSTS number (e.g. 7000215), or None when the platform was not reached.
    :ivar error: the OAuth error ("invalid_client", ...), or None.
    """

    def __init__(self, message: str, code: int | None = None, error: str | None = None):
        super().__init__(message)
        self.code = code
        self.error = error


@dataclass(frozen=True)
class AppCredential:
    """An Entra ID application's identity for the client-credentials grant.

    :param authority: the authority host URL (settings.AUTHORITIES per cloud, or a test authority).
    :param tenant_id: directory (tenant) id, or a verified domain (contoso.onmicrosoft.com).
    :param client_id: application (client) id.
    :param secret: the client secret's value, or a PEM text holding the private key and the
        certificate registered with the app (certificate credentials).
    :param verify_tls: check the authority's certificate (False, or a CA bundle path, for tests).
    :param timeout: seconds to wait for the token endpoint.
    """

    authority: str
    tenant_id: str
    client_id: str
    secret: str = field(repr=False)
    verify_tls: bool | str = True
    timeout: float = 30

    @property
    def token_url(self) -> str:
        return f"{self.authority.rstrip('/')}/{self.tenant_id}/oauth2/v2.0/token"

    @property
    def uses_certificate(self) -> bool:
        return "-----BEGIN" in self.secret

    @classmethod
    def from_settings(cls, settings: Any) -> AppCredential:
        """The credential of an `ews` connection whose auth_method is oauth."""
        return cls(
            authority=settings.authority,
            tenant_id=settings.tenant_id,
            client_id=settings.client_id,
            secret=settings.password,
            verify_tls=settings.verify_tls,
            timeout=settings.timeout_seconds,
        )


@dataclass(frozen=True)
class AccessToken:
    """A bearer token and when it expires (epoch seconds)."""

    value: str = field(repr=False)
    expires_at: float
    scope: str

    @property
    def seconds_left(self) -> float:
        return self.expires_at - time.time()

    def as_oauthlib(self) -> dict[str, Any]:
        """The token as oauthlib/requests-oauthlib (and so exchangelib) keep it."""
        return {
            "access_token": self.value,
            "token_type": "Bearer",
            "expires_in": max(int(self.seconds_left), 0),
            "expires_at": self.expires_at,
        }


_cache: dict[tuple[str, str, str, str], AccessToken] = {}
_apps: dict[tuple[str, str, str], tuple[msal.ConfidentialClientApplication, _Http]] = {}
_lock = threading.Lock()
token_requests = 0  # tokens fetched from the identity platform by this process (tests read it)


class _Http(requests.Session):
    """msal's HTTP client: the connection's TLS check and timeout on every request, a count of
    token requests, and the last answer kept, so that a failed discovery (msal keeps only "Unable
    to get authority configuration") can still be explained by its AADSTS code."""

    def __init__(self, app: AppCredential):
        super().__init__()
        self.verify = app.verify_tls
        self.timeout = app.timeout
        self.last: requests.Response | None = None

    def request(self, method, url, **kwargs):  # noqa: ANN001, ANN201
        global token_requests
        kwargs.setdefault("timeout", self.timeout)
        # per request: a session's own verify loses to $REQUESTS_CA_BUNDLE (psf/requests#3829)
        kwargs.setdefault("verify", self.verify)
        if method.upper() == "POST":
            token_requests += 1
        self.last = super().request(method, url, **kwargs)
        return self.last


def _key(app: AppCredential, scope: str) -> tuple[str, str, str, str]:
    secret_hash = hashlib.sha256(app.secret.encode()).hexdigest()
    return (app.token_url, app.client_id, scope, secret_hash)


def get_token(app: AppCredential, scope: str, *, force: bool = False) -> AccessToken:
    """A valid access token for ``scope``, from the process cache when one has more than
    REFRESH_BEFORE seconds left, else fresh from the identity platform (through msal).

    :param scope: the resource's ``.default`` scope: ``https://outlook.office365.com/.default``
        (EWS), ``https://graph.microsoft.com/.default`` (Graph).
    :param force: fetch a new token even if the cached one looks valid (the server refused it).
    :raises TokenError: naming the cause and the fix.
    """
    key = _key(app, scope)
    with _lock:
        cached = _cache.get(key)
        if cached is not None and not force and cached.seconds_left > REFRESH_BEFORE:
            return cached
        token = _fetch(app, scope, force=force)
        _cache[key] = token
        return token


def forget(app: AppCredential | None = None) -> None:
    """Drop cached tokens and msal applications (of one app, or all)."""
    with _lock:
        for key in list(_cache):
            if app is None or key[:2] == (app.token_url, app.client_id):
                del _cache[key]
        for key in list(_apps):
            if app is None or key[:2] == (app.token_url, app.client_id):
                _apps.pop(key)[1].close()


def _fetch(app: AppCredential, scope: str, *, force: bool) -> AccessToken:
    SECRET_FILTER.add_secret(app.secret)
    started = time.time()
    with _explained(app, scope, "asking for a token") as http:
        client = _application(app, http)
        if force:
            client.remove_tokens_for_client()
        result = client.acquire_token_for_client(scopes=[scope])
    if "access_token" not in result:
        status = http.last.status_code if http.last is not None else 0
        raise _token_error(app, scope, status, result)
    value = result["access_token"]
    SECRET_FILTER.add_secret(value)
    expires_in = float(result.get("expires_in", 3599))
    log.debug(
        "app %s: token for %s from %s (%s), valid %d s",
        app.client_id, scope, _host(app), result.get("token_source", "?"), expires_in,
    )  # fmt: skip
    return AccessToken(value=value, expires_at=started + expires_in, scope=scope)


def _application(app: AppCredential, http: _Http) -> msal.ConfidentialClientApplication:
    """The process's msal application for this credential (created on first use: msal reads the
    tenant's OpenID configuration then)."""
    key = (app.token_url, app.client_id, hashlib.sha256(app.secret.encode()).hexdigest())
    known = _apps.get(key)
    if known is not None:
        return known[0]
    client = msal.ConfidentialClientApplication(
        app.client_id,
        client_credential=_client_credential(app),
        authority=f"{app.authority.rstrip('/')}/{app.tenant_id}",
        http_client=http,
        instance_discovery=False,  # the authority is the connection's (any cloud, or a test one)
        token_cache=msal.TokenCache(),
    )
    _apps[key] = (client, http)
    return client


class _explained:
    """Runs msal's part with the credential's HTTP client; turns what can go wrong on the way
    (TLS, timeouts, no route, a discovery the platform refused) into a TokenError with the fix."""

    def __init__(self, app: AppCredential, scope: str, doing: str):
        self.app, self.scope, self.doing = app, scope, doing
        known = _apps.get(
            (app.token_url, app.client_id, hashlib.sha256(app.secret.encode()).hexdigest())
        )
        self.http = known[1] if known else _Http(app)

    def __enter__(self) -> _Http:
        return self.http

    def __exit__(self, kind, exc, traceback) -> bool:  # noqa: ANN001
        app, where = self.app, _host(self.app)
        if exc is None:
            return False
        if isinstance(exc, requests.exceptions.SSLError):
            raise TokenError(
                f"the TLS certificate of the identity platform at {where} is not valid: check "
                "'authority' (or, on test systems only, verify_tls=false)"
            ) from None
        if isinstance(exc, requests.exceptions.Timeout):
            raise TokenError(
                f"the identity platform at {where} did not answer within {app.timeout} s"
            ) from None
        if isinstance(exc, requests.exceptions.ConnectionError):
            raise TokenError(
                f"cannot reach the identity platform at {where} ({type(exc).__name__}): check "
                "'authority' and that this machine may connect to it"
            ) from None
        if isinstance(exc, ValueError):
            last = self.http.last
            document = _json(last) if last is not None else {}
            if document.get("error_codes"):  # the platform refused the discovery (AADSTS90002)
                raise _token_error(app, self.scope, last.status_code, document) from None
            if "https" in str(exc) and not app.authority.startswith("https://"):
                raise TokenError(
                    f"'authority' {app.authority} is not an https URL: the identity platform is "
                    "only reached over HTTPS"
                ) from None
            raise TokenError(
                f"{self.doing}: the authority {where} does not answer like the Microsoft identity "
                f"platform ({SECRET_FILTER.scrub(str(exc))[:300]}); check 'authority'"
            ) from None
        return False


def _json(response: requests.Response) -> dict:
    try:
        document = json.loads(response.text)
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _host(app: AppCredential) -> str:
    return urlsplit(app.authority).netloc or app.authority


def _client_credential(app: AppCredential) -> str | dict[str, str]:
    """msal's client credential: the secret, or the private key and certificate read from the
    PEM text in the password (msal signs the assertion with the certificate's SHA-256
    thumbprint, as the identity platform asks for certificate credentials)."""
    if not app.uses_certificate:
        return app.secret
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    pem = normalize_pem(app.secret)
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode())
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except ValueError:
        raise TokenError(
            "the password holds PEM text but not both an unencrypted private key and its "
            "certificate: paste the key and the certificate registered with the app, one after "
            "the other"
        ) from None
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    SECRET_FILTER.add_secret(key_pem)
    return {
        "private_key": key_pem,
        "public_certificate": certificate.public_bytes(serialization.Encoding.PEM).decode(),
    }


_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.S)


def normalize_pem(text: str) -> str:
    """PEM blocks as cryptography reads them, also when a single-line form field turned the
    line breaks into spaces or dropped them: each block's base64 rewrapped at 64 characters."""
    blocks = []
    for label, body in _PEM_BLOCK.findall(text):
        data = "".join(body.split())
        lines = [data[i : i + 64] for i in range(0, len(data), 64)]
        blocks.append("\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]))
    return "\n".join(blocks) + "\n"


# AADSTS code -> what to do. https://learn.microsoft.com/entra/identity-platform/reference-error-codes
_FIXES: dict[int, str] = {
    90002: "the tenant {tenant} does not exist in this cloud: check 'Tenant id' (Directory "
    "(tenant) ID on the app's Overview page) and 'Authority' (global, usgov, china)",
    900023: "'Tenant id' {tenant} is neither a tenant id (a GUID) nor a verified domain of the "
    "tenant: copy the Directory (tenant) ID from the app's Overview page",
    700016: "the application {client} is not registered in tenant {tenant}: check 'Client id' "
    "(Application (client) ID) and 'Tenant id', or register the app in that tenant",
    7000215: "wrong client secret for app {client}: put the secret's Value (not its Secret ID) "
    "into 'Password'",
    7000222: "the client secret of app {client} has expired: add a new secret under "
    "Certificates & secrets and put its Value into 'Password'",
    7000218: "no client secret was sent: put the app's client secret into 'Password'",
    700027: "the certificate does not match one registered with app {client}: upload the "
    "certificate under Certificates & secrets, or paste the key of the registered one",
    700021: "the certificate assertion names another app than 'Client id' {client}",
    65001: "admin consent is missing for app {client}: an administrator must grant admin "
    "consent for its API permissions (full_access_as_app for EWS) in Entra ID",
    501051: "app {client} is not assigned a role of the resource: grant the application "
    "permission and admin consent in Entra ID",
    500011: "the resource of scope {scope} is not available in tenant {tenant} (no Exchange "
    "Online, or the wrong cloud): check 'Server' and 'Authority'",
    1002012: "scope {scope} is not a '/.default' scope, which client credentials require",
    70011: "scope {scope} is not valid for client credentials",
    7000112: "app {client} is disabled in tenant {tenant}: an administrator must enable its "
    "service principal (Enterprise applications)",
    50034: "the tenant does not know this account",
    53003: "a Conditional Access policy blocks the app's sign-in: ask the tenant's "
    "administrator to exempt the app or allow this network",
}


def _token_error(app: AppCredential, scope: str, status: int, document: dict) -> TokenError:
    codes = document.get("error_codes") or []
    code = int(codes[0]) if codes else None
    error = document.get("error")
    description = str(document.get("error_description") or "").split(" Trace ID:")[0]
    description = SECRET_FILTER.scrub(description.split("\r\n")[0])
    fix = _FIXES.get(code or -1)
    where = f"the identity platform ({_host(app)})"
    if fix is None:
        what = description or f"HTTP {status}"
        return TokenError(f"{where} refused a token: {what}", code, error)
    fix = fix.format(tenant=app.tenant_id, client=app.client_id, scope=scope)
    return TokenError(f"{where} refused a token (AADSTS{code}): {fix}", code, error)
