"""Sign-in at the simulated EWS endpoint: Basic, a real NTLM handshake (pyspnego's acceptor), and
bearer tokens from the identity-platform simulator, with app-only impersonation; and the refusals
Exchange gives for each (see README.md, "Signing in")."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

from lxml import etree

# Exchange Online's own application id: its bearer challenge names it as client_id.
EXCHANGE_ONLINE_APP = "00000002-0000-0ff1-ce00-000000000000"
BEARER_CHALLENGE = (
    f'Bearer client_id="{EXCHANGE_ONLINE_APP}", '
    'trusted_issuers="00000001-0000-0000-c000-000000000000@*", '
    'token_types="app_asserted_user_v1 service_asserted_app_v1", '
    'authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize"'
)
EWS_ROLE = "full_access_as_app"

S = "http://schemas.xmlsoap.org/soap/envelope/"
T = "http://schemas.microsoft.com/exchange/services/2006/types"
NS = {"s": S, "t": T}

IMPERSONATION_FAULT = (
    f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{S}"><s:Body><s:Fault>'
    f'<faultcode xmlns:a="{T}">a:ErrorInvalidExchangeImpersonationHeaderData</faultcode>'
    '<faultstring xml:lang="en-US">ExchangeImpersonation SOAP header must be present for this '
    "type of OAuth token.</faultstring><detail>"
    '<e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">'
    "ErrorInvalidExchangeImpersonationHeaderData</e:ResponseCode>"
    '<e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">'
    "ExchangeImpersonation SOAP header must be present for this type of OAuth token."
    "</e:Message></detail></s:Fault></s:Body></s:Envelope>"
)
NO_MAILBOX_FAULT = (
    f'<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="{S}"><s:Body><s:Fault>'
    f'<faultcode xmlns:a="{T}">a:ErrorNonExistentMailbox</faultcode>'
    '<faultstring xml:lang="en-US">The SMTP address has no mailbox associated with it.'
    "</faultstring><detail>"
    '<e:ResponseCode xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">'
    "ErrorNonExistentMailbox</e:ResponseCode>"
    '<e:Message xmlns:e="http://schemas.microsoft.com/exchange/services/2006/errors">The SMTP '
    "address has no mailbox associated with it.</e:Message></detail></s:Fault></s:Body>"
    "</s:Envelope>"
)

# x-ms-diagnostics per refused token, as Exchange Online sends them on a 401
DIAGNOSTICS = {
    "no_roles": '2000008;reason="The token contains no permissions, or permissions can not be '
    'understood.";error_category="invalid_grant"',
    # Exchange's wording (its REST answer InvalidAudienceForResource, README "Signing in");
    # {audience} and {url} are filled in per request
    "audience": '2000003;reason="The audience claim value is invalid for current resource. '
    "Audience claim is '{audience}', request url is '{url}' and resource type is 'Exchange'.\";"
    'error_category="invalid_resource"',
    "expired": '2000001;reason="The token has expired.";error_category="invalid_token"',
    "signature": '2000001;reason="The token signature is not valid.";'
    'error_category="invalid_token"',
    "issuer": '2000001;reason="The token issuer is not trusted.";error_category="invalid_token"',
    "malformed": '2000001;reason="The token is not valid.";error_category="invalid_token"',
}


@dataclass
class Refusal:
    status: int
    payload: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Principal:
    """Who signed in: a mailbox user (Basic, NTLM) or an app (bearer token)."""

    method: str  # basic | ntlm | bearer
    mailbox: object | None = None  # tests.ewssim.mailbox.Mailbox
    app_id: str | None = None
    roles: tuple[str, ...] = ()


# --- NTLM: pyspnego's acceptor reads users from the file NTLM_USER_FILE names -------------------
# One file per process, rewritten whole from this table (principal -> smbpasswd line), so several
# simulators in one process share it; a later registration of the same principal wins.

_ntlm_lock = threading.Lock()
_ntlm_users: dict[str, str] = {}
_ntlm_file = Path(tempfile.gettempdir()) / f"ewssim-ntlm-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def register_ntlm_user(principal: str, password: str) -> None:
    """Let ``principal`` (``DOMAIN\\user`` or ``user@domain``) sign in with NTLM."""
    from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1

    line = (
        f"{principal}:1000:{lmowfv1(password).hex().upper()}:{ntowfv1(password).hex().upper()}"
        ":[U]:LCT-0"
    )
    with _ntlm_lock:
        _ntlm_users[principal.lower()] = line
        _ntlm_file.write_text("\n".join(_ntlm_users.values()) + "\n")
        os.environ["NTLM_USER_FILE"] = str(_ntlm_file)


def ntlm_names(email: str) -> list[str]:
    """The sign-in names of a mailbox: ``alice@example.com`` and ``EXAMPLE\\alice``."""
    local, _, domain = email.partition("@")
    return [email, f"{domain.split('.')[0].upper()}\\{local}"]


class SignIn:
    """The EWS endpoint's authentication: which methods it offers and how it refuses.

    :ivar methods: offered methods, any of "basic", "ntlm", "bearer" (default: basic only).
    :ivar ews_enabled: False answers 403 to everyone (EWSEnabled=False for the tenant).
    :ivar allowed_app_ids: None, or the EWSAllowedAppIDs list: other apps' tokens get 403.
    :ivar app_mailboxes: client id -> the mailboxes RBAC for Applications scopes the app to
        (absent: full_access_as_app reaches every mailbox); others get 403.
    :ivar anchors: (X-AnchorMailbox, impersonated address) of every app-only request.
    """

    def __init__(self, simulator):
        self.simulator = simulator
        self.methods: set[str] = {"basic"}
        self.idp = None
        self.audiences: set[str] = set()
        self.ews_enabled = True
        self.allowed_app_ids: set[str] | None = None
        self.app_mailboxes: dict[str, set[str]] = {}
        self.anchors: list[tuple[str | None, str | None]] = []
        self.counts: dict[str, int] = {}
        self.channel_bindings: bytes | None = None  # TLS: tls-server-end-point hash (EPA)

    def offer(self, *methods: str) -> SignIn:
        unknown = set(methods) - {"basic", "ntlm", "bearer"}
        if unknown:
            raise ValueError(f"unknown sign-in methods {sorted(unknown)}")
        self.methods = set(methods)
        if "ntlm" in self.methods:
            for email, mailbox in self.simulator.mailboxes.items():
                for name in ntlm_names(email):
                    register_ntlm_user(name, mailbox.password)
        return self

    def trust(self, idp, audiences: list[str] | None = None) -> SignIn:
        """Accept bearer tokens of ``idp`` for ``audiences`` (default: ``https://<host>``, as
        Exchange Online accepts ``https://outlook.office365.com``, and Exchange Online's app id)."""
        self.idp = idp
        self.audiences = set(audiences or [])
        return self

    def mailbox_added(self, email: str, password: str) -> None:
        if "ntlm" in self.methods:
            for name in ntlm_names(email):
                register_ntlm_user(name, password)

    # --- the gate ---------------------------------------------------------------------------

    def challenges(self, token_error: bool = False) -> list[tuple[str, str]]:
        headers = []
        if "bearer" in self.methods:
            bearer = BEARER_CHALLENGE + (', error="invalid_token"' if token_error else "")
            headers.append(("WWW-Authenticate", bearer))
        if "ntlm" in self.methods:
            headers += [("WWW-Authenticate", "Negotiate"), ("WWW-Authenticate", "NTLM")]
        if "basic" in self.methods:
            headers.append(("WWW-Authenticate", 'Basic realm="ewssim"'))
        return headers

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def check(self, connection, headers, body: bytes) -> tuple[Principal | None, Refusal | None]:
        """Authenticate one request; ``connection`` is the per-TCP-connection handler (NTLM
        authenticates the connection, as IIS does)."""
        header = headers.get("Authorization", "") or ""
        scheme, _, credential = header.partition(" ")
        scheme = scheme.lower()
        principal: Principal | None = getattr(connection, "_ewssim_principal", None)
        if scheme in ("ntlm", "negotiate") and "ntlm" in self.methods:
            principal, refusal = self._ntlm(connection, scheme, credential)
            if refusal:
                return None, refusal
        elif scheme == "basic" and "basic" in self.methods:
            principal = self._basic(credential)
        elif scheme == "bearer" and "bearer" in self.methods:
            principal, refusal = self._bearer(credential)
            if refusal:
                return None, refusal
        elif header:
            principal = None  # a method this server does not offer
        if principal is None:
            self._count("401")
            return None, Refusal(401, b"", tuple(self.challenges()))
        if not self.ews_enabled:
            self._count("403")
            return None, Refusal(403)
        if principal.method == "bearer":
            return self._app_only(principal, headers, body)
        self._count(principal.method)
        return principal, None

    def _basic(self, credential: str) -> Principal | None:
        try:
            user, _, password = base64.b64decode(credential).decode().partition(":")
        except ValueError:
            return None
        mailbox = self.simulator.mailboxes.get(user.lower())
        if mailbox is None or mailbox.password != password:
            return None
        return Principal("basic", mailbox=mailbox)

    def _ntlm(self, connection, scheme: str, credential: str):
        import spnego
        from spnego.channel_bindings import GssChannelBindings
        from spnego.exceptions import SpnegoError

        try:
            token = base64.b64decode(credential)
        except ValueError:
            return None, Refusal(401, b"", tuple(self.challenges()))
        message_type = token[8:12] if token.startswith(b"NTLMSSP\x00") else b""
        if message_type == b"\x01\x00\x00\x00":  # NEGOTIATE: answer with a CHALLENGE
            bindings = None
            if self.channel_bindings is not None:
                bindings = GssChannelBindings(
                    application_data=b"tls-server-end-point:" + self.channel_bindings
                )
            context = spnego.server(protocol="ntlm", channel_bindings=bindings)
            connection._ewssim_ntlm = context
            challenge = base64.b64encode(context.step(token)).decode()
            prefix = "NTLM" if scheme == "ntlm" else "Negotiate"
            return None, Refusal(401, b"", (("WWW-Authenticate", f"{prefix} {challenge}"),))
        context = getattr(connection, "_ewssim_ntlm", None)
        connection._ewssim_ntlm = None
        if message_type != b"\x03\x00\x00\x00" or context is None:
            return None, Refusal(401, b"", tuple(self.challenges()))
        try:
            context.step(token)  # verifies the NTLMv2 response against the user's NT hash
        except SpnegoError:
            self._count("ntlm_refused")
            return None, Refusal(401, b"", tuple(self.challenges()))
        name = (context.client_principal or "").lower()
        mailbox = next(
            (
                box
                for email, box in self.simulator.mailboxes.items()
                if name in (n.lower() for n in ntlm_names(email))
            ),
            None,
        )
        if mailbox is None:
            return None, Refusal(401, b"", tuple(self.challenges()))
        principal = Principal("ntlm", mailbox=mailbox)
        connection._ewssim_principal = principal  # the connection stays signed in
        return principal, None

    def _bearer(self, token: str):
        from tests.identitysim import InvalidToken

        if self.idp is None:
            return None, Refusal(401, b"", tuple(self.challenges(token_error=True)))
        host = self.simulator.host
        audiences = self.audiences or {f"https://{host}", EXCHANGE_ONLINE_APP}
        try:
            claims = self.idp.verify(token, audiences)
        except InvalidToken as exc:
            self._count(f"token_{exc.reason}")
            diagnostics = DIAGNOSTICS[exc.reason]
            if exc.reason == "audience":
                diagnostics = diagnostics.format(
                    audience=_unverified_audience(token), url=self.simulator.url
                )
            return None, Refusal(
                401,
                b"",
                (*self.challenges(token_error=True), ("x-ms-diagnostics", diagnostics)),
            )
        roles = tuple(claims.get("roles", ()))
        # RBAC for Applications: Exchange itself grants a scoped app the mailboxes of its
        # management scope, so its token needs no Entra role (app_mailboxes enforces the scope)
        if EWS_ROLE not in roles and claims["appid"] not in self.app_mailboxes:
            self._count("token_no_roles")
            return None, Refusal(
                401,
                b"",
                (*self.challenges(token_error=True), ("x-ms-diagnostics", DIAGNOSTICS["no_roles"])),
            )
        return Principal("bearer", app_id=claims["appid"], roles=roles), None

    def _app_only(self, principal: Principal, headers, body: bytes):
        if self.allowed_app_ids is not None and principal.app_id not in self.allowed_app_ids:
            self._count("403")
            return None, Refusal(403)
        try:
            root = etree.fromstring(body)
        except etree.XMLSyntaxError:
            return None, Refusal(400)
        address = root.findtext(
            ".//s:Header/t:ExchangeImpersonation//t:PrimarySmtpAddress", None, NS
        )
        anchor = headers.get("X-AnchorMailbox")
        self.anchors.append((anchor, address))
        if not address:  # an app-only token acts for no one unless it impersonates someone
            self._count("no_impersonation")
            return None, Refusal(500, IMPERSONATION_FAULT.encode())
        mailbox = self.simulator.mailboxes.get(address.lower())
        if mailbox is None:
            return None, Refusal(500, NO_MAILBOX_FAULT.encode())
        scope = self.app_mailboxes.get(principal.app_id)
        if scope is not None and address.lower() not in {m.lower() for m in scope}:
            self._count("403")
            return None, Refusal(403)
        self._count("bearer")
        principal.mailbox = mailbox
        return principal, None


def _unverified_audience(token: str) -> str:
    """The ``aud`` claim of a (refused) JWT, read without checking it, as Exchange quotes it."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return ""
    audience = claims.get("aud", "") if isinstance(claims, dict) else ""
    return audience if isinstance(audience, str) else ""


def certificate_hash(cert_path: Path) -> bytes:
    """The tls-server-end-point channel binding of a certificate (RFC 5929: SHA-256 for
    SHA-256-signed certificates), as Extended Protection checks it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).digest()
