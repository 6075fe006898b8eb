"""Which `ews` connections exist, and their non-secret fields, at DAG-parse time.

Airflow 3's DAG processor lets DAG files call ``airflow.sdk.Connection.get`` but blocks the
metadata database (``[database] sql_alchemy_conn`` reads ``airflow-db-not-allowed:///`` there),
and no SDK call lists connections. So the connections come from:

1. ``AIRFLOW_CONN_<ID>`` environment variables whose value is ``ews://…`` or JSON with
   ``"conn_type": "ews"`` (parsed here);
2. Airflow's REST API, ``GET /api/v2/connections``, signed in as a service account kept as its
   own Airflow connection (``ewssync_airflow_api``, override with ``EWSSYNC_API_CONN_ID``:
   host = the api-server's base URL, login/password = a user allowed to read connections).
   The token comes from the api-server's ``POST /auth/token``. The listing is cached in a file
   for ``EWSSYNC_DISCOVERY_CACHE_SECONDS`` (default 20) because every parse is a new process;
   when the API cannot be reached, the last listing is used (with a warning), so a restarting
   api-server does not remove every DAG;
3. ``EWSSYNC_CONN_IDS`` (comma-separated), for connections kept in a secrets backend that
   cannot be listed: those are read with ``Connection.get``.

Why not ``Connection.get`` for all of them: every call registers the password with Airflow's
secrets masker, which recompiles one regular expression over all secrets so far, so parsing
500 connections took 18.8 s (quadratic). A DAG's shape needs no password (the API redacts it
anyway): tasks read the full connection, password included, when they run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CONN_TYPE = "ews"
ENV_PREFIX = "AIRFLOW_CONN_"


@dataclass(frozen=True)
class ConnectionFields:
    """The fields of a connection that shape its DAG (no password)."""

    conn_id: str
    conn_type: str | None
    host: str | None
    login: str | None
    description: str | None
    port: int | None
    schema: str | None
    extra: str | dict | None
    password: None = None  # never read at parse time


@dataclass(frozen=True)
class UnreadableConnection:
    """An `ews` connection whose stored value cannot be read at all (it still gets a DAG, which
    says why, instead of vanishing without an import error)."""

    conn_id: str
    problem: str


def _from_env_value(conn_id: str, value: str) -> ConnectionFields | UnreadableConnection | None:
    value = value.strip()
    if value.startswith("{"):
        try:
            data = json.loads(value)
        except ValueError as exc:
            if '"ews"' not in value:
                return None  # someone else's broken connection: Airflow reports it
            return UnreadableConnection(
                conn_id,
                f"connection {conn_id!r}: the value of {ENV_PREFIX}{conn_id.upper()} is not "
                f"valid JSON ({exc.msg} at character {exc.pos}); fix the variable",
            )
        if not isinstance(data, dict) or data.get("conn_type") != CONN_TYPE:
            return None
        return ConnectionFields(
            conn_id=conn_id,
            conn_type=CONN_TYPE,
            host=data.get("host"),
            login=data.get("login"),
            description=data.get("description"),
            port=data.get("port"),
            schema=data.get("schema"),
            extra=data.get("extra"),
        )
    if value.split("://", 1)[0].lower() != CONN_TYPE:
        return None
    from airflow.sdk import Connection

    parsed = Connection.from_uri(value, conn_id=conn_id)
    return ConnectionFields(
        conn_id=conn_id,
        conn_type=CONN_TYPE,
        host=parsed.host,
        login=parsed.login,
        description=parsed.description,
        port=parsed.port,
        schema=parsed.schema,
        extra=parsed.extra,
    )


def connections_from_env(
    environ: dict[str, str] | None = None,
) -> dict[str, ConnectionFields | UnreadableConnection]:
    environ = os.environ if environ is None else environ
    found: dict[str, ConnectionFields] = {}
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX):
            conn_id = name[len(ENV_PREFIX) :].lower()
            fields = _from_env_value(conn_id, value)
            if fields is not None:
                found[conn_id] = fields
    return found


def explicit_conn_ids(environ: dict[str, str] | None = None) -> set[str]:
    environ = os.environ if environ is None else environ
    return {part.strip() for part in environ.get("EWSSYNC_CONN_IDS", "").split(",") if part.strip()}


API_CONN_ID = "ewssync_airflow_api"
CACHE_SECONDS = 20.0
PAGE_SIZE = 100  # Airflow's default [api] maximum_page_limit
HTTP_TIMEOUT = 10.0


def api_conn_id(environ: dict[str, str] | None = None) -> str:
    """The connection holding the REST API's base URL and service account."""
    environ = os.environ if environ is None else environ
    return environ.get("EWSSYNC_API_CONN_ID", "").strip() or API_CONN_ID


