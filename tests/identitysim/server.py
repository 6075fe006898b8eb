"""The wire: Entra ID's v2.0 token endpoint (client credentials), its discovery documents, and
signed JWT access tokens that resource servers (tests/ewssim, tests/graphsim) validate."""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.ewssim.tls import self_signed_certificate
from tests.simserver import QuietHandler, ServedOverHttp

# Resource principals Entra knows in every tenant: their identifier URI -> the application
# permissions (app roles) they define. Tests add others (add_resource) for simulators on loopback.
EXCHANGE_ONLINE = "https://outlook.office365.com"
GRAPH = "https://graph.microsoft.com"
KNOWN_RESOURCES = {
    EXCHANGE_ONLINE: {"full_access_as_app"},
    GRAPH: {"Calendars.Read", "Calendars.ReadWrite", "User.Read.All"},
}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class InvalidToken(Exception):
    """A bearer token a resource server must refuse; ``reason`` says why (expired, audience,
    signature, issuer, malformed)."""

    def __init__(self, reason: str, text: str):
        super().__init__(text)
        self.reason = reason
        self.text = text


@dataclass
class App:
    """An application registration with its service principal in one tenant.

    ``roles`` maps a resource URI to the application permissions admin consent granted there;
    a resource missing from it gets a token without a ``roles`` claim (no consent), as Entra does.
    """

    tenant_id: str
    client_id: str
    secret: str = field(repr=False)
    roles: dict[str, set[str]] = field(default_factory=dict)
    secret_expired: bool = False
    enabled: bool = True
    certificate_pem: str | None = None  # the registered certificate (public part)
    private_key_pem: str | None = field(default=None, repr=False)  # for the test client to use
    thumbprint: str | None = None  # SHA-1 of the certificate, hex, as the portal shows it

    @property
    def credential_pem(self) -> str:
        """Private key and certificate in one PEM text, as ewssync takes it in the password."""
        return f"{self.private_key_pem}{self.certificate_pem}"


def _error_body(error: str, code: int, description: str) -> dict:
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {trace} "
        f"Correlation ID: {correlation} Timestamp: {stamp}",
        "error_codes": [code],
        "timestamp": stamp,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": f"https://login.microsoftonline.com/error?code={code}",
    }


