"""Everything that talks to PostgreSQL: migrations, staging, the merge, links and the run log."""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import psycopg2
import psycopg2.extras

from ewssync.errors import RunInProgress, SafetyStop, StoreError
from ewssync.transform import NORMALIZED_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

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
    """The named statements of include/sql/*.sql (queries.sql, twoway.sql...), loaded once."""
    named: dict[str, str] = {}
    for path in sorted(sql_dir().glob("*.sql")):
        parts = _NAME_LINE.split(path.read_text(encoding="utf-8"))
        # parts = [preamble, name1, body1, name2, body2, ...]
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in named:
                raise StoreError(
                    f"statement {name!r} is defined twice in include/sql ({path.name})"
                )
            named[name] = body.strip()
    return named


def query(name: str) -> str:
    try:
        return queries()[name]
    except KeyError:
        raise StoreError(f"no statement named {name!r} in include/sql/queries.sql") from None


# --- connections -------------------------------------------------------------------------------


# Deployment-wide limits on the pipeline's own database sessions (not connection settings): a
# lock held by the app, or a statement gone wrong, fails the task clearly and it retries later,
# instead of waiting forever.
LOCK_TIMEOUT_SECONDS = float(os.environ.get("EWSSYNC_DB_LOCK_TIMEOUT_SECONDS", "60"))
STATEMENT_TIMEOUT_SECONDS = float(os.environ.get("EWSSYNC_DB_STATEMENT_TIMEOUT_SECONDS", "1800"))


@contextlib.contextmanager
def connect(
    dsn: str,
    *,
    lock_timeout: float | None = None,
    statement_timeout: float | None = None,
) -> Iterator[psycopg2.extensions.connection]:
    """A psycopg2 connection that commits on success and rolls back on error.

    Every session has a ``lock_timeout`` and a ``statement_timeout`` (seconds; defaults from
    $EWSSYNC_DB_LOCK_TIMEOUT_SECONDS and $EWSSYNC_DB_STATEMENT_TIMEOUT_SECONDS); hitting one,
    or losing the server mid-transaction, raises StoreError with the cause, not psycopg2's
    "connection already closed" from the rollback that follows.
    """
    lock_ms = int(1000 * (LOCK_TIMEOUT_SECONDS if lock_timeout is None else lock_timeout))
    statement_ms = int(
        1000 * (STATEMENT_TIMEOUT_SECONDS if statement_timeout is None else statement_timeout)
    )
    try:
        conn = psycopg2.connect(
            dsn,
            connect_timeout=10,
            application_name="ewssync",
            options=f"-c lock_timeout={lock_ms} -c statement_timeout={statement_ms}",
        )
    except psycopg2.OperationalError as exc:
        raise StoreError(
            f"cannot connect to the calendar database ({_safe_dsn(dsn)}): {exc}"
        ) from exc
    try:
        yield conn
        conn.commit()
    except BaseException as exc:
        if not conn.closed:
            with contextlib.suppress(psycopg2.Error):
                conn.rollback()
        explained = _explain_db_error(exc, dsn, lock_ms, statement_ms)
        if explained is not None:
            raise explained from exc
        raise
    finally:
        if not conn.closed:
            conn.close()


