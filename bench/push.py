"""Push benchmark: 1,000 new app appointments to Exchange, then 100 changed and 100 deleted,
beside a naive baseline (one CreateItem / UpdateItem / DeleteItem request per appointment).

Whole runs (extract, transform, load, push, report) run in this process against the simulator
with the given latency per request; the simulator's counters give the requests.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

MAILBOX, PASSWORD = "push@example.com", "bench"


def _settings(url: str):
    from ewssync.settings import SyncSettings

    fields = {
        "conn_id": "ews_push_bench", "conn_type": "ews", "host": url, "login": MAILBOX,
        "password": PASSWORD, "description": "push bench", "port": None, "schema": None,
        "extra": {"app_user": "pusher", "exchange_timezone": "Europe/Berlin", "weeks_back": 1,
                  "weeks_ahead": 8},
    }  # fmt: skip
    return SyncSettings.from_connection(type("Conn", (), fields)())


def _run(settings, dsn: str, now: datetime, run_key: str) -> dict[str, Any]:
    from ewssync import pipeline

    calendar = pipeline.open_calendar(settings)
    try:
        pipeline.check(settings, dsn, calendar)
        pipeline.extract(settings, dsn, calendar, run_key, now)
        pipeline.transform_staged(settings, dsn, run_key)
        pipeline.load(settings, dsn, run_key)
        started = time.perf_counter()
        counts = pipeline.push(settings, dsn, calendar, run_key, now)
        push_seconds = time.perf_counter() - started
        pipeline.report(settings, dsn, run_key)
    finally:
        calendar.close()
    return {"counts": counts, "push_seconds": push_seconds}


def _measured_run(sim, settings, dsn: str, now: datetime, run_key: str) -> dict[str, Any]:
    """One whole run with the simulator's request counters reset before it: wall and push
    seconds, requests by operation, push counts."""
    sim.reset_counters()
    started = time.perf_counter()
    result = _run(settings, dsn, now, run_key)
    return {
        "wall_seconds": time.perf_counter() - started,
        "push_seconds": result["push_seconds"],
        "requests": dict(sim.request_counts),
        "counts": result["counts"],
    }


def add_pusher(dsn: str, email: str) -> int:
    """The app user 'pusher' (the push scenarios' owner); returns its id."""
    import psycopg2

    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO calendar.users (login, email) VALUES ('pusher', %s) RETURNING id",
            (email,),
        )
        return cur.fetchone()[0]


def insert_new_appointments(dsn: str, user_id: int, base: datetime, count: int) -> None:
    """``count`` new app appointments of ``user_id`` (45 minutes each, spread over 500 hours from
    ``base``): what a push scenario creates in Exchange."""
    import psycopg2

    rows = [
        (user_id, f"Job {n}", f"Site {n % 37}", "Bring the ladder",
         base + timedelta(hours=n % 500, minutes=15 * (n % 4)),
         base + timedelta(hours=n % 500, minutes=15 * (n % 4) + 45))
        for n in range(count)
    ]  # fmt: skip
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO calendar.appointments (owner_user_id, title, location, notes, "
            "starts_at, ends_at) VALUES (%s, %s, %s, %s, %s, %s)",
            rows,
        )


def measure(dsn: str, new: int, changed: int, deleted: int, latency: float, sample: int) -> dict:
    """Figures for the push scenarios and the naive baseline (measured on ``sample`` items)."""
    import psycopg2

    from tests.ewssim import EwsSimulator

    sim = EwsSimulator(dialect="Exchange2016")
    sim.add_mailbox(MAILBOX, password=PASSWORD)
    sim.start()
    settings = _settings(sim.url)
    now = datetime.now(UTC)
    base = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    figures: dict[str, Any] = {"new": new, "changed": changed, "deleted": deleted,
                               "latency": latency}  # fmt: skip
    try:
        user_id = add_pusher(dsn, MAILBOX)
        _run(settings, dsn, now, "push-empty")  # the first run: an empty mailbox
        insert_new_appointments(dsn, user_id, base, new)
        sim.latency = latency
        figures["create"] = _measured_run(sim, settings, dsn, now + timedelta(minutes=30),
                                          "push-new")  # fmt: skip
        figures["create"]["in_exchange"] = len(sim.mailbox(MAILBOX).items())
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute(
                "UPDATE calendar.appointments SET title = title || ' (moved)', "
                "starts_at = starts_at + interval '1 hour', ends_at = ends_at + interval '1 hour' "
                "WHERE id IN (SELECT id FROM calendar.appointments ORDER BY id LIMIT %s)",
                (changed,),
            )
            cur.execute(
                "DELETE FROM calendar.appointments WHERE id IN "
                "(SELECT id FROM calendar.appointments ORDER BY id DESC LIMIT %s)",
                (deleted,),
            )
        figures["edit"] = _measured_run(sim, settings, dsn, now + timedelta(minutes=60),
                                        "push-edits")  # fmt: skip
        quiet = _measured_run(sim, settings, dsn, now + timedelta(minutes=90), "push-quiet")
        figures["after"] = {"wall_seconds": quiet["wall_seconds"], "requests": quiet["requests"]}
        figures["naive"] = naive_baseline(sim, base, sample)
    finally:
        sim.stop()
    return figures


def naive_baseline(sim, base: datetime, sample: int) -> dict[str, Any]:
    """One CreateItem per appointment (exchangelib's item.save()), then one UpdateItem and one
    DeleteItem per changed / deleted appointment, on ``sample`` items."""
    from exchangelib import CalendarItem, EWSDateTime

    from ewssync.exchange import open_calendar

    calendar = open_calendar(_settings(sim.url))
    try:
        calendar.probe()
        sim.reset_counters()
        started = time.perf_counter()
        items = []
        for n in range(sample):
            start = EWSDateTime.from_datetime(base + timedelta(days=60, hours=n))
            item = CalendarItem(
                account=calendar.account, folder=calendar.calendar, subject=f"Naive {n}",
                start=start, end=start + timedelta(minutes=45), location="Site",
            )  # fmt: skip
            item.save(send_meeting_invitations="SendToNone")
            items.append(item)
        create_seconds = time.perf_counter() - started
        create_requests = sum(sim.request_counts.values())
        sim.reset_counters()
        started = time.perf_counter()
        half = sample // 2
        for item in items[:half]:
            item.subject += " (moved)"
            item.save(update_fields=["subject"], send_meeting_invitations="SendToNone")
        for item in items[half:]:
            item.delete(send_meeting_cancellations="SendToNone")
        edit_seconds = time.perf_counter() - started
        edit_requests = sum(sim.request_counts.values())
    finally:
        calendar.close()
    return {
        "items": sample,
        "create_seconds_per_item": create_seconds / sample,
        "create_requests_per_item": create_requests / sample,
        "edit_seconds_per_item": edit_seconds / sample,
        "edit_requests_per_item": edit_requests / sample,
    }
