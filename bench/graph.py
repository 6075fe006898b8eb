"""`make bench-graph`: the Microsoft Graph backend's figures (issue #13), each beside a naive
baseline measured in the same run: initial sync of the generated 10,000-appointment mailbox,
the no-change run, 100 changes in Exchange, and 1,000 app appointments pushed.

The Graph simulator (with its identity platform) runs in its own process, as the EWS simulator
does for `make bench` (bench.simproc); the sync steps run in child processes like Airflow tasks
(bench.sync.run_step); the push scenario is whole runs in this process (bench.push's shape).
Writes its section of BENCHMARKS.md between markers (`make bench` keeps it).

Environment: EWSSYNC_BENCH_ITEMS (10000), EWSSYNC_BENCH_SERIES (300), EWSSYNC_BENCH_LATENCY
(seconds per Graph request, 0.02), EWSSYNC_BENCH_BASELINE_SAMPLE (200),
EWSSYNC_BENCH_PUSH_NEW (1000), EWSSYNC_BENCH_PUSH_BASELINE_SAMPLE (100), EWSSYNC_BENCH_OUT.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import sync as sync_bench
from bench.__main__ import (
    Table,
    _add_user,
    _count,
    env_int,
    fresh_database,
    machine_and_load,
    ratio,
)

REPO = Path(__file__).resolve().parents[1]
MAILBOX = sync_bench.MAILBOX
PUSH_MAILBOX = "push@example.com"
RESOURCE = "https://127.0.0.1"
START, END = "<!-- graph:start -->", "<!-- graph:end -->"


# --- the simulator process -------------------------------------------------------------------


def _serve(pipe, fixture_path: str) -> None:
    from tests.ewssim import EwsSimulator
    from tests.graphsim import GraphSimulator
    from tests.identitysim import IdentitySimulator

    mailboxes = EwsSimulator()
    mailboxes.add_mailbox(MAILBOX, password="unused")
    mailboxes.add_mailbox(PUSH_MAILBOX, password="unused")
    mailboxes.load_fixture(fixture_path, default_mailbox=MAILBOX)
    identity = IdentitySimulator(tls=True).start()
    identity.add_resource(RESOURCE, ["Calendars.ReadWrite"])
    app = identity.add_app(roles={RESOURCE: ["Calendars.ReadWrite"]})
    graph = GraphSimulator(source=mailboxes).start()
    graph.trust(identity)
    pipe.send({"url": graph.url, "authority": identity.authority, "tenant_id": app.tenant_id,
               "client_id": app.client_id, "secret": app.secret})  # fmt: skip
    while True:
        command, args = pipe.recv()
        if command == "stop":
            graph.stop()
            identity.stop()
            pipe.send(None)
            return
        if command == "counters":
            usage = resource.getrusage(resource.RUSAGE_SELF)
            pipe.send({"requests": dict(graph.request_counts),
                       "cpu_seconds": usage.ru_utime + usage.ru_stime})  # fmt: skip
        elif command == "reset":
            graph.reset_counters()
            pipe.send(None)
        elif command == "latency":
            graph.latency = args[0]
            pipe.send(None)
        elif command == "edit_singles":
            box = mailboxes.mailbox(MAILBOX)
            singles = [i for i in box.items() if not i.recurrence][: args[0]]
            for item in singles:
                box.update(item.item_id, subject=f"{item.subject} (edited)")
            pipe.send(len(singles))
        elif command == "push_items":
            pipe.send(len(mailboxes.mailbox(PUSH_MAILBOX).items()))


class GraphProcess:
    def __init__(self, fixture_path: str):
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, fixture_path), daemon=True)
        self._process.start()
        if not self._pipe.poll(600):
            raise RuntimeError("the Graph simulator process did not start within 10 minutes")
        self.app: dict = self._pipe.recv()
        self.url = self.app["url"]

    def call(self, command: str, *args: Any) -> Any:
        self._pipe.send((command, args))
        return self._pipe.recv()

    # bench.sync.run_sync's interface
    def reset_counters(self) -> None:
        self.call("reset")

    def counters(self) -> dict:
        counters = self.call("counters")
        return {**counters, "bytes_out": 0, "bytes_in": 0}

    def stop(self) -> None:
        if self._process.is_alive():
            self.call("stop")
            self._process.join(30)


def connection(sim: GraphProcess, conn_id: str, mailbox: str, app_user: str, **extra) -> dict:
    app = sim.app
    return {
        "conn_id": conn_id, "conn_type": "ews", "host": sim.url, "login": "",
        "password": app["secret"], "description": "Graph bench", "port": None, "schema": None,
        "extra": json.dumps({
            "app_user": app_user, "api": "graph", "auth_method": "oauth", "mailbox": mailbox,
            "tenant_id": app["tenant_id"], "client_id": app["client_id"],
            "authority": app["authority"], "verify_tls": False,
            "exchange_timezone": "Europe/Berlin", **extra,
        }),
    }  # fmt: skip


def _settings(spec: dict):
    from ewssync.settings import SyncSettings

    return SyncSettings.from_connection(type("Conn", (), spec)())


# --- scenarios ---------------------------------------------------------------------------------


def bench_sync(sim: GraphProcess, table: Table, items: int, series: int, latency: float,
               sample: int) -> dict:  # fmt: skip
    dsn = fresh_database("ewssync_bench_graph")
    _add_user(dsn)
    now = datetime.now(UTC)
    spec = {
        "dsn": dsn, "now": now.isoformat(), "full": False,
        "connection": connection(sim, "graph_bench", MAILBOX, "bench", weeks_back=8,
                                 weeks_ahead=44),
    }  # fmt: skip
    sim.call("latency", latency)
    figures: dict = {"latency": latency}
    figures["initial"] = {**sync_bench.run_sync(sim, spec, "initial"), "appointments": _count(dsn)}
    figures["no_change"] = sync_bench.run_sync(
        sim, {**spec, "now": (now + timedelta(minutes=30)).isoformat()}, "nochange"
    )
    changed = sim.call("edit_singles", 100)
    figures["hundred"] = {
        **sync_bench.run_sync(sim, {**spec, "now": (now + timedelta(minutes=60)).isoformat()},
                              "hundred"),
        "changed_exchange": changed,
    }  # fmt: skip
    figures["naive"] = naive_sync(sim, spec["connection"], now, sample)

    initial, naive = figures["initial"], figures["naive"]
    naive_seconds = naive["seconds_per_item"] * initial["appointments"]
    scenario = f"Graph: initial sync, {items} appointments ({series} series), {latency * 1000:.0f} ms/request"  # fmt: skip
    table.add(scenario, "wall time", f"{initial['wall_seconds']:.1f} s",
              f"{naive_seconds:.0f} s (extrapolated from {naive['items']})",
              ratio(initial["wall_seconds"], naive_seconds))  # fmt: skip
    for step in sync_bench.STEPS:
        table.add("", f"  {step}", f"{initial['steps'][step]['seconds']:.2f} s")
    table.add("", "Graph requests", str(initial["request_total"]),
              f"{initial['appointments'] + 1} (one GET per event)",
              ratio(initial["request_total"], initial["appointments"] + 1))  # fmt: skip
    table.add("", "requests by route", json.dumps(initial["requests"]))
    table.add("", "peak RSS of a task process", f"{initial['peak_rss_mb']:.0f} MB")
    table.add("", "CPU: client steps / simulator",
              f"{initial['cpu_seconds']:.1f} s / {initial['server_cpu_seconds']:.1f} s")  # fmt: skip
    quiet = figures["no_change"]
    table.add("Graph: no-change run", "Graph requests / wall time (4 task processes)",
              f"{quiet['request_total']} / {quiet['wall_seconds']:.2f} s")  # fmt: skip
    table.add("", "requests by route", json.dumps(quiet["requests"]))
    hundred = figures["hundred"]
    table.add("Graph: 100 changed items in Exchange", "Graph requests / wall time",
              f"{hundred['request_total']} / {hundred['wall_seconds']:.2f} s",
              f"{changed + 1} requests", ratio(hundred["request_total"], changed + 1))  # fmt: skip
    table.add("", "requests by route", json.dumps(hundred["requests"]))
    return figures


def naive_sync(sim: GraphProcess, spec: dict, now: datetime, sample: int) -> dict:
    """List the window's first events, then one GET per event (plain requests, the same token)."""
    import requests

    from ewssync.exchange.graph import GraphCalendar

    calendar = GraphCalendar(_settings(spec))
    start, end = now - timedelta(weeks=8), now + timedelta(weeks=8)
    sim.reset_counters()
    started, cpu_started = time.perf_counter(), time.process_time()
    ids = [e["item_id"] for e in calendar.read_index(start, end)][:sample]
    token = calendar._token()
    with requests.Session() as session:
        for item_id in ids:
            answer = session.get(
                f"{calendar.root}{calendar.user_path}/events/{item_id}",
                headers={"Authorization": f"Bearer {token}"}, timeout=30,
            )  # fmt: skip
            answer.raise_for_status()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    calendar.close()
    return {"items": len(ids), "seconds": elapsed,
            "seconds_per_item": elapsed / max(len(ids), 1),
            "cpu_seconds_per_item": cpu / max(len(ids), 1),
            "requests": sum(sim.counters()["requests"].values())}  # fmt: skip