def _explain_db_error(
    exc: BaseException, dsn: str, lock_ms: int, statement_ms: int
) -> StoreError | None:
    """A StoreError that says what happened and what to do, for the database faults a task
    should fail on clearly (and retry later); None for anything else."""
    if isinstance(exc, psycopg2.errors.LockNotAvailable):
        return StoreError(
            f"the calendar database ({_safe_dsn(dsn)}): waited {lock_ms / 1000:g} s for a lock "
            "another session holds (lock_timeout; an open transaction of the app?); nothing was "
            f"changed, the task retries later. Database says: {str(exc).strip()}"
        )
    if isinstance(exc, psycopg2.errors.QueryCanceled):
        return StoreError(
            f"the calendar database ({_safe_dsn(dsn)}): a statement ran longer than "
            f"{statement_ms / 1000:g} s (statement_timeout) or was cancelled; nothing was "
            f"changed, the task retries later. Database says: {str(exc).strip()}"
        )
    if isinstance(exc, psycopg2.errors.TransactionRollbackError):
        return StoreError(
            f"the calendar database ({_safe_dsn(dsn)}): the transaction collided with another "
            "session (deadlock or serialization failure) and was rolled back; nothing was "
            f"changed, the task retries later. Database says: {str(exc).strip()}"
        )
    if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
        return StoreError(
            f"lost the calendar database ({_safe_dsn(dsn)}) mid-transaction (server restarted "
            "or the session was terminated); nothing was committed, the task retries later. "
            f"Database says: {str(exc).strip() or type(exc).__name__}"
        )
    return None


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
    with conn.cursor() as cur:
        cur.execute(query(name), params or {})
        if not cur.description:
            return []
        # plain tuples zipped with the names: a third of RealDictCursor's time on 10,000 rows
        names = [column.name for column in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def execute_rowcount(conn, name: str, params: dict[str, Any]) -> int:
    with conn.cursor() as cur:
        cur.execute(query(name), params)
        return cur.rowcount


# --- migrations --------------------------------------------------------------------------------


def migrate(dsn: str, *, lock_timeout: float | None = None) -> list[str]:
    """Apply pending migrations from include/sql/migrations (yoyo: transactional, recorded, locked).

    The migrating session has the same ``lock_timeout`` as every other (seconds; default from
    $EWSSYNC_DB_LOCK_TIMEOUT_SECONDS): a migration's DDL waiting behind an app transaction
    would otherwise wait forever, and queue every later query on that table behind it. On the
    timeout nothing is applied (each migration is one transaction) and StoreError says why.

    :return: ids of the migrations applied now (empty when the schema was current).
    """
    from yoyo import get_backend, read_migrations

    with connect(dsn, lock_timeout=lock_timeout) as conn, conn.cursor() as cur:
        # yoyo keeps its bookkeeping in the schema it is pointed at; it must exist first.
        cur.execute("CREATE SCHEMA IF NOT EXISTS ewssync")
    lock_ms = int(1000 * (LOCK_TIMEOUT_SECONDS if lock_timeout is None else lock_timeout))
    backend = get_backend(_yoyo_uri(dsn, options=f"-c lock_timeout={lock_ms}"))
    try:
        migrations = read_migrations(str(sql_dir() / "migrations"))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return [m.id for m in pending]
    except psycopg2.errors.LockNotAvailable as exc:
        raise StoreError(
            f"migrating the calendar database ({_safe_dsn(dsn)}): waited {lock_ms / 1000:g} s "
            "for a lock another session holds (lock_timeout; an open transaction of the app?); "
            "the migration was rolled back, retry when that transaction has ended. "
            f"Database says: {str(exc).strip()}"
        ) from exc
    finally:
        backend.connection.close()


def _yoyo_uri(dsn: str, **args: str) -> str:
    if "://" not in dsn:
        raise StoreError("the calendar database must be given as a postgresql:// URI")
    parts = urlsplit(dsn)
    scheme = "postgresql"  # yoyo's psycopg2 backend
    extra = urlencode({"schema": "ewssync", **args})  # yoyo hands other args to psycopg2
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
    "stamp",
)  # fmt: skip

# The staged appointment columns are exactly what transform.normalize produces.
APPOINTMENT_COLUMNS = NORMALIZED_COLUMNS


def clear_staging(conn, conn_id: str, run_key: str) -> None:
    """Remove one run's staging (never another run's)."""
    with conn.cursor() as cur:
        cur.execute(query("clear_staging"), {"conn_id": conn_id, "run_key": run_key})


def clear_other_staging(conn, conn_id: str, run_key: str) -> None:
    """Remove what other runs of the connection staged; only the lease holder may do this."""
    with conn.cursor() as cur:
        cur.execute(query("clear_other_staging"), {"conn_id": conn_id, "run_key": run_key})


# --- one run per connection ----------------------------------------------------------------------


def lock_connection(conn, conn_id: str) -> None:
    """Serialise with every other step of this connection until the transaction ends."""
    execute(conn, "lock_connection", {"conn_id": conn_id})


