"""A real Airflow stack (tools/stack.py) for the end-to-end tests, and a REST client for it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tools.stack import ADMIN_USER, Stack

# Fast enough for a test, and still the code paths of a deployment: the DAG processor re-parses
# the file every 10 s and discovery's cached listing lives 5 s (defaults: 30 s and 20 s).
FAST_PARSING = {
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
    "EWSSYNC_DISCOVERY_CACHE_SECONDS": "5",
    "EWSSYNC_RETRY_DELAY_SECONDS": "1",
}


class AirflowApi:
    """Airflow's REST API as the UI uses it: a JWT from /auth/token, then /api/v2."""

    def __init__(self, base_url: str, user: str, password: str):
        self.client = httpx.Client(base_url=base_url, timeout=60)
        answer = self.client.post("/auth/token", json={"username": user, "password": password})
        answer.raise_for_status()
        self.client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    def request(self, method: str, path: str, **kwargs) -> httpx.Response:
        return self.client.request(method, f"/api/v2{path}", **kwargs)

    def ok(self, method: str, path: str, **kwargs) -> Any:
        answer = self.request(method, path, **kwargs)
        assert answer.is_success, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json() if answer.content else None

    def add_ews_connection(self, conn_id: str, url: str, login: str, password: str, **extra):
        return self.ok(
            "POST",
            "/connections",
            json={
                "connection_id": conn_id,
                "conn_type": "ews",
                "description": f"Mailbox of {login}",
                "host": url,
                "login": login,
                "password": password,
                "extra": json.dumps(extra),
            },
        )

    def dag(self, dag_id: str) -> dict | None:
        answer = self.request("GET", f"/dags/{dag_id}")
        return answer.json() if answer.status_code == 200 else None

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        self.ok("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
        run = self.ok(
            "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}}
        )
        return run["dag_run_id"]

    def run_state(self, dag_id: str, run_id: str) -> str:
        return self.ok("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict]:
        found = self.ok("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {ti["task_id"]: ti for ti in found["task_instances"]}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        answer = self.request(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            params={"full_content": True},
            headers={"Accept": "application/json"},
        )
        assert answer.is_success, answer.text
        content = answer.json().get("content")
        if isinstance(content, list):
            # structured lines: the exception's text is in error_detail, not in event
            return "\n".join(
                json.dumps(line) if isinstance(line, dict) else str(line) for line in content
            )
        return str(content)


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 2) -> Any:
    """Poll until probe() returns something truthy; fail naming what did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


@pytest.fixture(scope="session")
def stack(tmp_path_factory, pg_server) -> Stack:
    """A running stack for this test session, stopped (and its databases dropped) afterwards,
    also when a test fails; its processes die with the test process."""
    folder = tmp_path_factory.mktemp("stack")
    running = Stack.create(
        folder,
        server_dsn=pg_server,
        worker_concurrency=2,
        overrides=FAST_PARSING,
    )
    running.start(die_with_parent=True)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def api(stack) -> AirflowApi:
    return AirflowApi(stack.api_url, ADMIN_USER, stack.admin_password)
