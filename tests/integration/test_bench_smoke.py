"""`make bench` runs end to end on a tiny mailbox (figures are printed, never asserted)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_bench_runs_on_a_tiny_mailbox(pg_server, tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    env = {
        **os.environ,
        "EWSSYNC_TEST_DSN": pg_server,
        "EWSSYNC_BENCH_ITEMS": "60",
        "EWSSYNC_BENCH_SERIES": "3",
        "EWSSYNC_BENCH_LATENCIES": "0,0.001",
        "EWSSYNC_BENCH_SCALE_ITEMS": "100",
        "EWSSYNC_BENCH_CONNECTIONS": "5",
        "EWSSYNC_BENCH_MERGE_ROWS": "500",
        "EWSSYNC_BENCH_BASELINE_SAMPLE": "5",
        "EWSSYNC_BENCH_PUSH_NEW": "30",
        "EWSSYNC_BENCH_PUSH_CHANGED": "5",
        "EWSSYNC_BENCH_PUSH_DELETED": "5",
        "EWSSYNC_BENCH_PUSH_BASELINE_SAMPLE": "4",
        "EWSSYNC_BENCH_OUT": str(out),
    }
    result = subprocess.run(
        [sys.executable, "-m", "bench"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    for scenario in (
        "initial sync, 60 appointments (3 series), 0 ms/request",
        "initial sync, 60 appointments (3 series), 1 ms/request",
        "client CPU per 1,000 items",
        "initial sync, 100 appointments (3 series), 0 ms/request",
        "peak RSS per task process",
        "no-change run",
        "changed items",
        "merge of",
        "DAG parsing",
        "push 30 new",
        "push 5 changed",
        "inside the steps / starting the 4 processes",
        "targets (issue #14): no-change DAG run: 2 requests (met)",
    ):
        assert scenario in result.stdout
    text = out.read_text()
    assert "| scenario" in text and "naive baseline" in text