def take_lease(conn, conn_id: str, run_key: str, *, stale_after_seconds: float) -> None:
    """Make this run the connection's only active run, in the caller's transaction.

    :raises RunInProgress: another run holds the connection (it is running and not stale).
    """
    try:
        lock_connection(conn, conn_id)
    except psycopg2.errors.LockNotAvailable:
        raise RunInProgress(
            f"connection {conn_id!r}: another step of this connection has been working for "
            f"longer than the lock_timeout; run {run_key!r} waits (this task retries later)"
        ) from None
    taken = execute(
        conn,
        "take_lease",
        {"conn_id": conn_id, "run_key": run_key, "stale_after_seconds": stale_after_seconds},
    )
    if not taken:
        holder = execute(conn, "lease_holder", {"conn_id": conn_id})
        other = holder[0]["run_key"] if holder else "?"
        raise RunInProgress(
            f"connection {conn_id!r}: run {other!r} is still syncing this connection; run "
            f"{run_key!r} waits for it (this task retries later). If that run was killed, its "
            f"claim expires {stale_after_seconds / 60:g} minutes after its last step."
        )
    execute(conn, "reopen_run", {"conn_id": conn_id, "run_key": run_key})


def release_lease(conn, conn_id: str, run_key: str) -> None:
    execute(conn, "release_lease", {"conn_id": conn_id, "run_key": run_key})


def mark_abandoned_runs(conn, conn_id: str, run_key: str) -> list[str]:
    """Close runs of the connection left 'running' by a killed process; return their keys."""
    rows = execute(conn, "mark_abandoned_runs", {"conn_id": conn_id, "run_key": run_key})
    return [row["run_key"] for row in rows]


# --- mailbox claims ------------------------------------------------------------------------------


def claim_mailbox(conn, conn_id: str, server: str, mailbox: str, user_id: int) -> str:
    """Claim (server, mailbox, app user) for the connection unless held; return the holder."""
    key = {"conn_id": conn_id, "server": server, "mailbox": mailbox, "user_id": user_id}
    for _ in range(3):
        rows = execute(conn, "claim_mailbox", key)
        if rows:
            return rows[0]["conn_id"]
        # a concurrent check committed its claim after this statement's snapshot: ask again
    raise StoreError(f"connection {conn_id!r}: cannot read or take the claim on {mailbox!r}")


def mailbox_holder(conn, server: str, mailbox: str, user_id: int) -> str | None:
    """The connection holding (server, mailbox, app user), or None."""
    key = {"server": server, "mailbox": mailbox, "user_id": user_id}
    rows = execute(conn, "mailbox_holder", key)
    return rows[0]["conn_id"] if rows else None


def take_over_mailbox(
    conn, conn_id: str, holder: str, server: str, mailbox: str, user_id: int
) -> bool:
    """Move the claim from ``holder`` (gone) to the connection; False if it moved meanwhile."""
    key = {"conn_id": conn_id, "holder": holder, "server": server, "mailbox": mailbox}
    return bool(execute(conn, "take_over_mailbox", {**key, "user_id": user_id}))


def release_other_claims(conn, conn_id: str, server: str, mailbox: str, user_id: int) -> None:
    """Drop the connection's claims on anything but (server, mailbox, app user)."""
    key = {"conn_id": conn_id, "server": server, "mailbox": mailbox, "user_id": user_id}
    execute(conn, "release_other_claims", key)


# --- app user ----------------------------------------------------------------------------------


def linked_owners(conn, conn_id: str) -> list[dict[str, Any]]:
    """The app users whose appointments the connection's links point to, with counts."""
    return execute(conn, "linked_owners", {"conn_id": conn_id})


def move_to_user(conn, conn_id: str, user_id: int) -> int:
    """Give the connection's synced appointments to ``user_id``; return how many moved."""
    return execute_rowcount(conn, "move_to_user", {"conn_id": conn_id, "user_id": user_id})


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


# COPY's NULL marker: every string is written quoted (a quoted value is never NULL in CSV), so
# a location or body that is exactly "\\N" or "" stays what it is; the marker is the one
# unquoted non-number field we write.
_NULL = float("nan")  # csv writes it unquoted as: nan
_NULL_TEXT = "nan"


def _copy(conn, table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """COPY rows into a table through one CSV stream (strings quoted, NULL an unquoted nan)."""
    import csv

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    count = 0
    for row in rows:
        writer.writerow([_csv_value(v) for v in row])
        count += 1
    buffer.seek(0)
    with conn.cursor() as cur:
        cur.copy_expert(
            f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '{_NULL_TEXT}')",
            buffer,
        )
        if count >= ANALYZE_AFTER_ROWS:
            # Fresh statistics: without them the merge plans nested loops over 100k-row CTEs.
            # A sample of 3,000 rows (target 10; the default samples 30,000) gives the merge
            # the same plans in a quarter of the time (10,000 rows: ~200 -> ~50 ms).
            cur.execute("SET LOCAL default_statistics_target = 10")  # until the commit
            cur.execute(f"ANALYZE {table}")
    return count


