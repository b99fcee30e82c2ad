"""A fault-injecting HTTP reverse proxy for S3 traffic, on 127.0.0.1: real requests forwarded to a real server.

Every request is read whole, then, with probability ``rate`` (and always during an *outage* window), answered
with a fault instead of (or after) being forwarded:

- ``503 SlowDown`` / ``500 InternalError``: an S3-style XML error body, the request never reaches the server;
- ``drop``: the connection is closed without an answer, before the request reaches the server;
- ``drop-after``: the request is forwarded (and takes effect: a PUT is stored, a conditional PUT wins) but the
  connection is closed before the answer is sent, so the client does not know it succeeded. This is the fault
  that tests idempotence: a retried write must not count twice.

Counts of what was forwarded and injected are kept per kind (thread-safe). ``enabled = False`` turns faults off
(the final drain and the clean run). Plain ``http.server`` + ``http.client``: one thread per client connection,
HTTP/1.1 keep-alive, request bodies forwarded byte for byte (also ``Transfer-Encoding: chunked``).
"""

from __future__ import annotations

import http.client
import http.server
import random
import socket
import threading
import time
import uuid
from collections import Counter

FAULT_KINDS = ("503", "500", "drop", "drop-after")
_ERRORS = {
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
}
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class FaultPolicy:
    """When to inject which fault: a per-request probability plus optional periodic outages (every request fails).

    ``rate``: probability that a request gets a fault; ``kinds``: weights per fault kind; ``outage_every`` /
    ``outage_seconds``: a window of ``outage_seconds`` in which every request fails, starting every
    ``outage_every`` seconds (0 = never). ``seed`` makes the sequence of draws reproducible (not the timing).
    """

    def __init__(self, rate: float = 0.0, kinds: dict[str, float] | None = None, outage_every: float = 0.0,
                 outage_seconds: float = 0.0, seed: int = 0):
        self.rate = rate
        self.kinds = dict(kinds or {"503": 0.35, "500": 0.25, "drop": 0.25, "drop-after": 0.15})
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kind(s) {sorted(unknown)}; known: {FAULT_KINDS}")
        self.outage_every, self.outage_seconds = outage_every, outage_seconds
        self.enabled = True
        self._forced: list[tuple[str, str | None]] = []  # (kind, method) for the next matching requests
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._t0 = time.monotonic()

    def in_outage(self) -> bool:
        if not (self.outage_every > 0 and self.outage_seconds > 0):
            return False
        t = time.monotonic() - self._t0
        return t >= self.outage_every and (t % self.outage_every) < self.outage_seconds

    def force(self, kind: str, method: str | None = None, times: int = 1) -> None:
        """Give the next ``times`` requests (with this HTTP ``method``, if given) fault ``kind``, whatever the rate
        (for tests that need one fault at one exact request)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {FAULT_KINDS}")
        with self._lock:
            self._forced += [(kind, method)] * times

    def draw(self, method: str = "") -> str | None:
        """The fault for the next request, or None to forward it untouched."""
        if not self.enabled:
            return None
        with self._lock:
            for i, (kind, only) in enumerate(self._forced):
                if only is None or only == method:
                    del self._forced[i]
                    return kind
            hit = self.in_outage() or self._rng.random() < self.rate
            if not hit:
                return None
            names, weights = zip(*self.kinds.items())
            return self._rng.choices(names, weights=weights)[0]


class FaultProxy:
    """``with FaultProxy(upstream_port, policy) as proxy: proxy.endpoint_url`` (``http://127.0.0.1:<port>``)."""

    def __init__(self, upstream_port: int, policy: FaultPolicy, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self.policy = policy
        self.counts: Counter = Counter()
        self._count_lock = threading.Lock()
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True)

    def count(self, what: str) -> None:
        with self._count_lock:
            self.counts[what] += 1

    def injected(self) -> int:
        with self._count_lock:
            return sum(n for k, n in self.counts.items() if k in FAULT_KINDS)

    def snapshot(self) -> dict:
        with self._count_lock:
            return dict(self.counts)

    def start(self) -> "FaultProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy

    def log_message(self, *args):  # quiet: thousands of requests
        pass

    def _read_body(self) -> bytes:
        """The raw request body, byte for byte (chunked bodies with their chunk framing and trailers)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                line = self.rfile.readline(65537)
                out += line
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, then the empty line
                        trailer = self.rfile.readline(65537)
                        out += trailer
                        if trailer in (b"\r\n", b"\n", b""):
                            return bytes(out)
                out += self.rfile.read(size + 2)  # data + CRLF
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send_error_xml(self, status: int, code: str, message: str) -> None:
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<RequestId>{uuid.uuid4().hex[:16]}</RequestId></Error>").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _drop(self) -> None:
        """Close the connection with no answer (RST where the platform allows it)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.owner.upstream, timeout=120)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.endheaders()
            if body:
                conn.send(body)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    def _handle(self) -> None:
        body = self._read_body()
        fault = self.owner.policy.draw(self.command)
        if fault in _ERRORS:
            self.owner.count(fault)
            self._send_error_xml(*_ERRORS[fault])
            return
        if fault == "drop":
            self.owner.count(fault)
            self._drop()
            return
        try:
            status, reason, headers, data = self._forward(body)
        except OSError:
            self.owner.count("upstream-error")
            self._drop()
            return
        if fault == "drop-after":
            self.owner.count(fault)
            self._drop()
            return
        self.owner.count("forwarded")
        self.send_response(status, reason)
        for k, v in headers:
            if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        length = next((v for k, v in headers if k.lower() == "content-length"), None)
        if self.command == "HEAD" and length is not None:
            self.send_header("Content-Length", length)
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle
