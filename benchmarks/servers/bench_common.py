"""What the two Python benchmark servers share: the command line, the validation of
the benchmark requests, the payloads, and serving until SIGTERM.

The benchmark protocol, the same on all three servers (Node's included):

- ``bench:join`` room -> ack ``{success, room}``;
- ``bench:echo`` payload -> ack ``{success, payload}``;
- ``bench:fanout`` ``{room, count, size}`` -> ``count`` emits of ``bench:msg``
  ``seq, payload`` (``size`` characters) to ``room``, then ack ``{success, sent}``;
- ``bench:rooms`` ``{rooms, count, size}`` -> ``count`` rounds of one emit of
  ``bench:msg`` ``seq, payload`` to each room ``bench:0`` .. ``bench:{rooms - 1}``,
  then ack ``{success, sent}``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
from collections.abc import Callable, Mapping

from aiohttp import web

MAX_COUNT = 1_000_000
MAX_SIZE = 1_000_000
MAX_ROOMS = 100_000
MAX_ROOM_NAME = 200


class BadRequest(ValueError):
    """A benchmark request that does not follow the protocol."""


def parse_args(
    description: str, extra: Callable[[argparse.ArgumentParser], None] | None = None
) -> argparse.Namespace:
    """``--port`` (0: any free port) and ``--secret`` (or ``BENCH_SECRET``), plus
    what ``extra`` adds to the parser."""
    parser = argparse.ArgumentParser(description=description)
    if extra is not None:
        extra(parser)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument(
        "--secret",
        default=os.environ.get("BENCH_SECRET", ""),
        help="token signing key (default: $BENCH_SECRET)",
    )
    return parser.parse_args()


def room_name(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ROOM_NAME:
        raise BadRequest("room must be a name of 1 to 200 characters")
    return value


def _count(request: Mapping[str, object], field: str, limit: int) -> int:
    value = request.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise BadRequest(f"{field} must be an integer from 0 to {limit}")
    return value


def fanout_request(request: object) -> tuple[str, int, int]:
    """``{room, count, size}`` -> ``(room, count, size)``."""
    if not isinstance(request, Mapping):
        raise BadRequest("the request must be an object")
    return (
        room_name(request.get("room")),
        _count(request, "count", MAX_COUNT),
        _count(request, "size", MAX_SIZE),
    )


def rooms_request(request: object) -> tuple[int, int, int]:
    """``{rooms, count, size}`` -> ``(rooms, count, size)``."""
    if not isinstance(request, Mapping):
        raise BadRequest("the request must be an object")
    return (
        _count(request, "rooms", MAX_ROOMS),
        _count(request, "count", MAX_COUNT),
        _count(request, "size", MAX_SIZE),
    )


def bench_room(index: int) -> str:
    """The name of room ``index`` of ``bench:rooms``."""
    return f"bench:{index}"


def make_payload(size: int) -> str:
    """``size`` printable characters that do not compress to nothing, as real messages
    do not."""
    return secrets.token_urlsafe(size)[:size]


def announce(port: int) -> None:
    """Tell the harness the server listens."""
    print(f"ready {port}", flush=True)


async def serve_until_stopped(app: web.Application, port: int) -> None:
    """Serve ``app`` on 127.0.0.1 until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = web.AppRunner(app, shutdown_timeout=0.5, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        announce(runner.addresses[0][1])
        await stop.wait()
    finally:
        await runner.cleanup()


def require_secret(secret: str) -> str:
    if len(secret) < 16:
        sys.exit("a secret of 16 characters or more is required (--secret or BENCH_SECRET)")
    return secret
