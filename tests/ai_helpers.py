"""A fake Anthropic Messages API over real HTTP, for the AI tests.

``fake_anthropic()`` serves ``POST /v1/messages`` on a free loopback port from a thread (stdlib
``ThreadingHTTPServer``: it runs beside the trio loop under test, not in it). Each request is recorded whole
(headers and body bytes, with its arrival time) and answered from a script: the next scripted ``Reply``, or
a success when the script is empty. ``Reply(hang=True)`` never answers (until the server closes), for timeouts.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPORT_TEXT = "You moved more midweek and slept longest on day 3. Try an earlier bedtime."
MODEL_ANSWERING = "claude-test-20260101"
INPUT_TOKENS, OUTPUT_TOKENS = 321, 45


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False


@dataclass(frozen=True, slots=True)
class Recorded:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival

    @property
    def raw(self) -> bytes:
        """Everything the client sent: the header lines and the body."""
        lines = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        return lines.encode() + b"\r\n" + self.body

    def json(self) -> Any:
        return json.loads(self.body)


class FakeAnthropic:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.script: list[Reply] = []
        self.always: Reply | None = None  # answer every request with this (after the script)
        self.released = threading.Event()
        self._lock = threading.Lock()
        self.url = ""

    def next_reply(self, recorded: Recorded) -> Reply:
        with self._lock:
            self.requests.append(recorded)
            if self.script:
                return self.script.pop(0)
            return self.always or Reply()


def _success() -> bytes:
    return json.dumps({
        "id": "msg_fake", "type": "message", "role": "assistant", "model": MODEL_ANSWERING,
        "content": [{"type": "text", "text": REPORT_TEXT}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS}}).encode()


def _error(status: int) -> bytes:
    kind = {429: "rate_limit_error", 400: "invalid_request_error"}.get(status, "api_error")
    return json.dumps({"type": "error", "error": {"type": kind, "message": f"fake {status}"}}).encode()


def _handler(fake: FakeAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            reply = fake.next_reply(Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                                             time.monotonic()))
            if reply.hang:
                fake.released.wait(timeout=30)
                return
            payload = _success() if reply.status == 200 else _error(reply.status)
            self.send_response(reply.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            pass

    return Handler


@contextmanager
def fake_anthropic() -> Iterator[FakeAnthropic]:
    fake = FakeAnthropic()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-anthropic", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
