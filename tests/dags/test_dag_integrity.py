"""The DAG file parses with good, broken and deactivated `ews` connections side by side."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.dags.conftest import ews_connection

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dagbag(airflow_env):
    def parse():
        from airflow.dag_processing.dagbag import DagBag

        return DagBag(dag_folder=str(REPO / "dags"))

    return parse


def test_one_dag_per_connection_and_a_broken_one_does_not_break_the_others(airflow_env, dagbag):
    url = "http://127.0.0.1:9/EWS/Exchange.asmx"  # parsing never talks to Exchange
    airflow_env.setenv(
        "AIRFLOW_CONN_EWS_GOOD", ews_connection(url, "alice@example.com", "pw", app_user="alice")
    )
    airflow_env.setenv(
        "AIRFLOW_CONN_EWS_BROKEN",
        ews_connection(url, "bob@example.com", "pw", app_user="bob", weeks_back=-3),
    )
    airflow_env.setenv(
        "AIRFLOW_CONN_EWS_OFF",
        ews_connection(url, "carol@example.com", "pw", app_user="carol", activated=False),
    )
    bag = dagbag()
    assert bag.import_errors == {}
    assert {"ewssync__ews_good", "ewssync__ews_broken", "ewssync__ews_off"} <= set(bag.dag_ids)

    good = bag.get_dag("ewssync__ews_good")
    assert [t.task_id for t in good.tasks] == [
        "check",
        "extract",
        "transform",
        "load",
        "push",
        "report",
    ]
    assert good.max_active_runs == 1 and good.catchup is False
    assert "ewssync" in good.tags and good.owner == "data-team"
    assert good.default_args["retries"] >= 1
    assert "pw" not in good.doc_md and "alice@example.com" in good.doc_md

    broken = bag.get_dag("ewssync__ews_broken")
    assert "invalid-settings" in broken.tags
    assert "weeks_back" in broken.doc_md

    off = bag.get_dag("ewssync__ews_off")
    assert off.is_paused_upon_creation is True


# A connection added with `airflow connections add` (metadata DB) is listed through the REST API
# by a running stack: tests/e2e/test_airflow_stack.py.
