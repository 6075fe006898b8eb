"""`make up` (tools/stack.py) runs the same components with the same settings as the compose file."""

from __future__ import annotations

import json

import yaml

from tests.unit.test_compose import COMPOSE_FILE
from tools.stack import COMPONENTS, Stack

# Settings the local stack sets differently on purpose (README: "make up").
LOCAL_ONLY_DIFFERENCES = {"AIRFLOW__CORE__AUTH_MANAGER", "AIRFLOW_CONFIG"}


def compose_env() -> dict:
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return raw["x-airflow-common"]["environment"]


def test_same_components_as_compose(tmp_path):
    raw = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    commands = {
        service.get("command")
        for name, service in raw["services"].items()
        if name.startswith("airflow-") and isinstance(service.get("command"), str)
    }
    assert commands == {"api-server", "scheduler", "dag-processor", "triggerer", "celery worker"}
    assert {c.replace("celery-", "celery ") for c in COMPONENTS} == commands


def test_every_compose_setting_is_set_by_the_local_stack(tmp_path):
    local = Stack.create(tmp_path, name="ewssync_check_only").airflow_settings()
    missing = set(compose_env()) - set(local) - LOCAL_ONLY_DIFFERENCES
    assert not missing, f"compose sets these and make up does not: {sorted(missing)}"
    for key in ("AIRFLOW__CORE__EXECUTOR", "AIRFLOW__CORE__TEST_CONNECTION", "EWSSYNC_DB_CONN_ID"):
        assert str(compose_env()[key]) == local[key], key
    theme = "AIRFLOW__API__THEME"  # the test's two parts on two lines in the UI
    assert json.loads(compose_env()[theme]) == json.loads(local[theme])
    account = json.loads(local["AIRFLOW_CONN_EWSSYNC_AIRFLOW_API"])
    assert account["host"] == local["AIRFLOW__API__BASE_URL"]


def test_two_stacks_share_no_port_database_queue_or_redis_prefix(tmp_path):
    one = Stack.create(tmp_path / "one")
    two = Stack.create(tmp_path / "two")
    assert not set(one.ports.values()) & set(two.ports.values())
    for attribute in ("home", "metadata_db", "calendar_db", "queue", "redis_prefix"):
        assert getattr(one, attribute) != getattr(two, attribute), attribute
