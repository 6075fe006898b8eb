"""The api-server middleware that makes the list page's Test button work for `ews` connections."""

from __future__ import annotations

import asyncio
import json

from ewssync.airflow_plugin import ConnectionTestPortZero, EwsSyncPlugin, without_port_zero


def list_page_body(conn_type: str = "ews", port=0) -> bytes:
    # what Airflow 3.3.2's connection list page posts: port is Number(connection.port)
    return json.dumps(
        {"connection_id": "ews_a", "conn_type": conn_type, "host": "https://mail.example.com",
         "login": "a@example.com", "password": "***", "port": port, "schema": "", "extra": "{}"}
    ).encode()  # fmt: skip


def test_port_zero_of_an_ews_connection_means_no_port():
    assert json.loads(without_port_zero(list_page_body()))["port"] is None
    assert without_port_zero(list_page_body(port=8443)) == list_page_body(port=8443)
    assert without_port_zero(list_page_body("postgres")) == list_page_body("postgres")
    assert without_port_zero(b"not json") == b"not json"


def call(path: str, method: str, chunks: list[bytes]) -> tuple[bytes, dict]:
    seen: dict = {}

    async def app(scope, receive, send):
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen["body"], seen["headers"] = body, dict(scope["headers"])

    messages = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]

    async def receive():
        return messages.pop(0)

    scope = {"type": "http", "method": method, "path": path, "headers": [(b"x", b"1")]}
    asyncio.run(ConnectionTestPortZero(app)(scope, receive, None))
    return seen["body"], seen["headers"]


def test_the_middleware_rewrites_only_the_test_request_even_when_it_arrives_in_pieces():
    body = list_page_body()
    rewritten, headers = call("/api/v2/connections/test", "POST", [body[:40], body[40:]])
    assert json.loads(rewritten)["port"] is None
    assert headers[b"content-length"] == str(len(rewritten)).encode()
    untouched, _ = call("/api/v2/connections", "POST", [body])
    assert untouched == body


def test_the_plugin_registers_the_middleware():
    assert EwsSyncPlugin.fastapi_root_middlewares[0]["middleware"] is ConnectionTestPortZero
