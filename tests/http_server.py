"""A real, threaded HTTP server on 127.0.0.1 for download tests (no mocking of requests).

Usage::

    with HTTPFileServer() as server:
        url = server.add("/w/model.bin", data, behaviours=[TRUNCATE, 503])  # then "ok" forever
        ...
        server.log            # [LoggedRequest(method, path, range, status, bytes_sent, ...)]
        server.requests("/w/model.bin", method="GET")

Each GET pops the next behaviour of its path; when the queue is empty the path's ``default``
(``"ok"`` unless given) is used. HEAD never consumes a behaviour. Behaviours:

* ``"ok"``: 200, or 206 for a satisfiable ``Range: bytes=N-[M]`` (416 if N >= size)
* ``"corrupt"``: like ok, with every byte of the body flipped (same length)
* ``"truncate"`` / ``Truncate(at=n)``: full Content-Length, then the connection closes after
  half (or ``n``) of the body bytes
* ``"ignore-range"``: 200 with the whole body even when a Range was asked for
* ``"drop"``: close the connection without any response
* ``"no-length"``: ok, but no Content-Length: the body ends when the connection closes
* an ``int`` such as ``503`` or ``404``: that status with a short text body
* ``Slow(chunk_size, delay)``: ok, but sleep ``delay`` seconds between chunks
* ``Redirect(location, status=302)``: redirect to another path (or absolute URL)
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TypeAlias
from urllib.parse import urlsplit

OK = "ok"
CORRUPT = "corrupt"
TRUNCATE = "truncate"
IGNORE_RANGE = "ignore-range"
DROP = "drop"
NO_LENGTH = "no-length"


@dataclass(frozen=True)
class Truncate:
    at: int | None = None  # body bytes sent before closing; None = half


@dataclass(frozen=True)
class Slow:
    chunk_size: int = 16 * 1024
    delay: float = 0.05


@dataclass(frozen=True)
class Redirect:
    location: str
    status: int = 302


Behaviour: TypeAlias = str | int | Truncate | Slow | Redirect


@dataclass
class LoggedRequest:
    method: str
    path: str  # as requested, query string included
    range: str | None  # the Range header, e.g. "bytes=1024-"
    status: int  # 0 when the connection was dropped without a response
    bytes_sent: int  # body bytes written (updated once the body is out: read it last)
    behaviour: str
    headers: Mapping[str, str] = field(default_factory=dict, compare=False)


@dataclass
class _Resource:
    data: bytes
    queue: deque[Behaviour]
    default: Behaviour
    headers: dict[str, str]


_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    # -- helpers ---------------------------------------------------------------------------
    def _record(self, status: int, behaviour: Behaviour) -> LoggedRequest:
        # Logged before the response goes out, so a client that has seen the response can
        # always find its request in the log.
        entry = LoggedRequest(
            self.command,
            self.path,
            self.headers.get("Range"),
            status,
            0,
            str(behaviour),
            dict(self.headers.items()),
        )
        self.server.owner._append_log(entry)
        return entry

    def _simple(
        self, status: int, body: bytes = b"", extra: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _serve(self, head: bool) -> None:
        path = urlsplit(self.path).path
        resource, behaviour = self.server.owner._next(path, consume=not head)
        if resource is None:
            self._record(404, "missing")
            self._simple(404, b"not found")
            return
        if isinstance(behaviour, int):
            self._record(behaviour, behaviour)
            self._simple(behaviour, f"status {behaviour}".encode())
            return
        if isinstance(behaviour, Redirect):
            location = behaviour.location
            if location.startswith("/"):
                location = self.server.owner.url(location)
            self._record(behaviour.status, behaviour)
            self._simple(behaviour.status, extra={"Location": location})
            return
        if behaviour == DROP:
            self._record(0, behaviour)
            self.close_connection = True
            return
        self._send_body(resource, behaviour, head)

    def _send_body(self, resource: _Resource, behaviour: Behaviour, head: bool) -> None:
        data = resource.data
        if behaviour == CORRUPT:
            data = bytes(b ^ 0xFF for b in data)
        status, start, end = 200, 0, len(data)
        asked = self.headers.get("Range")
        match = _RANGE.match(asked.strip()) if asked else None
        if match and behaviour != IGNORE_RANGE:
            first = int(match.group(1))
            last = int(match.group(2)) if match.group(2) else len(data) - 1
            if first >= len(data) or last < first:
                self._record(416, behaviour)
                self._simple(416, extra={"Content-Range": f"bytes */{len(data)}"})
                return
            status, start, end = 206, first, min(last, len(data) - 1) + 1
        body = data[start:end]
        entry = self._record(status, "head" if head else behaviour)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        if behaviour == NO_LENGTH:  # closing the connection is what ends the body
            self.send_header("Connection", "close")
        else:
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{hashlib.sha256(resource.data).hexdigest()}"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        for name, value in resource.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            entry.bytes_sent = self._write_body(body, behaviour)

    def _write_body(self, body: bytes, behaviour: Behaviour) -> int:
        limit = len(body)
        chunk, delay = 64 * 1024, 0.0
        if behaviour == TRUNCATE or isinstance(behaviour, Truncate):
            at = behaviour.at if isinstance(behaviour, Truncate) else None
            limit = min(len(body), len(body) // 2 if at is None else at)
            self.close_connection = True  # Content-Length promised more: the client must notice
        if isinstance(behaviour, Slow):
            chunk, delay = behaviour.chunk_size, behaviour.delay
        sent = 0
        try:
            while sent < limit:
                piece = body[sent : min(sent + chunk, limit)]
                self.wfile.write(piece)
                self.wfile.flush()
                sent += len(piece)
                if delay and sent < limit:
                    time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError):  # client went away (killed test)
            self.close_connection = True
        return sent


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: HTTPFileServer


class HTTPFileServer:
    """In-memory files over real HTTP on ``127.0.0.1`` with a random free port."""

    def __init__(self) -> None:
        self._resources: dict[str, _Resource] = {}
        self._lock = threading.Lock()
        self._log: list[LoggedRequest] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> HTTPFileServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HTTPFileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- content -----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    def add(
        self,
        path: str,
        data: bytes,
        behaviours: Iterable[Behaviour] = (),
        *,
        default: Behaviour = OK,
        headers: Mapping[str, str] | None = None,
    ) -> str:
        """Serve ``data`` at ``path`` (replacing what was there); return its URL."""
        path = path if path.startswith("/") else "/" + path
        with self._lock:
            self._resources[path] = _Resource(
                bytes(data), deque(behaviours), default, dict(headers or {})
            )
        return self.url(path)

    def set_behaviours(
        self, path: str, behaviours: Iterable[Behaviour], *, default: Behaviour | None = None
    ) -> None:
        with self._lock:
            resource = self._resources[path]
            resource.queue = deque(behaviours)
            if default is not None:
                resource.default = default

    def remove(self, path: str) -> None:
        with self._lock:
            self._resources.pop(path, None)

    # -- log ---------------------------------------------------------------------------------
    @property
    def log(self) -> list[LoggedRequest]:
        """A snapshot of every request so far, in arrival order."""
        with self._lock:
            return list(self._log)

    def requests(self, path: str | None = None, method: str | None = None) -> list[LoggedRequest]:
        return [
            r
            for r in self.log
            if (path is None or urlsplit(r.path).path == path)
            and (method is None or r.method == method)
        ]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    # -- used by the handler -----------------------------------------------------------------
    def _next(self, path: str, consume: bool) -> tuple[_Resource | None, Behaviour]:
        with self._lock:
            resource = self._resources.get(path)
            if resource is None:
                return None, OK
            if not consume:
                return resource, OK
            return resource, resource.queue.popleft() if resource.queue else resource.default

    def _append_log(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)
