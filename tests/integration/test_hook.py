"""EwsHook as Airflow uses it: the registered connection type, the form, the Test button, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ewssync.hook import EwsHook
from ewssync.provider_info import get_provider_info
from ewssync.settings import EXTRA_FIELDS

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


def conn_json(sim, **extra) -> str:
    return json.dumps(
        {
            "conn_type": "ews",
            "host": sim.url,
            "login": "alice@example.com",
            "password": "secret",
            "description": "Alice",
            "extra": {"app_user": "alice", "timeout_seconds": 5, **extra},
        }
    )


def test_provider_registers_the_connection_type():
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert "ewssync" in manager.providers
    assert manager.hooks["ews"].hook_class_name == "ewssync.hook.EwsHook"
    (conn_type,) = get_provider_info()["connection-types"]
    assert set(conn_type["conn-fields"]) == set(EXTRA_FIELDS)


def test_hook_declares_its_form():
    assert (EwsHook.conn_type, EwsHook.default_conn_name, EwsHook.conn_name_attr) == (
        "ews",
        "ews_default",
        "ews_conn_id",
    )
    behaviour = EwsHook.get_ui_field_behaviour()
    assert behaviour["hidden_fields"] == ["schema", "port"]
    assert behaviour["relabeling"]["host"] == "Server"
    assert behaviour["relabeling"]["login"] == "User name"
    assert behaviour["relabeling"]["description"] == "Title"


def test_test_connection_passes(sim, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_EWS_HOOK_OK", conn_json(sim))
    hook = EwsHook(ews_conn_id="ews_hook_ok")
    assert hook.get_settings().mailbox == "alice@example.com"
    ok, message = hook.test_connection()
    assert ok, message
    assert message.splitlines()[0].startswith("General connection: OK")
    assert message.splitlines()[1].startswith("Send/receive data: OK")


def test_test_connection_honours_test_write(sim, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_EWS_HOOK_RO", conn_json(sim, test_write=False))
    ok, message = EwsHook(ews_conn_id="ews_hook_ro").test_connection()
    assert ok, message
    assert sim.request_counts["CreateItem"] == 0


def test_test_connection_reports_invalid_settings(sim, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_EWS_HOOK_BAD", conn_json(sim, weeks_ahed=3))
    ok, message = EwsHook(ews_conn_id="ews_hook_bad").test_connection()
    assert not ok
    assert "'ews_hook_bad'" in message and "'weeks_ahed'" in message
    assert "did you mean 'weeks_ahead'" in message


def test_get_calendar_reads(sim, monkeypatch):
    from datetime import UTC, datetime

    monkeypatch.setenv("AIRFLOW_CONN_EWS_HOOK_CAL", conn_json(sim))
    start = datetime(2026, 5, 6, 9, tzinfo=UTC)
    item = sim.mailbox("alice@example.com").create(
        subject="x", start=start, end=start.replace(hour=10)
    )
    calendar = EwsHook(ews_conn_id="ews_hook_cal").get_calendar()
    index = calendar.read_index(datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 5, 9, tzinfo=UTC))
    assert [entry["item_id"] for entry in index] == [item]


@pytest.mark.slow
def test_cli_add_and_test(sim, tmp_path):
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }

    def airflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=120
        )

    assert airflow("db", "migrate").returncode == 0
    added = airflow(
        "connections", "add", "ews_cli",
        "--conn-type", "ews",
        "--conn-host", sim.url,
        "--conn-login", "alice@example.com",
        "--conn-password", "secret",
        "--conn-extra", json.dumps({"app_user": "alice", "timeout_seconds": 5}),
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    stored = json.loads(airflow("connections", "get", "ews_cli", "-o", "json").stdout)
    assert stored[0]["conn_type"] == "ews"
    tested = airflow("connections", "test", "ews_cli")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "Connection success!" in tested.stdout
    airflow(
        "connections", "add", "ews_cli_bad",
        "--conn-type", "ews",
        "--conn-host", sim.url,
        "--conn-login", "alice@example.com",
        "--conn-password", "not-the-password",
        "--conn-extra", json.dumps({"app_user": "alice", "timeout_seconds": 5}),
    )  # fmt: skip
    failed = airflow("connections", "test", "ews_cli_bad")
    assert "Connection failed!" in failed.stdout
    assert "General connection: FAILED" in failed.stdout
    assert "Send/receive data: not run" in failed.stdout
    assert "not-the-password" not in failed.stdout + failed.stderr
