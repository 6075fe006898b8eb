"""Scale on a real stack: N `ews` connections served by the Celery worker (`make bench-stack`).

Starts a stack (tools/stack.py, the code of `make up`), a simulator with N mailboxes (the
realistic fixture in each), adds N connections through the REST API, measures how long until
all N DAGs exist, triggers one run of each and measures the round until all have finished,
sampling the memory (RSS summed over each component's process tree) of the scheduler and the
Celery worker. Prints the figures and writes them into BENCHMARKS.md between the stack-scale
markers (`make bench` keeps that part).

EWSSYNC_BENCH_STACK_CONNECTIONS (50), EWSSYNC_BENCH_STACK_CONCURRENCY (8 worker slots),
EWSSYNC_BENCH_OUT (BENCHMARKS.md; "-" for none).
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg2

from tests.e2e.conftest import AirflowApi
from tests.ewssim import EwsSimulator
from tools.stack import ADMIN_USER, FIXTURE, Stack

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- stack-scale:start -->", "<!-- stack-scale:end -->"


class MemorySampler(threading.Thread):
    """Peak RSS (MB) of each component's process tree, sampled every second."""

    def __init__(self, pids: dict[str, int]):
        super().__init__(daemon=True)
        self.pids = pids
        self.peak: dict[str, float] = dict.fromkeys(pids, 0.0)
        self.stop = threading.Event()

    def tree_rss(self, pid: int) -> float:
        try:
            root = psutil.Process(pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0.0
        total = 0
        for process in processes:
            with contextlib.suppress(psutil.Error):
                total += process.memory_info().rss
        return total / 2**20

    def run(self) -> None:
        while not self.stop.is_set():
            for key, pid in self.pids.items():
                self.peak[key] = max(self.peak[key], self.tree_rss(pid))
            self.stop.wait(1)


def main() -> None:
    n = int(os.environ.get("EWSSYNC_BENCH_STACK_CONNECTIONS", "50"))
    concurrency = int(os.environ.get("EWSSYNC_BENCH_STACK_CONCURRENCY", "8"))
    out = os.environ.get("EWSSYNC_BENCH_OUT", str(REPO / "BENCHMARKS.md"))
    logins = [f"tech{i:02d}" for i in range(n)]

    simulator = EwsSimulator(dialect="Exchange2016")
    today = datetime.now(UTC).date()
    for login in logins:
        simulator.add_mailbox(f"{login}@example.com", password=f"Pw-{login}-2026")
        simulator.load_fixture(FIXTURE, shift_to=today, default_mailbox=f"{login}@example.com")
    simulator.start()
    folder = Path(tempfile.mkdtemp(prefix="ewssync-bench-stack-"))
    stack = Stack.create(
        folder,
        worker_concurrency=concurrency,
        overrides={"EWSSYNC_RETRY_DELAY_SECONDS": "5"},
    )
    figures: dict = {"connections": n, "worker_slots": concurrency}
    try:
        started = time.monotonic()
        stack.start(die_with_parent=True)
        figures["stack_start_s"] = round(time.monotonic() - started, 1)
        with psycopg2.connect(stack.calendar_dsn) as conn, conn.cursor() as cur:
            for login in logins:
                cur.execute(
                    "INSERT INTO calendar.users (login, email) VALUES (%s, %s)",
                    (login, f"{login}@example.com"),
                )
        api = AirflowApi(stack.api_url, ADMIN_USER, stack.admin_password)
        idle = MemorySampler({k: stack.pids[k] for k in ("scheduler", "celery-worker")})
        figures["idle_rss_mb"] = {key: round(idle.tree_rss(pid)) for key, pid in idle.pids.items()}
        added = time.monotonic()
        for login in logins:
            api.add_ews_connection(
                f"ews_{login}", simulator.url, f"{login}@example.com", f"Pw-{login}-2026",
                app_user=login, exchange_timezone="Europe/Berlin", schedule="none",
            )  # fmt: skip
        dag_ids = {f"ewssync__ews_{login}" for login in logins}
        while True:
            listed = api.ok(
                "GET", "/dags", params={"dag_id_pattern": "ewssync__ews_tech", "limit": 100}
            )
            present = {d["dag_id"] for d in listed["dags"] if not d["is_stale"]}
            if dag_ids <= present:
                break
            if time.monotonic() - added > 600:
                raise TimeoutError(f"only {len(present & dag_ids)} of {n} DAGs after 600 s")
            time.sleep(2)
        figures["all_dags_s"] = round(time.monotonic() - added, 1)

        sampler = MemorySampler({k: stack.pids[k] for k in ("scheduler", "celery-worker")})
        sampler.start()
        round_started = time.monotonic()
        runs = {dag_id: api.trigger(dag_id) for dag_id in sorted(dag_ids)}
        states: dict[str, str] = {}
        while len(states) < n:
            for dag_id, run_id in runs.items():
                if dag_id not in states:
                    state = api.run_state(dag_id, run_id)
                    if state in ("success", "failed"):
                        states[dag_id] = state
            if time.monotonic() - round_started > 1800:
                raise TimeoutError(f"{len(states)} of {n} runs finished after 1800 s")
            time.sleep(3)
        figures["round_s"] = round(time.monotonic() - round_started, 1)
        sampler.stop.set()
        sampler.join()
        figures["succeeded"] = sum(state == "success" for state in states.values())
        figures["peak_rss_mb"] = {key: round(value) for key, value in sampler.peak.items()}
        with psycopg2.connect(stack.calendar_dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM calendar.live_appointments")
            figures["appointments"] = cur.fetchone()[0]
        figures["load_average"] = [round(x, 1) for x in os.getloadavg()]
    finally:
        stack.stop()
        simulator.stop()
    print(json.dumps(figures, indent=1))
    if out != "-":
        write_section(Path(out), figures)


def write_section(path: Path, figures: dict) -> None:
    machine = f"{platform.node()} ({os.cpu_count()} cores, Python {platform.python_version()})"
    section = (
        f"{START}\n## Scale on a real stack: {figures['connections']} connections on the Celery "
        "worker\n\n"
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine} with `make bench-stack` "
        "(tools/stack.py: api-server, scheduler, dag-processor, triggerer, one Celery worker with "
        f"{figures['worker_slots']} slots; Redis broker; local PostgreSQL). The machine is shared "
        "with other agents' builds and tests and was loaded (load average "
        f"{figures['load_average']} at the end): treat times as upper bounds.\n\n"
        "| figure | value |\n|---|---|\n"
        f"| connections added through the REST API -> all {figures['connections']} DAGs listed | "
        f"{figures['all_dags_s']} s |\n"
        f"| one round: {figures['connections']} runs triggered -> all finished | "
        f"{figures['round_s']} s ({figures['succeeded']} succeeded) |\n"
        f"| appointments in calendar.live_appointments after the round | "
        f"{figures['appointments']} |\n"
        f"| scheduler RSS (process tree), idle / peak in the round | "
        f"{figures['idle_rss_mb']['scheduler']} / {figures['peak_rss_mb']['scheduler']} MB |\n"
        f"| Celery worker RSS (process tree incl. task processes), idle / peak | "
        f"{figures['idle_rss_mb']['celery-worker']} / {figures['peak_rss_mb']['celery-worker']} "
        "MB |\n"
        f"| stack start (metadata DB migration included) | {figures['stack_start_s']} s |\n"
        f"{END}\n"
    )
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if START in text and END in text:
        text = text[: text.index(START)] + section + text[text.index(END) + len(END) + 1 :]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    main()
