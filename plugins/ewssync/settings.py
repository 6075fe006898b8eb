"""SyncSettings: the one place that parses, defaults and validates an `ews` connection's settings."""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import urlsplit

from ewssync.errors import SettingsError

DEFAULT_SCHEDULE = "*/30 * * * *"
SCHEDULE_PRESETS = {
    "@once", "@continuous", "@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly",
}  # fmt: skip
MAX_WEEKS = 104  # Exchange refuses calendar views over two years
MAX_REMINDER_MINUTES = 40320  # four weeks, Outlook's largest reminder

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:\d{1,5})?$")
_CRON_FIELD = re.compile(r"^[\d*/,\-A-Za-z?LW#]+$")

# extra key -> (default, kind); kinds are parsed by _parse_value.
EXTRA_FIELDS: dict[str, tuple[Any, str]] = {
    "api": ("ews", "choice:ews|graph"),
    "use_2007_protocol": (False, "bool"),
    "app_user": (None, "str"),
    "mailbox": (None, "email"),
    "activated": (True, "bool"),
    "sync_private": (False, "bool"),
    "skip_declined": (False, "bool"),
    "alarm_on_new": (False, "bool"),
    "alarm_minutes": (15, "int"),
    "exchange_timezone": ("UTC", "zone"),
    "keep_html": (False, "bool"),
    "weeks_back": (4, "int"),
    "weeks_ahead": (26, "int"),
    "schedule": (DEFAULT_SCHEDULE, "schedule"),
    "allow_mailbox_mismatch": (False, "bool"),
    "allow_duplicate_mailbox": (False, "bool"),
    "verify_tls": (True, "bool"),
    "timeout_seconds": (30, "int"),
    "test_write": (True, "bool"),
    "auth_method": ("basic", "auth_method"),
    "tenant_id": (None, "tenant"),
    "client_id": (None, "guid"),
    "authority": ("global", "authority"),
    "task_timeout_minutes": (30, "int"),
    "throttle_wait_seconds": (300, "int"),
    "conflict_policy": ("exchange_wins", "choice:exchange_wins|app_wins|newest_wins"),
    "send_cancellations": (False, "bool"),
    "concurrency": (4, "int"),
    "lean_parser": (True, "bool"),
}

AUTH_METHODS = ("basic", "ntlm", "oauth", "auto")
# the identity platform's authority host per national cloud (any https URL is also accepted)
AUTHORITIES = {
    "global": "https://login.microsoftonline.com",
    "usgov": "https://login.microsoftonline.us",
    "china": "https://login.partner.microsoftonline.cn",
}
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}

