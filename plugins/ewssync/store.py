"""Everything that talks to PostgreSQL: migrations, staging, the merge, links and the run log."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import pandas as pd
import psycopg2
import psycopg2.extras

from ewssync.errors import SafetyStop, StoreError
from ewssync.transform import NORMALIZED_COLUMNS

_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def sql_dir() -> Path:
    """Where include/sql lives: $EWSSYNC_SQL_DIR, else the project checkout around this package.

    The package may run from the repository (editable install, plugins/ mounted by Airflow) or
    from an image where include/ is mounted at /opt/airflow/include.
    """
    configured = os.environ.get("EWSSYNC_SQL_DIR")
    if configured:
        return Path(configured)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "include" / "sql"
        if (candidate / "queries.sql").is_file():
            return candidate
    fallback = Path("/opt/airflow/include/sql")
    if (fallback / "queries.sql").is_file():
        return fallback
    raise StoreError(
        "cannot find include/sql (the schema migrations and queries): "
        "set EWSSYNC_SQL_DIR to the project's include/sql folder"
    )


@functools.cache
def queries() -> dict[str, str]:
    """The named statements of include/sql/queries.sql, loaded once."""
    text = (sql_dir() / "queries.sql").read_text(encoding="utf-8")
    parts = _NAME_LINE.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def query(name: str) -> str:
    try:
        return queries()[name]
    except KeyError:
        raise StoreError(f"no statement named {name!r} in include/sql/queries.sql") from None


# --- connections -------------------------------------------------------------------------------


@contextlib.contextmanager
def connect(dsn: str) -> Iterator[psycopg2.extensions.connection]:
    """A psycopg2 connection that commits on success and rolls back on error."""
    try:
        conn = psycopg2.connect(dsn, connect_timeout=10, application_name="ewssync")
    except psycopg2.OperationalError as exc:
        raise StoreError(
            f"cannot connect to the calendar database ({_safe_dsn(dsn)}): {exc}"
        ) from exc
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def _safe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit((parts.scheme, f"{user}{host}{port}", parts.path, "", ""))
    return re.sub(r"password\s*=\s*\S+", "password=***", dsn)


def execute(conn, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Run a named statement; return its rows as dicts (empty when it returns none)."""
    with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
        cur.execute(query(name), params or {})
        return [dict(row) for row in cur.fetchall()] if cur.description else []


def execute_rowcount(conn, name: str, params: dict[str, Any]) -> int:
    with conn.cursor() as cur:
        cur.execute(query(name), params)
        return cur.rowcount


# --- migrations --------------------------------------------------------------------------------


def migrate(dsn: str) -> list[str]:
    """Apply pending migrations from include/sql/migrations (yoyo: transactional, recorded, locked).

    :return: ids of the migrations applied now (empty when the schema was current).
    """
    from yoyo import get_backend, read_migrations

    with connect(dsn) as conn, conn.cursor() as cur:
        # yoyo keeps its bookkeeping in the schema it is pointed at; it must exist first.
        cur.execute("CREATE SCHEMA IF NOT EXISTS ewssync")
    backend = get_backend(_yoyo_uri(dsn))
    try:
        migrations = read_migrations(str(sql_dir() / "migrations"))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return [m.id for m in pending]
    finally:
        backend.connection.close()


def _yoyo_uri(dsn: str) -> str:
    if "://" not in dsn:
        raise StoreError("the calendar database must be given as a postgresql:// URI")
    parts = urlsplit(dsn)
    scheme = "postgresql"  # yoyo's psycopg2 backend
    extra = urlencode({"schema": "ewssync"})
    query_part = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((scheme, parts.netloc, parts.path, query_part, ""))


# --- users -------------------------------------------------------------------------------------


def find_user(conn, login: str) -> dict[str, Any] | None:
    rows = execute(conn, "find_user", {"login": login})
    return rows[0] if rows else None


# --- runs --------------------------------------------------------------------------------------


def begin_run(conn, conn_id: str, run_key: str) -> None:
    execute(conn, "begin_run", {"conn_id": conn_id, "run_key": run_key})


def add_to_run(
    conn,
    conn_id: str,
    run_key: str,
    *,
    counts: dict | None = None,
    durations: dict | None = None,
    mode: str | None = None,
) -> None:
    execute(
        conn,
        "add_to_run",
        {
            "conn_id": conn_id,
            "run_key": run_key,
            "counts": json.dumps(counts or {}),
            "durations": json.dumps(durations or {}),
            "mode": mode,
        },
    )


