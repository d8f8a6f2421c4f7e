"""The clinic example's chat membership: its conversation table, enforced through the
reference rules' ``conversation_member`` hook, with the example as its own process and
its demo users as real socket.io clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import socketio

from realtime_gateway import SignedTokenAuthenticator

from .clinic import USERS, Inbox, assert_refused, connect_as
from .conftest import Clients, call
from .test_examples import KEY, running

CLINIC_SALT = "realtime_gateway.session"  # the library's default, which the clinic uses
MEMBERS = {
    "ward-round": ("admin", "doctor", "nurse"),
    "billing-desk": ("admin", "staff"),
}
"""The example's membership table, by role of the demo user."""


@pytest.fixture
async def clinic(tmp_path: Path) -> AsyncIterator[str]:
    async with running("aiohttp_clinic", tmp_path / "aiohttp_clinic.log") as url:
        yield url


@pytest.fixture
def tokens() -> dict[str, str]:
    """A token for each demo user, signed as the clinic's login page signs them."""
    signer = SignedTokenAuthenticator([KEY], salt=CLINIC_SALT, max_age=600)
    return {role: signer.issue(identity) for role, identity in USERS.items()}


async def on_chat(clients: Clients, url: str, token: str) -> tuple[socketio.AsyncClient, Inbox]:
    return await connect_as(clients, url, token, namespaces=["/chat"])


async def join(client: socketio.AsyncClient, conversation_id: str) -> Any:
    return await call(client, "join:conversation", conversation_id, namespace="/chat")


@pytest.mark.parametrize("conversation_id", list(MEMBERS))
async def test_a_conversation_admits_its_members_only(
    clinic: str, clients: Clients, tokens: dict[str, str], conversation_id: str
) -> None:
    members = MEMBERS[conversation_id]
    outsiders = [role for role in USERS if role not in members]
    # The outsiders knock first, so that the last member's ack shows who got in.
    for role in [*outsiders, *members]:
        client, _ = await on_chat(clients, clinic, tokens[role])
        ack = await join(client, conversation_id)
        if role in outsiders:
            assert_refused(ack, "forbidden")
        else:
            assert ack["success"] is True, (role, ack)
            assert ack["conversationId"] == conversation_id
            assert USERS[role].user_id in ack["members"]
    assert ack["members"] == sorted(USERS[role].user_id for role in members)


async def test_a_conversation_outside_the_table_has_no_members(
    clinic: str, clients: Clients, tokens: dict[str, str]
) -> None:
    for role in ("doctor", "nurse", "staff", "patient"):
        client, _ = await on_chat(clients, clinic, tokens[role])
        assert_refused(await join(client, "night-shift"), "forbidden")
    # The reference rules let an admin do everything, membership aside.
    admin, _ = await on_chat(clients, clinic, tokens["admin"])
    assert (await join(admin, "night-shift"))["success"] is True


@pytest.mark.parametrize("outsider", ["staff", "patient"])
async def test_a_non_member_cannot_write_to_the_ward_round(
    clinic: str, clients: Clients, tokens: dict[str, str], outsider: str
) -> None:
    nurse, nurse_inbox = await on_chat(clients, clinic, tokens["nurse"])
    doctor, _ = await on_chat(clients, clinic, tokens["doctor"])
    for member in (nurse, doctor):
        assert (await join(member, "ward-round"))["success"] is True

    intruder, _ = await on_chat(clients, clinic, tokens[outsider])
    assert_refused(await join(intruder, "ward-round"), "forbidden")
    message = {"conversationId": "ward-round", "content": "what is in bed 4?", "type": "text"}
    assert_refused(await call(intruder, "send:message", message, namespace="/chat"), "forbidden")
    for typing in ("typing:start", "typing:stop"):
        assert_refused(await call(intruder, typing, "ward-round", namespace="/chat"), "forbidden")

    # The doctor's message reaches the nurse after everything the intruder tried, so
    # the nurse's inbox holding only it shows that none of that got through.
    sent = await call(
        doctor,
        "send:message",
        {"conversationId": "ward-round", "content": "bed 4: fluids", "type": "text"},
        namespace="/chat",
    )
    assert sent["success"] is True
    received = await nurse_inbox.wait("new:message", "/chat")
    assert [(m["senderId"], m["content"]) for m in received] == [("u-doctor", "bed 4: fluids")]
    assert nurse_inbox.of("user:typing", "/chat") == []
    assert nurse_inbox.of("user:stopped_typing", "/chat") == []
    joined = [event["userId"] for event in nurse_inbox.of("user:joined", "/chat")]
    assert joined == ["u-doctor"]
