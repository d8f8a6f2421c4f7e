"""Smoke run of the built-in namespaces (temporary)."""

from __future__ import annotations

from collections.abc import Callable

from .clinic import USERS, clinic_gateway, connect_as
from .conftest import Clients, call
from realtime_gateway import SignedTokenAuthenticator


async def test_chat_round_trip(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        doctor, doc_inbox = await connect_as(
            clients, server.url, authenticator.issue(USERS["doctor"])
        )
        nurse, nurse_inbox = await connect_as(
            clients, server.url, authenticator.issue(USERS["nurse"])
        )
        welcome = await doc_inbox.wait("connected")
        assert welcome[0]["userId"] == "u-doctor"
        assert (await call(doctor, "ping"))["status"] == "pong"
        ack = await call(nurse, "join:conversation", "c1", "/chat")
        assert ack == {"success": True, "conversationId": "c1", "members": ["u-nurse"]}
        ack = await call(doctor, "join:conversation", "c1", "/chat")
        assert ack["members"] == ["u-doctor", "u-nurse"]
        joined = await nurse_inbox.wait("user:joined", "/chat")
        assert joined[0]["userId"] == "u-doctor"
        await call(doctor, "typing:start", "c1", "/chat")
        typing = await nurse_inbox.wait("user:typing", "/chat")
        assert typing[0] == {"userId": "u-doctor", "userName": "Dr Dee", "conversationId": "c1"}
        ack = await call(doctor, "send:message", {"conversationId": "c1", "content": "hi"}, "/chat")
        assert ack["success"], ack
        got = await nurse_inbox.wait("new:message", "/chat")
        assert got[0]["content"] == "hi"
        await doc_inbox.wait("new:message", "/chat")
        assert doc_inbox.of("user:typing", "/chat") == []
        sub = await call(nurse, "subscribe", ["clinical", "billing", "nope"], "/notifications")
        assert sub == {
            "success": True,
            "subscribedChannels": ["clinical"],
            "deniedChannels": ["billing", "nope"],
        }
        ack = await call(nurse, "subscribe:patient", "p1", "/updates")
        assert ack["success"], ack
        ack = await call(nurse, "subscribe:encounter", "e1", "/updates")
        assert ack["code"] == "forbidden", ack
        await gateway.publish_update("patient", "p1", "vitals", {"hr": 80})
        upd = await nurse_inbox.wait("patient:update", "/updates")
        assert upd[0]["patientId"] == "p1"
        await gateway.notify_user("u-nurse", "Hello", "msg")
        await nurse_inbox.wait("notification", "/notifications")
        assert await gateway.presence("conversation:1", namespace="/chat") == frozenset()
        assert await gateway.presence("conversation:c1", namespace="/chat") == {
            "u-doctor",
            "u-nurse",
        }
        await doctor.disconnect()
        left = await nurse_inbox.wait("user:left", "/chat")
        assert left[0]["userId"] == "u-doctor"
        assert await gateway.presence("conversation:c1", namespace="/chat") == {"u-nurse"}
        assert not await gateway.is_user_connected("u-doctor")
