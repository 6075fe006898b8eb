"""build_dag(conn_id, settings) -> the sync DAG of one Exchange connection."""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from ewssync import pipeline
from ewssync.errors import EwsSyncError
from ewssync.settings import SyncSettings

log = logging.getLogger(__name__)

DAG_PREFIX = "ewssync__"
TAGS = ["ewssync", "exchange", "calendar"]
START_DATE = datetime(2026, 1, 1)


def dag_id_for(conn_id: str) -> str:
    return f"{DAG_PREFIX}{conn_id}"


def _default_args(conn_id: str) -> dict:
    # Deployment-wide knobs (not connection settings): how patient a failing task is.
    retry_delay = float(os.environ.get("EWSSYNC_RETRY_DELAY_SECONDS", "30"))
    return {
        "owner": "data-team",
        "retries": int(os.environ.get("EWSSYNC_RETRIES", "3")),
        "retry_delay": timedelta(seconds=retry_delay),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "on_failure_callback": _failure_callback(conn_id),
    }


def _failure_callback(conn_id: str):
    def record(context) -> None:
        pipeline.record_failure(conn_id, context["run_id"], context.get("exception") or "failed")

    return record


def _doc_md(settings: SyncSettings) -> str:
    rows = "\n".join(f"| {key} | `{value}` |" for key, value in settings.public_dict().items())
    return (
        f"### Exchange calendar sync: `{settings.conn_id}`\n\n"
        f"{settings.title or ''}\n\n"
        "check (settings + connection test) -> extract -> transform -> load -> report. "
        "Trigger with `full_resync: true` to re-read the whole window.\n\n"
        f"| setting | value |\n|---|---|\n{rows}\n"
    )


def build_dag(conn_id: str, settings: SyncSettings) -> DAG:
    """The sync DAG of one connection: check -> extract -> transform -> load -> report."""
    schedule = None if settings.schedule in (None, "none") else settings.schedule
    with DAG(
        dag_id=dag_id_for(conn_id),
        description=f"Exchange <-> PostgreSQL calendar sync for {conn_id}",
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=not settings.activated,
        default_args=_default_args(conn_id),
        tags=TAGS,
        doc_md=_doc_md(settings),
        params={
            "full_resync": Param(False, type="boolean", description="Re-read the whole window"),
            "allow_mass_delete": Param(
                False,
                type="boolean",
                description="Let this run delete more than half of the synced appointments",
            ),
        },
    ) as dag:

        @task(task_id="check", retries=0)
        def check() -> dict:
            current = pipeline.load_settings(conn_id)
            if not current.activated:
                raise AirflowSkipException(f"connection {conn_id!r} is not activated")
            result = pipeline.check(
                current, pipeline.calendar_dsn(), pipeline.open_calendar(current)
            )
            return {"user_id": result["user_id"], "report": result["report"]}

        @task(task_id="extract")
        def extract() -> dict:
            context = get_current_context()
            current = pipeline.load_settings(conn_id)
            return pipeline.extract(
                current,
                pipeline.calendar_dsn(),
                pipeline.open_calendar(current),
                context["run_id"],
                pipeline.window_anchor(context),
                full_resync=bool(context["params"].get("full_resync")),
            )

        @task(task_id="transform")
        def transform() -> dict:
            context = get_current_context()
            current = pipeline.load_settings(conn_id)
            return pipeline.transform_staged(current, pipeline.calendar_dsn(), context["run_id"])

        @task(task_id="load")
        def load() -> dict:
            context = get_current_context()
            current = pipeline.load_settings(conn_id)
            return pipeline.load(
                current,
                pipeline.calendar_dsn(),
                context["run_id"],
                allow_mass_delete=bool(context["params"].get("allow_mass_delete")),
            )

        @task(task_id="report")
        def report() -> dict:
            context = get_current_context()
            current = pipeline.load_settings(conn_id)
            return pipeline.report(current, pipeline.calendar_dsn(), context["run_id"])

        check() >> extract() >> transform() >> load() >> report()
    return dag


def build_broken_dag(conn_id: str, error: Exception) -> DAG:
    """A DAG that shows why a connection cannot sync, instead of breaking the whole file."""
    message = str(error)
    with DAG(
        dag_id=dag_id_for(conn_id),
        description=f"ewssync: connection {conn_id} has invalid settings",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        tags=[*TAGS, "invalid-settings"],
        default_args={"owner": "data-team", "retries": 0},
        doc_md=f"### Invalid settings for `{conn_id}`\n\n```\n{message}\n```\n\nFix the connection.",
    ) as dag:

        @task(task_id="check")
        def check() -> None:
            # Re-read: the connection may have been fixed since this file was parsed.
            pipeline.load_settings(conn_id)
            raise EwsSyncError(message)

        check()
    return dag


def build_all(connections: dict[str, Any]) -> dict[str, DAG]:
    """One DAG per connection (ewssync.discovery's records); a connection whose settings cannot
    be parsed gets a DAG that explains why. The password is not needed for a DAG's shape and is
    checked when the tasks run."""
    dags: dict[str, DAG] = {}
    for conn_id, connection in connections.items():
        try:
            settings = SyncSettings.from_connection(connection, require_password=False)
            dag = build_dag(conn_id, settings)
        except Exception as exc:
            log.warning("ewssync: connection %s: %s", conn_id, exc)
            dag = build_broken_dag(conn_id, exc)
        dags[dag.dag_id] = dag
    return dags
