"""Load throughput: the set-based merge of N staged rows against one INSERT per row."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import psycopg2

from ewssync import store

CONN_ID = "bench_load"


def synthetic_appointments(n: int, seed_day: datetime | None = None) -> pd.DataFrame:
    """N normalised appointment rows, as transform.normalize would produce them."""
    base = seed_day or datetime(2026, 11, 2, 7, tzinfo=UTC)
    starts = [base + timedelta(minutes=30 * (i % 20000)) for i in range(n)]
    return pd.DataFrame(
        {
            "ews_item_id": [f"AAMk{i:08d}" for i in range(n)],
            "change_key": [f"CK{i}" for i in range(n)],
            "uid": [f"uid-{i}" for i in range(n)],
            "recurrence_id": [None] * n,
            "series_key": [None] * n,
            "occurrence_key": [None] * n,
            "item_type": ["Single"] * n,
            "title": [f"Service visit {i}" for i in range(n)],
            "location": ["Hauptstr. 1, Berlin"] * n,
            "notes": ["Customer asks for a call 30 minutes before arrival.\nBring ladder."] * n,
            "notes_html": [None] * n,
            "starts_at": starts,
            "ends_at": [s + timedelta(hours=1) for s in starts],
            "all_day": [False] * n,
            "start_date": [s.date() for s in starts],
            "end_date": [s.date() for s in starts],
            "time_zone": ["Europe/Berlin"] * n,
            "is_private": [False] * n,
            "reminder_minutes": [15] * n,
            "show_as": ["busy"] * n,
            "category": ["Service"] * n,
            "fingerprint": [f"{i:064x}" for i in range(n)],
        }
    )


def _user(conn) -> int:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO calendar.users (login, email) VALUES ('bench', 'bench@example.com') "
            "ON CONFLICT (login) DO UPDATE SET email = EXCLUDED.email RETURNING id"
        )
        return cur.fetchone()[0]


def _reset(conn) -> None:
    with conn.cursor() as cur:
        cur.execute("SET LOCAL calendar.allow_purge = 'on'")
        cur.execute("DELETE FROM ewssync.links WHERE conn_id = %s", (CONN_ID,))
        cur.execute(
            "DELETE FROM calendar.appointments WHERE owner_user_id = "
            "(SELECT id FROM calendar.users WHERE login = 'bench')"
        )
    store.clear_staging(conn, CONN_ID, "bench")


def measure_merge(dsn: str, n: int) -> dict[str, float]:
    """Stage n rows with COPY, then time the merge (one transaction) alone."""
    frame = synthetic_appointments(n)
    window = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2027, 12, 1, tzinfo=UTC))
    with store.connect(dsn) as conn:
        _reset(conn)
        user_id = _user(conn)
    with store.connect(dsn) as conn:
        started = time.perf_counter()
        store.put_staging_run(
            conn, CONN_ID, "bench", mode="full", ews_sync_state=None,
            window_start=window[0], window_end=window[1],
        )  # fmt: skip
        store.stage_appointments(conn, CONN_ID, "bench", frame)
        staged = time.perf_counter() - started
    with store.connect(dsn) as conn:
        started = time.perf_counter()
        counts = store.merge(conn, CONN_ID, "bench", user_id=user_id)
        merged = time.perf_counter() - started
    assert counts["created"] == n, counts
    with store.connect(dsn) as conn:
        started = time.perf_counter()
        again = store.merge(conn, CONN_ID, "bench", user_id=user_id)
        unchanged = time.perf_counter() - started
    assert again["created"] == again["updated"] == 0, again
    with store.connect(dsn) as conn:
        _reset(conn)
    return {
        "rows": n,
        "stage_seconds": staged,
        "merge_seconds": merged,
        "merge_rows_per_s": n / merged,
        "unchanged_merge_seconds": unchanged,
    }


def measure_naive_inserts(dsn: str, n: int) -> dict[str, float]:
    """The naive baseline: one INSERT per appointment and one per link, one commit at the end."""
    frame = synthetic_appointments(n)
    conn = psycopg2.connect(dsn)
    try:
        with conn:
            _reset(conn)
            user_id = _user(conn)
        started = time.perf_counter()
        with conn, conn.cursor() as cur:
            for row in frame.itertuples(index=False):
                cur.execute(
                    "INSERT INTO calendar.appointments (owner_user_id, title, location, notes, "
                    "starts_at, ends_at, all_day, start_date, end_date, time_zone, is_private, "
                    "reminder_minutes, show_as, category) VALUES "
                    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id, version",
                    (user_id, row.title, row.location, row.notes, row.starts_at, row.ends_at,
                     row.all_day, row.start_date, row.end_date, row.time_zone, row.is_private,
                     row.reminder_minutes, row.show_as, row.category),
                )  # fmt: skip
                appointment_id, version = cur.fetchone()
                cur.execute(
                    "INSERT INTO ewssync.links (conn_id, appointment_id, ews_item_id, change_key, "
                    "uid, ews_fingerprint, local_version, starts_at, ends_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (CONN_ID, appointment_id, row.ews_item_id, row.change_key, row.uid,
                     row.fingerprint, version, row.starts_at, row.ends_at),
                )  # fmt: skip
        elapsed = time.perf_counter() - started
        with conn:
            _reset(conn)
    finally:
        conn.close()
    return {"rows": n, "seconds": elapsed, "rows_per_s": n / elapsed}