class IdentitySimulator(ServedOverHttp):
    """A local Entra ID: tenants, app registrations, a token endpoint, signed access tokens.

    :param tls: serve HTTPS with a throwaway self-signed certificate (``self.certificate``);
        msal insists on an https authority.
    :param token_lifetime: seconds an access token is valid (Entra: 60-90 minutes).
    """

    def __init__(self, tls: bool = False, token_lifetime: int = 3599):
        self.tls = tls
        self.certificate = None
        self.token_lifetime = token_lifetime
        self.tenants: dict[str, dict[str, App]] = {}
        self.domains: dict[str, str] = {}  # contoso.onmicrosoft.com -> tenant id
        self.resources: dict[str, set[str]] = {k: set(v) for k, v in KNOWN_RESOURCES.items()}
        self.request_counts: collections.Counter = collections.Counter()
        self.issued: list[dict] = []  # claims of every token issued, in order
        self.bodies: list[str] = []  # raw bodies of token requests, for secrecy checks
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.key_id = secrets.token_hex(8)
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    # --- control API ----------------------------------------------------------------------

    def add_tenant(self, tenant_id: str | None = None, domain: str | None = None) -> str:
        tenant_id = tenant_id or str(uuid.uuid4())
        self.tenants.setdefault(tenant_id, {})
        if domain:
            self.domains[domain.lower()] = tenant_id
        return tenant_id

    def add_resource(self, uri: str, roles: set[str] | list[str]) -> None:
        """Register a resource principal (e.g. ``https://127.0.0.1`` for the EWS simulator)."""
        self.resources[uri.rstrip("/")] = set(roles)

    def add_app(
        self,
        tenant_id: str | None = None,
        *,
        client_id: str | None = None,
        secret: str | None = None,
        roles: dict[str, set[str] | list[str]] | None = None,
        certificate: bool = False,
        secret_expired: bool = False,
    ) -> App:
        """Register an application in a tenant (created when not given) and grant ``roles``.

        :param certificate: also register a fresh certificate (App.credential_pem has both halves).
        """
        tenant_id = self.add_tenant(tenant_id)
        app = App(
            tenant_id=tenant_id,
            client_id=client_id or str(uuid.uuid4()),
            secret=secret or f"sim~{secrets.token_urlsafe(24)}",
            roles={uri.rstrip("/"): set(granted) for uri, granted in (roles or {}).items()},
            secret_expired=secret_expired,
        )
        if certificate:
            app.private_key_pem, app.certificate_pem, app.thumbprint = _certificate(app.client_id)
        self.tenants[tenant_id][app.client_id] = app
        return app

    @property
    def authority(self) -> str:
        """The authority host URL to configure clients with (``https://127.0.0.1:PORT``)."""
        host, port = self._server.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    def token_url(self, tenant_id: str) -> str:
        return f"{self.authority}/{tenant_id}/oauth2/v2.0/token"

    @property
    def issuer_key_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def issue(self, app: App, resource: str, lifetime: int | None = None, **claims) -> str:
        """A signed access token for ``app`` and ``resource`` (also used by tests to forge
        expired or foreign tokens directly)."""
        now = int(time.time())
        lifetime = self.token_lifetime if lifetime is None else lifetime
        body = {
            "aud": resource,
            "iss": f"https://sts.windows.net/{app.tenant_id}/",
            "iat": now - 300 if lifetime < 0 else now,
            "nbf": now - 300 if lifetime < 0 else now,
            "exp": now + lifetime,
            "appid": app.client_id,
            "appidacr": "2" if app.certificate_pem else "1",
            "idtyp": "app",
            "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, app.client_id)),
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, app.client_id)),
            "tid": app.tenant_id,
            "uti": secrets.token_urlsafe(16),  # unique token id, as Entra sets
            "ver": "1.0",
        }
        granted = sorted(app.roles.get(resource, ()))
        if granted:  # no consent: Entra still issues the token, without a roles claim
            body["roles"] = granted
        body.update(claims)
        with self._lock:
            self.issued.append(body)
        return jwt.encode(
            body, self._key, algorithm="RS256", headers={"kid": self.key_id, "x5t": self.key_id}
        )

    def verify(self, token: str, audiences: set[str] | list[str]) -> dict:
        """Validate a bearer token as a resource server does: signature by this issuer, audience,
        lifetime, a tenant this issuer knows. Returns the claims.

        :raises InvalidToken: with the reason.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed", "The token is not a JWT.") from None
        if header.get("kid") != self.key_id:
            raise InvalidToken("signature", "The token is not signed by a known issuer key.")
        try:
            claims = jwt.decode(
                token,
                self._key.public_key(),
                algorithms=["RS256"],
                audience=list(audiences),
                options={"require": ["exp", "aud", "iss", "tid"]},
                leeway=0,
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("expired", "The token has expired.") from None
        except jwt.InvalidAudienceError:
            raise InvalidToken("audience", "The audience claim value is invalid.") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("signature", "The token signature is invalid.") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed", f"The token is invalid: {exc}.") from None
        if claims["tid"] not in self.tenants or claims["iss"] != (
            f"https://sts.windows.net/{claims['tid']}/"
        ):
            raise InvalidToken("issuer", "The token issuer is not trusted.")
        return claims

    # --- the token endpoint ----------------------------------------------------------------

    def token(self, tenant: str, form: dict[str, str]) -> tuple[int, dict]:
        """Answer one token request (status, JSON body) as Entra ID's v2.0 endpoint does."""
        tenant_id = self.domains.get(tenant.lower(), tenant)
        if tenant_id not in self.tenants:
            return 400, _error_body(
                "invalid_request", 90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                "and are signing into the correct cloud. Check with your subscription "
                "administrator, this may happen if there are no active subscriptions for the "
                "tenant.",
            )  # fmt: skip
        grant_type = form.get("grant_type", "")
        if grant_type != "client_credentials":
            return 400, _error_body(
                "unsupported_grant_type", 70003,
                f"The app requested an unsupported grant type '{grant_type}'.",
            )  # fmt: skip
        client_id = form.get("client_id", "")
        assertion = form.get("client_assertion")
        if not client_id and assertion:
            client_id = _unverified_claims(assertion).get("iss", "")
        app = self.tenants[tenant_id].get(client_id)
        if app is None or not app.enabled:
            return 400, _error_body(
                "unauthorized_client", 700016,
                f"Application with identifier '{client_id}' was not found in the directory "
                f"'{tenant}'. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant. You may "
                "have sent your authentication request to the wrong tenant.",
            )  # fmt: skip
        failure = self._check_client(app, tenant_id, form)
        if failure:
            return failure
        scope = form.get("scope", "")
        scopes = scope.split()
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            return 400, _error_body(
                "invalid_scope", 1002012,
                f"The provided value for scope {scope} is not valid. Client credential flows "
                "must have a scope value with /.default suffixed to the resource identifier "
                "(application ID URI).",
            )  # fmt: skip
        resource = scopes[0][: -len("/.default")].rstrip("/")
        if resource not in self.resources:
            return 400, _error_body(
                "invalid_resource", 500011,
                f"The resource principal named {resource} was not found in the tenant named "
                f"{tenant}. This can happen if the application has not been installed by the "
                "administrator of the tenant or consented to by any user in the tenant. You "
                "might have sent your authentication request to the wrong tenant.",
            )  # fmt: skip
        access_token = self.issue(app, resource)
        return 200, {
            "token_type": "Bearer",
            "expires_in": self.token_lifetime,
            "ext_expires_in": self.token_lifetime,
            "access_token": access_token,
        }

    def _check_client(self, app: App, tenant_id: str, form: dict) -> tuple[int, dict] | None:
        secret = form.get("client_secret")
        assertion = form.get("client_assertion")
        if assertion is not None:
            if form.get("client_assertion_type") != ASSERTION_TYPE or not app.certificate_pem:
                return 401, _error_body(
                    "invalid_client", 700027,
                    "Client assertion failed signature validation. No certificate is registered "
                    f"for app '{app.client_id}' that matches the assertion.",
                )  # fmt: skip
            certificate = x509.load_pem_x509_certificate(app.certificate_pem.encode())
            try:
                claims = jwt.decode(
                    assertion,
                    certificate.public_key(),
                    algorithms=["RS256", "PS256"],
                    audience=self.token_url(tenant_id),
                    options={"require": ["exp", "aud", "iss", "sub", "jti"]},
                )
            except jwt.PyJWTError as exc:
                return 401, _error_body(
                    "invalid_client", 700027,
                    f"Client assertion failed signature validation ({exc}).",
                )  # fmt: skip
            if claims["iss"] != app.client_id or claims["sub"] != app.client_id:
                return 401, _error_body(
                    "invalid_client", 700021,
                    "Client assertion application identifier doesn't match 'client_id' parameter.",
                )  # fmt: skip
            return None
        if not secret:
            return 401, _error_body(
                "invalid_client", 7000218,
                "The request body must contain the following parameter: 'client_assertion' or "
                "'client_secret'.",
            )  # fmt: skip
        if app.secret_expired:
            return 401, _error_body(
                "invalid_client", 7000222,
                f"The provided client secret keys for app '{app.client_id}' are expired. Visit "
                "the Azure portal to create new keys for your app.",
            )  # fmt: skip
        if not secrets.compare_digest(secret, app.secret):
            return 401, _error_body(
                "invalid_client", 7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                "the client secret value, not the client secret ID, for a secret added to app "
                f"'{app.client_id}'.",
            )  # fmt: skip
        return None

    # --- discovery documents (what msal asks for) -------------------------------------------

    def openid_configuration(self, tenant: str) -> dict:
        base = f"{self.authority}/{tenant}"
        return {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post", "private_key_jwt", "client_secret_basic",
            ],
            "jwks_uri": f"{self.authority}/{tenant}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": f"{self.authority}/{tenant}/v2.0",
            "request_uri_parameter_supported": False,
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
        }  # fmt: skip

    def discovery(self, tenant: str) -> tuple[int, dict]:
        """The OpenID configuration of a tenant, or Entra's 400 for a tenant it does not know
        (what msal reads before its first token)."""
        known = tenant.lower() in ("common", "organizations") or (
            self.domains.get(tenant.lower(), tenant) in self.tenants
        )
        if not known:
            return 400, _error_body(
                "invalid_tenant", 90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID "
                "and are signing into the correct cloud. Check with your subscription "
                "administrator, this may happen if there are no active subscriptions for the "
                "tenant.",
            )  # fmt: skip
        return 200, self.openid_configuration(tenant)

    def instance_discovery(self) -> dict:
        host = urlsplit(self.authority).netloc
        return {
            "tenant_discovery_endpoint": f"{self.authority}/common/v2.0/.well-known/"
            "openid-configuration",
            "api-version": "1.1",
            "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
        }

    def jwks(self) -> dict:
        numbers = self._key.public_key().public_numbers()

        def b64(value: int) -> str:
            raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
            return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        return {
            "keys": [
                {"kty": "RSA", "use": "sig", "kid": self.key_id, "x5t": self.key_id,
                 "n": b64(numbers.n), "e": b64(numbers.e)}
            ]
        }  # fmt: skip

    # --- serving ----------------------------------------------------------------------------

    def start(self, port: int = 0, host: str = "127.0.0.1") -> IdentitySimulator:
        simulator = self

        class Handler(QuietHandler):
            def _send(self, status: int, document: dict) -> None:
                payload = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Cache-Control", "no-store, no-cache")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):  # noqa: N802
                parts = urlsplit(self.path)
                segments = [s for s in parts.path.split("/") if s]
                simulator.request_counts["GET " + "/".join(segments[1:])] += 1
                if segments[1:] == ["v2.0", ".well-known", "openid-configuration"]:
                    self._send(*simulator.discovery(segments[0]))
                elif segments[-2:] == ["discovery", "instance"]:
                    self._send(200, simulator.instance_discovery())
                elif segments[1:] == ["discovery", "v2.0", "keys"]:
                    self._send(200, simulator.jwks())
                else:
                    self._send(404, {"error": "not_found"})

            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length).decode()
                segments = [s for s in urlsplit(self.path).path.split("/") if s]
                if len(segments) != 4 or segments[1:] != ["oauth2", "v2.0", "token"]:
                    self._send(404, {"error": "not_found"})
                    return
                with simulator._lock:
                    simulator.request_counts["token"] += 1
                    simulator.bodies.append(raw)
                form = {key: values[0] for key, values in parse_qs(raw).items()}
                # client_secret_basic: the id and secret in an Authorization: Basic header
                basic = self.headers.get("Authorization", "")
                if basic.lower().startswith("basic "):
                    user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
                    form.setdefault("client_id", user)
                    form.setdefault("client_secret", password)
                status, document = simulator.token(segments[0], form)
                self._send(status, document)

        self.certificate = self.serve(Handler, host, port, tls=self.tls)
        return self


def _unverified_claims(assertion: str) -> dict:
    try:
        return jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}


def _certificate(client_id: str) -> tuple[str, str, str]:
    """A fresh RSA key and self-signed certificate for an app; returns key PEM, certificate PEM
    and the certificate's SHA-1 thumbprint (hex, upper case, as the Entra portal shows it)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    certificate = self_signed_certificate(key, f"ewssync {client_id[:8]}")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    cert_pem = certificate.public_bytes(serialization.Encoding.PEM).decode()
    thumbprint = hashlib.sha1(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()  # noqa: S324
    return key_pem, cert_pem, thumbprint.upper()
