"""End to end on real Airflow processes (api-server, scheduler, dag-processor, triggerer, Celery
worker), driven through the REST API as the UI drives it."""

from __future__ import annotations

import time

import psycopg2
import pytest

from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GOOD, BAD = "ews_e2e_good", "ews_e2e_badpw"
DAG_BOUND = 120  # seconds from saving a connection to its DAG (and from deleting it to none)


def test_a_connection_saved_through_the_api_gets_its_dag_runs_on_celery_and_goes_away(stack, api):
    extra = {"app_user": "demo", "exchange_timezone": "Europe/Berlin"}
    api.add_ews_connection(GOOD, stack.sim_url, "demo@example.com", stack.sim_password, **extra)
    api.add_ews_connection(BAD, stack.sim_url, "demo@example.com", "not-the-password", **extra)
    saved = time.monotonic()

    # 1. both DAGs appear, without a restart
    for conn_id in (GOOD, BAD):
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
    assert {task: ti["state"] for task, ti in good.items()} == dict.fromkeys(
        ("check", "extract", "transform", "load", "report"), "success"
    )
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

    assert api.run_state(f"ewssync__{BAD}", runs[BAD]) == "failed"
    bad = api.task_instances(f"ewssync__{BAD}", runs[BAD])
    assert bad["check"]["state"] == "failed"
    assert bad["check"]["try_number"] == 1
    log = api.task_log(f"ewssync__{BAD}", runs[BAD], "check")
    assert "General connection: FAILED" in log, log[-3000:]

    # 4. deleting a connection removes its DAG
    api.ok("DELETE", f"/connections/{BAD}")
    deleted = time.monotonic()
    wait_for(
        f"DAG of deleted {BAD} gone",
        lambda: (api.dag(f"ewssync__{BAD}") or {"is_stale": True}).get("is_stale") is True,
        timeout=DAG_BOUND - (time.monotonic() - deleted),
    )
    assert api.dag(f"ewssync__{GOOD}")["is_stale"] is False
