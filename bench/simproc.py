"""The EWS simulator in its own process, so the bench's figures are the client's alone.

The bench talks to it over a pipe: counters, latency, edits to the mailbox. Its CPU time is
reported apart (``cpu_seconds``), so a reader can see what the server side cost.
"""

from __future__ import annotations

import multiprocessing
import resource
from typing import Any


def _serve(pipe, dialect: str, mailbox: str, password: str, fixture_path: str) -> None:
    from tests.ewssim import EwsSimulator

    sim = EwsSimulator(dialect=dialect)
    sim.add_mailbox(mailbox, password=password, calendar_access=True)
    sim.load_fixture(fixture_path, default_mailbox=mailbox)
    sim.start()
    pipe.send(sim.url)
    while True:
        command, args = pipe.recv()
        try:
            if command == "stop":
                sim.stop()
                pipe.send(None)
                return
            pipe.send(("ok", _COMMANDS[command](sim, mailbox, *args)))
        except Exception as exc:  # report to the bench, keep serving
            pipe.send(("error", f"{type(exc).__name__}: {exc}"))


def _counters(sim, _mailbox):
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "requests": dict(sim.request_counts),
        "bytes_out": sim.bytes_out,
        "bytes_in": sim.bytes_in,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    }


def _set_latency(sim, _mailbox, seconds: float):
    sim.latency = seconds


def _edit_singles(sim, mailbox, count: int) -> int:
    """Edit ``count`` single items as a person would (new subject)."""
    box = sim.mailbox(mailbox)
    singles = [item for item in box.items() if not getattr(item, "recurrence", None)][:count]
    for item in singles:
        box.update(item.item_id, subject=f"{item.subject} (edited)")
    return len(singles)


_COMMANDS = {
    "reset_counters": lambda sim, _mailbox: sim.reset_counters(),
    "counters": _counters,
    "set_latency": _set_latency,
    "edit_singles": _edit_singles,
}


class SimulatorProcess:
    """An EwsSimulator serving ``fixture_path`` from a child process (spawned: a clean interpreter)."""

    def __init__(self, mailbox: str, password: str, fixture_path: str, dialect="Exchange2016"):
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(child, dialect, mailbox, password, fixture_path), daemon=True
        )
        self._process.start()
        if not self._pipe.poll(600):
            raise RuntimeError("the simulator process did not start within 10 minutes")
        self.url: str = self._pipe.recv()

    def _call(self, command: str, *args: Any) -> Any:
        self._pipe.send((command, args))
        status, value = self._pipe.recv()
        if status != "ok":
            raise RuntimeError(f"simulator {command}: {value}")
        return value

    def reset_counters(self) -> None:
        self._call("reset_counters")

    def counters(self) -> dict:
        return self._call("counters")

    def set_latency(self, seconds: float) -> None:
        self._call("set_latency", seconds)

    def edit_singles(self, count: int) -> int:
        return self._call("edit_singles", count)

    def stop(self) -> None:
        if self._process.is_alive():
            self._pipe.send(("stop", ()))
            self._pipe.poll(30) and self._pipe.recv()
            self._process.join(30)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(10)
