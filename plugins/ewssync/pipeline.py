"""The steps of one sync run (check, extract, transform, load, report), free of Airflow wiring."""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

from ewssync import claims, reconcile, store, transform
from ewssync import extract as extract_step
from ewssync.errors import (
    ConnectionTestError,
    ExchangeError,
    SafetyStop,
    SettingsError,
    StoreError,
)
from ewssync.settings import SyncSettings

log = logging.getLogger(__name__)

DEFAULT_DB_CONN_ID = "ewssync_db"


def db_conn_id() -> str:
    """The Airflow connection of the calendar database ($EWSSYNC_DB_CONN_ID, default ewssync_db)."""
    return os.environ.get("EWSSYNC_DB_CONN_ID", DEFAULT_DB_CONN_ID)


def calendar_dsn() -> str:
    """A postgresql:// DSN for the calendar database, from its Airflow connection."""
    from urllib.parse import quote

    from airflow.sdk import Connection

    conn = Connection.get(db_conn_id())
    user = quote(conn.login or "", safe="")
    password = f":{quote(conn.password, safe='')}" if conn.password else ""
    auth = f"{user}{password}@" if user else ""
    port = f":{conn.port}" if conn.port else ""
    database = conn.schema or "postgres"
    return f"postgresql://{auth}{conn.host or '127.0.0.1'}{port}/{database}"


def load_settings(conn_id: str) -> SyncSettings:
    from airflow.sdk import Connection

    return SyncSettings.from_connection(Connection.get(conn_id))


def open_calendar(settings: SyncSettings):
    from ewssync.exchange import open_calendar as open_ews

    return open_ews(settings)


def window_anchor(context: dict[str, Any]) -> datetime:
    """The instant a run's window is computed from: when the run was due, not when it started,
    so a retried or late run reads the same window."""
    dag_run = context.get("dag_run")
    for candidate in (
        getattr(dag_run, "run_after", None),
        context.get("data_interval_end"),
        context.get("logical_date"),
    ):
        if candidate is not None:
            return candidate
    return datetime.now(UTC)


def _timed(durations: dict[str, float], name: str, started: float) -> None:
    durations[name] = round(time.perf_counter() - started, 3)


# --- check ---------------------------------------------------------------------------------------


def check(
    settings: SyncSettings,
    dsn: str,
    calendar,
    *,
    move_app_user: bool = False,
    lookup: claims.ConnectionLookup = claims.airflow_connection,
) -> dict[str, Any]:
    """Fail fast: schema current, app user known and matching the mailbox (and the one the
    connection synced for so far, unless told to move), connection test OK, and no other
    connection syncing the same mailbox for the same app user (claims.py).

    :param lookup: finds another connection by id (None when it does not exist): whether the
        holder of a claim on this mailbox still exists and still names it.
    """
    store.migrate(dsn)
    with store.connect(dsn) as conn:
        user = store.find_user(conn, settings.app_user)
        settings.validate_app_user(user)
        if not move_app_user:
            check_app_user_unchanged(settings, user, store.linked_owners(conn, settings.conn_id))
    try:
        # One request when all is well; the full two-part test only to explain a failure.
        calendar.probe()
    except ExchangeError:
        report = calendar.test(write=False)
        raise ConnectionTestError(settings.conn_id, report) from None
    # Claimed only once the mailbox answered: a connection that cannot sign in (a wrong
    # password) never holds a mailbox another connection reaches.
    with store.connect(dsn) as conn:
        claims.claim_mailbox(conn, settings, user["id"], lookup)
    report = f"connection {settings.conn_id}: {settings.mailbox} reachable, calendar readable"
    log.info(report)
    return {"user_id": user["id"], "report": report}