# extra key -> (label, help text): the connection form (provider_info) and docs/connection.md
FIELD_DOCS: dict[str, tuple[str, str]] = {
    "api": (
        "API",
        "ews (Exchange Web Services: on-premises Exchange, Exchange Online until EWS ends) or "
        "graph (Microsoft Graph: Exchange Online; needs auth_method oauth)",
    ),
    "use_2007_protocol": (
        "Use 2007 protocol",
        "Talk Exchange2007_SP1 (Exchange 2007 servers); leave off for Exchange 2010 and newer",
    ),
    "app_user": (
        "App user",
        "Login of the calendar.users row the appointments belong to (required)",
    ),
    "mailbox": (
        "Mailbox",
        "Primary SMTP address of the mailbox; defaults to the user name when that is an address",
    ),
    "activated": ("Activated", "Sync this mailbox; when off, runs skip"),
    "sync_private": (
        "Sync private appointments",
        "Also sync appointments marked private (they stay flagged private in the app)",
    ),
    "skip_declined": (
        "Skip declined meetings",
        "Leave out meetings the mailbox owner declined but kept in the calendar (off: they sync "
        "with the free/busy Exchange gives them)",
    ),
    "alarm_on_new": ("Alarm on new", "Set a reminder on appointments created from the app"),
    "alarm_minutes": ("Minutes before", "Reminder lead time in minutes (0-40320)"),
    "exchange_timezone": (
        "Exchange time zone",
        "Zone for new items and for items without a known zone: IANA (Europe/Berlin) or Windows "
        "name (W. Europe Standard Time)",
    ),
    "keep_html": ("Keep HTML in notes", "Keep the HTML body beside the plain-text notes"),
    "weeks_back": ("Weeks back", "Weeks before today to sync (0-103; back + ahead <= 104)"),
    "weeks_ahead": ("Weeks ahead", "Weeks after today to sync (1-104; back + ahead <= 104)"),
    "schedule": (
        "Schedule",
        f"Cron expression or Airflow preset (@hourly...); default '{DEFAULT_SCHEDULE}', "
        "'none' for manual runs only",
    ),
    "allow_mailbox_mismatch": (
        "Allow mailbox mismatch",
        "Sync even if the mailbox differs from the app user's e-mail (shared calendars)",
    ),
    "allow_duplicate_mailbox": (
        "Allow a second connection",
        "Sync even if another connection already syncs this mailbox for the same app user "
        "(every appointment then arrives twice)",
    ),
    "verify_tls": ("Verify TLS", "Check the server's TLS certificate (leave on)"),
    "timeout_seconds": ("Timeout (s)", "Seconds to wait for one answer from Exchange (1-600)"),
    "test_write": (
        "Test writing",
        "The connection test also creates and deletes a test appointment",
    ),
    "auth_method": (
        "Sign-in method",
        "basic (user name + password), ntlm (on-premises default; DOMAIN\\user or "
        "user@domain), oauth (Exchange Online: app-only, client secret or certificate in "
        "'Password'), auto (ask the server once and pick)",
    ),
    "tenant_id": (
        "Tenant id",
        "OAuth: the Directory (tenant) ID of the Entra ID app (or the tenant's "
        "*.onmicrosoft.com domain)",
    ),
    "client_id": ("Client id", "OAuth: the Application (client) ID of the Entra ID app"),
    "authority": (
        "Authority",
        "OAuth: the identity platform's cloud: global (default), usgov, china, or its https URL",
    ),
    "task_timeout_minutes": (
        "Task timeout (min)",
        "Longest one task of a run may take (1-720); a run may take three times this",
    ),
    "throttle_wait_seconds": (
        "Throttling patience (s)",
        "Most seconds one task waits in total for a throttling server (0-3600), then it fails "
        "and a later try continues; must be less than the task timeout",
    ),
    "conflict_policy": (
        "Conflict policy",
        "Who wins when an appointment changed on both sides since the last sync: exchange_wins, "
        "app_wins or newest_wins (the later modification)",
    ),
    "send_cancellations": (
        "Send cancellations",
        "When the app deletes a meeting, Exchange sends cancellations to its attendees",
    ),
    "concurrency": (
        "Parallel requests",
        "Most EWS requests one task keeps in flight at once (1-16): item reads and calendar-view "
        "pages overlap; throttling still pauses them all",
    ),
    "lean_parser": (
        "Lean reading",
        "Read calendar items from EWS answers with ewssync's own parser (several times less CPU, "
        "the same records); off: exchangelib's",
    ),
}

# The limits here are the connection form's too: provider_info builds its JSON schema from them
# (minimum/maximum, enum, required), so the UI refuses what from_connection refuses where the
# form can say it; what it cannot say (patterns, one field depending on another) is checked here
# only.
INT_RANGES = {
    "alarm_minutes": (0, MAX_REMINDER_MINUTES),
    "weeks_back": (0, MAX_WEEKS - 1),  # weeks_ahead is at least 1
    "weeks_ahead": (1, MAX_WEEKS),
    "timeout_seconds": (1, 600),
    "task_timeout_minutes": (1, 720),
    "throttle_wait_seconds": (0, 3600),
    "concurrency": (1, 16),
}


# extra keys the form marks required (no default, and nothing else stands in for them)
REQUIRED_EXTRA = ("app_user",)
# suggestions the form offers for free-text settings
FORM_EXAMPLES = {
    "schedule": (DEFAULT_SCHEDULE, "@hourly", "@daily", "none"),
    "authority": tuple(AUTHORITIES),
}


def allowed_values(kind: str) -> tuple[str, ...] | None:
    """Every value a setting of this kind accepts, where they can be listed (the form's enum)."""
    if kind == "auth_method":
        return AUTH_METHODS
    if kind.startswith("choice:"):
        return tuple(kind.removeprefix("choice:").split("|"))
    if kind == "zone":
        from ewssync.timezones import zone_names

        return zone_names()
    return None


