"""Graceful shutdown: every client is told ``server:shutdown`` before it is
disconnected, nothing is left in the registry, and the host servers' own shutdown
(aiohttp ``on_shutdown``, ASGI lifespan) runs it."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import attrs
import socketio
import uvicorn
from aiohttp import web
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from realtime_gateway import AdminAPI, Gateway, SignedTokenAuthenticator

from .clinic import NAMESPACES, USERS, assert_epoch_ms, clinic_gateway
from .conftest import Clients, call, quick_config, socketio_client, until

DEFAULT_NOTICE = "The server is shutting down"
ROLES = ("admin", "doctor", "nurse", "staff", "patient")


@attrs.define
class Watched:
    """A real client and, in order, the shutdown notices and disconnects it saw."""

    client: socketio.AsyncClient
    namespaces: tuple[str, ...]
    events: list[tuple[str, str, Any]] = attrs.field(factory=list)
    gone: asyncio.Event = attrs.field(factory=asyncio.Event)
    noticed: asyncio.Event = attrs.field(factory=asyncio.Event)

    def of(self, kind: str, namespace: str) -> list[Any]:
        return [data for name, ns, data in self.events if name == kind and ns == namespace]

    def disconnected_from(self) -> set[str]:
        return {ns for name, ns, _ in self.events if name == "disconnect"}


async def watch(
    clients: Clients,
    url: str,
    token: str,
    *,
    namespaces: tuple[str, ...] = NAMESPACES,
    transport: str = "websocket",
    leave_on_notice: bool = False,
) -> Watched:
    """Connect a client that records ``server:shutdown`` and ``disconnect`` per namespace
    (the first lines of each handler, so the record keeps the order of arrival);
    with ``leave_on_notice`` it disconnects itself on the first notice."""
    client = socketio_client()
    watched = Watched(client=client, namespaces=namespaces)
    leaving: list[bool] = []

    def handlers(namespace: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
        async def on_shutdown(data: Any = None) -> None:
            watched.events.append(("server:shutdown", namespace, data))
            watched.noticed.set()
            if leave_on_notice and not leaving:
                leaving.append(True)
                await client.disconnect()

        async def on_disconnect(reason: Any = None) -> None:
            watched.events.append(("disconnect", namespace, reason))
            if watched.disconnected_from() >= set(namespaces):
                watched.gone.set()

        return on_shutdown, on_disconnect

    for namespace in namespaces:
        on_shutdown, on_disconnect = handlers(namespace)
        client.on("server:shutdown", on_shutdown, namespace=namespace)
        client.on("disconnect", on_disconnect, namespace=namespace)
    clients.adopt(client)
    await client.connect(
        url,
        namespaces=list(namespaces),
        transports=[transport],
        auth={"token": token},
        wait_timeout=5,
    )
    return watched


def assert_told_then_disconnected(watched: Watched, message: str = DEFAULT_NOTICE) -> None:
    """One ``server:shutdown`` ``{message, timestamp}`` per namespace, each before that
    namespace's disconnect."""
    for namespace in watched.namespaces:
        notices = watched.of("server:shutdown", namespace)
        assert len(notices) == 1, (namespace, watched.events)
        notice = notices[0]
        assert set(notice) == {"message", "timestamp"}, notice
        assert notice["message"] == message
        assert_epoch_ms(notice["timestamp"])
        order = [name for name, ns, _ in watched.events if ns == namespace]
        assert order == ["server:shutdown", "disconnect"], (namespace, watched.events)


async def assert_empty(gateway: Gateway) -> None:
    assert gateway.connections == {}
    assert await gateway.registry.connections() == []
    assert await gateway.registry.users() == frozenset()
    assert gateway.state == "stopped"


