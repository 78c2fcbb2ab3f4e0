"""How the Anthropic SDK's client runs on trio: the three ways, against the raw HTTP client, same run.

    .venv/bin/python bench/ai.py [--calls 300] [--rounds 5]

Each way makes ``--calls`` sequential ``messages.create`` calls to a loopback fake Messages API (a stdlib
HTTP server in a thread, answering a fixed message at once), best of ``--rounds`` (the ways interleaved)
after a warm-up, all in one trio run with a trio-asyncio loop open (as ``run.py serve`` has):

* ``native``: ``anthropic.AsyncAnthropic`` awaited directly under trio (httpx2 over anyio) — what
  ``actors/ai/_gateway.py`` does;
* ``aio_as_trio``: the same async client inside a trio-asyncio loop, each call through ``aio_as_trio``;
* ``thread``: the sync ``anthropic.Anthropic`` in ``trio.to_thread.run_sync(abandon_on_cancel=True)``;
* the limit, ``raw``: ``httpx2.AsyncClient.post`` of the same body under trio (no SDK).

Per-call milliseconds and each way's ratio to ``raw``. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import httpx2
import trio
import trio_asyncio

_ANSWER = json.dumps({
    "id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-bench",
    "content": [{"type": "text", "text": "a fine week"}], "stop_reason": "end_turn", "stop_sequence": None,
    "usage": {"input_tokens": 300, "output_tokens": 40}}).encode()
_BODY = {"model": "claude-bench", "max_tokens": 256, "system": "summarise",
         "messages": [{"role": "user", "content": "steps (count):\n  day 1 (Mon): total 8123\n" * 20}]}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(_ANSWER)))
        self.end_headers()
        self.wfile.write(_ANSWER)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


def _client_kwargs(url: str) -> dict[str, Any]:
    return {"api_key": "bench", "base_url": url, "max_retries": 0, "timeout": 10.0}


async def _best(ways: dict[str, Callable[[], Awaitable[Any]]], calls: int, rounds: int) -> dict[str, float]:
    """Best per-call seconds of each way over ``rounds`` runs of ``calls`` sequential calls, the ways
    interleaved round by round (so load from other processes falls on all of them), after a warm-up."""
    for call in ways.values():
        for _ in range(20):
            await call()
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(rounds):
        for name, call in ways.items():
            started = time.perf_counter()
            for _ in range(calls):
                await call()
            best[name] = min(best[name], (time.perf_counter() - started) / calls)
    return best


async def measure(url: str, calls: int, rounds: int) -> dict[str, float]:
    async with trio_asyncio.open_loop(), httpx2.AsyncClient(base_url=url) as http:
        native = anthropic.AsyncAnthropic(**_client_kwargs(url))

        async def make() -> anthropic.AsyncAnthropic:
            return anthropic.AsyncAnthropic(**_client_kwargs(url))  # bound to the asyncio side

        bridged = await trio_asyncio.aio_as_trio(make)()
        sync = anthropic.Anthropic(**_client_kwargs(url))

        async def raw() -> None:
            (await http.post("/v1/messages", json=_BODY, headers={"x-api-key": "bench"})).json()

        try:
            return await _best({
                "raw": raw,
                "native": lambda: native.messages.create(**_BODY),
                "aio_as_trio": lambda: trio_asyncio.aio_as_trio(bridged.messages.create)(**_BODY),
                "thread": lambda: trio.to_thread.run_sync(lambda: sync.messages.create(**_BODY),
                                                          abandon_on_cancel=True),
            }, calls, rounds)
        finally:
            await native.close()
            await trio_asyncio.aio_as_trio(bridged.close)()
            sync.close()


def main(args: argparse.Namespace) -> dict[str, Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        figures = trio.run(measure, url, args.calls, args.rounds)
    finally:
        server.shutdown()
        server.server_close()
    report: dict[str, Any] = {"calls": args.calls, "rounds": args.rounds}
    for name, seconds in figures.items():
        ratio = seconds / figures["raw"]
        print(f"{name:<12} {seconds * 1000:8.3f} ms/call   ratio to raw httpx2 {ratio:5.2f}")
        report[f"{name}_ms"] = round(seconds * 1000, 3)
        if name != "raw":
            report[f"{name}_ratio"] = round(ratio, 3)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    print(json.dumps(main(parser.parse_args())))
