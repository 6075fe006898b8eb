"""Which `ews` connections exist, learnt at DAG-parse time without Airflow's ORM.

Airflow 3's DAG processor lets DAG files call ``airflow.sdk.Connection.get`` but forbids ORM
access, and there is no SDK call that lists connections. So the ids come from three places:

1. ``AIRFLOW_CONN_<ID>`` environment variables whose value is ``ews://…`` or JSON with
   ``"conn_type": "ews"``;
2. the metadata database's ``connection`` table, read with one plain SQL query over a
   dedicated read-only SQLAlchemy engine (ids and types only: passwords stay encrypted and are
   fetched per connection through ``Connection.get``, like any DAG would);
3. ``EWSSYNC_CONN_IDS`` (comma-separated), for connections kept in a secrets backend that
   cannot be listed.
"""

from __future__ import annotations

import functools
import json
import logging
import os

log = logging.getLogger(__name__)

CONN_TYPE = "ews"
ENV_PREFIX = "AIRFLOW_CONN_"


def conn_ids_from_env(environ: dict[str, str] | None = None) -> set[str]:
    environ = os.environ if environ is None else environ
    found: set[str] = set()
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        value = value.strip()
        if value.startswith("{"):
            try:
                is_ews = json.loads(value).get("conn_type") == CONN_TYPE
            except (ValueError, AttributeError):
                is_ews = False
        else:
            is_ews = value.split("://", 1)[0].lower() == CONN_TYPE
        if is_ews:
            found.add(name[len(ENV_PREFIX) :].lower())
    explicit = environ.get("EWSSYNC_CONN_IDS", "")
    found.update(part.strip() for part in explicit.split(",") if part.strip())
    return found


@functools.cache
def _metadata_engine(url: str):
    from sqlalchemy import create_engine

    return create_engine(url, pool_pre_ping=True, pool_size=1, max_overflow=0)


def conn_ids_from_metadata_db() -> set[str]:
    """Ids of `ews` connections in Airflow's metadata DB; empty (with a warning) if unreachable."""
    from sqlalchemy import text

    try:
        from airflow.configuration import conf

        url = conf.get("database", "sql_alchemy_conn")
    except Exception as exc:  # no database configured for this process
        log.warning("ewssync: cannot read [database] sql_alchemy_conn: %s", exc)
        return set()
    try:
        with _metadata_engine(url).connect() as db:
            rows = db.execute(
                text("SELECT conn_id FROM connection WHERE conn_type = :conn_type"),
                {"conn_type": CONN_TYPE},
            )
            return {row[0] for row in rows}
    except Exception as exc:
        log.warning("ewssync: cannot list connections in the metadata database: %s", exc)
        return set()


def discover_conn_ids() -> list[str]:
    """Every `ews` connection id, sorted."""
    return sorted(conn_ids_from_env() | conn_ids_from_metadata_db())
