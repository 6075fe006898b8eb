"""Helpers for two-way tests: one connection, full runs of the pipeline steps, app-side edits."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import psycopg2
import psycopg2.extras

from ewssync import pipeline, store
from ewssync.errors import SafetyStop
from ewssync.exchange import open_calendar
from ewssync.push import Crash
from ewssync.settings import SyncSettings

NOW = datetime(2026, 11, 25, 10, tzinfo=UTC)  # a Wednesday
_runs = itertools.count(1)


def settings_for(
    sim, conn_id: str = "ews_alice", login: str = "alice", email: str = "alice@example.com",
    **extra,
) -> SyncSettings:  # fmt: skip
    extra = {
        "app_user": login, "exchange_timezone": "Europe/Berlin", "weeks_back": 2,
        "weeks_ahead": 8, "use_2007_protocol": sim.dialect == "Exchange2007_SP1", **extra,
    }  # fmt: skip
    fields = {
        "conn_id": conn_id, "conn_type": "ews", "host": sim.url, "login": email,
        "password": "secret", "description": "", "port": None, "schema": None, "extra": extra,
    }  # fmt: skip
    return SyncSettings.from_connection(type("Conn", (), fields)())


def add_user(dsn: str, login: str = "alice", email: str = "alice@example.com") -> int:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO calendar.users (login, email) VALUES (%s, %s) RETURNING id", (login, email)
        )
        return cur.fetchone()[0]


def sync(
    settings: SyncSettings,
    dsn: str,
    now: datetime = NOW,
    *,
    crash=None,
    stop_after: str = "",
    check: bool = True,
    calendar=None,
    run_key: str | None = None,
    **params,
) -> dict[str, Any]:
    """One run: check, extract, transform, load, push, report (as the DAG runs them).

    :param stop_after: end the run after this step (a crash between steps).
    :param check: run the check step (schema, user, one GetFolder); off in the model test,
        where nothing it checks changes between runs.
    :param calendar: an open calendar to reuse (kept open); by default one per run, as a DAG
        run's tasks open their own.
    """
    run_key = run_key or new_run_key()
    own = calendar is None
    calendar = open_calendar(settings) if own else calendar
    try:
        if check:
            pipeline.check(settings, dsn, calendar)
        pipeline.extract(settings, dsn, calendar, run_key, now,
                         full_resync=params.get("full_resync", False))  # fmt: skip
        pipeline.transform_staged(settings, dsn, run_key)
        pipeline.load(settings, dsn, run_key,
                      allow_mass_delete=params.get("allow_mass_delete", False))  # fmt: skip
        if stop_after == "load":
            return {"run_key": run_key}
        pipeline.push(settings, dsn, calendar, run_key, now, crash=crash,
                      allow_mass_delete=params.get("allow_mass_delete", False))  # fmt: skip
        return pipeline.report(settings, dsn, run_key)
    except Exception as exc:
        if not isinstance(exc, Crash):  # a dead process has no failure callback
            # what the DAG's failure callback does (pipeline.record_failure): the run's row
            # says failed/stopped, which also frees the connection for the next run
            status = "stopped" if isinstance(exc, SafetyStop) else "failed"
            with store.connect(dsn) as conn:
                store.record_failure(conn, settings.conn_id, run_key, status, str(exc)[:2000])
        raise
    finally:
        if own:
            calendar.close()


def new_run_key() -> str:
    return f"run-{next(_runs)}"


def resume(settings: SyncSettings, dsn: str, run_key: str, now: datetime = NOW, *,
           calendar=None) -> dict[str, Any]:  # fmt: skip
    """The rest of a run that died in (or before) push, as Airflow retries it: push, report."""
    own = calendar is None
    calendar = open_calendar(settings) if own else calendar
    try:
        pipeline.push(settings, dsn, calendar, run_key, now)
        return pipeline.report(settings, dsn, run_key)
    finally:
        if own:
            calendar.close()


def insert(dsn: str, user_id: int, **fields) -> int:
    """An appointment as the app writes it; returns its id."""
    row = {"owner_user_id": user_id, "title": "", **fields}
    columns = ", ".join(row)
    marks = ", ".join(["%s"] * len(row))
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO calendar.appointments ({columns}) VALUES ({marks}) RETURNING id",
            list(row.values()),
        )
        return cur.fetchone()[0]


def update(dsn: str, appointment_id: int, **fields) -> None:
    sets = ", ".join(f"{name} = %s" for name in fields)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            f"UPDATE calendar.appointments SET {sets} WHERE id = %s",
            [*fields.values(), appointment_id],
        )


def delete(dsn: str, appointment_id: int) -> None:
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM calendar.appointments WHERE id = %s", (appointment_id,))


def live(dsn: str) -> list[dict[str, Any]]:
    with (
        psycopg2.connect(dsn) as conn,
        conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur,
    ):
        cur.execute("SELECT * FROM calendar.live_appointments ORDER BY starts_at, title, id")
        return [dict(r) for r in cur.fetchall()]


def run_row(dsn: str, run_key: str) -> dict[str, Any]:
    with (
        psycopg2.connect(dsn) as conn,
        conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur,
    ):
        cur.execute("SELECT * FROM ewssync.sync_runs WHERE run_key = %s", (run_key,))
        return dict(cur.fetchone())
