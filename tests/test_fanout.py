"""The fan-out fast path and the websocket compression setting, on real servers."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import aiohttp
import pytest

from realtime_gateway import Rule, RuleAuthorizer, SignedTokenAuthenticator, reference_rules
from realtime_gateway._fanout import FanOutManager

from .clinic import USERS, Inbox, clinic_gateway, connect_as
from .conftest import Clients, call, quick_config, socketio_client, until

LOBBY_RULES = reference_rules() + RuleAuthorizer([Rule(actions="join", target="lobby")])


async def test_the_in_process_gateway_uses_the_fan_out_manager(
    authenticator: SignedTokenAuthenticator,
) -> None:
    gateway = clinic_gateway(authenticator)
    gateway.asgi_app()
    assert isinstance(gateway.server.manager, FanOutManager)


async def test_each_socket_keeps_the_order_of_concurrent_emits(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator, authorizer=LOBBY_RULES)
    senders, per_sender = 4, 50
    async with clients.serve(gateway, server_kind) as server:
        inboxes: list[Inbox] = []
        for name in ("nurse", "doctor", "staff", "patient", "admin"):
            client, inbox = await connect_as(
                clients, server.url, authenticator.issue(USERS[name]), namespaces=("/",)
            )
            assert (await call(client, "join:room", "lobby"))["success"]
            inboxes.append(inbox)

        async def sender(number: int) -> None:
            for seq in range(per_sender):
                await gateway.emit_to_room("lobby", "tick", {"sender": number, "seq": seq})

        await asyncio.gather(*(sender(number) for number in range(senders)))
        for inbox in inboxes:
            ticks = await inbox.wait("tick", count=senders * per_sender)
            by_sender: dict[int, list[int]] = defaultdict(list)
            for tick in ticks:
                by_sender[tick["sender"]].append(tick["seq"])
            assert by_sender == {n: list(range(per_sender)) for n in range(senders)}


async def test_a_socket_dropping_mid_broadcast_stops_nothing(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator, authorizer=LOBBY_RULES)
    async with clients.serve(gateway, server_kind) as server:
        staying, inbox = await connect_as(
            clients, server.url, authenticator.issue(USERS["nurse"]), namespaces=("/",)
        )
        dropping, _ = await connect_as(
            clients, server.url, authenticator.issue(USERS["doctor"]), namespaces=("/",)
        )
        for client in (staying, dropping):
            assert (await call(client, "join:room", "lobby"))["success"]

        async def broadcast() -> None:
            for seq in range(300):
                await gateway.emit_to_room("lobby", "tick", seq)
                if seq % 20 == 0:
                    await asyncio.sleep(0)  # let the drop interleave with the emits

        emitting = asyncio.create_task(broadcast())
        await dropping.eio.disconnect(abort=True)
        await emitting  # raises if an emit to the dropped socket failed
        ticks = await inbox.wait("tick", count=300)
        assert ticks == list(range(300))


async def test_emits_with_callbacks_get_their_answers(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        client = socketio_client()

        async def answer(data: dict[str, int]) -> dict[str, int]:
            return {"double": data["n"] * 2}

        client.on("question", answer)

        clients.adopt(client)
        await client.connect(
            server.url, auth={"token": authenticator.issue(USERS["nurse"])}, wait_timeout=5
        )
        sid = client.get_sid("/")
        reply = await gateway.server.call("question", {"n": 21}, to=sid, timeout=5)
        assert reply == {"double": 42}
        answered: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await gateway.server.emit(
            "question", {"n": 5}, to=sid, callback=lambda *args: answered.set_result(args)
        )
        assert await asyncio.wait_for(answered, 5) == ({"double": 10},)


async def test_skip_sid_and_rooms_of_the_same_name_in_two_namespaces(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        nurse, nurse_inbox = await connect_as(
            clients, server.url, authenticator.issue(USERS["nurse"]), namespaces=("/", "/chat")
        )
        doctor, doctor_inbox = await connect_as(
            clients, server.url, authenticator.issue(USERS["doctor"]), namespaces=("/", "/chat")
        )
        for client in (nurse, doctor):
            assert (await call(client, "join:conversation", "c1", "/chat"))["success"]
        assert (await call(nurse, "join:room", "conversation:c1"))["success"]

        await gateway.emit_to_room(
            "conversation:c1",
            "note",
            "chat only",
            namespace="/chat",
            skip_sid=nurse.get_sid("/chat"),
        )
        await gateway.emit_to_room("conversation:c1", "note", "main only", namespace="/")
        await gateway.broadcast("barrier", None, namespace="/chat")
        await gateway.broadcast("barrier", None, namespace="/")
        for inbox in (nurse_inbox, doctor_inbox):
            await inbox.wait("barrier", "/chat")
            await inbox.wait("barrier", "/")
        assert nurse_inbox.of("note", "/chat") == []  # skipped
        assert doctor_inbox.of("note", "/chat") == ["chat only"]
        assert nurse_inbox.of("note", "/") == ["main only"]
        assert doctor_inbox.of("note", "/") == []  # not in the room of that namespace


@pytest.mark.parametrize("compression", [False, True])
async def test_websocket_compression_setting_is_honoured(
    clients: Clients, authenticator: SignedTokenAuthenticator, compression: bool
) -> None:
    gateway = clinic_gateway(authenticator, config=quick_config(websocket_compression=compression))
    async with clients.serve(gateway, "aiohttp") as server, aiohttp.ClientSession() as http:
        url = f"{server.url}/socket.io/?EIO=4&transport=websocket"
        # compress=15 offers permessage-deflate, as the official JavaScript client does.
        async with http.ws_connect(url, compress=15) as ws:
            extensions = ws._response.headers.get("Sec-WebSocket-Extensions", "")
            opened = await ws.receive_str(timeout=5)
            assert opened.startswith("0{")
    assert ("permessage-deflate" in extensions) is compression


def _rooms_by_scanning(manager: Any, sid: str, namespace: str) -> set[Any]:
    """A socket's rooms found as python-socketio finds them: through every room."""
    return {room for room, members in manager.rooms.get(namespace, {}).items() if sid in members}


async def test_the_room_index_agrees_with_the_room_table(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator, authorizer=LOBBY_RULES)
    async with clients.serve(gateway, server_kind) as server:
        users = ("nurse", "doctor", "staff", "patient", "admin")
        connected = {}
        for name in users:
            client, _ = await connect_as(
                clients, server.url, authenticator.issue(USERS[name]), namespaces=("/", "/chat")
            )
            connected[name] = client
        for name in ("nurse", "doctor", "staff"):
            assert (await call(connected[name], "join:room", "lobby"))["success"]
        assert (await call(connected["staff"], "leave:room", "lobby"))["success"]
        await connected["doctor"].disconnect()
        await until(lambda: len(gateway.connections) == 2 * (len(users) - 1))

        manager = gateway.server.manager
        for sid, conn in gateway.connections.items():
            expected = _rooms_by_scanning(manager, sid, conn.namespace)
            assert set(manager._rooms_of[sid]) == expected
            assert expected == {None, sid, *conn.rooms}
            assert sorted(manager.get_rooms(sid, conn.namespace), key=str) == sorted(
                (room for room in expected if room is not None), key=str
            )
        assert set(manager._rooms_of) == set(gateway.connections)
        await clients.close()
        await until(lambda: not gateway.connections)
        assert manager._rooms_of == {}
        assert "lobby" not in manager.rooms.get("/", {})
