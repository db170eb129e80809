"""Shared helpers for the news tests: the fixture folder and a tiny HTTP server on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
Respond = Callable[[str, dict[str, list[str]]], tuple[int, bytes, str]]


class LocalServer:
    """Answers GETs with `respond(path, query) -> (status, body, content type)`; keeps each
    request (path, query, headers) in `requests`."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.requests: list[SimpleNamespace] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                url = urlparse(self.path)
                query = parse_qs(url.query)
                server.requests.append(SimpleNamespace(path=url.path, query=query,
                                                       headers=dict(self.headers)))
                status, body, ctype = server.respond(url.path, query)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def local_server() -> Iterator[Callable[[Respond], LocalServer]]:
    servers: list[LocalServer] = []

    def start(respond: Respond) -> LocalServer:
        servers.append(LocalServer(respond))
        return servers[-1]

    yield start
    for s in servers:
        s.close()
