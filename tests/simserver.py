"""The simulators' HTTP plumbing: a quiet HTTP/1.1 handler, a threaded server started in the
background (HTTPS with a throwaway certificate on request) and stopped again, and the standalone
runners' wait for SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 (kept-alive connections, as the real servers), no access log on stderr."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass


class ServedOverHttp:
    """A simulator's server life: ``serve`` its handler in a daemon thread, ``stop`` it, and the
    with statement (which starts a simulator that is not serving yet)."""

    _server: ThreadingHTTPServer | None = None

    def start(self, port: int = 0, host: str = "127.0.0.1"):
        raise NotImplementedError

    def serve(
        self, handler: type[BaseHTTPRequestHandler], host: str, port: int, tls: bool = False
    ) -> Path | None:
        """Serve ``handler`` at host:port (0: a free port) until ``stop``; with ``tls``, HTTPS
        with a throwaway self-signed certificate for ``host``, whose PEM path is returned."""
        server = ThreadingHTTPServer((host, port), handler)
        certificate = None
        if tls:
            from tests.ewssim.tls import self_signed_context

            context, certificate = self_signed_context(host)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return certificate

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self):
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for_sigterm() -> None:
    """Block until SIGTERM or Ctrl-C: the life of a simulator run standalone."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