def bench_push(sim: GraphProcess, table: Table, new: int, latency: float, sample: int) -> dict:
    from bench.push import _run, add_pusher, insert_new_appointments

    dsn = fresh_database("ewssync_bench_graph_push")
    settings = _settings(connection(sim, "graph_push_bench", PUSH_MAILBOX, "pusher",
                                    weeks_back=1, weeks_ahead=8))  # fmt: skip
    now = datetime.now(UTC)
    base = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    user_id = add_pusher(dsn, PUSH_MAILBOX)
    sim.call("latency", 0.0)
    _run(settings, dsn, now, "push-empty")
    insert_new_appointments(dsn, user_id, base, new)
    sim.call("latency", latency)
    sim.reset_counters()
    started = time.perf_counter()
    created = _run(settings, dsn, now + timedelta(minutes=30), "push-new")
    figures = {
        "new": new, "latency": latency, "wall_seconds": time.perf_counter() - started,
        "push_seconds": created["push_seconds"], "counts": created["counts"],
        "requests": sim.counters()["requests"], "in_exchange": sim.call("push_items"),
    }  # fmt: skip
    figures["naive"] = naive_push(sim, settings, base, sample)
    requests_total = sum(v for k, v in figures["requests"].items() if not k.startswith("batch:"))
    naive = figures["naive"]
    naive_seconds = naive["seconds_per_item"] * new
    scenario = f"Graph: push {new} new app appointments, {latency * 1000:.0f} ms/request"
    table.add(scenario, "Graph requests (whole run)", str(requests_total), f"{new} (one POST each)",
              ratio(requests_total, new))  # fmt: skip
    table.add("", "requests by route", json.dumps(figures["requests"]))
    table.add("", "wall time (whole run / push step)",
              f"{figures['wall_seconds']:.1f} s / {figures['push_seconds']:.1f} s",
              f"{naive_seconds:.1f} s (extrapolated from {naive['items']})",
              ratio(figures["push_seconds"], naive_seconds))  # fmt: skip
    table.add("", "events in the mailbox after the run", str(figures["in_exchange"]))
    return figures


