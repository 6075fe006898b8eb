"""Errors another try cannot fix fail the task at once; the others are left to Airflow's retries."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from ewssync.dag_factory import build_dag, fail_fast
from ewssync.discovery import ConnectionFields
from ewssync.errors import ExchangeError, SafetyStop, SettingsError
from ewssync.settings import SyncSettings


@pytest.mark.parametrize(
    "error", [SafetyStop("would delete 30 of 40"), SettingsError("ews_a", "weeks_back", "too big")]
)
def test_a_safety_stop_or_invalid_settings_fail_without_retries(error):
    @fail_fast
    def step():
        raise error

    with pytest.raises(AirflowFailException, match=str(error)[:20]) as raised:
        step()
    assert raised.value.__cause__ is error


def test_other_errors_stay_retryable():
    @fail_fast
    def step():
        raise ExchangeError("server busy")

    with pytest.raises(ExchangeError):
        step()


def test_every_task_of_a_sync_dag_fails_fast():
    fields = ConnectionFields(
        conn_id="ews_a", conn_type="ews", host="http://127.0.0.1:9/EWS/Exchange.asmx",
        login="a@example.com", description=None, port=None, schema=None, extra={"app_user": "a"},
    )  # fmt: skip
    settings = SyncSettings.from_connection(fields, require_password=False)
    dag = build_dag("ews_a", settings)
    for task in dag.tasks:
        assert getattr(task.python_callable, "__wrapped__", None) is not None, task.task_id
