"""A reverse proxy in front of a test server, as nginx is in front of a real one: it relays every
request unchanged and adds ``X-Forwarded-For`` with the address its client is said to have, so a
server that trusts 127.0.0.1 as a proxy sees a visitor from the internet."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

import httpx

#: Headers that belong to one connection, not to the request relayed (RFC 9110 §7.6.1).
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "content-length",
    }
)


class ForwardingProxy:
    """Relays to ``upstream`` on a free port of 127.0.0.1; ``url`` is what clients use."""

    def __init__(self, upstream: str, client_address: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.client_address = client_address
        self.requests = 0
        self._client = httpx.Client(timeout=30)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Relay(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def relay(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = [(name, value) for name, value in self.headers.items() if name.lower() not in _HOP_BY_HOP]
                headers.append(("x-forwarded-for", proxy.client_address))
                proxy.requests += 1
                response = proxy._client.request(
                    self.command, proxy.upstream + self.path, content=body, headers=headers
                )
                self.send_response(response.status_code)
                for name, value in response.headers.multi_items():
                    if name.lower() not in _HOP_BY_HOP | {"content-encoding"}:
                        self.send_header(name, value)
                self.send_header("content-length", str(len(response.content)))
                self.end_headers()
                self.wfile.write(response.content)

            do_GET = do_POST = do_OPTIONS = do_HEAD = relay

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Relay

    def __enter__(self) -> ForwardingProxy:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._client.close()
