"""build_dag(conn_id, settings) -> the sync DAG of one Exchange connection."""

from __future__ import annotations

import functools
import logging
import os
import re
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ewssync import pipeline
from ewssync.discovery import UnreadableConnection
from ewssync.errors import EwsSyncError, SafetyStop, SettingsError
from ewssync.settings import SyncSettings

log = logging.getLogger(__name__)

DAG_PREFIX = "ewssync__"
TAGS = ["ewssync", "exchange", "calendar"]
START_DATE = datetime(2026, 1, 1)


# Airflow's rule for DAG ids (airflow.utils.helpers.validate_key): letters, digits, '_', '-', '.'
# and at most 250 characters.
_DAG_ID = re.compile(r"^[A-Za-z0-9_.-]{1,250}$")
INVALID_IDS_DAG_ID = f"{DAG_PREFIX}invalid_connection_ids"


def dag_id_for(conn_id: str) -> str:
    return f"{DAG_PREFIX}{conn_id}"


def is_valid_dag_id(dag_id: str) -> bool:
    return bool(_DAG_ID.match(dag_id))


def _default_args(conn_id: str, settings: SyncSettings | None = None) -> dict:
    # Deployment-wide knobs (not connection settings): how patient a failing task is.
    retry_delay = float(os.environ.get("EWSSYNC_RETRY_DELAY_SECONDS", "30"))
    timeouts = {"execution_timeout": settings.task_timeout} if settings is not None else {}
    return {
        **timeouts,
        "owner": "data-team",
        "retries": int(os.environ.get("EWSSYNC_RETRIES", "3")),
        "retry_delay": timedelta(seconds=retry_delay),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "on_failure_callback": _failure_callback(conn_id),
    }


def _failure_callback(conn_id: str):
    def record(context) -> None:
        error = context.get("exception") or "failed"
        # A fail-fast error is wrapped in AirflowFailException; record the original.
        pipeline.record_failure(
            conn_id, context["run_id"], getattr(error, "__cause__", None) or error
        )

    return record


# Errors that another try cannot fix: a safety stop waits for a person, invalid settings for
# an edited connection. They fail the task at once instead of being retried with back-off.
FAIL_FAST = (SafetyStop, SettingsError)


def fail_fast(step):
    """Run a task body; re-raise FAIL_FAST errors as AirflowFailException (no retries)."""

    @functools.wraps(step)
    def run(*args, **kwargs):
        try:
            return step(*args, **kwargs)
        except FAIL_FAST as exc:
            raise AirflowFailException(str(exc)) from exc

    return run


class _TaskRun:
    """What a sync task reads when it runs: the connection's settings, read again (the
    connection may have been edited since the DAG was parsed), and the run's context. The
    calendar database and the Exchange client are asked for only when a step needs them."""

    def __init__(self, conn_id: str) -> None:
        self.settings = pipeline.load_settings(conn_id)
        self.context = get_current_context()

    @property
    def run_id(self) -> str:
        return self.context["run_id"]

    def param(self, name: str) -> bool:
        return bool(self.context["params"].get(name))

    def dsn(self) -> str:
        return pipeline.calendar_dsn()

    def calendar(self):
        return pipeline.open_calendar(self.settings)

    def anchor(self) -> datetime:
        return pipeline.window_anchor(self.context)


def _doc_md(settings: SyncSettings) -> str:
    rows = "\n".join(f"| {key} | `{value}` |" for key, value in settings.public_dict().items())
    return (
        f"### Exchange calendar sync: `{settings.conn_id}`\n\n"
        f"{settings.title or ''}\n\n"
        "check (settings + connection test) -> extract -> transform -> load (reconcile + merge) "
        "-> push (app changes to Exchange) -> report. "
        "Trigger with `full_resync: true` to re-read the whole window.\n\n"
        f"| setting | value |\n|---|---|\n{rows}\n"
    )


