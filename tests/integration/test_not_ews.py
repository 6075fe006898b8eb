"""A URL that is a web server but not EWS gets a message that says so, not exchangelib's dump."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ewssync.hook import EwsHook


class NotEws(BaseHTTPRequestHandler):
    """A web server that refuses POST, as an IIS site or a reverse proxy without EWS does."""

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        body = b"<html><body>405 Method Not Allowed</body></html>"
        self.send_response(405)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def not_ews_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), NotEws)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/owa/"
    finally:
        server.shutdown()
        server.server_close()


def test_http_405_reads_as_not_an_ews_endpoint(not_ews_url, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_EWS_NOT_EWS",
        json.dumps(
            {
                "conn_type": "ews", "host": not_ews_url, "login": "alice@example.com",
                "password": "Tr4ck-Pa55", "extra": {"app_user": "alice", "timeout_seconds": 5},
            }
        ),
    )  # fmt: skip
    ok, message = EwsHook(ews_conn_id="ews_not_ews").test_connection()
    assert not ok
    general, send_receive = message.splitlines()[:2]
    assert general.startswith("General connection: FAILED")
    assert "this URL does not answer like an EWS endpoint (HTTP 405" in general
    assert "headers" not in message and "Allow" not in message
    assert send_receive.startswith("Send/receive data: not run")
