"""How the EWS backend signs in: exchangelib's credential and auth types per auth_method, the
one-probe choice for auto, and each sign-in failure explained in terms of its fix."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from exchangelib import BASIC, DELEGATE, IMPERSONATION, NTLM, OAUTH2, Credentials, Identity
from exchangelib import errors as ews_errors
from exchangelib.credentials import OAuth2Credentials

from ewssync.errors import ExchangeError
from ewssync.exchange import oauth
from ewssync.exchange.ews_patches import AccessForbidden, SignInRefused
from ewssync.exchange.redact import SECRET_FILTER

log = logging.getLogger(__name__)

# Exchange Online's application id; its 401 challenge names it (Bearer client_id="…").
EXCHANGE_ONLINE_APP = "00000002-0000-0ff1-ce00-000000000000"
EXCHANGE_ONLINE_HOSTS = ("outlook.office365.com", "outlook.office.com", "outlook.office365.us",
                         "partner.outlook.cn")  # fmt: skip
EWS_BLOCKED_FROM = date(2026, 10, 1)  # Exchange Online: only allow-listed apps (EWSAllowedAppIDs)
EWS_ENDS = date(2027, 4, 1)  # Exchange Online: EWS switched off for good
_AUTH_TYPES = {"basic": BASIC, "ntlm": NTLM, "oauth": OAUTH2}
_LABELS = {"basic": "Basic", "ntlm": "NTLM", "oauth": "OAuth app-only"}


class AppTokenCredentials(OAuth2Credentials):
    """exchangelib's client-credentials type, fed tokens by ``ewssync.exchange.oauth``.

    exchangelib's own OAuth2Credentials fetch from a hard-wired login.microsoftonline.com and
    forget the token whenever a session closes; here every session starts from the process-wide
    token cache (any cloud's authority), and exchangelib's refresh path (TokenExpiredError ->
    refresh() -> new session) takes the next token from it.
    """

    def __init__(self, app: oauth.AppCredential, scope: str, mailbox: str):
        # no client_secret for exchangelib: it must not fetch or auto-refresh tokens itself
        super().__init__(
            client_id=app.client_id,
            client_secret=None,
            tenant_id=app.tenant_id,
            identity=Identity(primary_smtp_address=mailbox),
        )
        self.app = app
        self.token_scope = scope

    @property
    def token_url(self) -> str:
        return self.app.token_url

    @property
    def scope(self) -> list[str]:
        return [self.token_scope]

    def _session_token(self) -> dict[str, Any]:
        token = oauth.get_token(self.app, self.token_scope)
        # sessions give the token up REFRESH_BEFORE seconds early, as the cache does
        usable = max(int(token.seconds_left) - oauth.REFRESH_BEFORE, 1)
        return {"access_token": token.value, "token_type": "Bearer", "expires_in": usable}

    def session_params(self) -> dict[str, Any]:
        with self.lock:
            self.access_token = self._session_token()
        return {"token": self.access_token}

    def refresh(self, session) -> None:
        # called when a session's token ran out: the cache fetches the next one if it is due
        oauth.get_token(self.app, self.token_scope)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.client_id!r}, '********')"


def ews_scope(service_endpoint: str) -> str:
    """The token scope of an EWS server: its own host (outlook.office365.com, or the national
    cloud's host) with /.default."""
    return f"https://{urlsplit(service_endpoint).hostname}/.default"


@dataclass(frozen=True)
class SignInPlan:
    method: str  # basic | ntlm | oauth (auto resolved)
    credentials: Any
    auth_type: str
    access_type: str
    offered: tuple[str, ...] | None  # what the server offered, when auto probed

    def describe(self, settings) -> str:
        if self.method == "oauth":
            who = f"app {settings.client_id} as {settings.mailbox}"
        else:
            who = settings.username
        how = _LABELS[self.method]
        if self.offered is not None:
            offered = ", ".join(self.offered) or "no sign-in"
            how = f"{how}; auto: the server offers {offered}"
        return f"{who} @ {settings.service_endpoint} ({how})"


_probed: dict[str, tuple[str, ...]] = {}
_probe_lock = threading.Lock()

_PROBE_BODY = (
    '<?xml version="1.0" encoding="utf-8"?><s:Envelope '
    'xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body/></s:Envelope>'
)


def offered_methods(settings) -> tuple[str, ...]:
    """What the server's 401 offers (WWW-Authenticate), from one unauthenticated POST; once per
    process and endpoint."""
    with _probe_lock:
        if settings.service_endpoint in _probed:
            return _probed[settings.service_endpoint]
        response = requests.post(
            settings.service_endpoint,
            data=_PROBE_BODY,
            headers={"Content-Type": "text/xml; charset=utf-8"},
            timeout=settings.timeout_seconds,
            verify=settings.verify_tls,
            allow_redirects=False,
        )
        header = response.headers.get("WWW-Authenticate", "").lower()
        offers = []
        for scheme, name in (("bearer", "OAuth"), ("negotiate", "Negotiate"), ("ntlm", "NTLM"),
                             ("basic", "Basic")):  # fmt: skip
            if _offers(header, scheme):
                offers.append(name)
        result = tuple(offers)
        _probed[settings.service_endpoint] = result
        log.info("connection %s: the server offers %s", settings.conn_id, result or "no sign-in")
        return result


def _offers(header: str, scheme: str) -> bool:
    # challenges are comma-joined; a scheme starts the header or follows a comma
    return header.startswith(scheme) or f", {scheme}" in header or f",{scheme}" in header


def choose(settings, offered: tuple[str, ...]) -> str:
    """auto: OAuth when the server takes bearer tokens and an app is configured, else NTLM
    (Negotiate/NTLM), else Basic."""
    has_app = bool(settings.tenant_id and settings.client_id)
    if "OAuth" in offered and has_app:
        return "oauth"
    if "NTLM" in offered or "Negotiate" in offered:
        return "ntlm"
    if "Basic" in offered:
        return "basic"
    if "OAuth" in offered:
        raise ExchangeError(
            f"connection {settings.conn_id!r}: the server accepts only OAuth tokens (Exchange "
            "Online): register an Entra ID app and set auth_method=oauth with tenant_id and "
            "client_id (docs/connection.md)"
        )
    if not offered:
        return "basic"  # the server asked for nothing; Basic credentials do no harm
    raise ExchangeError(
        f"connection {settings.conn_id!r}: the server offers no sign-in method ewssync speaks"
    )


def plan(settings) -> SignInPlan:
    """exchangelib credentials, auth type and access type for the connection's auth_method."""
    offered = None
    method = settings.auth_method
    if method == "auto":
        offered = offered_methods(settings)
        method = choose(settings, offered)
    if method == "oauth":
        app = oauth.AppCredential.from_settings(settings)
        SECRET_FILTER.add_secret(settings.password)
        credentials = AppTokenCredentials(
            app, ews_scope(settings.service_endpoint), settings.mailbox
        )
        # app-only tokens act for no one: every request impersonates the mailbox
        # (ExchangeImpersonation header; exchangelib also sends X-AnchorMailbox for routing)
        return SignInPlan(method, credentials, OAUTH2, IMPERSONATION, offered)
    SECRET_FILTER.add(settings.username, settings.password)
    credentials = Credentials(settings.username, settings.password)
    return SignInPlan(method, credentials, _AUTH_TYPES[method], DELEGATE, offered)


def graph_hint(settings) -> str:
    """Where to go after EWS: the Graph backend, by its setting when this build has it."""
    from ewssync.settings import EXTRA_FIELDS

    if "api" in EXTRA_FIELDS:
        return "switch this connection to the Microsoft Graph backend (api=graph)"
    return "move to the Microsoft Graph backend (setting api=graph, being built)"


def is_exchange_online(settings, challenges: str = "") -> bool:
    host = (urlsplit(settings.service_endpoint).hostname or "").lower()
    return host in EXCHANGE_ONLINE_HOSTS or EXCHANGE_ONLINE_APP in challenges.lower()


def explain_sign_in(chain: list[BaseException], settings, method: str) -> str | None:
    """The fix for a sign-in failure in ``chain`` (an exception and its causes), or None."""
    token_error = next((e for e in chain if isinstance(e, oauth.TokenError)), None)
    if token_error is not None:
        return str(token_error)
    refused = next((e for e in chain if isinstance(e, SignInRefused)), None)
    if refused is not None:
        return _explain_401(refused, settings, method)
    if any(isinstance(e, AccessForbidden) for e in chain):
        return _explain_403(settings, method)
    if any(type(e).__name__ == "InsecureTransportError" for e in chain):
        return (
            "OAuth tokens are sent only over https (oauthlib refuses plain http): give an "
            "https Server URL"
        )
    if any(isinstance(e, ews_errors.ErrorInvalidExchangeImpersonationHeaderData) for e in chain):
        return (
            "the server wants the mailbox named in an ExchangeImpersonation header for this "
            "app-only token (ErrorInvalidExchangeImpersonationHeaderData)"
        )
    if method == "oauth" and any(
        isinstance(e, ews_errors.ErrorImpersonateUserDenied) for e in chain
    ):
        return (
            f"app {settings.client_id} may not act for {settings.mailbox} "
            "(ErrorImpersonateUserDenied): grant it the mailbox (docs/connection.md, RBAC for "
            "Applications)"
        )
    return None


def _explain_401(refused: SignInRefused, settings, method: str) -> str:
    diagnostics = refused.diagnostics.lower()
    if method in ("basic", "ntlm") and is_exchange_online(settings, refused.challenges):
        kind = "Basic authentication" if method == "basic" else "NTLM"
        return (
            f"Exchange Online does not accept {kind} (HTTP 401; it takes OAuth tokens only): "
            "use auth_method=oauth with an Entra ID app (tenant_id, client_id, the client secret "
            "in 'Password'; docs/connection.md)"
        )
    if method == "ntlm":
        return (
            f"the server refused the NTLM sign-in of '{settings.username}' (HTTP 401): check "
            "'User name' (DOMAIN\\user or user@domain) and 'Password'"
        )
    if method == "oauth":
        if "2000008" in diagnostics or "no permissions" in diagnostics:
            return (
                f"Exchange accepted the token of app {settings.client_id} but it carries no "
                "permission for EWS (HTTP 401, 'The token contains no permissions'): add the "
                "application permission full_access_as_app (Office 365 Exchange Online) to the "
                "app and grant admin consent"
            )
        if "audience" in diagnostics:
            return (
                f"the token is for another resource than {settings.service_endpoint} (HTTP 401, "
                "invalid audience): the server and the authority must be of the same cloud; "
                "check 'Server' and 'authority'"
            )
        if "expired" in diagnostics:
            return (
                "the server refused the token as expired (HTTP 401): check that this machine's "
                "clock is right"
            )
        reason = SECRET_FILTER.scrub(refused.diagnostics)[:200] or "no reason given"
        return f"the server refused the app's token (HTTP 401: {reason})"
    return (
        f"the server refused the user name '{settings.username}' or its password (HTTP 401): "
        "check 'User name' and 'Password'"
    )


def _explain_403(settings, method: str) -> str:
    today = datetime.now(UTC).date()
    who = f"app {settings.client_id}" if method == "oauth" else repr(settings.username)
    parts = [f"Exchange refuses EWS to {who} for {settings.mailbox} (HTTP 403). Either"]
    if method == "oauth":
        parts.append(
            "the app is not granted this mailbox (RBAC for Applications: the role assignment's "
            "management scope must include it), or"
        )
    parts.append(
        "EWS is switched off for the tenant or the mailbox (Set-OrganizationConfig / "
        "Set-CASMailbox -EWSEnabled), or the app is not on the tenant's EWS allow list "
        "(EWSAllowedAppIDs)."
    )
    if is_exchange_online(settings) or method == "oauth":
        if today >= EWS_BLOCKED_FROM:
            parts.append(
                "Since 1 October 2026 Exchange Online answers EWS only for allow-listed apps,"
            )
        else:
            parts.append(
                "From 1 October 2026 Exchange Online answers EWS only for allow-listed apps,"
            )
        parts.append(f"and EWS in Exchange Online ends on 1 April 2027: {graph_hint(settings)}")
    return " ".join(parts)
