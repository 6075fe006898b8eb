"""App-only OAuth 2.0 tokens from the Microsoft identity platform (client credentials), cached and
refreshed per process; shared by the EWS and Graph backends (no exchangelib here).

Why not msal: the client-credentials grant is one form POST per token and hour. msal would add a
dependency, fetch two discovery documents per process before the first token, and validate the
authority host against Microsoft's list (US Gov/China/a test authority need extra switches);
its in-memory cache lives per ClientApplication object, so we would keep a process-wide dict of
those anyway. What we need beyond the POST - a per-process cache that refreshes ahead of expiry,
the certificate assertion (PyJWT, which Airflow already ships) and turning AADSTS codes into
fixes - is the code below. exchangelib's own OAuth2Credentials fetch tokens with a hard-wired
login.microsoftonline.com authority and drop the token whenever a session closes; the EWS backend
keeps exchangelib's credential type and feeds it tokens from here (ews.py: AppTokenCredentials).
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests

from ewssync.errors import ExchangeError
from ewssync.exchange.redact import SECRET_FILTER

log = logging.getLogger(__name__)

REFRESH_BEFORE = 300  # seconds: a token with less left is replaced before use
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


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
_lock = threading.Lock()
token_requests = 0  # tokens fetched by this process (the tests read it)


def _key(app: AppCredential, scope: str) -> tuple[str, str, str, str]:
    secret_hash = hashlib.sha256(app.secret.encode()).hexdigest()
    return (app.token_url, app.client_id, scope, secret_hash)


def get_token(app: AppCredential, scope: str, *, force: bool = False) -> AccessToken:
    """A valid access token for ``scope``, from the process cache when one has more than
    REFRESH_BEFORE seconds left, else fresh from the token endpoint.

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
        token = _fetch(app, scope)
        _cache[key] = token
        return token


def forget(app: AppCredential | None = None) -> None:
    """Drop cached tokens (of one app, or all)."""
    with _lock:
        for key in list(_cache):
            if app is None or key[:2] == (app.token_url, app.client_id):
                del _cache[key]


def _fetch(app: AppCredential, scope: str) -> AccessToken:
    global token_requests
    SECRET_FILTER.add_secret(app.secret)
    form = {"grant_type": "client_credentials", "client_id": app.client_id, "scope": scope}
    if app.uses_certificate:
        form["client_assertion_type"] = ASSERTION_TYPE
        form["client_assertion"] = _client_assertion(app)
    else:
        form["client_secret"] = app.secret
    started = time.time()
    try:
        response = requests.post(
            app.token_url, data=form, timeout=app.timeout, verify=app.verify_tls
        )
    except requests.exceptions.SSLError:
        raise TokenError(
            f"the TLS certificate of the identity platform at {_host(app)} is not valid: check "
            "'authority' (or, on test systems only, verify_tls=false)"
        ) from None
    except requests.exceptions.Timeout:
        raise TokenError(
            f"the identity platform at {_host(app)} did not answer within {app.timeout} s"
        ) from None
    except requests.exceptions.ConnectionError as exc:
        raise TokenError(
            f"cannot reach the identity platform at {_host(app)} ({type(exc).__name__}): check "
            "'authority' and that this machine may connect to it"
        ) from None
    finally:
        token_requests += 1
    try:
        document = response.json()
    except ValueError:
        document = {}
    if response.status_code != 200 or "access_token" not in document:
        raise _token_error(app, scope, response.status_code, document)
    value = document["access_token"]
    SECRET_FILTER.add_secret(value)
    expires_in = float(document.get("expires_in", 3599))
    log.debug(
        "app %s: token for %s from %s, valid %d s", app.client_id, scope, _host(app), expires_in
    )
    return AccessToken(value=value, expires_at=started + expires_in, scope=scope)


def _host(app: AppCredential) -> str:
    return urlsplit(app.authority).netloc or app.authority


def _client_assertion(app: AppCredential) -> str:
    """A signed JWT proving possession of the certificate's private key (RFC 7523), as the
    identity platform asks for certificate credentials: x5t is the certificate's SHA-1
    thumbprint, aud the token endpoint."""
    import base64

    import jwt
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    pem = normalize_pem(app.secret).encode()
    try:
        certificate = x509.load_pem_x509_certificate(pem)
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError:
        raise TokenError(
            "the password holds PEM text but not both an unencrypted private key and its "
            "certificate: paste the key and the certificate registered with the app, one after "
            "the other"
        ) from None
    # the identity platform names certificates by their SHA-1 thumbprint
    sha1 = hashlib.sha1(certificate.public_bytes(serialization.Encoding.DER)).digest()  # noqa: S324
    now = int(time.time())
    return jwt.encode(
        {
            "aud": app.token_url,
            "iss": app.client_id,
            "sub": app.client_id,
            "jti": str(uuid.uuid4()),
            "nbf": now,
            "iat": now,
            "exp": now + 600,
        },
        key,
        algorithm="RS256",
        headers={"x5t": base64.urlsafe_b64encode(sha1).rstrip(b"=").decode()},
    )


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
