"""Which `ews` connections exist, and their non-secret fields, at DAG-parse time without the ORM.

Airflow 3's DAG processor lets DAG files call ``airflow.sdk.Connection.get`` but forbids ORM
access, and no SDK call lists connections. So the connections come from:

1. ``AIRFLOW_CONN_<ID>`` environment variables whose value is ``ews://…`` or JSON with
   ``"conn_type": "ews"`` (parsed here);
2. the metadata database's ``connection`` table, read with one plain SQL query over a
   dedicated read-only SQLAlchemy engine (never the password column; an encrypted ``extra`` is
   decrypted with Airflow's Fernet key);
3. ``EWSSYNC_CONN_IDS`` (comma-separated), for connections kept in a secrets backend that
   cannot be listed: those are read with ``Connection.get``.

Why not ``Connection.get`` for all of them: every call registers the password with Airflow's
secrets masker, which recompiles one regular expression over all secrets so far, so parsing
500 connections took 18.8 s (quadratic). A DAG's shape needs no password: tasks read the full
connection, password included, when they run.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
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


@functools.cache
def _metadata_engine(url: str):
    from sqlalchemy import create_engine

    return create_engine(url, pool_pre_ping=True, pool_size=1, max_overflow=0)


def connections_from_metadata_db() -> dict[str, ConnectionFields]:
    """`ews` connections in Airflow's metadata DB; empty (with a warning) if unreachable."""
    from sqlalchemy import text

    try:
        from airflow.configuration import conf

        url = conf.get("database", "sql_alchemy_conn")
    except Exception as exc:  # no database configured for this process
        log.warning("ewssync: cannot read [database] sql_alchemy_conn: %s", exc)
        return {}
    try:
        with _metadata_engine(url).connect() as db:
            rows = db.execute(
                text(
                    "SELECT conn_id, conn_type, host, login, description, port, schema, extra, "
                    "is_extra_encrypted FROM connection WHERE conn_type = :conn_type"
                ),
                {"conn_type": CONN_TYPE},
            ).all()
    except Exception as exc:
        log.warning("ewssync: cannot list connections in the metadata database: %s", exc)
        return {}
    found = {}
    for row in rows:
        extra = row.extra
        if extra and row.is_extra_encrypted:
            from airflow.models.crypto import get_fernet

            extra = get_fernet().decrypt(extra.encode()).decode()
        found[row.conn_id] = ConnectionFields(
            conn_id=row.conn_id,
            conn_type=row.conn_type,
            host=row.host,
            login=row.login,
            description=row.description,
            port=row.port,
            schema=row.schema,
            extra=extra,
        )
    return found


def discover_connections() -> dict[str, Any]:
    """Every `ews` connection by id: ConnectionFields, or an airflow.sdk.Connection for ids only
    named in EWSSYNC_CONN_IDS. Environment variables win over the database, as in Airflow."""
    found: dict[str, Any] = connections_from_metadata_db()
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