def naive_push(sim: GraphProcess, settings, base: datetime, sample: int) -> dict:
    """One POST /events per appointment."""
    import requests

    from ewssync.exchange.graph import GraphCalendar

    calendar = GraphCalendar(settings)
    token = calendar._token()
    sim.reset_counters()
    started = time.perf_counter()
    with requests.Session() as session:
        for n in range(sample):
            start = base + timedelta(days=40, hours=n)
            answer = session.post(
                f"{calendar.root}{calendar.user_path}/events",
                headers={"Authorization": f"Bearer {token}"}, timeout=30,
                json={"subject": f"Naive {n}", "location": {"displayName": "Site"},
                      "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                      "end": {"dateTime": (start + timedelta(minutes=45)).strftime("%Y-%m-%dT%H:%M:%S"),
                              "timeZone": "UTC"}},
            )  # fmt: skip
            answer.raise_for_status()
    elapsed = time.perf_counter() - started
    calendar.close()
    return {"items": sample, "seconds_per_item": elapsed / sample,
            "requests_per_item": sum(sim.counters()["requests"].values()) / sample}  # fmt: skip


def main() -> None:
    from tests.ewssim.generate import generate_mailbox

    items = env_int("EWSSYNC_BENCH_ITEMS", 10000)
    series = env_int("EWSSYNC_BENCH_SERIES", 300)
    latency = float(os.environ.get("EWSSYNC_BENCH_LATENCY", "0.02"))
    sample = env_int("EWSSYNC_BENCH_BASELINE_SAMPLE", 200)
    new = env_int("EWSSYNC_BENCH_PUSH_NEW", 1000)
    push_sample = env_int("EWSSYNC_BENCH_PUSH_BASELINE_SAMPLE", 100)
    out = os.environ.get("EWSSYNC_BENCH_OUT", str(REPO / "BENCHMARKS.md"))
    anchor = datetime.now(UTC).date()
    fixture = generate_mailbox(n_items=items, n_series=series, anchor=anchor, seed=1)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(fixture, handle, default=str)
        fixture_path = handle.name
    started = time.perf_counter()
    load_at_start = os.getloadavg()
    table = Table()
    sim = GraphProcess(fixture_path)
    try:
        figures = {
            "sync": bench_sync(sim, table, items, min(series, items // 10), latency, sample),
            "push": bench_push(sim, table, new, latency, push_sample),
        }
    finally:
        sim.stop()
        os.unlink(fixture_path)
    load_at_end = os.getloadavg()
    rendered = table.render()
    print(rendered)
    machine, load = machine_and_load(started, load_at_start, load_at_end)
    if out == "-":
        return
    section = (
        f"{START}\n## Microsoft Graph (issue #13, `make bench-graph`)\n\n"
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine}; the Graph simulator and "
        f"its identity platform in their own process over loopback HTTP(S); {load}.\n\n"
        f"{rendered}\n\n"
        "The initial sync is the calendarView delta round alone (pages of 500 whole events; no "
        "further read); the naive baseline lists the window and GETs each event. The no-change "
        "run is one delta page (a DAG run adds the check task's GET of the calendar). 100 "
        "changed singles arrive in the delta page itself. Push sends creates 20 per `$batch`; "
        "the naive push baseline POSTs each event. The sync scenarios run extract, transform, "
        "load and report in 4 task processes (as `make bench`); the push scenario is a whole "
        "run in one process.\n\n"
        f"<details><summary>raw figures</summary>\n\n```json\n"
        f"{json.dumps(figures, indent=1, default=str)}\n```\n</details>\n{END}\n"
    )
    previous = Path(out).read_text() if Path(out).exists() else "# Benchmarks\n"
    if START in previous and END in previous:
        text = (
            previous[: previous.index(START)]
            + section
            + previous[previous.index(END) + len(END) + 1 :]
        )
    else:
        text = previous.rstrip("\n") + "\n\n" + section
    Path(out).write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
