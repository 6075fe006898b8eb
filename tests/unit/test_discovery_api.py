"""Discovery through Airflow's REST API: token, pages, the `ews` filter, the cache and its
fallback when the api-server does not answer. A small HTTP server stands in for the api-server
(the real one is exercised by tests/e2e)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from ewssync import discovery


class FakeApiServer:
    """/auth/token and paged /api/v2/connections, counting requests."""

    def __init__(self, connections: list[dict], password: str):
        self.connections = connections
        self.password = password
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):  # noqa: N802
                outer.requests.append(self.path)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if body == {"username": "svc", "password": outer.password}:
                    self._send(201, {"access_token": "tok"})
                else:
                    self._send(401, {"detail": "Invalid credentials"})

            def do_GET(self):  # noqa: N802
                outer.requests.append(self.path)
                if self.headers.get("Authorization") != "Bearer tok":
                    self._send(401, {"detail": "Not authenticated"})
                    return
                query = parse_qs(urlsplit(self.path).query)
                limit, offset = int(query["limit"][0]), int(query["offset"][0])
                page = outer.connections[offset : offset + min(limit, 100)]
                self._send(200, {"connections": page, "total_entries": len(outer.connections)})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def api_row(conn_id: str, conn_type: str = "ews") -> dict:
    return {
        "connection_id": conn_id, "conn_type": conn_type, "description": None,
        "host": "https://mail.example.com/EWS/Exchange.asmx", "login": f"{conn_id}@example.com",
        "schema": None, "port": None, "password": "***", "team_name": None,
        "extra": json.dumps({"app_user": conn_id}),
    }  # fmt: skip


@pytest.fixture
def fake_api(monkeypatch, tmp_path):
    rows = [api_row(f"ews_{i:03d}") for i in range(230)] + [api_row("pg", "postgres")]
    server = FakeApiServer(rows, "svc-Pa55")
    monkeypatch.setenv(
        "AIRFLOW_CONN_EWSSYNC_AIRFLOW_API",
        json.dumps(
            {"conn_type": "http", "host": server.url, "login": "svc", "password": "svc-Pa55"}
        ),
    )
    monkeypatch.setattr(discovery.tempfile, "gettempdir", lambda: str(tmp_path))
    try:
        yield server
    finally:
        server.close()


def test_every_page_is_read_and_only_ews_connections_are_kept(fake_api):
    found = discovery.connections_from_api({"EWSSYNC_DISCOVERY_CACHE_SECONDS": "0"})
    assert len(found) == 230 and "pg" not in found
    assert found["ews_007"].login == "ews_007@example.com"
    assert found["ews_007"].password is None
    pages = [path for path in fake_api.requests if path.startswith("/api/v2/connections")]
    assert len(pages) == 3


def test_the_listing_is_cached_and_kept_when_the_api_server_is_down(fake_api):
    environ = {"EWSSYNC_DISCOVERY_CACHE_SECONDS": "60"}
    assert len(discovery.connections_from_api(environ)) == 230
    asked = len(fake_api.requests)
    assert len(discovery.connections_from_api(environ)) == 230
    assert len(fake_api.requests) == asked  # served from the cache
    fake_api.connections.pop(0)
    assert len(discovery.connections_from_api({"EWSSYNC_DISCOVERY_CACHE_SECONDS": "0"})) == 229
    fake_api.close()  # a restarting api-server must not make every DAG disappear
    assert len(discovery.connections_from_api({"EWSSYNC_DISCOVERY_CACHE_SECONDS": "0"})) == 229


def test_a_wrong_service_account_password_lists_nothing_and_says_why(fake_api, caplog):
    fake_api.password = "changed"
    assert discovery.connections_from_api({"EWSSYNC_DISCOVERY_CACHE_SECONDS": "0"}) == {}
    assert "auth/token answered 401" in caplog.text


def test_without_a_service_account_the_api_is_not_asked(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_EWSSYNC_AIRFLOW_API", raising=False)
    assert discovery.connections_from_api({"EWSSYNC_API_CONN_ID": "no_such_conn_xyz"}) == {}


@pytest.mark.parametrize(
    ("host", "port", "schema", "url"),
    [
        ("http://airflow-apiserver:8080/", None, None, "http://airflow-apiserver:8080"),
        ("airflow.example.com", 443, None, "https://airflow.example.com:443"),
        ("localhost", 8080, None, "http://localhost:8080"),
        ("localhost", 8443, "https", "https://localhost:8443"),
    ],
)
def test_the_api_base_url_comes_from_the_service_account_connection(host, port, schema, url):
    assert discovery.api_base_url(host, port, schema) == url
