"""The gateway behind real aiohttp and uvicorn servers, driven by python-socketio clients."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import attrs
import engineio
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from realtime_gateway import (
    AllowAll,
    Connection,
    DenyAll,
    Gateway,
    GatewayConfig,
    GatewayNamespace,
    Identity,
    PermissionDenied,
    Rule,
    RuleAuthorizer,
    SignedTokenAuthenticator,
    event,
)

from .conftest import SALT, SECRET, Clients, call, quick_config, until


@attrs.frozen
class Note:
    conversation_id: str = attrs.field(
        alias="conversationId", validator=attrs.validators.instance_of(str)
    )
    content: str = attrs.field(
        validator=attrs.validators.and_(
            attrs.validators.instance_of(str), attrs.validators.max_len(20)
        )
    )


class Probe(GatewayNamespace):
    """A namespace exercising every path of the base class."""

    def __init__(self, namespace: str = "/") -> None:
        super().__init__(namespace)
        self.connected: list[str] = []
        self.disconnected: list[tuple[str, str]] = []

    async def on_connected(self, conn: Connection) -> None:
        self.connected.append(conn.sid)

    async def on_disconnected(self, conn: Connection, reason: str) -> None:
        self.disconnected.append((conn.sid, reason))

    @event("whoami")
    async def whoami(self, conn: Connection, payload: Any) -> dict[str, Any]:
        identity = conn.identity
        return {"userId": identity.user_id, "roles": sorted(identity.roles), "sid": conn.sid}

    @event("echo:text", payload=str)
    async def echo(self, conn: Connection, text: str) -> dict[str, Any]:
        return {"text": text}

    @event("note:add", payload=Note)
    async def add_note(self, conn: Connection, note: Note) -> dict[str, Any]:
        return {"conversationId": note.conversation_id, "length": len(note.content)}

    @event("small", payload=dict, max_size=64)
    async def small(self, conn: Connection, data: dict[str, Any]) -> None:
        return None

    @event("boom")
    async def boom(self, conn: Connection, payload: Any) -> None:
        raise RuntimeError("secret detail that must not leak")

    @event("denied:thing")
    async def denied(self, conn: Connection, payload: Any) -> None:
        raise PermissionDenied("touch", "thing")


def make_gateway(
    authenticator: SignedTokenAuthenticator,
    *,
    authorizer: Any = None,
    config: GatewayConfig | None = None,
    namespaces: tuple[str, ...] = ("/",),
) -> Gateway:
    return Gateway(
        authenticator=authenticator,
        authorizer=authorizer or AllowAll(),
        config=config or quick_config(),
        namespaces=[Probe(path) for path in namespaces],
    )


# -- authentication ----------------------------------------------------------------


@pytest.mark.parametrize("source", ["auth", "cookie", "bearer"])
async def test_valid_token_is_accepted_from_each_source(
    server_kind: str,
    transport: str,
    source: str,
    authenticator: SignedTokenAuthenticator,
    clients: Clients,
) -> None:
    token = authenticator.issue(Identity(user_id="nurse-1", roles={"nurse"}))
    credentials: dict[str, Any] = {
        "auth": {"auth": {"token": token}},
        "cookie": {"headers": {"Cookie": f"rtg_session={token}"}},
        "bearer": {"headers": {"Authorization": f"Bearer {token}"}},
    }[source]
    async with clients.serve(make_gateway(authenticator), server_kind) as server:
        client = await clients.connect(server.url, transport=transport, **credentials)
        ack = await call(client, "whoami")
        sid = client.get_sid("/")
        assert ack == {"success": True, "userId": "nurse-1", "roles": ["nurse"], "sid": sid}
        assert server.gateway.connection(client.get_sid("/")) is not None
        assert server.gateway.metrics.connections_total == 1


def _expired_token() -> str:
    class Backdated(TimestampSigner):
        def get_timestamp(self) -> int:
            return super().get_timestamp() - 10_000

    serializer = URLSafeTimedSerializer(SECRET.encode(), salt=SALT, signer=Backdated)
    token: str = serializer.dumps({"sub": "u1"})
    return token


def _tampered_token(good: str) -> str:
    _, timestamp, signature = good.split(".")
    forger = URLSafeTimedSerializer(b"x" * 32, salt=SALT)
    forged = forger.dumps({"sub": "admin", "roles": ["admin"]})
    return ".".join([forged.split(".")[0], timestamp, signature])


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("missing", "missing"),
        ("garbage", "malformed"),
        ("not_a_string", "malformed"),
        ("expired", "expired"),
        ("tampered", "bad_signature"),
        ("wrong_key", "bad_signature"),
        ("wrong_salt", "bad_signature"),
    ],
)
async def test_bad_tokens_are_refused_with_their_reason(
    server_kind: str,
    transport: str,
    case: str,
    reason: str,
    authenticator: SignedTokenAuthenticator,
    clients: Clients,
) -> None:
    good = authenticator.issue(Identity(user_id="u1"))
    auth: Any = {
        "missing": None,
        "garbage": {"token": "not a token at all"},
        "not_a_string": {"token": {"$ne": ""}},
        "expired": {"token": _expired_token()},
        "tampered": {"token": _tampered_token(good)},
        "wrong_key": {
            "token": SignedTokenAuthenticator(
                ["another-key-0123456789"], salt=SALT, max_age=60
            ).issue(Identity(user_id="u1"))
        },
        "wrong_salt": {
            "token": SignedTokenAuthenticator([SECRET], salt="other", max_age=60).issue(
                Identity(user_id="u1")
            )
        },
    }[case]
    gateway = make_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        refusal = await clients.refusal(server.url, transport=transport, auth=auth)
        assert refusal.data["data"] == {"code": "unauthenticated", "reason": reason}
        assert "Authentication" in refusal.data["message"]
        if isinstance(auth, dict) and isinstance(auth.get("token"), str):
            assert auth["token"] not in str(refusal.data)
        assert gateway.metrics.auth_failures == {reason: 1}
        assert gateway.connections == {}


async def test_rotated_keys(server_kind: str, clients: Clients) -> None:
    old, new = "old-key-0123456789abcdef", "new-key-0123456789abcdef"
    old_token = SignedTokenAuthenticator([old], salt=SALT, max_age=60).issue(Identity(user_id="u1"))
    rotating = SignedTokenAuthenticator([old, new], salt=SALT, max_age=60)
    async with clients.serve(make_gateway(rotating), server_kind) as server:
        await clients.connect(server.url, auth={"token": old_token})
    rotated_out = SignedTokenAuthenticator([new], salt=SALT, max_age=60)
    async with clients.serve(make_gateway(rotated_out), server_kind) as server:
        refusal = await clients.refusal(server.url, auth={"token": old_token})
        assert refusal.data["data"]["reason"] == "bad_signature"
        await clients.connect(server.url, auth={"token": rotating.issue(Identity(user_id="u2"))})


async def test_connect_needs_authorization(
    server_kind: str, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    rules = RuleAuthorizer([Rule(actions="connect", target="/open")])
    gateway = make_gateway(authenticator, authorizer=rules, namespaces=("/open", "/closed"))
    token = authenticator.issue(Identity(user_id="u1"))
    async with clients.serve(gateway, server_kind) as server:
        await clients.connect(server.url, namespaces=["/open"], auth={"token": token})
        refusal = await clients.refusal(server.url, namespace="/closed", auth={"token": token})
        assert refusal.data["data"] == {"code": "forbidden"}
        assert gateway.metrics.access_denied == {"connect": 1}


async def test_unknown_namespace_is_refused(
    server_kind: str, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    token = authenticator.issue(Identity(user_id="u1"))
    async with clients.serve(make_gateway(authenticator), server_kind) as server:
        refusal = await clients.refusal(server.url, namespace="/nowhere", auth={"token": token})
        assert refusal.data in ({"message": "Unable to connect"}, "Unable to connect")


async def test_deny_all_refuses_every_connect(
    server_kind: str, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    token = authenticator.issue(Identity(user_id="u1", roles={"admin"}))
    gateway = make_gateway(authenticator, authorizer=DenyAll())
    async with clients.serve(gateway, server_kind) as server:
        refusal = await clients.refusal(server.url, auth={"token": token})
        assert refusal.data["data"]["code"] == "forbidden"


# -- origin ------------------------------------------------------------------------


OWN = "own origin"
LISTED = ("https://app.example.com",)


@pytest.mark.parametrize(
    ("allowed", "origin", "accepted"),
    [
        (None, "http://evil.example", False),
        (None, OWN, True),
        (LISTED, "https://app.example.com", True),
        (LISTED, "https://other.example.com", False),
        (LISTED, OWN, True),
    ],
)
async def test_cookie_handshakes_need_an_allowed_origin(
    server_kind: str,
    transport: str,
    allowed: tuple[str, ...] | None,
    origin: str,
    accepted: bool,
    authenticator: SignedTokenAuthenticator,
    clients: Clients,
) -> None:
    token = authenticator.issue(Identity(user_id="u1"))
    gateway = make_gateway(authenticator, config=quick_config(allowed_origins=allowed))
    async with clients.serve(gateway, server_kind) as server:
        headers = {
            "Cookie": f"rtg_session={token}",
            "Origin": server.url if origin == OWN else origin,
        }
        if accepted:
            await clients.connect(server.url, transport=transport, headers=headers)
            assert len(gateway.connections) == 1
        else:
            await clients.refusal(server.url, transport=transport, headers=headers)
            assert gateway.connections == {}


async def test_wildcard_origin_still_refuses_cookie_handshakes(
    server_kind: str,
    transport: str,
    authenticator: SignedTokenAuthenticator,
    clients: Clients,
) -> None:
    token = authenticator.issue(Identity(user_id="u1"))
    config = quick_config(allowed_origins="*")
    gateway = make_gateway(authenticator, config=config)
    foreign = {"Origin": "https://anywhere.example"}
    async with clients.serve(gateway, server_kind) as server:
        await clients.connect(
            server.url, transport=transport, headers=foreign, auth={"token": token}
        )
        refusal = await clients.refusal(
            server.url,
            transport=transport,
            headers={**foreign, "Cookie": f"rtg_session={token}"},
        )
        assert refusal.data["data"] == {"code": "unauthenticated", "reason": "origin"}
        assert gateway.metrics.auth_failures["origin"] == 1


# -- namespace dispatch and acknowledgements ---------------------------------------


async def test_acknowledgement_envelopes_and_bad_input(
    server_kind: str,
    transport: str,
    authenticator: SignedTokenAuthenticator,
    clients: Clients,
) -> None:
    gateway = make_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        client = await clients.connect(
            server.url,
            transport=transport,
            auth={"token": authenticator.issue(Identity(user_id="u1"))},
        )
        assert await call(client, "echo:text", "hi") == {"success": True, "text": "hi"}
        assert await call(client, "echo:text", 42) == {
            "success": False,
            "error": "Payload must be a string",
            "code": "invalid_payload",
        }
        ack = await call(client, "note:add", {"content": "hello"})
        assert ack["code"] == "invalid_payload"
        assert ack["field"] == "conversationId"
        ack = await call(client, "note:add", {"conversationId": 7, "content": "hello"})
        assert (ack["code"], ack["field"]) == ("invalid_payload", "conversationId")
        ack = await call(client, "note:add", {"conversationId": "c1", "content": "x" * 21})
        assert (ack["code"], ack["field"]) == ("invalid_payload", "content")
        ack = await call(client, "note:add", {"conversationId": "c1", "content": "ok", "x": 1})
        assert ack == {"success": True, "conversationId": "c1", "length": 2}
        ack = await call(client, "small", {"blob": "x" * 100})
        assert ack["code"] == "invalid_payload"
        assert "too large" in ack["error"]
        ack = await call(client, "echo:text", "y" * 70_000)
        assert ack["code"] == "invalid_payload"
        boom = await call(client, "boom")
        assert boom == {"success": False, "error": "Internal error", "code": "internal"}
        assert await call(client, "denied:thing") == {
            "success": False,
            "error": "Not allowed to touch thing",
            "code": "forbidden",
        }
        assert (await call(client, "no:such:event"))["code"] == "not_found"
        # The connection survived all of it.
        assert await call(client, "echo:text", "still here") == {
            "success": True,
            "text": "still here",
        }
        assert client.connected
        assert gateway.metrics.events_refused["invalid_payload"] == 6
        assert gateway.metrics.events_refused["internal"] == 1


async def test_rate_limit(
    server_kind: str, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    config = quick_config(rate_limit=1.0, rate_burst=3)
    async with clients.serve(make_gateway(authenticator, config=config), server_kind) as server:
        client = await clients.connect(
            server.url, auth={"token": authenticator.issue(Identity(user_id="u1"))}
        )
        acks = [await call(client, "echo:text", str(n)) for n in range(5)]
        assert [ack["success"] for ack in acks[:3]] == [True, True, True]
        assert acks[3]["code"] == "rate_limited"
        assert client.connected


async def test_connections_are_forgotten_on_disconnect(
    server_kind: str, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    gateway = make_gateway(authenticator, namespaces=("/", "/b"))
    probe = gateway.namespaces["/"]
    assert isinstance(probe, Probe)
    async with clients.serve(gateway, server_kind) as server:
        client = await clients.connect(
            server.url,
            namespaces=["/", "/b"],
            auth={"token": authenticator.issue(Identity(user_id="u1"))},
        )
        assert len(gateway.connections) == 2
        sid = client.get_sid("/")
        assert probe.connected == [sid]
        await client.disconnect()
        await until(lambda: not gateway.connections)
        assert [gone for gone, _ in probe.disconnected] == [sid]
        assert probe.disconnected[0][1] in ("client disconnect", "transport close")


async def test_server_disconnect_forgets_the_connection(
    server_kind: str, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    gateway = make_gateway(authenticator)
    gone = asyncio.Event()
    async with clients.serve(gateway, server_kind) as server:
        client = await clients.connect(
            server.url,
            auth={"token": authenticator.issue(Identity(user_id="u1"))},
            handlers={"disconnect": lambda *args: gone.set()},
        )
        await gateway.server.disconnect(client.get_sid("/"))
        await asyncio.wait_for(gone.wait(), 5)
        assert gateway.connections == {}


async def test_host_routes_live_next_to_socketio(
    server_kind: str, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    async with (
        clients.serve(make_gateway(authenticator), server_kind) as server,
        aiohttp.ClientSession() as session,
        session.get(f"{server.url}/hello") as response,
    ):
        assert response.status == 200
        assert await response.text() == "host app"


async def test_transport_that_joins_no_namespace_is_closed(
    server_kind: str, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    config = quick_config(connect_timeout=0.3)
    async with clients.serve(make_gateway(authenticator, config=config), server_kind) as server:
        raw = engineio.AsyncClient()
        closed = asyncio.Event()
        raw.on("disconnect", lambda *args: closed.set())
        await raw.connect(server.url, transports=["websocket"], engineio_path="socket.io")
        try:
            await asyncio.wait_for(closed.wait(), 5)
        finally:
            await raw.disconnect()


async def test_handshake_carries_remote_address_and_query(
    server_kind: str, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    gateway = make_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        client = await clients.connect(
            f"{server.url}?tenant=t1",
            auth={"token": authenticator.issue(Identity(user_id="u1")), "extra": 1},
            headers={"X-Trace": "abc"},
        )
        conn = gateway.connection(client.get_sid("/"))
        assert conn is not None
        assert conn.handshake.remote_address == "127.0.0.1"
        assert conn.handshake.query["tenant"] == "t1"
        assert conn.handshake.headers["x-trace"] == "abc"
        assert conn.handshake.auth["extra"] == 1