def _csv_value(value: Any) -> Any:
    kind = type(value)
    if kind is str:  # the common case first: this runs once per field of every staged row
        return value
    if value is None:
        return _NULL
    if kind is bool:
        return "t" if value else "f"
    if kind is int:
        return value
    if kind is float:
        return _NULL if value != value else value  # NaN is NULL
    # numpy and pandas are imported only by the steps that use them (each costs a task process
    # a third of a second to start): a value can be one of theirs only once they are loaded.
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.generic):  # plain Python values
        return _csv_value(value.item())
    pandas = sys.modules.get("pandas")
    if pandas is not None and (value is pandas.NaT or value is pandas.NA):
        return _NULL
    if isinstance(value, list | tuple):
        # Postgres array literal; every element quoted so commas and braces survive.
        inner = ",".join(
            '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in value
        )
        return "{" + inner + "}"
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, int | float):  # subclasses (e.g. pandas' or decimal-like numbers)
        return _csv_value(float(value)) if isinstance(value, float) else int(value)
    return str(value)


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
                r.get("stamp"),
            )  # fmt: skip

    return _copy(conn, "ewssync.staging_ews_items", columns, rows())


def stage_seen(conn, conn_id: str, run_key: str, item_ids: Iterable[str], state: str) -> int:
    rows = ((run_key, conn_id, item_id, state) for item_id in item_ids)
    return _copy(conn, "ewssync.staging_seen", ("run_key", "conn_id", "ews_item_id", "state"), rows)


def staged_ews_records(conn, conn_id: str, run_key: str) -> list[dict[str, Any]]:
    """The run's raw Exchange items as dicts (transform.RAW_COLUMNS and more), by item id."""
    return execute(conn, "staged_ews_items", {"conn_id": conn_id, "run_key": run_key})


def staged_ews_items(conn, conn_id: str, run_key: str) -> pd.DataFrame:
    """staged_ews_records as a DataFrame (instants as UTC timestamps)."""
    import pandas as pd

    frame = pd.DataFrame(staged_ews_records(conn, conn_id, run_key))
    if frame.empty:
        return frame
    for column in ("start", "end", "recurrence_id", "last_modified"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def stage_appointments(conn, conn_id: str, run_key: str, frame: pd.DataFrame) -> int:
    """Replace this run's normalised appointments in staging with the frame's rows."""
    if frame.empty:
        return stage_appointment_rows(conn, conn_id, run_key, [])
    ordered = frame.loc[:, list(APPOINTMENT_COLUMNS)].astype(object)
    ordered = ordered.where(ordered.notna(), None)
    return stage_appointment_rows(conn, conn_id, run_key, ordered.to_dict("records"))


def stage_appointment_rows(conn, conn_id: str, run_key: str, rows: Sequence[dict[str, Any]]) -> int:
    """Replace this run's normalised appointments in staging with these (transform's records)."""
    execute_rowcount(conn, "clear_staged_appointments", {"conn_id": conn_id, "run_key": run_key})
    if not rows:
        return 0
    values = ((run_key, conn_id, *(row[c] for c in APPOINTMENT_COLUMNS)) for row in rows)
    return _copy(
        conn, "ewssync.staging_appointments", ("run_key", "conn_id", *APPOINTMENT_COLUMNS), values
    )


# --- merge -------------------------------------------------------------------------------------


# When a run stops instead of deleting (see merge): more than half of the connection's synced
# appointments, and at least MIN_MASS_DELETE of them; or all of them once there were two or more.
MAX_DELETE_SHARE = 0.5
MIN_MASS_DELETE = 3


def would_mass_delete(
    gone: int, linked: int, *, max_share: float = MAX_DELETE_SHARE, minimum: int = MIN_MASS_DELETE
) -> bool:
    """The mass-deletion rule, small calendars included: a calendar of 10 whose items all vanish
    looks exactly like a wrong mailbox or a calendar that was emptied by mistake."""
    if not linked or not gone:
        return False
    if gone >= linked and linked >= 2:
        return True
    return gone >= minimum and gone / linked > max_share


def quarantine_invalid(conn, conn_id: str, run_key: str) -> list[dict[str, Any]]:
    """Take staged rows the appointments table would refuse out of this run's merge."""
    return execute(conn, "quarantine_invalid", {"conn_id": conn_id, "run_key": run_key})


def merge(
    conn,
    conn_id: str,
    run_key: str,
    *,
    user_id: int,
    max_delete_share: float = MAX_DELETE_SHARE,
    min_delete_guard: int = MIN_MASS_DELETE,
    allow_mass_delete: bool = False,
) -> dict[str, Any]:
    """Merge the run's staged window into calendar.appointments and the links, in the caller's
    transaction; save the run's EWS sync state with it so both move together.

    Stops with SafetyStop, before changing anything (the caller's transaction rolls back), when
    the run would delete an unusual share of the connection's linked appointments (see
    ``would_mass_delete``): a vanished calendar or a wrong mailbox looks like that.
    Staged rows the table would refuse are left out and returned under ``quarantined``.
    """
    params = {"conn_id": conn_id, "run_key": run_key, "user_id": user_id}
    staging_run = get_staging_run(conn, conn_id, run_key)
    # Re-keying first: an item whose id changed is not a deletion.
    rekeyed = execute_rowcount(conn, "merge_rekey", params)
    gone = execute(conn, "count_gone", params)[0]["count"]
    linked = execute(conn, "count_links", params)[0]["count"]
    if not allow_mass_delete and would_mass_delete(
        gone, linked, max_share=max_delete_share, minimum=min_delete_guard
    ):
        raise SafetyStop(
            f"connection {conn_id!r}: this run would delete {gone} of {linked} synced appointments "
            f"(more than {max_delete_share:.0%}, or all of them); nothing was changed. Exchange "
            "no longer shows those items: first check that the connection still points at the "
            "same server and mailbox (another mailbox, or a server whose item ids changed, looks "
            "exactly like this; fix the connection and trigger again). Only if the appointments "
            "really were deleted in Exchange, trigger the DAG with the parameter "
            "allow_mass_delete=true."
        )
    quarantined = quarantine_invalid(conn, conn_id, run_key)
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
        "quarantined": [
            {
                "item_id": row["ews_item_id"],
                "problem": "the calendar table refuses its times or dates",
                "action": "skipped",
            }
            for row in quarantined
        ],
    }