def check_app_user_unchanged(
    settings: SyncSettings, user: dict[str, Any], owners: list[dict[str, Any]]
) -> None:
    """Refuse to split a calendar: the connection's synced appointments belong to another app
    user than ``app_user`` names now (app_user was changed)."""
    others = [row for row in owners if row["user_id"] != user["id"]]
    if not others:
        return
    held = ", ".join(
        f"{row['appointments']} of app user {row['login'] or row['user_id']!r}" for row in others
    )
    raise SettingsError(
        settings.conn_id,
        "app_user",
        f"is {settings.app_user!r}, but this connection's synced appointments belong to another "
        f"app user ({held}); syncing now would split the calendar between them. Set app_user "
        "back, or trigger the DAG once with the parameter move_app_user=true to move those "
        f"appointments to {settings.app_user!r}",
    )


# --- extract -------------------------------------------------------------------------------------


def extract(
    settings: SyncSettings,
    dsn: str,
    calendar,
    run_key: str,
    now: datetime,
    *,
    full_resync: bool = False,
) -> dict[str, Any]:
    """Claim the connection for this run, read Exchange and stage the run's raw items."""
    started = time.perf_counter()
    window = settings.window(now)
    with store.connect(dsn) as conn:
        claim(settings, conn, run_key)
        abandoned = store.mark_abandoned_runs(conn, settings.conn_id, run_key)
        if abandoned:
            log.warning("connection %s: runs %s were abandoned", settings.conn_id, abandoned)
        store.clear_other_staging(conn, settings.conn_id, run_key)
        store.begin_run(conn, settings.conn_id, run_key)
    with store.connect(dsn) as conn:
        claim(settings, conn, run_key)
        mode, counts = extract_step.extract(
            calendar,
            conn,
            settings.conn_id,
            run_key,
            window,
            full_resync=full_resync,
            sync_private=settings.sync_private,
            skip_declined=settings.skip_declined,
        )
        dropped = getattr(calendar, "dropped_nul_characters", 0)
        if dropped:
            # XML cannot carry U+0000: Exchange's text arrived without them. Said, not silent.
            log.warning("connection %s: %s NUL characters in Exchange's items were dropped",
                        settings.conn_id, dropped)  # fmt: skip
            counts["exchange_nul_characters_dropped"] = dropped
        durations: dict[str, float] = {}
        _timed(durations, "extract", started)
        store.add_to_run(
            conn, settings.conn_id, run_key, counts=counts, durations=durations, mode=mode
        )
    return {"mode": mode, **counts}


def claim(settings: SyncSettings, conn, run_key: str) -> None:
    """This run holds the connection (its staging, sync state and links) until it reports;
    another run of it waits (RunInProgress: the task retries). Works however runs are started:
    scheduled, triggered, or `airflow dags test`, where max_active_runs does not apply."""
    store.take_lease(
        conn,
        settings.conn_id,
        run_key,
        stale_after_seconds=settings.run_timeout.total_seconds(),
    )


# --- transform -----------------------------------------------------------------------------------


def transform_staged(settings: SyncSettings, dsn: str, run_key: str) -> dict[str, Any]:
    """Normalise the run's raw Exchange items into staged appointments (no Exchange I/O).

    Items the calendar table would refuse are repaired as Outlook shows them and named in the
    run's report (``quarantined_items``). Records, not DataFrames: this task process then
    never loads pandas (a third of a second), and 10,000 items take a fraction of the time.
    """
    started = time.perf_counter()
    with store.connect(dsn) as conn:
        claim(settings, conn, run_key)
        raw = store.staged_ews_records(conn, settings.conn_id, run_key)
        repaired: list[dict[str, str]] = []
        normalized: list[dict[str, Any]] = []
        if raw:
            normalized = transform.normalize_records(
                raw,
                keep_html=settings.keep_html,
                # extract already left private items out when sync_private is off
                sync_private=settings.sync_private,
                fallback_zone=settings.exchange_timezone,
            )
            normalized, repaired = transform.repair_records(normalized)
        staged = store.stage_appointment_rows(conn, settings.conn_id, run_key, normalized)
        summary = transform.summarize_records(normalized) if staged else {}
        counts: dict[str, Any] = {"transformed": staged}
        if repaired:
            log.warning("connection %s: repaired %s items: %s", settings.conn_id, len(repaired),
                        repaired)  # fmt: skip
            counts |= {"quarantined": len(repaired), "quarantined_items": repaired}
        durations: dict[str, float] = {}
        _timed(durations, "transform", started)
        store.add_to_run(conn, settings.conn_id, run_key, counts=counts, durations=durations)
    return {**counts, **{f"staged_{k}": v for k, v in summary.items()}}