async def test_every_client_is_told_before_it_is_disconnected(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        specs: list[tuple[str, tuple[str, ...], str]] = []
        for n in range(20):
            role = ROLES[n % len(ROLES)]
            # Every namespace mix, from "/" alone to all four, rotated.
            start = n % len(NAMESPACES)
            rotated = NAMESPACES[start:] + NAMESPACES[:start]
            namespaces = rotated[: 1 + (n // len(ROLES)) % len(NAMESPACES)]
            specs.append((role, namespaces, "polling" if n % 3 == 0 else "websocket"))
        watched = await asyncio.gather(
            *(
                watch(
                    clients,
                    server.url,
                    authenticator.issue(USERS[role]),
                    namespaces=namespaces,
                    transport=transport,
                )
                for role, namespaces, transport in specs
            )
        )
        expected = sum(len(namespaces) for _, namespaces, _ in specs)
        assert len(gateway.connections) == expected
        assert len(await gateway.registry.connections()) == expected
        assert gateway.state == "running"

        await asyncio.wait_for(gateway.shutdown(grace=0.5), 15)

        await assert_empty(gateway)
        async with asyncio.timeout(5):
            await asyncio.gather(*(w.gone.wait() for w in watched))
        for w in watched:
            assert_told_then_disconnected(w)
            assert not w.client.connected


async def test_clients_that_leave_when_told_let_shutdown_finish_early(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        watched = await asyncio.gather(
            *(
                watch(
                    clients,
                    server.url,
                    authenticator.issue(USERS[ROLES[n % len(ROLES)]]),
                    namespaces=NAMESPACES[: 1 + n % len(NAMESPACES)],
                    transport="polling" if n % 4 == 0 else "websocket",
                    leave_on_notice=True,
                )
                for n in range(8)
            )
        )
        assert len(gateway.connections) == sum(len(w.namespaces) for w in watched)

        # The grace period is 10 s; the clients leave at once, so shutdown must end
        # well before it (a correctness bound, not a timing benchmark).
        await asyncio.wait_for(gateway.shutdown(grace=10), 5)

        await assert_empty(gateway)
        for w in watched:
            assert w.noticed.is_set()
            assert w.of("server:shutdown", w.namespaces[0]), w.events
            await asyncio.wait_for(w.gone.wait(), 5)
            assert not w.client.connected


async def test_draining_refuses_new_connections_and_a_second_call_waits(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    admin_api = AdminAPI(gateway)
    async with clients.serve(gateway, server_kind, admin_api) as server:
        lingering = await watch(
            clients, server.url, authenticator.issue(USERS["nurse"]), namespaces=("/",)
        )
        first = asyncio.create_task(gateway.shutdown(grace=30))
        try:
            await until(lambda: gateway.state == "draining")
            await asyncio.wait_for(lingering.noticed.wait(), 5)

            refusal = await clients.refusal(
                server.url, auth={"token": authenticator.issue(USERS["doctor"])}
            )
            assert refusal.data["data"]["code"] == "unavailable", refusal
            assert gateway.state == "draining"
            assert len(gateway.connections) == 1
            async with aiohttp.ClientSession(server.url) as http:
                async with http.get(admin_api.prefix + "/health") as response:
                    assert response.status == 503
                    health = await response.json()
                    assert (health["success"], health["code"]) == (False, "unavailable")
                    assert health["data"]["status"] == "draining", health
                    assert health["data"]["activeConnections"] == 1
                headers = {"Authorization": f"Bearer {authenticator.issue(USERS['admin'])}"}
                async with http.get(admin_api.prefix + "/connections", headers=headers) as response:
                    assert response.status == 503
                    assert (await response.json())["code"] == "unavailable"

            # A second call with no grace at all must not cut the first one short.
            second = asyncio.create_task(gateway.shutdown(grace=0))
            # A round trip over the lingering socket: had the second call started a
            # shutdown of its own, the socket would be gone by the time the ack comes.
            ack = await call(lingering.client, "ping")
            assert ack["success"] is True, ack
            assert ack["status"] == "pong"
            assert not second.done()
            assert not first.done()
            assert len(gateway.connections) == 1
            assert gateway.state == "draining"

            # The client leaves; the first call finishes, and the second with it.
            await lingering.client.disconnect()
            await asyncio.wait_for(second, 5)
            assert first.done()
            assert gateway.state == "stopped"
            await first
        finally:
            first.cancel()
        await assert_empty(gateway)
        assert lingering.of("server:shutdown", "/")[0]["message"] == DEFAULT_NOTICE


async def test_shutdown_before_mounting_does_nothing(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    assert gateway.state == "not_mounted"
    await asyncio.wait_for(gateway.shutdown(grace=0), 1)
    assert gateway.state == "not_mounted"

    # The early call left no trace: the gateway serves, and a later shutdown works.
    async with clients.serve(gateway, server_kind) as server:
        assert gateway.state == "running"
        watched = await watch(
            clients, server.url, authenticator.issue(USERS["staff"]), namespaces=("/", "/chat")
        )
        assert len(gateway.connections) == 2
        await asyncio.wait_for(gateway.shutdown(grace=0.2, message="Back soon"), 15)
        await assert_empty(gateway)
        await asyncio.wait_for(watched.gone.wait(), 5)
        assert_told_then_disconnected(watched, "Back soon")


async def test_aiohttp_app_shutdown_runs_the_gateway_shutdown(
    clients: Clients, authenticator: SignedTokenAuthenticator
) -> None:
    gateway = clinic_gateway(authenticator, config=quick_config(shutdown_grace=0.5))
    app = web.Application()
    gateway.attach(app)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    url = f"http://{host}:{port}"
    try:
        staying = await watch(clients, url, authenticator.issue(USERS["doctor"]))
        leaving = await watch(
            clients,
            url,
            authenticator.issue(USERS["nurse"]),
            namespaces=("/", "/updates"),
            leave_on_notice=True,
        )
        assert len(gateway.connections) == len(NAMESPACES) + 2
        assert gateway.state == "running"
    finally:
        await asyncio.wait_for(runner.cleanup(), 15)

    await assert_empty(gateway)
    await asyncio.wait_for(staying.gone.wait(), 5)
    assert_told_then_disconnected(staying)
    await asyncio.wait_for(leaving.gone.wait(), 5)
    assert leaving.of("server:shutdown", "/") or leaving.of("server:shutdown", "/updates")


async def test_run_aiohttp_hears_clients_leave_before_the_server_stops(
    clients: Clients, authenticator: SignedTokenAuthenticator
) -> None:
    """With run_aiohttp the gateway shuts down while aiohttp still reads from the
    connections, so clients that leave when told end the shutdown long before the
    grace period."""
    gateway = clinic_gateway(authenticator, config=quick_config(shutdown_grace=30))
    app = web.Application()
    gateway.attach(app)
    stop = asyncio.Event()
    listening: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    serving = asyncio.create_task(
        gateway.run_aiohttp(app, port=0, started=listening.set_result, stop=stop)
    )
    try:
        url = await asyncio.wait_for(listening, 5)
        leaving = await watch(
            clients, url, authenticator.issue(USERS["nurse"]), leave_on_notice=True
        )
        assert gateway.state == "running"
        stop.set()
        await asyncio.wait_for(serving, 10)  # far below the 30 s grace
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 15)
    await assert_empty(gateway)
    assert leaving.of("server:shutdown", "/"), leaving.events
    # The client left on its own: the gateway heard it instead of dropping it.
    reasons = {reason for name, _, reason in leaving.events if name == "disconnect"}
    assert reasons == {"client disconnect"}, leaving.events


@attrs.define
class Host:
    """A Starlette app with a lifespan of its own that records what ran, and the
    gateway's state when the host's shutdown ran."""

    app: Starlette
    happened: list[str]
    state_at_host_shutdown: list[str]


def lifespan_host(gateway: Gateway) -> Host:
    happened: list[str] = []
    states: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        happened.append("host startup")
        yield
        states.append(gateway.state)
        happened.append("host shutdown")

    async def hello(request: Request) -> PlainTextResponse:
        return PlainTextResponse("host app")

    app = Starlette(routes=[Route("/hello", hello)], lifespan=lifespan)
    return Host(app=app, happened=happened, state_at_host_shutdown=states)


@attrs.define
class Lifespan:
    """Drives the ASGI lifespan protocol of an app by hand."""

    app: Any
    inbox: asyncio.Queue[dict[str, Any]] = attrs.field(factory=asyncio.Queue)
    outbox: asyncio.Queue[dict[str, Any]] = attrs.field(factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        self.task = asyncio.create_task(self.app(scope, self.inbox.get, self.outbox.put))

    async def send(self, message_type: str) -> dict[str, Any]:
        """Send ``message_type``; return what the app answers."""
        await self.inbox.put({"type": message_type})
        return await asyncio.wait_for(self.outbox.get(), 15)


async def test_asgi_lifespan_shutdown_runs_the_gateway_shutdown_then_the_host_s(
    authenticator: SignedTokenAuthenticator,
) -> None:
    gateway = clinic_gateway(authenticator)
    host = lifespan_host(gateway)
    driver = Lifespan(gateway.asgi_app(host.app))
    driver.start()

    assert await driver.send("lifespan.startup") == {"type": "lifespan.startup.complete"}
    assert host.happened == ["host startup"]
    assert gateway.state == "running"

    assert await driver.send("lifespan.shutdown") == {"type": "lifespan.shutdown.complete"}
    assert host.happened == ["host startup", "host shutdown"]
    # The gateway shut down before the host's own shutdown ran.
    assert host.state_at_host_shutdown == ["stopped"]
    assert gateway.state == "stopped"
    assert driver.task is not None
    await asyncio.wait_for(driver.task, 5)


async def test_asgi_lifespan_without_a_host_app(authenticator: SignedTokenAuthenticator) -> None:
    gateway = clinic_gateway(authenticator)
    driver = Lifespan(gateway.asgi_app())
    driver.start()
    assert await driver.send("lifespan.startup") == {"type": "lifespan.startup.complete"}
    assert gateway.state == "running"
    assert await driver.send("lifespan.shutdown") == {"type": "lifespan.shutdown.complete"}
    assert gateway.state == "stopped"
    assert driver.task is not None
    await asyncio.wait_for(driver.task, 5)


@contextlib.asynccontextmanager
async def uvicorn_serving(app: Any) -> AsyncIterator[tuple[str, uvicorn.Server]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="on", log_level="warning", ws="websockets-sansio", timeout_graceful_shutdown=1
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await until(lambda: server.started or task.done())
        if task.done():
            task.result()
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


async def test_under_uvicorn_the_app_shuts_the_gateway_down_first(
    clients: Clients, authenticator: SignedTokenAuthenticator
) -> None:
    # uvicorn closes every connection (and waits for them) *before* it announces
    # lifespan shutdown, so by the time the lifespan hook runs gateway.shutdown() the
    # clients are already gone and cannot be told. Under uvicorn the notice reaches
    # clients only when the application calls gateway.shutdown() itself first, e.g.
    # from its signal handling, before letting uvicorn exit; this is that path.
    gateway = clinic_gateway(authenticator)
    host = lifespan_host(gateway)
    async with uvicorn_serving(gateway.asgi_app(host.app)) as (url, server):
        assert host.happened == ["host startup"]
        watched = [
            await watch(clients, url, authenticator.issue(USERS["doctor"])),
            await watch(clients, url, authenticator.issue(USERS["patient"]), transport="polling"),
        ]
        assert len(gateway.connections) == 2 * len(NAMESPACES)
        await asyncio.wait_for(gateway.shutdown(grace=0.5), 15)
        await assert_empty(gateway)
        for w in watched:
            await asyncio.wait_for(w.gone.wait(), 5)
            assert_told_then_disconnected(w)
        server.should_exit = True
    # uvicorn's lifespan shutdown then found the gateway already stopped, and the
    # host app's own shutdown still ran.
    assert host.happened == ["host startup", "host shutdown"]
    assert host.state_at_host_shutdown == ["stopped"]
    assert gateway.state == "stopped"


async def test_a_half_dead_polling_client_does_not_hang_shutdown(
    clients: Clients, authenticator: SignedTokenAuthenticator, server_kind: str
) -> None:
    gateway = clinic_gateway(authenticator)
    async with clients.serve(gateway, server_kind) as server:
        healthy = await watch(clients, server.url, authenticator.issue(USERS["admin"]))
        dead = await watch(
            clients,
            server.url,
            authenticator.issue(USERS["nurse"]),
            namespaces=("/", "/notifications"),
            transport="polling",
        )
        assert len(gateway.connections) == len(NAMESPACES) + 2
        # The client drops its transport without waiting for anything: the server
        # still holds its sockets, and the long-poll it was waiting on is orphaned.
        await dead.client.eio.disconnect(abort=True)
        # Half-dead: the server has not noticed (it would only at the ping timeout).
        assert len(gateway.connections) == len(NAMESPACES) + 2

        await asyncio.wait_for(gateway.shutdown(grace=0.5), 15)

        await assert_empty(gateway)
        await asyncio.wait_for(healthy.gone.wait(), 5)
        assert_told_then_disconnected(healthy)
