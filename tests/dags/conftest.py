"""Helpers to run the generated DAGs for real: parse dags/ like `airflow dags test`, then dag.test()."""

from __future__ import annotations

import json
from datetime import datetime

import pytest


def ews_connection(url: str, login: str, password: str, **extra) -> str:
    """An AIRFLOW_CONN_* value (JSON) for an `ews` connection."""
    return json.dumps(
        {
            "conn_type": "ews",
            "description": f"Mailbox of {login}",
            "host": url,
            "login": login,
            "password": password,
            "extra": extra,
        }
    )


@pytest.fixture
def airflow_env(monkeypatch, airflow_db, pg_dsn):
    """Airflow with the calendar database registered as the ewssync_db connection."""
    monkeypatch.setenv("AIRFLOW_CONN_EWSSYNC_DB", pg_dsn)
    return monkeypatch


def run_dag(dag_id: str, when: datetime, conf: dict | None = None):
    """Parse dags/ (syncing it to the metadata DB, as `airflow dags test` does) and run one DAG
    run; return the DagRun."""
    from airflow.utils.cli import get_bagged_dag

    dag = get_bagged_dag(None, dag_id)
    return dag.test(run_after=when, logical_date=when, run_conf=conf)


def task_states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