def api_base_url(host: str | None, port: int | None = None, schema: str | None = None) -> str:
    """The api-server's base URL from a connection's host (a URL, or a host name + port)."""
    host = (host or "").strip().rstrip("/")
    if not host:
        raise ValueError("the service account connection has no host (the api-server's URL)")
    if "://" in host:
        return host
    scheme = schema if schema in ("http", "https") else ("https" if port == 443 else "http")
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def _service_account(conn_id: str) -> tuple[str, str, str] | None:
    """(base URL, login, password) of the service account connection, or None if there is none."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        account = Connection.get(conn_id)
    except AirflowNotFoundException:
        log.debug("ewssync: no connection %s: connections are not listed through the API", conn_id)
        return None
    return (
        api_base_url(account.host, account.port, account.schema),
        account.login or "",
        account.password or "",
    )


def list_ews_connections(base_url: str, login: str, password: str) -> list[dict[str, Any]]:
    """Every `ews` connection the REST API lists (passwords redacted by Airflow), as dicts."""
    import httpx

    with httpx.Client(base_url=base_url, timeout=HTTP_TIMEOUT) as client:
        answer = client.post("/auth/token", json={"username": login, "password": password})
        if answer.status_code not in (200, 201):
            raise RuntimeError(
                f"POST {base_url}/auth/token answered {answer.status_code}: check the login and "
                "password of the service account connection"
            )
        client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        found: list[dict[str, Any]] = []
        offset = 0
        while True:
            answer = client.get(
                "/api/v2/connections",
                params={"limit": PAGE_SIZE, "offset": offset, "order_by": "conn_id"},
            )
            answer.raise_for_status()
            page = answer.json()
            rows = page.get("connections") or []
            found.extend(
                {
                    "conn_id": row["connection_id"],
                    "conn_type": row.get("conn_type"),
                    "host": row.get("host"),
                    "login": row.get("login"),
                    "description": row.get("description"),
                    "port": row.get("port"),
                    "schema": row.get("schema"),
                    "extra": row.get("extra"),
                }
                for row in rows
                if row.get("conn_type") == CONN_TYPE
            )
            offset += len(rows)
            if not rows or offset >= int(page.get("total_entries") or 0):
                return found


def _cache_path(base_url: str, login: str) -> Path:
    # One file per api-server and account: stacks on one machine never share a listing.
    key = hashlib.sha256(f"{base_url}\0{login}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"ewssync-discovery-{os.getuid()}-{key}.json"


def _read_cache(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("connections"), list):
        return None
    return data


def _write_cache(path: Path, rows: list[dict[str, Any]]) -> None:
    # Written whole and renamed into place: parsing processes run side by side.
    try:
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=path.name, suffix=".tmp", delete=False
        ) as handle:
            json.dump({"fetched_at": time.time(), "connections": rows}, handle)
        os.replace(handle.name, path)
    except OSError as exc:
        log.warning("ewssync: cannot cache the connection listing in %s: %s", path, exc)


def connections_from_api(environ: dict[str, str] | None = None) -> dict[str, ConnectionFields]:
    """`ews` connections listed by Airflow's REST API; empty when no service account is set."""
    environ = os.environ if environ is None else environ
    account = _service_account(api_conn_id(environ))
    if account is None:
        return {}
    base_url, login, password = account
    max_age = float(environ.get("EWSSYNC_DISCOVERY_CACHE_SECONDS", CACHE_SECONDS))
    path = _cache_path(base_url, login)
    cached = _read_cache(path)
    age = time.time() - float(cached.get("fetched_at", 0)) if cached else None
    if cached is not None and 0 <= age < max_age:
        rows = cached["connections"]
    else:
        try:
            rows = list_ews_connections(base_url, login, password)
        except Exception as exc:
            if cached is None:
                log.warning("ewssync: cannot list connections at %s: %s", base_url, exc)
                return {}
            log.warning(
                "ewssync: cannot list connections at %s (%s); using the listing of %.0f s ago",
                base_url,
                exc,
                age,
            )
            rows = cached["connections"]
        else:
            _write_cache(path, rows)
    return {row["conn_id"]: ConnectionFields(**row) for row in rows}


def discover_connections() -> dict[str, Any]:
    """Every `ews` connection by id: ConnectionFields, or an airflow.sdk.Connection for ids only
    named in EWSSYNC_CONN_IDS. Environment variables win over the database, as in Airflow."""
    found: dict[str, Any] = connections_from_api()
    found.update(connections_from_env())
    missing = explicit_conn_ids() - set(found)
    if missing:
        from airflow.sdk import Connection

        for conn_id in sorted(missing):
            try:
                found[conn_id] = Connection.get(conn_id)
            except Exception as exc:
                log.warning("ewssync: connection %s named in EWSSYNC_CONN_IDS: %s", conn_id, exc)
    return dict(sorted(found.items()))


def discover_conn_ids() -> list[str]:
    """Every `ews` connection id, sorted."""
    return list(discover_connections())