# --- two-way: reconcile in load, push (statements in include/sql/twoway.sql) -------------------


def adopt_stamped(conn, conn_id: str, run_key: str, user_id: int) -> int:
    """Link staged items stamped with one of the user's unlinked appointments (a create whose
    answer was lost); return how many were adopted."""
    rows = execute(
        conn, "adopt_stamped", {"conn_id": conn_id, "run_key": run_key, "user_id": user_id}
    )
    return int(rows[0]["adopted"])


def pull_pairs(conn, conn_id: str, run_key: str) -> list[dict[str, Any]]:
    """Linked items the run read changed or gone whose app row also changed (conflict candidates)."""
    return execute(conn, "pull_pairs", {"conn_id": conn_id, "run_key": run_key})


def keep_app_side(
    conn, conn_id: str, run_key: str, changed: Sequence[str], gone: Sequence[str]
) -> None:
    """Conflicts the app won: the merge skips these items (see twoway.sql)."""
    params = {"conn_id": conn_id, "run_key": run_key}
    if changed:
        execute_rowcount(conn, "keep_app_side", {**params, "item_ids": list(changed)})
    if gone:
        execute_rowcount(conn, "recreate_app_side", {**params, "item_ids": list(gone)})


def record_synced(conn, conn_id: str) -> int:
    return execute_rowcount(conn, "record_synced", {"conn_id": conn_id})


def add_conflicts(conn, conn_id: str, run_key: str, conflicts: Sequence[dict]) -> None:
    execute(
        conn,
        "add_conflicts",
        {"conn_id": conn_id, "run_key": run_key, "conflicts": json.dumps(list(conflicts))},
    )


def set_not_pushed(conn, conn_id: str, run_key: str, not_pushed: Sequence[dict]) -> None:
    execute(
        conn,
        "set_not_pushed",
        {"conn_id": conn_id, "run_key": run_key, "not_pushed": json.dumps(list(not_pushed))},
    )


