"""The central service on HTTP (stdlib: a thread per request), and the dock's client.

One endpoint, POST /v1: the body is a signed request (host_agent/central/wire.py), the answer
CBOR. A body over wire.MAX_BODY is refused before it is read; a connection idle for
IDLE_S is closed. With a certificate and key (central.toml: tls_cert, tls_key) the service
speaks TLS itself: each connection's handshake runs in that connection's own thread, so a
client that stalls it holds up nobody else. Authenticity does not depend on TLS (every
request is signed); the records' metadata (officers, cases) is what TLS keeps private.

The dock also puts segments straight into the object store with the presigned PUTs the
central hands it (`Uploads`): plain HTTP(S), no credentials, one kept-alive connection.
"""

from __future__ import annotations

import http.client
import logging
import re
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from host_agent.central import wire
from host_agent.central.service import Central

log = logging.getLogger("bodycam.central")
IDLE_S = 60.0
MAX_CONNECTIONS = 64  # at once; one more is closed at once (docks retry)


class CentralError(Exception):
    """The central could not be reached or refused a request; `answer` is its answer."""

    def __init__(self, text: str, answer: dict[str, Any] | None = None) -> None:
        super().__init__(text)
        self.answer = answer or {}


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """TLS for the service (TLS 1.2 or later); OSError or ssl.SSLError for unusable files."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def client_context(ca: str = "") -> ssl.SSLContext:
    """What a dock checks the central's certificate against: the CA file, or the system's."""
    ctx = ssl.create_default_context(cafile=ca or None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    tls: ssl.SSLContext | None = None
    slots: threading.BoundedSemaphore

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread per connection, at most MAX_CONNECTIONS: a flood is turned away, never
        queued into memory."""
        if not self.slots.acquire(blocking=False):
            log.warning("%s: turned away: every connection slot is taken", client_address[0])
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """In the connection's thread: the TLS handshake first, bounded by IDLE_S."""
        request.settimeout(IDLE_S)
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.info("%s: no TLS handshake: %s", client_address[0], exc)
            return
        try:
            super().finish_request(conn, client_address)
        finally:
            conn.close()


def server(central: Central, host: str = "127.0.0.1", port: int = 0,
           tls: ssl.SSLContext | None = None,
           max_connections: int = MAX_CONNECTIONS) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = IDLE_S

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

    httpd = _Server((host, port), Handler)
    httpd.tls = tls
    httpd.slots = threading.BoundedSemaphore(max_connections)
    return httpd


def serve_in_thread(httpd: ThreadingHTTPServer) -> threading.Thread:
    t = threading.Thread(target=httpd.serve_forever, name="central-http", daemon=True)
    t.start()
    return t


def post(url: str, body: bytes, timeout: float = 60.0,
         tls: ssl.SSLContext | None = None) -> dict[str, Any]:
    """POST a signed request; the answer. CentralError for a refusal or no answer. An https
    URL is checked against `tls` (client_context), else against the system's CAs."""
    req = urllib.request.Request(url.rstrip("/") + "/v1", data=body, method="POST",
                                 headers={"Content-Type": "application/cose"})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=tls) as resp:
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


class Uploads:
    """The dock's side of a presigned PUT: the file's bytes with exactly the headers the
    central signed, on a connection kept alive from one upload to the next."""

    def __init__(self, timeout: float = 300.0, tls: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self.tls = tls  # what an https store's certificate is checked against
        self._conn: http.client.HTTPConnection | None = None
        self._netloc = ""

    def put(self, url: str, headers: dict[str, str], path: Path, size: int) -> None:
        """Put the file; CentralError with the store's answer if it refuses (a body that
        is not the signed one: XAmzContentSHA256Mismatch)."""
        parts = urllib.parse.urlsplit(url)
        target = parts.path + ("?" + parts.query if parts.query else "")
        for attempt in (0, 1):  # a kept-alive connection the store closed: once more
            conn = self._connection(parts)
            try:
                with path.open("rb") as body:
                    conn.request("PUT", target, body=body,
                                 headers={**headers, "content-length": str(size)})
                resp = conn.getresponse()
                text = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt:
                    raise CentralError(f"cannot reach the store at {parts.netloc}: {exc}"
                                       ) from None
                continue
            if resp.status == 200:
                return
            code = re.search(rb"<Code>([^<]*)</Code>", text)
            raise CentralError(f"the store refused {parts.path} ({resp.status}"
                               f" {code.group(1).decode() if code else resp.reason})")

    def _connection(self, parts: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        if self._conn is None or self._netloc != parts.netloc:
            self.close()
            if parts.scheme == "https":
                self._conn = http.client.HTTPSConnection(parts.netloc, timeout=self.timeout,
                                                         blocksize=1 << 20, context=self.tls)
            else:
                self._conn = http.client.HTTPConnection(parts.netloc, timeout=self.timeout,
                                                        blocksize=1 << 20)
            self._netloc = parts.netloc
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
