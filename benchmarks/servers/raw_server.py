"""Server B of the benchmarks: python-socketio's ``AsyncServer`` on aiohttp with its
defaults, the benchmark protocol and nothing else: no gateway, no authentication.

    python benchmarks/servers/raw_server.py --port 0

Prints ``ready <port>`` once listening; runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
from typing import Any

import socketio
from aiohttp import web
from bench_common import (
    BadRequest,
    bench_room,
    fanout_request,
    make_payload,
    parse_args,
    room_name,
    rooms_request,
    serve_until_stopped,
)


def failure(error: BadRequest) -> dict[str, Any]:
    return {"success": False, "error": str(error), "code": "invalid_payload"}


def make_server() -> socketio.AsyncServer:
    sio = socketio.AsyncServer(async_mode="aiohttp", logger=False, engineio_logger=False)

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        """Everyone is admitted: server B does no authentication."""

    async def join(sid: str, room: object = None) -> dict[str, Any]:
        try:
            name = room_name(room)
        except BadRequest as exc:
            return failure(exc)
        await sio.enter_room(sid, name)
        return {"success": True, "room": name}

    async def echo(sid: str, payload: object = None) -> dict[str, Any]:
        return {"success": True, "payload": payload}

    async def fanout(sid: str, request: object = None) -> dict[str, Any]:
        try:
            room, count, size = fanout_request(request)
        except BadRequest as exc:
            return failure(exc)
        payload = make_payload(size)
        for seq in range(count):
            await sio.emit("bench:msg", (seq, payload), to=room)
        return {"success": True, "sent": count}

    async def rooms(sid: str, request: object = None) -> dict[str, Any]:
        try:
            room_count, count, size = rooms_request(request)
        except BadRequest as exc:
            return failure(exc)
        payload = make_payload(size)
        names = [bench_room(index) for index in range(room_count)]
        for seq in range(count):
            for name in names:
                await sio.emit("bench:msg", (seq, payload), to=name)
        return {"success": True, "sent": count * room_count}

    sio.on("connect", connect)
    sio.on("bench:join", join)
    sio.on("bench:echo", echo)
    sio.on("bench:fanout", fanout)
    sio.on("bench:rooms", rooms)
    return sio


def main() -> None:
    args = parse_args(__doc__ or "")
    app = web.Application()
    make_server().attach(app)
    asyncio.run(serve_until_stopped(app, args.port))


if __name__ == "__main__":
    main()
