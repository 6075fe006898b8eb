"""Airflow plugin: lets the connection list page's Test button work for `ews` connections.

The list page posts ``"port": Number(connection.port)`` to ``/api/v2/connections/test``, which
is ``0`` for a connection without a port (every `ews` connection: the form hides Port). The API
then sees a different port than the stored NULL, refuses to reuse the stored password and
answers 400 "The host or port to test differs from the stored connection" (Airflow 3.3.2). Port
0 never names a real destination, so this middleware reads it as "no port" for `ews` connections
before the API compares.
"""

from __future__ import annotations

import json
from typing import Any

from airflow.plugins_manager import AirflowPlugin

TEST_PATH = "/api/v2/connections/test"


def without_port_zero(body: bytes) -> bytes:
    """The request body with ``"port": 0`` made ``null`` for an `ews` connection."""
    try:
        data = json.loads(body)
    except ValueError:
        return body
    if isinstance(data, dict) and data.get("conn_type") == "ews" and data.get("port") == 0:
        data["port"] = None
        return json.dumps(data).encode()
    return body


class ConnectionTestPortZero:
    """ASGI middleware applying without_port_zero to POST /api/v2/connections/test."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if (
            scope.get("type") != "http"
            or scope.get("method") != "POST"
            or not scope.get("path", "").endswith(TEST_PATH)
        ):
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = without_port_zero(b"".join(chunks))
        headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app({**scope, "headers": headers}, replay, send)


class EwsSyncPlugin(AirflowPlugin):
    """Registered through the `airflow.plugins` entry point of the ewssync package."""

    name = "ewssync"
    fastapi_root_middlewares = [
        {
            "middleware": ConnectionTestPortZero,
            "name": "ewssync: the list page's Test sends port 0 for a connection without port",
        }
    ]
