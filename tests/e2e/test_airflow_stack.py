"""End to end on real Airflow processes (api-server, scheduler, dag-processor, triggerer, Celery
worker), driven through the REST API as the UI drives it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest

from tests.e2e.conftest import wait_for

# the session's stack starts (about a minute) and stops inside this test's time limit
pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

GOOD, BAD, CLI = "ews_e2e_good", "ews_e2e_badpw", "ews_e2e_cli"
DAG_BOUND = 120  # seconds from saving a connection to its DAG (and from deleting it to none)


def airflow_cli(stack, *args: str) -> subprocess.CompletedProcess:
    """The airflow CLI as another terminal runs it after `. .up/env.sh`."""
    airflow = Path(sys.executable).parent / "airflow"
    return subprocess.run(
        [str(airflow), *args], env=stack.environment(), capture_output=True, text=True, timeout=300
    )


def test_a_connection_saved_through_the_api_gets_its_dag_runs_on_celery_and_goes_away(stack, api):
    extra = {"app_user": "demo", "exchange_timezone": "Europe/Berlin"}
    api.add_ews_connection(GOOD, stack.sim_url, "demo@example.com", stack.sim_password, **extra)
    api.add_ews_connection(BAD, stack.sim_url, "demo@example.com", "not-the-password", **extra)
    saved = time.monotonic()
    # the same mailbox for another app user (one connection per mailbox *and app user*); manual
    # runs only: step 3 makes it a duplicate of GOOD
    with psycopg2.connect(stack.calendar_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO calendar.users (login, email) VALUES ('demo_cli', 'demo@example.com')"
        )
    cli_extra = {**extra, "app_user": "demo_cli", "schedule": "none"}
    added = airflow_cli(
        stack, "connections", "add", CLI, "--conn-type", "ews", "--conn-host", stack.sim_url,
        "--conn-login", "demo@example.com", "--conn-password", stack.sim_password,
        "--conn-extra", json.dumps(cli_extra),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr

    # 1. the three DAGs appear, without a restart
    for conn_id in (GOOD, BAD, CLI):
        wait_for(
            f"DAG of {conn_id}",
            lambda conn_id=conn_id: (api.dag(f"ewssync__{conn_id}") or {}).get("is_stale") is False,
            timeout=DAG_BOUND - (time.monotonic() - saved),
        )

    # 2. Test, as the connection form sends it (stored password masked)
    stored = api.ok("GET", f"/connections/{GOOD}")
    tested = api.ok("POST", "/connections/test", json={**stored, "password": "***"})
    assert tested["status"] is True, tested
    assert "General connection: OK" in tested["message"]
    assert "Send/receive data: OK" in tested["message"]

    # ... as the list page's Test button sends it: every stored field, port Number(null) = 0
    list_page = {**stored, "password": stored["password"] or "", "port": 0}
    tested = api.ok("POST", "/connections/test", json=list_page)
    assert tested["status"] is True, tested
    assert tested["message"].splitlines()[0].startswith("General connection: OK")
    assert tested["message"].splitlines()[1].startswith("Send/receive data: OK")

    # ... and as `airflow connections test` runs it, printing both parts
    tested = airflow_cli(stack, "connections", "test", CLI)
    assert "Connection success!" in tested.stdout, tested.stdout + tested.stderr
    output = tested.stdout + tested.stderr
    assert "General connection: OK" in output and "Send/receive data: OK" in output, output

    # 3. trigger both; the good run succeeds on the Celery worker, the other fails at check
    runs = {conn_id: api.trigger(f"ewssync__{conn_id}") for conn_id in (GOOD, BAD)}
    for conn_id, run_id in runs.items():
        wait_for(
            f"run {run_id} of {conn_id} finished",
            lambda conn_id=conn_id, run_id=run_id: (
                api.run_state(f"ewssync__{conn_id}", run_id) in ("success", "failed")
            ),
            timeout=240,
        )
    good = api.task_instances(f"ewssync__{GOOD}", runs[GOOD])
    failed = [task for task, ti in good.items() if ti["state"] == "failed"]
    assert {task: ti["state"] for task, ti in good.items()} == dict.fromkeys(
        ("check", "extract", "transform", "load", "push", "report"), "success"
    ), "\n".join(api.task_log(f"ewssync__{GOOD}", runs[GOOD], task)[-4000:] for task in failed)
    assert {ti["queue"] for ti in good.values()} == {stack.queue}  # the stack's Celery queue
    with psycopg2.connect(stack.calendar_dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM calendar.live_appointments a JOIN calendar.users u "
            "ON u.id = a.owner_user_id WHERE u.login = 'demo'"
        )
        assert cur.fetchone()[0] > 20
        cur.execute(
            "SELECT status FROM ewssync.sync_runs WHERE conn_id = %s AND run_key = %s",
            (GOOD, runs[GOOD]),
        )
        assert cur.fetchone() == ("success",)

    # CLI edited to GOOD's app user: a second connection for the same mailbox and app user.
    # Its test says so, and its check fails at once, naming GOOD (which claimed the mailbox).
    api.ok(
        "PATCH",
        f"/connections/{CLI}",
        params={"update_mask": "extra"},
        json={
            "connection_id": CLI,
            "conn_type": "ews",
            "extra": json.dumps({**cli_extra, **extra}),
        },
    )
    tested = airflow_cli(stack, "connections", "test", CLI)
    output = tested.stdout + tested.stderr
    assert "One connection per mailbox: FAILED" in output, output
    assert f"by connection '{GOOD}'" in output, output
    duplicate = api.trigger(f"ewssync__{CLI}")
    wait_for(
        f"run {duplicate} of {CLI} finished",
        lambda: api.run_state(f"ewssync__{CLI}", duplicate) in ("success", "failed"),
        timeout=240,
    )
    assert api.task_instances(f"ewssync__{CLI}", duplicate)["check"]["state"] == "failed"
    log = api.task_log(f"ewssync__{CLI}", duplicate, "check")
    assert f"by connection '{GOOD}'" in log and "allow_duplicate_mailbox" in log, log[-3000:]

    assert api.run_state(f"ewssync__{BAD}", runs[BAD]) == "failed"
    bad = api.task_instances(f"ewssync__{BAD}", runs[BAD])
    assert bad["check"]["state"] == "failed"
    assert bad["check"]["try_number"] == 1
    log = api.task_log(f"ewssync__{BAD}", runs[BAD], "check")
    assert "General connection: FAILED" in log, log[-3000:]

    # 4. deleting a connection removes its DAG
    api.ok("DELETE", f"/connections/{BAD}")
    assert airflow_cli(stack, "connections", "delete", CLI).returncode == 0
    deleted = time.monotonic()
    wait_for(
        f"DAG of deleted {BAD} gone",
        lambda: all(
            (api.dag(f"ewssync__{conn_id}") or {"is_stale": True}).get("is_stale") is True
            for conn_id in (BAD, CLI)
        ),
        timeout=DAG_BOUND - (time.monotonic() - deleted),
    )
    assert api.dag(f"ewssync__{GOOD}")["is_stale"] is False