# --- load ----------------------------------------------------------------------------------------


def load(
    settings: SyncSettings,
    dsn: str,
    run_key: str,
    *,
    allow_mass_delete: bool = False,
    move_app_user: bool = False,
) -> dict[str, Any]:
    """Reconcile and merge the staged window into calendar.appointments in one transaction.

    Before the merge: items carrying the stamp of an unlinked app appointment are adopted (a
    create whose answer was lost), and items the app also changed since the last sync are
    decided by the conflict policy; those the app wins are left out of the merge (push writes
    them). Every conflict is listed in the run's row.
    """
    started = time.perf_counter()
    with store.connect(dsn) as conn:
        claim(settings, conn, run_key)
        user = store.find_user(conn, settings.app_user)
        settings.validate_app_user(user)
        moved = 0
        if move_app_user:
            moved = store.move_to_user(conn, settings.conn_id, user["id"])
        else:
            check_app_user_unchanged(settings, user, store.linked_owners(conn, settings.conn_id))
        adopted = store.adopt_stamped(conn, settings.conn_id, run_key, user["id"])
        conflicts = reconcile_pulled(settings, conn, run_key)
        counts = store.merge(
            conn,
            settings.conn_id,
            run_key,
            user_id=user["id"],
            allow_mass_delete=allow_mass_delete,
        )
        store.record_synced(conn, settings.conn_id)
        if conflicts:
            store.add_conflicts(conn, settings.conn_id, run_key, conflicts)
    quarantined = counts.pop("quarantined")
    if moved:
        counts["moved_to_app_user"] = moved
    counts = {**counts, "adopted": adopted, "conflicts": len(conflicts)}
    with store.connect(dsn) as conn:
        durations: dict[str, float] = {}
        _timed(durations, "load", started)
        extra: dict[str, Any] = {}
        if quarantined:
            log.warning("connection %s: left out %s items the calendar table refuses: %s",
                        settings.conn_id, len(quarantined), quarantined)  # fmt: skip
            extra = {
                "quarantined_at_load": len(quarantined),
                "quarantined_at_load_items": quarantined,
            }
        store.add_to_run(
            conn,
            settings.conn_id,
            run_key,
            counts={**{f"pulled_{k}": v for k, v in counts.items()}, **extra},
            durations=durations,
        )
    return {**counts, **({"quarantined": len(quarantined)} if quarantined else {})}


def reconcile_pulled(settings: SyncSettings, conn, run_key: str) -> list[dict[str, Any]]:
    """Decide the items Exchange changed whose app row changed too (the conflicts); keep the
    app's side of those it wins out of the merge. Return the conflicts for the run report."""
    rows = store.pull_pairs(conn, settings.conn_id, run_key)
    conflicts: list[dict[str, Any]] = []
    keep_changed: list[str] = []
    keep_gone: list[str] = []
    for row in rows:
        if row["gone"]:
            exchange = reconcile.ExchangeSide(row["ews_item_id"], reconcile.ExchangeState.GONE)
        else:
            exchange = reconcile.ExchangeSide(
                row["ews_item_id"],
                reconcile.ExchangeState.CHANGED,
                row["staged_fingerprint"],
                row["last_modified"],
                row["staged_content"],
            )
        pair = reconcile.Pair(
            reconcile.AppSide(
                row["appointment_id"],
                row["version"],
                deleted=row["deleted"],
                updated_at=row["updated_at"],
                fields=row["content"],
            ),
            exchange,
            reconcile.LinkState(
                row["ews_item_id"], row["local_version"], row["ews_fingerprint"], row["synced"]
            ),
        )
        decision = reconcile.decide(
            pair, settings.conflict_policy, sync_private=settings.sync_private
        )
        if decision.conflict is None:
            continue
        conflict = decision.conflict
        conflicts.append(
            {
                "appointment_id": row["appointment_id"],
                "ews_item_id": row["ews_item_id"],
                "title": (row["content"] or {}).get("title"),
                "kind": conflict.kind,
                "app_fields": list(conflict.app_fields),
                "exchange_fields": list(conflict.exchange_fields),
                "winner": conflict.winner,
                "policy": conflict.policy,
                "found": "load",
            }
        )
        if conflict.winner == "app":
            (keep_gone if row["gone"] else keep_changed).append(row["ews_item_id"])
    store.keep_app_side(conn, settings.conn_id, run_key, keep_changed, keep_gone)
    return conflicts


