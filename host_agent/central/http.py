"""The central service on HTTP (stdlib: a thread per request), and the dock's client.

One endpoint, POST /v1: the body is a signed request (host_agent/central/wire.py), the answer
CBOR. A body over wire.MAX_BODY is refused before it is read. Put TLS in front of it (a
reverse proxy) in production; authenticity does not depend on it (every request is signed).
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from host_agent.central import wire
from host_agent.central.service import Central

log = logging.getLogger("bodycam.central")


class CentralError(Exception):
    """The central could not be reached or refused a request; `answer` is its answer."""

    def __init__(self, text: str, answer: dict[str, Any] | None = None) -> None:
        super().__init__(text)
        self.answer = answer or {}


def server(central: Central, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            length = int(self.headers.get("Content-Length") or -1)
            if self.path != "/v1" or not 0 <= length <= wire.MAX_BODY:
                self._reply(400, wire.answer({"error": "POST /v1 with a body of at most"
                                                       f" {wire.MAX_BODY} bytes"}))
                return
            body = self.rfile.read(length)
            status, answer = central.handle(body)
            self._reply(status, answer)

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/cbor")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("%s " + fmt, self.client_address[0], *args)

    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    return httpd


def serve_in_thread(httpd: ThreadingHTTPServer) -> threading.Thread:
    t = threading.Thread(target=httpd.serve_forever, name="central-http", daemon=True)
    t.start()
    return t


def post(url: str, body: bytes, timeout: float = 60.0) -> dict[str, Any]:
    """POST a signed request; the answer. CentralError for a refusal or no answer."""
    req = urllib.request.Request(url.rstrip("/") + "/v1", data=body, method="POST",
                                 headers={"Content-Type": "application/cose"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return wire.read_answer(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            answer = wire.read_answer(exc.read())
        except wire.WireError:
            answer = {}
        raise CentralError(f"the central refused ({exc.code}): {answer.get('error', exc.reason)}",
                           answer) from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise CentralError(f"cannot reach the central at {url}: {exc}") from None