@dataclass(frozen=True)
class SyncSettings:
    """A connection's settings, parsed and validated. Build it with ``from_connection``."""

    conn_id: str
    title: str
    server: str
    service_endpoint: str
    username: str
    password: str = field(repr=False)
    use_2007_protocol: bool
    app_user: str
    mailbox: str
    activated: bool
    sync_private: bool
    alarm_on_new: bool
    alarm_minutes: int
    exchange_timezone: str
    keep_html: bool
    weeks_back: int
    weeks_ahead: int
    schedule: str | None
    allow_mailbox_mismatch: bool
    verify_tls: bool
    timeout_seconds: int
    test_write: bool
    auth_method: str = "basic"
    tenant_id: str | None = None
    client_id: str | None = None
    authority: str = AUTHORITIES["global"]
    task_timeout_minutes: int = 30
    throttle_wait_seconds: int = 300
    skip_declined: bool = False
    conflict_policy: str = "exchange_wins"
    send_cancellations: bool = False
    api: str = "ews"
    allow_duplicate_mailbox: bool = False
    concurrency: int = 4
    lean_parser: bool = True

    def __str__(self) -> str:
        return f"SyncSettings({self.conn_id}: {self.username} @ {self.service_endpoint})"

    # --- parsing ------------------------------------------------------------------------------

    @classmethod
    def from_connection(cls, conn: Any, *, require_password: bool = True) -> SyncSettings:
        """Parse an Airflow connection (airflow.sdk.Connection or the models one) of type `ews`.

        :param require_password: False when only the DAG's shape is built (parse time): the
            password is checked when the tasks run.
        :raises SettingsError: naming the connection and every invalid field at once (a check
            that needs another, invalid field waits until that one is fixed).
        """
        conn_id = getattr(conn, "conn_id", None) or "?"
        conn_type = getattr(conn, "conn_type", None)
        if conn_type not in (None, "ews"):
            raise SettingsError(conn_id, "conn_type", f"is {conn_type!r}; expected 'ews'")
        extra = _extra_of(conn_id, conn)
        problems: list[SettingsError] = []

        def invalid(key: str, problem: str) -> None:
            problems.append(SettingsError(conn_id, key, problem))

        allowed = ", ".join(sorted(EXTRA_FIELDS))
        for key in sorted(set(extra) - set(EXTRA_FIELDS)):
            close = difflib.get_close_matches(key, EXTRA_FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            invalid(key, f"unknown setting{hint}; known settings: {allowed}")
        values: dict[str, Any] = {}
        for key, (default, kind) in EXTRA_FIELDS.items():
            # None or "" (an untouched form field) means "not given": use the default
            try:
                values[key] = _parse_value(conn_id, key, _given(extra.get(key), default), kind)
            except SettingsError as exc:
                problems.append(exc)

        def valid(*keys: str) -> bool:
            return all(key in values for key in keys)

        for key, (low, high) in INT_RANGES.items():
            if valid(key) and not low <= values[key] <= high:
                invalid(key, f"is {values[key]}; allowed is {low} to {high}")
                del values[key]  # the checks that need it wait until it is fixed
        if valid("weeks_back", "weeks_ahead") and (
            values["weeks_back"] + values["weeks_ahead"] > MAX_WEEKS
        ):
            invalid(
                "weeks_ahead",
                f"weeks_back + weeks_ahead is {values['weeks_back'] + values['weeks_ahead']}; "
                f"Exchange cannot read more than {MAX_WEEKS} weeks at once",
            )
        if valid("throttle_wait_seconds", "task_timeout_minutes") and (
            values["throttle_wait_seconds"] >= values["task_timeout_minutes"] * 60
        ):
            invalid(
                "throttle_wait_seconds", f"is {values['throttle_wait_seconds']}; it must be less "
                f"than the task timeout ({values['task_timeout_minutes']} min)",
            )  # fmt: skip

        server = (getattr(conn, "host", None) or "").strip()
        endpoint = None
        if not server:
            invalid(
                "server", "is empty; give a host name such as outlook.office365.com or a full "
                "EWS URL (https://host/EWS/Exchange.asmx)",
            )  # fmt: skip
        elif valid("api"):
            endpoint_for = graph_endpoint_for if values["api"] == "graph" else service_endpoint_for
            try:
                endpoint = endpoint_for(conn_id, server, getattr(conn, "port", None))
            except SettingsError as exc:
                problems.append(exc)
        graph = valid("api", "auth_method") and values["api"] == "graph"
        if graph and values["auth_method"] != "oauth":
            invalid(
                "auth_method", f"is {values['auth_method']!r}; api graph signs in as an Entra "
                "ID app only: set auth_method oauth with tenant_id and client_id",
            )  # fmt: skip
        username = (getattr(conn, "login", None) or "").strip()
        method = values.get("auth_method")
        oauth = method == "oauth"
        app_only = oauth or (method == "auto" and values.get("client_id"))
        if not username and valid("auth_method", "client_id") and not app_only:
            invalid("login", "the user name is empty")
        password = getattr(conn, "password", None) or ""
        if not password and require_password:
            what = "give the app's client secret (or certificate)" if oauth else "give it"
            invalid("password", f"the password is empty: {what}")
        if valid("auth_method", "tenant_id", "client_id"):
            problems.extend(_oauth_field_problems(conn_id, values))
        if valid("app_user") and not values["app_user"]:
            invalid(
                "app_user", "is missing: name the calendar.users login the appointments belong to"
            )
        mailbox = None
        if valid("mailbox", "auth_method"):
            mailbox = values["mailbox"] or (username if _EMAIL.match(username) else None)
            if not mailbox:
                whose = (
                    "auth_method oauth signs in as an app, so"
                    if oauth and not username
                    else f"the user name {username!r} is not an e-mail address, so"
                )
                invalid("mailbox", f"{whose} give the mailbox's primary SMTP address in 'mailbox'")
        if problems:
            raise SettingsError.of_all(problems)
        return cls(
            conn_id=conn_id,
            title=(getattr(conn, "description", None) or "").strip(),
            server=server,
            service_endpoint=endpoint,
            username=username,
            password=password,
            mailbox=mailbox.lower(),
            **{k: v for k, v in values.items() if k != "mailbox"},
        )

    # --- use ----------------------------------------------------------------------------------

    def window(self, now: datetime) -> tuple[datetime, datetime]:
        """The sync window around ``now``, aligned to midnight UTC so it moves once a day."""
        if now.tzinfo is None:
            raise ValueError("window() needs an aware datetime")
        today = datetime.combine(now.astimezone(UTC).date(), time(0), tzinfo=UTC)
        return today - timedelta(weeks=self.weeks_back), today + timedelta(weeks=self.weeks_ahead)

    @property
    def task_timeout(self) -> timedelta:
        """Every task's execution_timeout."""
        return timedelta(minutes=self.task_timeout_minutes)

    @property
    def run_timeout(self) -> timedelta:
        """The DAG's dagrun_timeout (three task timeouts: one slow step and its retry fit); a
        run silent for longer has lost its claim on the connection."""
        return 3 * self.task_timeout

    def public_dict(self) -> dict[str, Any]:
        """Every setting but the password, for display (DAG docs, logs, reports)."""
        shown = asdict(self)
        shown.pop("password")
        return shown

    def validate_app_user(self, user: dict[str, Any] | None) -> None:
        """Check the app user row (from store.find_user) exists and owns this mailbox.

        Importing one person's calendar into another's is refused unless
        ``allow_mailbox_mismatch`` is set.
        """
        if user is None:
            raise SettingsError(
                self.conn_id, "app_user", f"no calendar.users row has login {self.app_user!r}"
            )
        email = (user.get("email") or "").strip().lower()
        if not self.allow_mailbox_mismatch and email != self.mailbox:
            raise SettingsError(
                self.conn_id,
                "mailbox",
                f"the mailbox {self.mailbox!r} does not match the e-mail {email or '(none)'!r} of "
                f"app user {self.app_user!r}; refusing to sync one person's calendar into "
                "another's. Fix app_user or mailbox, or set allow_mailbox_mismatch=true if this "
                "is intended (e.g. a shared calendar)",
            )


def _oauth_field_problems(conn_id: str, values: dict[str, Any]) -> list[SettingsError]:
    """OAuth needs both ids; auto uses OAuth only when both are given."""
    tenant, client = values["tenant_id"], values["client_id"]
    method = values["auth_method"]
    if not (method == "oauth" or (method == "auto" and (tenant or client))):
        return []
    return [
        SettingsError(
            conn_id,
            key,
            f"is missing: auth_method {method} with an Entra ID app needs "
            "tenant_id (Directory (tenant) ID) and client_id (Application (client) ID)",
        )  # fmt: skip
        for key in ("tenant_id", "client_id")
        if not values[key]
    ]


def _given(value: Any, default: Any) -> Any:
    return default if value is None or (isinstance(value, str) and not value.strip()) else value


def _extra_of(conn_id: str, conn: Any) -> dict[str, Any]:
    extra = getattr(conn, "extra_dejson", None)
    if extra is None or not isinstance(extra, dict):
        raw = getattr(conn, "extra", None)
        if not raw:
            return {}
        if isinstance(raw, dict):
            return raw
        try:
            extra = json.loads(raw)
        except ValueError as exc:
            raise SettingsError(conn_id, "extra", f"is not valid JSON: {exc}") from None
    if not isinstance(extra, dict):
        raise SettingsError(conn_id, "extra", "must be a JSON object")
    return extra


def _parse_value(conn_id: str, key: str, value: Any, kind: str) -> Any:
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise SettingsError(conn_id, key, f"is {value!r}; expected true or false")
    if kind == "int":
        if isinstance(value, bool):
            raise SettingsError(conn_id, key, f"is {value!r}; expected a whole number")
        try:
            number = float(str(value).strip())
        except ValueError:
            raise SettingsError(conn_id, key, f"is {value!r}; expected a whole number") from None
        if not number.is_integer():
            raise SettingsError(conn_id, key, f"is {value!r}; expected a whole number")
        return int(number)
    if kind == "str":
        return None if value is None else str(value).strip() or None
    if kind == "email":
        if value in (None, ""):
            return None
        text = str(value).strip()
        if not _EMAIL.match(text):
            raise SettingsError(conn_id, key, f"is {value!r}; expected an e-mail address")
        return text
    if kind == "zone":
        from ewssync.timezones import is_valid_zone, windows_to_iana

        name = str(value).strip()
        zone = name if is_valid_zone(name) else windows_to_iana(name)
        if zone is None:
            raise SettingsError(
                conn_id, key, f"is {value!r}; expected an IANA zone (Europe/Berlin) or a Windows "
                "zone name (W. Europe Standard Time)",
            )  # fmt: skip
        return zone
    if kind == "schedule":
        return _parse_schedule(conn_id, key, value)
    if kind == "auth_method":
        text = str(value).strip().lower()
        if text not in AUTH_METHODS:
            close = difflib.get_close_matches(text, AUTH_METHODS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingsError(
                conn_id, key, f"is {value!r}{hint}; allowed: {', '.join(AUTH_METHODS)}"
            )
        return text
    if kind == "guid":
        if value in (None, ""):
            return None
        text = str(value).strip()
        if not _GUID.match(text):
            raise SettingsError(
                conn_id, key, f"is {value!r}; expected a GUID like "
                "0a1b2c3d-1111-2222-3333-444455556666 (the app's Overview page shows it)",
            )  # fmt: skip
        return text.lower()
    if kind == "tenant":
        if value in (None, ""):
            return None
        text = str(value).strip()
        if not (_GUID.match(text) or (_HOST.match(text) and "." in text and ":" not in text)):
            raise SettingsError(
                conn_id, key, f"is {value!r}; expected the Directory (tenant) ID (a GUID) or a "
                "domain of the tenant (contoso.onmicrosoft.com)",
            )  # fmt: skip
        return text.lower()
    if kind == "authority":
        return _parse_authority(conn_id, key, value)
    if kind.startswith("choice:"):
        choices = kind.removeprefix("choice:").split("|")
        text = str(value).strip().lower()
        if text not in choices:
            raise SettingsError(conn_id, key, f"is {value!r}; expected one of {', '.join(choices)}")
        return text
    raise AssertionError(kind)


def _parse_schedule(conn_id: str, key: str, value: Any) -> str | None:
    text = str(value).strip() if value is not None else "none"
    if text.lower() in ("none", "manual", ""):
        return None
    if text in SCHEDULE_PRESETS:
        return text
    fields = text.split()
    if len(fields) in (5, 6) and all(_CRON_FIELD.match(f) for f in fields):
        try:
            from croniter import croniter

            valid = croniter.is_valid(text)
        except ImportError:  # pragma: no cover - croniter ships with Airflow
            valid = True
        if valid:
            return text
    raise SettingsError(
        conn_id, key, f"is {value!r}; expected a cron expression ('*/30 * * * *'), an Airflow "
        "preset (@hourly, @daily…) or 'none' for manual runs only",
    )  # fmt: skip


def _parse_authority(conn_id: str, key: str, value: Any) -> str:
    text = str(value).strip().rstrip("/")
    if text.lower() in AUTHORITIES:
        return AUTHORITIES[text.lower()]
    parts = urlsplit(text)
    # https only: msal (and the identity platform) take nothing else, test authorities included
    if parts.scheme == "https" and parts.hostname and parts.path in ("", "/") and not parts.query:
        return f"{parts.scheme}://{parts.netloc}"
    raise SettingsError(
        conn_id, key, f"is {value!r}; expected global, usgov, china or the authority's https "
        "URL without a path (https://login.microsoftonline.com)",
    )  # fmt: skip


# Microsoft Graph's host per national cloud (a server given as one of these names or any URL)
GRAPH_HOSTS = ("graph.microsoft.com", "graph.microsoft.us", "dod-graph.microsoft.us",
               "microsoftgraph.chinacloudapi.cn")  # fmt: skip


def graph_endpoint_for(conn_id: str, server: str, port: Any = None) -> str:
    """Graph's root URL (``https://graph.microsoft.com``; ``/v1.0`` is the backend's) for a
    server given as a host name or a URL (plain http only on loopback: a simulator)."""
    text = server.strip().rstrip("/")
    if "://" not in text:
        if "@" in text or not _HOST.match(text):
            raise SettingsError(
                conn_id, "server", f"{server!r} is not a host name; api graph wants Graph's "
                f"host ({', '.join(GRAPH_HOSTS)}) or its URL",
            )  # fmt: skip
        netloc = f"{text}:{port}" if port and ":" not in text else text
        return f"https://{netloc}"
    parts = urlsplit(text)
    secure = parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)
    if not secure or not parts.hostname or "@" in parts.netloc:
        raise SettingsError(
            conn_id, "server", f"{server!r} is not an https URL of Microsoft Graph "
            "(https://graph.microsoft.com; plain http only on this machine, for a simulator)",
        )  # fmt: skip
    if parts.path not in ("", "/", "/v1.0"):
        raise SettingsError(
            conn_id, "server", f"{server!r} has a path; give Graph's root "
            "(https://graph.microsoft.com), the pipeline adds /v1.0",
        )  # fmt: skip
    return f"{parts.scheme}://{parts.netloc}"


def service_endpoint_for(conn_id: str, server: str, port: Any = None) -> str:
    """The EWS URL for a server given as a host name or a full URL."""
    if "@" in server.split("/", 3)[2 if "://" in server else 0]:
        # never echoed: the part before @ is likely a password, and this message reaches the
        # DAG's docs and the logs
        raise SettingsError(
            conn_id, "server", "carries a user name or password before '@'; remove it and put "
            "them in 'User name' (login) and 'Password'",
        )  # fmt: skip
    if "://" in server:
        parts = urlsplit(server)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SettingsError(
                conn_id, "server", f"{server!r} is not an http(s) URL of an EWS endpoint"
            )
        path = parts.path if parts.path not in ("", "/") else "/EWS/Exchange.asmx"
        return f"{parts.scheme}://{parts.netloc}{path}"
    if not _HOST.match(server):
        raise SettingsError(
            conn_id, "server", f"{server!r} is not a host name (like outlook.office365.com)"
        )
    netloc = f"{server}:{port}" if port and ":" not in server else server
    return f"https://{netloc}/EWS/Exchange.asmx"
