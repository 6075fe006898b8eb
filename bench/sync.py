"""Sync benchmarks: initial sync, no-change run and 100 changes per side, against the simulator.

The pipeline steps run in child processes, as Airflow tasks do, so each step's wall time, CPU
time and peak RSS are its own; the simulator runs in a process of its own too
(bench.simproc), so the client's figures do not include the server's XML writing.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAILBOX, PASSWORD = "bench@example.com", "bench"
CONN_ID = "ews_bench"

# One step of the pipeline, run in a fresh interpreter like an Airflow task; prints its result.
_STEP = """
import json, resource, sys, time
from datetime import datetime
from ewssync import pipeline
from ewssync.settings import SyncSettings
spec = json.loads(sys.argv[1])
settings = SyncSettings.from_connection(type("C", (), spec["connection"])())
started, cpu_started = time.perf_counter(), time.process_time()
step = spec["step"]
if step == "extract":
    calendar = pipeline.open_calendar(settings)
    result = pipeline.extract(settings, spec["dsn"], calendar, spec["run_key"],
                              datetime.fromisoformat(spec["now"]), full_resync=spec["full"])
elif step == "transform":
    result = pipeline.transform_staged(settings, spec["dsn"], spec["run_key"])
elif step == "load":
    result = pipeline.load(settings, spec["dsn"], spec["run_key"])
else:
    result = pipeline.report(settings, spec["dsn"], spec["run_key"])
elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu, "peak_rss_mb": peak_kb / 1024, "result": result},
                 default=str))
"""

STEPS = ("extract", "transform", "load", "report")


def connection_spec(url: str, anchor: date, concurrency: int | None = None) -> dict:
    return {
        "conn_id": CONN_ID,
        "conn_type": "ews",
        "host": url,
        "login": MAILBOX,
        "password": PASSWORD,
        "description": "bench mailbox",
        "port": None,
        "schema": None,
        "extra": json.dumps(
            {
                "app_user": "bench",
                "exchange_timezone": "Europe/Berlin",
                "weeks_back": 8,
                "weeks_ahead": 44,
                **({"concurrency": concurrency} if concurrency is not None else {}),
            }
        ),
    }


def run_step(step: str, spec: dict) -> dict:
    env = {**os.environ, "EWSSYNC_SQL_DIR": str(REPO / "include" / "sql")}
    result = subprocess.run(
        [sys.executable, "-c", _STEP, json.dumps({**spec, "step": step})],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if result.returncode != 0:
        raise RuntimeError(f"bench step {step} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_sync(sim, spec: dict, run_key: str) -> dict:
    """All four steps once; per-step seconds, CPU and RSS, EWS requests and bytes of the run,
    the simulator's CPU time and the machine's load average before and after."""
    sim.reset_counters()
    server_cpu = sim.counters()["cpu_seconds"]
    load_before = os.getloadavg()
    steps = {}
    started = time.perf_counter()
    for step in STEPS:
        steps[step] = run_step(step, {**spec, "run_key": run_key})
    wall = time.perf_counter() - started
    counters = sim.counters()
    return {
        "wall_seconds": wall,
        "cpu_seconds": sum(s["cpu_seconds"] for s in steps.values()),
        "steps": steps,
        "requests": counters["requests"],
        "request_total": sum(counters["requests"].values()),
        "bytes_out": counters["bytes_out"],
        "bytes_in": counters["bytes_in"],
        "server_cpu_seconds": counters["cpu_seconds"] - server_cpu,
        "peak_rss_mb": max(s["peak_rss_mb"] for s in steps.values()),
        "loadavg": [load_before, os.getloadavg()],
    }


def naive_initial_sync(sim, url: str, dsn: str, window: tuple[datetime, datetime], sample: int):
    """The naive baseline: list the window, then one GetItem per appointment and one INSERT per
    row, measured on ``sample`` appointments (the per-item cost is then scaled to the mailbox)."""
    import psycopg2
    from exchangelib import BASIC, DELEGATE, Account, Configuration, Credentials, Version
    from exchangelib.version import EXCHANGE_2016

    config = Configuration(
        service_endpoint=url,
        credentials=Credentials(MAILBOX, PASSWORD),
        auth_type=BASIC,
        version=Version(build=EXCHANGE_2016),
    )
    account = Account(
        MAILBOX, config=config, autodiscover=False, access_type=DELEGATE,
        default_timezone=__import__("exchangelib").EWSTimeZone("Europe/Berlin"),
    )  # fmt: skip
    sim.reset_counters()
    started, cpu_started = time.perf_counter(), time.process_time()
    listed = list(
        account.calendar.view(
            start=window[0], end=window[0] + timedelta(days=14), max_items=sample
        ).only("id", "changekey")
    )[:sample]
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        for entry in listed:
            item = account.calendar.get(id=entry.id)
            cur.execute(
                "INSERT INTO ewssync.staging_seen (run_key, conn_id, ews_item_id, state) "
                "VALUES ('naive', 'naive', %s, 'present') ON CONFLICT DO NOTHING",
                (item.id,),
            )
        cur.execute("DELETE FROM ewssync.staging_seen WHERE run_key = 'naive'")
    conn.close()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return {
        "items": len(listed),
        "seconds": elapsed,
        "seconds_per_item": elapsed / max(len(listed), 1),
        "cpu_seconds_per_item": cpu / max(len(listed), 1),
        "requests": sum(sim.counters()["requests"].values()),
    }


def self_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def utc_now() -> datetime:
    return datetime.now(UTC)