# --- push ----------------------------------------------------------------------------------------


def push(
    settings: SyncSettings,
    dsn: str,
    calendar,
    run_key: str,
    now: datetime,
    *,
    allow_mass_delete: bool = False,
    crash=None,
) -> dict[str, Any]:
    """Write the app's changes to Exchange (push.Pusher); idempotent: a re-run recomputes what
    is still to do from the links."""
    # Imported here: push needs pandas and the recurrence rules, which the other steps' task
    # processes (and the DAG file's parse) need not load.
    from ewssync import push as push_step

    started = time.perf_counter()
    with store.connect(dsn) as conn:
        claim(settings, conn, run_key)
        user = store.find_user(conn, settings.app_user)
    settings.validate_app_user(user)
    report = push_step.Pusher(
        settings,
        dsn,
        calendar,
        user["id"],
        settings.window(now),
        allow_mass_delete=allow_mass_delete,
        crash=crash,
    ).run()
    counts = report.counts()
    with store.connect(dsn) as conn:
        durations: dict[str, float] = {}
        _timed(durations, "push", started)
        store.add_to_run(conn, settings.conn_id, run_key, counts=counts, durations=durations)
        if report.conflicts:
            store.add_conflicts(conn, settings.conn_id, run_key, report.conflicts)
        store.set_not_pushed(conn, settings.conn_id, run_key, report.not_pushed + report.failed)
    if report.not_pushed or report.failed:
        log.warning(
            "connection %s: not pushed: %s", settings.conn_id,
            "; ".join(f"appointment {n['appointment_id']}: {n.get('reason') or n.get('message')}"
                      for n in [*report.not_pushed, *report.failed]),
        )  # fmt: skip
    return counts


# --- report --------------------------------------------------------------------------------------


def report(settings: SyncSettings, dsn: str, run_key: str) -> dict[str, Any]:
    """Close the run's row in ewssync.sync_runs and drop its staging; return the summary."""
    with store.connect(dsn) as conn:
        claim(settings, conn, run_key)
        row = store.finish_run(conn, settings.conn_id, run_key, "success")
        store.clear_staging(conn, settings.conn_id, run_key)
        store.release_lease(conn, settings.conn_id, run_key)
    if row is None:
        raise StoreError(
            f"connection {settings.conn_id!r}: no ewssync.sync_runs row for run {run_key!r}; "
            "clear the run's 'extract' task to start it again"
        )
    return {
        "conn_id": row["conn_id"],
        "run_key": row["run_key"],
        "status": row["status"],
        "mode": row["mode"],
        "counts": row["counts"],
        "durations": row["durations"],
    }


def record_failure(conn_id: str, run_key: str, error: BaseException | str) -> None:
    """Note a failed task in the run's row; never raises (it runs in a failure callback)."""
    status = "stopped" if isinstance(error, SafetyStop) else "failed"
    try:
        with store.connect(calendar_dsn()) as conn:
            store.record_failure(conn, conn_id, run_key, status, str(error)[:2000])
    except Exception:
        # A callback must not mask the task's own error; the task log has it anyway.
        log.exception("connection %s: could not record the failure of run %s", conn_id, run_key)
