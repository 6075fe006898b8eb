"""tools/stack.py ends every process a stack started, with all they started in turn: on stop(),
on `make down` (another process), and when the process that owns a test stack exits or gets
SIGTERM or SIGINT. A small process tree stands in for an Airflow component (no Airflow here)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.stack import REPO, Stack

# A component's shape: the leader (a session of its own) starts a child that ignores SIGTERM
# (only KILL ends it, when asked: "stubborn"), a child in a process group of its own with a
# child of its own (as Airflow's task supervisor runs each task), and an orphan (double fork).
# Each live process appends its pid to the file named by argv[1].
TREE = r"""
import os, signal, sys, time

def note():
    with open(sys.argv[1], "a") as f:
        f.write(f"{os.getpid()}\n")

def live():
    note()
    time.sleep(600)
    os._exit(0)

if os.fork() == 0:
    if sys.argv[2] == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    live()
if os.fork() == 0:
    os.setpgid(0, 0)
    if os.fork() == 0:
        live()
    live()
if os.fork() == 0:
    if os.fork() == 0:
        live()
    os._exit(0)
live()
"""
TREE_SIZE = 5


def running(pid: int) -> bool:
    """Alive and not a zombie (an ended process whose parent has not reaped it yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def wait_for_tree(noted: Path) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = [int(line) for line in noted.read_text().split()] if noted.exists() else []
        if len(pids) == TREE_SIZE:
            return pids
        time.sleep(0.05)
    pytest.fail(f"the process tree did not start: {noted.read_text() if noted.exists() else ''}")


def start_tree(stack: Stack, noted: Path, key: str = "tree", mode: str = "stubborn"):
    return stack.spawn(key, [sys.executable, "-c", TREE, str(noted), mode])


@pytest.fixture
def stack(tmp_path, pg_server) -> Stack:
    stack = Stack.create(tmp_path / "up", name="ewssync_stack_processes", server_dsn=pg_server)
    (stack.home / "logs").mkdir(parents=True)
    try:
        yield stack
    finally:
        stack.stop(drop=False, grace=0)


def test_stop_ends_every_process_of_each_tree_and_kills_what_ignores_sigterm(stack, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    leaders = [start_tree(stack, first, "one"), start_tree(stack, second, "two", "polite")]
    pids = wait_for_tree(first) + wait_for_tree(second)
    assert sorted(stack.processes()) == sorted(pids)
    assert len({os.getpgid(pid) for pid in pids}) == 4  # two sessions, each with two groups

    stack.stop(drop=False, grace=1)

    assert [pid for pid in pids if running(pid)] == []
    assert stack.pids == {} and all(leader.poll() is not None for leader in leaders)


def test_make_down_from_another_process_ends_the_whole_tree(stack, tmp_path):
    noted = tmp_path / "noted"
    leader = start_tree(stack, noted, mode="polite")
    pids = wait_for_tree(noted)  # spawn() saved state.json: nothing else tells `down` the pids

    result = subprocess.run(
        [sys.executable, "-m", "tools.stack", "down", "--dir", str(stack.folder)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr[-2000:]
    assert "stopped" in result.stdout
    leader.wait(timeout=10)
    assert [pid for pid in pids if running(pid)] == []
    assert not stack.folder.exists()


# The process owning a test stack: it starts a tree, says so, then waits, or exits at once.
OWNER = r"""
import sys, time
from pathlib import Path
from tools.stack import Stack

folder, noted, server_dsn, ending = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
stack = Stack.create(folder, name="ewssync_stack_owner", server_dsn=server_dsn)
(stack.home / "logs").mkdir(parents=True)
stack.stop_with_this_process()
stack.spawn("tree", [sys.executable, "-c", sys.argv[5], noted, "polite"])
print("started", flush=True)
if ending == "exit":
    while not Path(noted).exists() or len(Path(noted).read_text().split()) < int(sys.argv[6]):
        time.sleep(0.05)
    sys.exit(0)
time.sleep(600)
"""


@pytest.mark.parametrize("ending", ["SIGTERM", "SIGINT", "exit"])
def test_a_test_stack_ends_with_the_process_that_owns_it(ending, tmp_path, pg_server):
    noted = tmp_path / "noted"
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path / "up"), str(noted), pg_server, ending, TREE,
         str(TREE_SIZE)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert owner.stdout.readline().strip() == "started", owner.stderr.read()
        pids = wait_for_tree(noted)
        if ending != "exit":
            owner.send_signal(getattr(signal, ending))
        returncode = owner.wait(timeout=60)
    finally:
        if owner.poll() is None:
            owner.kill()
    assert [pid for pid in pids if running(pid)] == []
    if ending == "SIGTERM":  # the owner still ends by the signal, as it would have
        assert returncode == -signal.SIGTERM
    elif ending == "SIGINT":  # KeyboardInterrupt, as without the stack
        assert returncode != 0 and "KeyboardInterrupt" in owner.stderr.read()
    else:
        assert returncode == 0