def push_pairs(
    conn, conn_id: str, user_id: int, window_start, window_end, since_version: int = 0
) -> list[dict[str, Any]]:
    """The user's app rows push has to look at (see twoway.sql), series masters first."""
    return execute(
        conn,
        "push_pairs",
        {
            "conn_id": conn_id,
            "user_id": user_id,
            "window_start": window_start,
            "window_end": window_end,
            "since_version": since_version,
        },
    )


def series_links(conn, conn_id: str, uids: Iterable[str]) -> dict[str, dict[str, Any]]:
    rows = execute(conn, "series_links", {"conn_id": conn_id, "uids": list(uids)})
    return {row["uid"]: row for row in rows}


def occurrence_links(conn, conn_id: str, uids: Iterable[str]) -> dict[tuple, dict[str, Any]]:
    rows = execute(conn, "occurrence_links", {"conn_id": conn_id, "uids": list(uids)})
    return {(row["uid"], row["recurrence_id"]): row for row in rows}


def add_push_intents(conn, conn_id: str, appointment_ids: Sequence[int]) -> None:
    if appointment_ids:
        execute(
            conn,
            "add_push_intents",
            {"conn_id": conn_id, "appointment_ids": list(appointment_ids)},
        )


def push_intents(conn, conn_id: str) -> list[int]:
    return [row["appointment_id"] for row in execute(conn, "push_intents", {"conn_id": conn_id})]


def drop_push_intents(conn, conn_id: str, appointment_ids: Sequence[int]) -> None:
    if appointment_ids:
        execute(
            conn,
            "drop_push_intents",
            {"conn_id": conn_id, "appointment_ids": list(appointment_ids)},
        )


def save_pushed_links(conn, conn_id: str, links: Sequence[dict[str, Any]]) -> None:
    """Record what both sides hold after push wrote items (or adopted them), in one statement."""
    if links:
        execute(
            conn,
            "pushed_links",
            {"conn_id": conn_id, "links": json.dumps(list(links), default=str)},
        )


def acknowledge_link(
    conn, conn_id: str, appointment_id: int, version: int, synced: dict[str, Any]
) -> None:
    execute(
        conn,
        "acknowledge_link",
        {
            "conn_id": conn_id,
            "appointment_id": appointment_id,
            "version": version,
            "synced": json.dumps(synced),
        },
    )


def drop_link(conn, conn_id: str, appointment_id: int) -> None:
    execute(conn, "drop_link", {"conn_id": conn_id, "appointment_id": appointment_id})


def add_pushed_deletions(conn, conn_id: str, item_ids: Sequence[str]) -> None:
    if item_ids:
        execute(conn, "add_pushed_deletions", {"conn_id": conn_id, "item_ids": list(item_ids)})
    execute(conn, "prune_pushed_deletions", {"conn_id": conn_id})


def pushed_deletions(conn, conn_id: str, item_ids: Iterable[str]) -> set[str]:
    rows = execute(conn, "pushed_deletions", {"conn_id": conn_id, "item_ids": list(item_ids)})
    return {row["ews_item_id"] for row in rows}


def links_change_keys(conn, conn_id: str, item_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    rows = execute(conn, "links_change_keys", {"conn_id": conn_id, "item_ids": list(item_ids)})
    return {row["ews_item_id"]: row for row in rows}


def linked_items_count(conn, conn_id: str) -> int:
    return int(execute(conn, "linked_items_count", {"conn_id": conn_id})[0]["count"])


def normalize_pushed(conn, conn_id: str, rows: Sequence[dict[str, Any]]) -> int:
    """Give pushed rows the zone/reminder/instants Exchange reports (see twoway.sql)."""
    if not rows:
        return 0
    params = {
        "conn_id": conn_id,
        **{
            key: [row[field] for row in rows]
            for key, field in (
                ("ids", "id"),
                ("versions", "version"),
                ("zones", "time_zone"),
                ("reminders", "reminder_minutes"),
                ("starts", "starts_at"),
                ("ends", "ends_at"),
                ("start_dates", "start_date"),
                ("end_dates", "end_date"),
            )
        },
    }
    return execute_rowcount(conn, "normalize_pushed", params)


def advance_sync_state(conn, conn_id: str, old_state: str, new_state: str) -> bool:
    """Move the saved SyncFolderItems state from old to new (False if it was not old)."""
    return (
        execute_rowcount(
            conn,
            "advance_sync_state",
            {"conn_id": conn_id, "old_state": old_state, "new_state": new_state},
        )
        == 1
    )