def build_dag(conn_id: str, settings: SyncSettings) -> DAG:
    """The sync DAG of one connection: check -> extract -> transform -> load -> push -> report."""
    schedule = None if settings.schedule in (None, "none") else settings.schedule
    with DAG(
        dag_id=dag_id_for(conn_id),
        description=f"Exchange <-> PostgreSQL calendar sync for {conn_id}",
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        dagrun_timeout=settings.run_timeout,
        is_paused_upon_creation=not settings.activated,
        default_args=_default_args(conn_id, settings),
        tags=TAGS,
        doc_md=_doc_md(settings),
        params={
            "full_resync": Param(False, type="boolean", description="Re-read the whole window"),
            "allow_mass_delete": Param(
                False,
                type="boolean",
                description="Let this run delete more than half of the synced appointments "
                "(in the app or in Exchange)",
            ),
            "move_app_user": Param(
                False,
                type="boolean",
                description="app_user was changed: move the appointments synced so far to it",
            ),
        },
    ) as dag:

        @task(task_id="check", retries=0)
        @fail_fast
        def check() -> dict:
            run = _TaskRun(conn_id)
            if not run.settings.activated:
                raise AirflowSkipException(f"connection {conn_id!r} is not activated")
            result = pipeline.check(
                run.settings, run.dsn(), run.calendar(), move_app_user=run.param("move_app_user")
            )
            return {"user_id": result["user_id"], "report": result["report"]}

        @task(task_id="extract")
        @fail_fast
        def extract() -> dict:
            run = _TaskRun(conn_id)
            return pipeline.extract(
                run.settings, run.dsn(), run.calendar(), run.run_id, run.anchor(),
                full_resync=run.param("full_resync"),
            )  # fmt: skip

        @task(task_id="transform")
        @fail_fast
        def transform() -> dict:
            run = _TaskRun(conn_id)
            return pipeline.transform_staged(run.settings, run.dsn(), run.run_id)

        @task(task_id="load")
        @fail_fast
        def load() -> dict:
            run = _TaskRun(conn_id)
            return pipeline.load(
                run.settings, run.dsn(), run.run_id,
                allow_mass_delete=run.param("allow_mass_delete"),
                move_app_user=run.param("move_app_user"),
            )  # fmt: skip

        @task(task_id="push")
        @fail_fast
        def push() -> dict:
            run = _TaskRun(conn_id)
            return pipeline.push(
                run.settings, run.dsn(), run.calendar(), run.run_id, run.anchor(),
                allow_mass_delete=run.param("allow_mass_delete"),
            )  # fmt: skip

        @task(task_id="report")
        @fail_fast
        def report() -> dict:
            run = _TaskRun(conn_id)
            return pipeline.report(run.settings, run.dsn(), run.run_id)

        check() >> extract() >> transform() >> load() >> push() >> report()
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
        @fail_fast
        def check() -> None:
            # Re-read: the connection may have been fixed since this file was parsed.
            pipeline.load_settings(conn_id)
            raise EwsSyncError(message)

        check()
    return dag


def build_invalid_ids_dag(problems: dict[str, str]) -> DAG:
    """One DAG naming the connections whose ids cannot be DAG ids (they get no DAG of their own)."""
    listing = "\n".join(f"- `{conn_id!r}`: {problem}" for conn_id, problem in problems.items())
    message = (
        "these ews connections have ids that cannot name a DAG (letters, digits, '_', '-', '.', "
        f"at most {250 - len(DAG_PREFIX)} characters); rename them:\n{listing}"
    )
    with DAG(
        dag_id=INVALID_IDS_DAG_ID,
        description="ewssync: connections whose ids cannot be DAG ids",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        tags=[*TAGS, "invalid-settings"],
        default_args={"owner": "data-team", "retries": 0},
        doc_md=f"### ewssync: connections without a DAG\n\n{message}",
    ) as dag:

        @task(task_id="check")
        def check() -> None:
            raise EwsSyncError(message)

        check()
    return dag


def build_all(connections: dict[str, Any]) -> dict[str, DAG]:
    """One DAG per connection (ewssync.discovery's records); a connection whose settings cannot
    be parsed gets a DAG that explains why. The password is not needed for a DAG's shape and is
    checked when the tasks run. A connection id that cannot be part of a DAG id is skipped (the
    others keep their DAGs) and named in the DAG ``ewssync__invalid_connection_ids``."""
    dags: dict[str, DAG] = {}
    invalid_ids: dict[str, str] = {}
    for conn_id, connection in connections.items():
        if not is_valid_dag_id(dag_id_for(conn_id)):
            problem = "not a valid DAG id"
            log.error("ewssync: connection %r gets no DAG: its id is %s", conn_id, problem)
            invalid_ids[conn_id] = problem
            continue
        try:
            if isinstance(connection, UnreadableConnection):
                raise EwsSyncError(connection.problem)
            settings = SyncSettings.from_connection(connection, require_password=False)
            dag = build_dag(conn_id, settings)
        except Exception as exc:
            log.warning("ewssync: connection %s: %s", conn_id, exc)
            dag = build_broken_dag(conn_id, exc)
        dags[dag.dag_id] = dag
    if invalid_ids:
        dag = build_invalid_ids_dag(invalid_ids)
        dags[dag.dag_id] = dag
    return dags
