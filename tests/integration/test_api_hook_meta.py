"""The Airflow API server lists the `ews` connection type with its form (hook metadata)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ewssync.settings import EXTRA_FIELDS

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
# Airflow 3.3 serves the connection form's metadata to its UI here; the brief's
# /api/v2/connections/hook_meta does not exist in 3.3 (checked), so both are tried.
PATHS = ("/ui/connections/hook_meta", "/api/v2/connections/hook_meta")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str | None = None):
    request = urllib.request.Request(url)  # noqa: S310 - loopback only
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback only
        return json.loads(answer.read())


@pytest.fixture
def api_server(tmp_path):
    port = _free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
    }
    subprocess.run([AIRFLOW, "db", "migrate"], env=env, check=True, capture_output=True)
    log = (tmp_path / "api-server.log").open("w")
    server = subprocess.Popen(
        [AIRFLOW, "api-server", "--port", str(port), "--host", "127.0.0.1", "--workers", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if server.poll() is not None:
                pytest.fail((tmp_path / "api-server.log").read_text()[-3000:])
            try:
                _get(f"{base}/api/v2/monitor/health")
                break
            except (OSError, urllib.error.URLError):
                time.sleep(0.5)
        else:
            pytest.fail("the API server did not start within 60 s")
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _token(base: str) -> str | None:
    try:
        return _get(f"{base}/auth/token").get("access_token")
    except (OSError, urllib.error.URLError, ValueError):
        return None


@pytest.mark.slow
def test_hook_meta_lists_ews_with_its_fields(api_server):
    token = _token(api_server)
    found = None
    for path in PATHS:
        try:
            found = _get(api_server + path, token)
            break
        except urllib.error.HTTPError as error:
            if error.code != 404:
                raise
    assert found is not None, "no hook_meta endpoint answered"
    ews = next(meta for meta in found if meta["connection_type"] == "ews")
    assert ews["hook_class_name"] == "ewssync.hook.EwsHook"
    assert ews["hook_name"] == "Exchange calendar (EWS)"
    extra = ews["extra_fields"]
    assert set(extra) == set(EXTRA_FIELDS)
    assert extra["use_2007_protocol"]["schema"]["type"] == ["boolean", "null"]
    assert extra["use_2007_protocol"]["value"] is False
    assert extra["weeks_ahead"]["value"] == 26
    assert extra["app_user"]["schema"]["title"] == "App user"
    assert extra["app_user"]["description"]
    standard = ews["standard_fields"]
    assert standard["host"]["title"] == "Server"
    assert standard["login"]["title"] == "User name"
    assert standard["description"]["title"] == "Title"
    assert standard["port"]["hidden"] is True
    assert standard["url_schema"]["hidden"] is True