def finish_run(
    conn, conn_id: str, run_key: str, status: str, errors: Sequence[str] = ()
) -> dict[str, Any] | None:
    rows = execute(
        conn,
        "finish_run",
        {
            "conn_id": conn_id,
            "run_key": run_key,
            "status": status,
            "errors": json.dumps(list(errors)),
        },
    )
    return rows[0] if rows else None


def record_failure(conn, conn_id: str, run_key: str, status: str, error: str) -> None:
    execute(
        conn,
        "record_failure",
        {"conn_id": conn_id, "run_key": run_key, "status": status, "error": error},
    )


def get_sync_state(conn, conn_id: str) -> dict[str, Any] | None:
    rows = execute(conn, "get_sync_state", {"conn_id": conn_id})
    return rows[0] if rows else None


# --- links -------------------------------------------------------------------------------------


def links_in_window(conn, conn_id: str, window_start, window_end) -> dict[str, dict[str, Any]]:
    rows = execute(
        conn,
        "links_in_window",
        {"conn_id": conn_id, "window_start": window_start, "window_end": window_end},
    )
    return {row["ews_item_id"]: row for row in rows}


def links_by_item(conn, conn_id: str, item_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    rows = execute(conn, "links_by_item", {"conn_id": conn_id, "item_ids": list(item_ids)})
    return {row["ews_item_id"]: row for row in rows}


# --- staging -----------------------------------------------------------------------------------

EWS_ITEM_COLUMNS = (
    "item_id", "change_key", "item_type", "uid", "recurrence_id", "master_item_id", "subject",
    "location", "body", "body_type", "start_utc", "end_utc", "is_all_day", "start_date",
    "end_date", "timezone_windows", "timezone_iana", "sensitivity", "reminder_is_set",
    "reminder_minutes", "legacy_free_busy", "categories", "last_modified", "is_recurring",
)  # fmt: skip

# The staged appointment columns are exactly what transform.normalize produces.
APPOINTMENT_COLUMNS = NORMALIZED_COLUMNS


def clear_staging(conn, conn_id: str) -> None:
    with conn.cursor() as cur:
        cur.execute(query("clear_staging"), {"conn_id": conn_id})


def put_staging_run(
    conn, conn_id: str, run_key: str, *, mode: str, ews_sync_state, window_start, window_end
) -> None:
    execute(
        conn,
        "put_staging_run",
        {
            "conn_id": conn_id,
            "run_key": run_key,
            "mode": mode,
            "ews_sync_state": ews_sync_state,
            "window_start": window_start,
            "window_end": window_end,
        },
    )


def get_staging_run(conn, conn_id: str, run_key: str) -> dict[str, Any]:
    rows = execute(conn, "get_staging_run", {"conn_id": conn_id, "run_key": run_key})
    if not rows:
        raise StoreError(
            f"connection {conn_id!r}: nothing staged for run {run_key!r} "
            "(the staging tables are emptied by a database restart): clear and re-run 'extract'"
        )
    return rows[0]


ANALYZE_AFTER_ROWS = 1000


def _copy(conn, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """COPY rows into a table through one CSV stream; NULL is the unquoted empty field."""
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    count = 0
    for row in rows:
        writer.writerow([_csv_value(v) for v in row])
        count += 1
    buffer.seek(0)
    with conn.cursor() as cur:
        cur.copy_expert(
            f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')",
            buffer,
        )
        if count >= ANALYZE_AFTER_ROWS:
            # Fresh statistics: without them the merge plans nested loops over 100k-row CTEs.
            cur.execute(f"ANALYZE {table}")
    return count


def _csv_value(value: Any) -> Any:
    if value is None or value is pd.NaT:
        return "\\N"
    if isinstance(value, float) and value != value:  # NaN
        return "\\N"
    if isinstance(value, list | tuple):
        # Postgres array literal; every element quoted so commas and braces survive.
        inner = ",".join(
            '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in value
        )
        return "{" + inner + "}"
    if isinstance(value, bool):
        return "t" if value else "f"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def stage_ews_items(conn, conn_id: str, run_key: str, records: Iterable[dict[str, Any]]) -> int:
    """COPY raw Exchange records (exchange.py's record dicts) into staging for this run."""
    columns = ("run_key", "conn_id", *EWS_ITEM_COLUMNS)

    def rows():
        for r in records:
            yield (
                run_key, conn_id, r["item_id"], r.get("change_key"), r.get("item_type"),
                r.get("uid"), r.get("recurrence_id"), r.get("master_item_id"), r.get("subject"),
                r.get("location"), r.get("body"), r.get("body_type"), r.get("start"), r.get("end"),
                r.get("is_all_day"), r.get("start_date"), r.get("end_date"),
                r.get("timezone_windows"), r.get("timezone_iana"), r.get("sensitivity"),
                r.get("reminder_is_set"), r.get("reminder_minutes"), r.get("legacy_free_busy"),
                list(r.get("categories") or []), r.get("last_modified"), r.get("is_recurring"),
            )  # fmt: skip

    return _copy(conn, "ewssync.staging_ews_items", columns, rows())


def stage_seen(conn, conn_id: str, run_key: str, item_ids: Iterable[str], state: str) -> int:
    rows = ((run_key, conn_id, item_id, state) for item_id in item_ids)
    return _copy(conn, "ewssync.staging_seen", ("run_key", "conn_id", "ews_item_id", "state"), rows)


def staged_ews_items(conn, conn_id: str, run_key: str) -> pd.DataFrame:
    rows = execute(conn, "staged_ews_items", {"conn_id": conn_id, "run_key": run_key})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    for column in ("start", "end", "recurrence_id", "last_modified"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def stage_appointments(conn, conn_id: str, run_key: str, frame: pd.DataFrame) -> int:
    """Replace this run's normalised appointments in staging with the frame's rows."""
    execute_rowcount(conn, "clear_staged_appointments", {"conn_id": conn_id, "run_key": run_key})
    if frame.empty:
        return 0
    ordered = frame.loc[:, list(APPOINTMENT_COLUMNS)].astype(object)
    ordered = ordered.where(ordered.notna(), None)
    rows = ((run_key, conn_id, *values) for values in ordered.itertuples(index=False, name=None))
    return _copy(
        conn, "ewssync.staging_appointments", ("run_key", "conn_id", *APPOINTMENT_COLUMNS), rows
    )


# --- merge -------------------------------------------------------------------------------------


def merge(
    conn,
    conn_id: str,
    run_key: str,
    *,
    user_id: int,
    max_delete_share: float = 0.5,
    min_delete_guard: int = 20,
    allow_mass_delete: bool = False,
) -> dict[str, int]:
    """Merge the run's staged window into calendar.appointments and the links, in the caller's
    transaction; save the run's EWS sync state with it so both move together.

    Stops with SafetyStop, before changing anything, when the run would delete more than
    ``max_delete_share`` of the connection's linked appointments (and more than
    ``min_delete_guard`` of them): a vanished calendar or a wrong mailbox looks like that.
    """
    params = {"conn_id": conn_id, "run_key": run_key, "user_id": user_id}
    staging_run = get_staging_run(conn, conn_id, run_key)
    gone = execute(conn, "count_gone", params)[0]["count"]
    linked = execute(conn, "count_links", params)[0]["count"]
    if (
        not allow_mass_delete
        and gone > min_delete_guard
        and linked
        and gone / linked > max_delete_share
    ):
        raise SafetyStop(
            f"connection {conn_id!r}: this run would delete {gone} of {linked} synced appointments "
            f"(more than {max_delete_share:.0%}); nothing was changed. If the calendar really was "
            "emptied, trigger the DAG with the parameter allow_mass_delete=true."
        )
    rekeyed = execute_rowcount(conn, "merge_rekey", params)
    update = execute(conn, "merge_update", params)[0]
    execute_rowcount(conn, "merge_links", params)
    inserted = execute_rowcount(conn, "merge_insert", params)
    deleted = execute_rowcount(conn, "merge_delete", params)
    execute(
        conn,
        "save_sync_state",
        {
            "conn_id": conn_id,
            "ews_sync_state": staging_run["ews_sync_state"],
            "window_start": staging_run["window_start"],
            "window_end": staging_run["window_end"],
            "mode": staging_run["mode"],
        },
    )
    return {
        "created": inserted,
        "updated": int(update["updated"]),
        "deleted": deleted,
        "conflicts": int(update["conflicts"]),
        "rekeyed": rekeyed,
    }
