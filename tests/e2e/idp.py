"""A small identity provider for the end-to-end tests: serves JWKS documents over
HTTP from a thread, can be told to misbehave, and records every request it gets.

    idp = IdP()                                   # 127.0.0.1, kernel-chosen port
    idp.serve("/jwks.json", {"keys": [...]})      # 200 application/json
    idp.fail("/jwks.json", "500")                 # or "garbage", "no_keys", "close", "hang"
    idp.hits("/jwks.json")                        # how many GETs that path received
    idp.close()

Paths not configured answer 404.
"""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = ("serve", "500", "garbage", "no_keys", "close", "hang")
HANG_SECONDS = 5


class IdP:
    def __init__(self):
        self._lock = threading.Lock()
        self._routes = {}  # path -> (mode, document bytes or None)
        self._log = []  # (monotonic time, path)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    # -- behaviour -------------------------------------------------------
    def serve(self, path, jwks):
        """Answer `path` with the JWKS document `jwks` (a dict)."""
        with self._lock:
            self._routes[path] = ("serve", json.dumps(jwks).encode())

    def fail(self, path, mode):
        """Make `path` fail: "500", "garbage" (200 text/html), "no_keys" (200 with an
        empty key set), "close" (connection closed without an answer) or "hang" (no
        answer for HANG_SECONDS, then closed)."""
        assert mode in MODES and mode != "serve", mode
        with self._lock:
            self._routes[path] = (mode, None)

    # -- observation -----------------------------------------------------
    def hits(self, path, since=None):
        """Requests received for `path` (after the monotonic time `since`, if given)."""
        with self._lock:
            return sum(1 for t, p in self._log if p == path and (since is None or t >= since))

    def close(self):
        self._server.shutdown()
        self._server.server_close()

    # -- server ----------------------------------------------------------
    def _handler(self):
        idp = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body are two writes: without this, Nagle's algorithm holds
            # the body until Envoy's delayed ACK (40 ms).
            disable_nagle_algorithm = True

            def do_GET(self):  # noqa: N802 (http.server naming)
                path = self.path.split("?", 1)[0]
                with idp._lock:
                    idp._log.append((time.monotonic(), path))
                    mode, doc = idp._routes.get(path, ("404", None))
                if mode in ("close", "hang"):
                    if mode == "hang":
                        time.sleep(HANG_SECONDS)
                    self.close_connection = True
                    return
                if mode == "serve":
                    self._send(200, "application/json", doc)
                elif mode == "garbage":
                    self._send(200, "text/html", b"<html><body>maintenance</body></html>")
                elif mode == "no_keys":
                    self._send(200, "application/json", b'{"keys": []}')
                elif mode == "500":
                    self._send(500, "application/json", b'{"error": "internal"}')
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, status, ctype, body):
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        return Handler
