"""DAG parsing with many `ews` connections: the DAG processor's view of dags/ewssync_dags.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Run in a fresh interpreter, as the DAG processor's parsing process does, and report the time
# DagBag itself measured for the file(s).
_PARSE = textwrap.dedent(
    """
    import json, sys, time
    started = time.perf_counter()
    from airflow.dag_processing.dagbag import DagBag
    imported = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1])
    done = time.perf_counter()
    print(json.dumps({
        "dags": len(bag.dag_ids),
        "import_errors": len(bag.import_errors),
        "parse_seconds": done - imported,
        "airflow_import_seconds": imported - started,
    }))
    """
)


def _connections(n: int) -> dict[str, str]:
    env = {}
    for i in range(n):
        env[f"AIRFLOW_CONN_EWS_BENCH_{i:04d}"] = json.dumps(
            {
                "conn_type": "ews",
                "host": "http://127.0.0.1:9/EWS/Exchange.asmx",
                "login": f"tech{i}@example.com",
                "password": "pw",
                "extra": {"app_user": f"tech{i}", "exchange_timezone": "Europe/Berlin"},
            }
        )
    return env


def _parse(folder: Path, env: dict[str, str]) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _PARSE, str(folder)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure_parse(n: int, airflow_env: dict[str, str]) -> dict[str, dict]:
    """Ours (one file, discovery, one DAG per connection) and the naive baseline (one generated
    file per connection, each reading its own connection)."""
    env = {**os.environ, **airflow_env, **_connections(n)}
    ours = _parse(REPO / "dags", env)
    with tempfile.TemporaryDirectory(prefix="ewssync-naive-dags-") as folder:
        for i in range(n):
            conn_id = f"ews_bench_{i:04d}"
            Path(folder, f"sync_{conn_id}.py").write_text(
                "from airflow.sdk import Connection\n"
                "from ewssync.dag_factory import build_dag\n"
                "from ewssync.settings import SyncSettings\n"
                f"dag = build_dag({conn_id!r}, "
                f"SyncSettings.from_connection(Connection.get({conn_id!r})))\n"
            )
        naive = _parse(Path(folder), env)
    return {"ours": ours, "naive": naive}
