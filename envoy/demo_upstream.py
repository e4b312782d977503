#!/usr/bin/env python3
"""Demo upstream for api-guard: serves JSON with sensitive fields and echoes requests.

Used by `make run` (as a process) and by the end-to-end tests (in-process, with a
recorder, so a test can assert exactly what reached the upstream).

  GET  /shops/{shop}/orders/{id}  -> an order with a card number, SSN, e-mail, costs
  GET  /shops                     -> the shops, with their ids
  GET  /shops/{shop}/revenue      -> a shop's revenue (names the shop it was asked for)
  GET  /users/{id}                -> a user profile with sensitive fields
  anything else                   -> 200 echo: method, path, headers, body
"""
import argparse
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ORDER_RE = re.compile(r"^/shops/([^/?]+)/orders/([^/?]+)")
USER_RE = re.compile(r"^/users/([^/?]+)")
REVENUE_RE = re.compile(r"^/shops/([^/?]+)/revenue")
SHOPS = {"shops": [{"id": "s1", "name": "Corner Books"}, {"id": "s2", "name": "Harbour Pens"}]}


def order(shop, oid):
    return {
        "id": oid,
        "shop": shop,
        "status": "paid",
        "card": {"number": "4111111111111111", "expiry": "12/29", "holder": "Ada Lovelace"},
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com", "ssn": "123-45-6789"},
        "items": [
            {"sku": "book-1", "qty": 1, "cost": 42.5},
            {"sku": "pen-7", "qty": 3, "cost": 2.25},
        ],
        "notes": "leaked key AKIAIOSFODNN7EXAMPLE in a support note",
    }


class Recorder:
    """Thread-safe list of requests the upstream received."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests = []

    def add(self, req):
        with self._lock:
            self.requests.append(req)

    def clear(self):
        with self._lock:
            self.requests.clear()

    def snapshot(self):
        with self._lock:
            return list(self.requests)


def make_handler(recorder=None, responders=None):
    """responders: dict path-prefix -> fn(handler, request_dict) -> (status, headers, body bytes)."""
    responders = responders if responders is not None else {}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # The status line and headers go out in one write and the body in another:
        # with Nagle's algorithm the body then waits for Envoy's delayed ACK (40 ms
        # on Linux) on every request of a kept-alive connection.
        disable_nagle_algorithm = True

        def _read_body(self):
            """(body, complete): complete is False when the connection ended
            before the body did (the proxy reset the request)."""
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return b"".join(chunks), False
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                return b"".join(chunks), True
            n = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(n) if n else b""
            return body, len(body) == n

        def _handle(self):
            body, complete = self._read_body()
            req = {
                "complete": complete,
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
            if recorder is not None:
                recorder.add(req)
            for prefix, fn in list(responders.items()):
                if self.path.startswith(prefix):
                    status, headers, out = fn(self, req)
                    return self._send(status, headers, out)
            m = ORDER_RE.match(self.path)
            if m and self.command == "GET":
                return self._json(200, order(m.group(1), m.group(2)))
            if self.path.split("?")[0] == "/shops" and self.command == "GET":
                return self._json(200, SHOPS)
            m = REVENUE_RE.match(self.path)
            if m and self.command == "GET":
                return self._json(200, {"shop": m.group(1), "revenue": {"2026-11": 12840.5}})
            m = USER_RE.match(self.path)
            if m and self.command == "GET":
                return self._json(200, {"id": m.group(1), "email": "user@example.com",
                                        "ssn": "078-05-1120", "role": "member"})
            echo = {
                "method": req["method"],
                "path": req["path"],
                "headers": req["headers"],
                "body": body.decode("utf-8", "replace"),
            }
            return self._json(200, echo, extra={"x-powered-by": "demo-upstream/1.0"})

        def _json(self, status, doc, extra=None):
            headers = {"content-type": "application/json"}
            headers.update(extra or {})
            return self._send(status, headers, json.dumps(doc).encode())

        def _send(self, status, headers, body):
            self.send_response(status)
            chunked = any(k.lower() == "transfer-encoding" for k in headers)
            for k, v in headers.items():
                self.send_header(k, v)
            if not chunked:
                self.send_header("content-length", str(len(body)))
            self.end_headers()
            if chunked:
                # Write in small chunks so the filter sees several body callbacks.
                for i in range(0, len(body), 64):
                    part = body[i:i + 64]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
            elif self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle
        do_PROPFIND = _handle

        def log_message(self, *args):
            pass

    return Handler


def serve(host="127.0.0.1", port=0, recorder=None, responders=None):
    """Starts the upstream in a daemon thread; returns the server (server.server_port)."""
    server = ThreadingHTTPServer((host, port), make_handler(recorder, responders))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, default=8081)
    args = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler())
    srv.daemon_threads = True
    print(f"demo upstream on 127.0.0.1:{args.port}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
