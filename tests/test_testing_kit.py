"""realtime_gateway.testing: in-process servers and clients that never hang, on both
web servers and both transports, under the gateway's default settings."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web

from realtime_gateway import (
    AdminAPI,
    CallbackAuthenticator,
    Gateway,
    GatewayConfig,
    Handshake,
    Identity,
    SignedTokenAuthenticator,
    default_namespaces,
    reference_rules,
    testing,
)
from realtime_gateway.testing import ServerKind

from .conftest import SALT, SECRET, socketio_client

# What a polling client waited in disconnect() and in a refused connect under the
# default settings before the gateway answered the waiting long-poll: 30 s.
PROMPT = 2.0


def default_gateway() -> Gateway:
    """A gateway with the default settings (25 s pings), as an application has."""
    return Gateway(
        authenticator=SignedTokenAuthenticator([SECRET], salt=SALT, max_age=600),
        authorizer=reference_rules(),
        namespaces=default_namespaces(),
        config=GatewayConfig(),
    )


async def test_minted_clients_connect_receive_and_call(
    server_kind: ServerKind, transport: str
) -> None:
    async with testing.serve(default_gateway(), kind=server_kind) as server:
        nurse = await server.connect(
            "n1", roles=["nurse"], namespaces=["/", "/notifications"], transport=transport
        )
        # Sent as the connect completes: recorded before receive() is called.
        welcome = await nurse.receive("connected")
        assert (welcome["userId"], welcome["socketId"]) == ("n1", nurse.sid("/"))
        pong = await nurse.call("ping")
        assert (pong["success"], pong["status"]) == (True, "pong")

        await server.gateway.notify_role("nurse", "Ward round", "In ten minutes")
        note = await nurse.receive("notification", namespace="/notifications")
        assert note["title"] == "Ward round"
        assert nurse.received("notification", namespace="/notifications") == [note]

        started = time.monotonic()
        await nurse.disconnect()
        assert time.monotonic() - started < PROMPT
        assert not nurse.connected


async def test_refusals_are_prompt_and_tell_the_reason(
    server_kind: ServerKind, transport: str
) -> None:
    async with testing.serve(default_gateway(), kind=server_kind) as server:
        started = time.monotonic()
        refusal = await server.refusal(transport=transport)
        assert time.monotonic() - started < PROMPT
        assert (refusal.code, refusal.reason) == ("unauthenticated", "missing")

        forged = await server.refusal(auth={"token": "not-a-token"}, namespace="/chat")
        assert (forged.code, forged.reason) == ("unauthenticated", "malformed")
        with pytest.raises(AssertionError, match="accepted"):
            await server.refusal("d1", roles=["doctor"])


async def test_plain_polling_clients_leave_promptly_under_default_settings(
    server_kind: ServerKind,
) -> None:
    """The gateway answers a polling client's waiting long-poll when it closes, as
    engine.io does: python-socketio's client, which waits for that long-poll, leaves
    at once instead of after ping_interval + 5 s."""
    async with testing.serve(default_gateway(), kind=server_kind) as server:
        token = await server.token("n1", roles=["nurse"])
        client = socketio_client()
        await client.connect(
            server.url, transports=["polling"], auth={"token": token}, wait_timeout=5
        )
        started = time.monotonic()
        await asyncio.wait_for(client.disconnect(), 10)
        assert time.monotonic() - started < PROMPT

        refused = socketio_client()
        started = time.monotonic()
        with pytest.raises(Exception, match="failed to connect"):
            await asyncio.wait_for(
                refused.connect(server.url, transports=["polling"], wait_timeout=5), 40
            )
        assert time.monotonic() - started < PROMPT


async def test_waiting_for_what_never_comes_fails_fast_and_names_it() -> None:
    async with testing.serve(default_gateway()) as server:
        client = await server.connect("d1", roles=["doctor"], within=0.3)
        await client.receive("connected")
        started = time.monotonic()
        with pytest.raises(testing.EventTimeout, match="'connected' event in /"):
            await client.receive("connected")  # only one was sent
        assert time.monotonic() - started < 1.0

        await server.gateway.disconnect_socket(client.sid("/"))
        assert await client.disconnected() == "server disconnect"
        with pytest.raises(testing.EventTimeout, match="still connected"):
            await client.disconnected(namespace="/chat")


async def test_serves_an_app_with_the_gateway_already_mounted(server_kind: ServerKind) -> None:
    gateway = default_gateway()
    admin = AdminAPI(gateway)
    app: Any
    if server_kind == "aiohttp":
        app = web.Application()

        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="host app")

        app.router.add_get("/hello", hello)
        gateway.attach(app)
        admin.attach(app)
        served = testing.serve(gateway, app)
    else:
        served = testing.serve(gateway, kind="asgi", admin=admin)
    async with served as server:
        client = await server.connect("a1", roles=["admin"])
        async with server.http.get(admin.prefix + "/health") as response:
            health = await response.json()
        assert (response.status, health["data"]["activeConnections"]) == (200, 1)
        if server_kind == "aiohttp":
            async with server.http.get("/hello") as response:
                assert await response.text() == "host app"
        await client.disconnect()


async def test_identities_are_minted_by_the_application_when_it_says_how() -> None:
    sessions: dict[str, Identity] = {}

    async def lookup(handshake: Handshake) -> Identity | None:
        return sessions.get(str(handshake.auth.get("token")))

    def mint(identity: Identity) -> str:
        sessions[f"s-{identity.user_id}"] = identity
        return f"s-{identity.user_id}"

    gateway = Gateway(
        authenticator=CallbackAuthenticator(lookup),
        authorizer=reference_rules(),
        namespaces=default_namespaces(),
    )
    async with testing.serve(gateway, mint=mint) as server:
        client = await server.connect("n7", roles=["nurse"])
        assert (await client.receive("connected"))["userId"] == "n7"
        assert (await server.refusal(auth={"token": "s-nobody"})).reason == "rejected"

    unsigned = Gateway(authenticator=CallbackAuthenticator(lookup), authorizer=reference_rules())
    async with testing.serve(unsigned) as server:
        with pytest.raises(Exception, match="issues no tokens"):
            await server.connect("n7")


async def test_a_server_that_never_answers_fails_the_connect_in_bounded_time() -> None:
    async def accept_and_say_nothing(reader: asyncio.StreamReader, writer: Any) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    mute = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = mute.sockets[0].getsockname()[1]
    try:
        started = time.monotonic()
        with pytest.raises(testing.EventTimeout, match="not answered"):
            await testing.connect(f"http://127.0.0.1:{port}", transport="polling", within=0.3)
        assert time.monotonic() - started < 2.0
    finally:
        mute.close()
        await mute.wait_closed()
