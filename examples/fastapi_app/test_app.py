"""The FastAPI example in-process, with realtime_gateway's testing kit: what its
users do, over HTTP and socket.io, under uvicorn."""

from __future__ import annotations

from typing import Any

from yarl import URL

from realtime_gateway.testing import GatewayTestServer

from .app import COOKIE


async def login(server: GatewayTestServer, user: str) -> str:
    async with server.http.post("/login", json={"user": user}) as response:
        assert response.status == 200
    return server.http.cookie_jar.filter_cookies(URL(server.url))[COOKIE].value


async def me(server: GatewayTestServer, **headers: str) -> tuple[int, Any]:
    async with server.http.get("/me", headers=headers) as response:
        return response.status, await response.json()


async def test_login_opens_a_session_for_routes_and_sockets_and_logout_ends_it(
    gateway_server: GatewayTestServer,
) -> None:
    secret = await login(gateway_server, "u-nurse")
    status, who = await me(gateway_server)
    assert (status, who["userId"], who["roles"], who["connected"]) == (
        200,
        "u-nurse",
        ["nurse"],
        False,
    )

    # The browser's cookie opens a socket too.
    nurse = await gateway_server.connect(headers={"Cookie": f"{COOKIE}={secret}"})
    assert (await nurse.receive("connected"))["userId"] == "u-nurse"
    assert (await me(gateway_server))[1]["connected"] is True
    # And the session secret as a bearer token, for a non-browser client.
    status, who = await me(gateway_server, Authorization=f"Bearer {secret}")
    assert (status, who["userId"]) == (200, "u-nurse")

    async with gateway_server.http.post("/logout") as response:
        assert (response.status, (await response.json())["disconnected"]) == (200, 1)
    assert await nurse.receive("auth:revoked") == {"reason": "revoked"}
    await nurse.disconnected()
    assert (await me(gateway_server, Cookie=f"{COOKIE}={secret}"))[0] == 401
    refusal = await gateway_server.refusal(headers={"Cookie": f"{COOKIE}={secret}"})
    assert refusal.code == "unauthenticated"


async def test_routes_refuse_without_saying_why(gateway_server: GatewayTestServer) -> None:
    secret = await login(gateway_server, "u-doctor")
    gateway_server.http.cookie_jar.clear()
    answers = [
        await me(gateway_server),  # no credential
        await me(gateway_server, Cookie=f"{COOKIE}=not-a-session"),  # unknown session
        await me(gateway_server, Authorization="Bearer a.b.c"),  # a forged token
        # Another site's page riding the session cookie.
        await me(gateway_server, Cookie=f"{COOKIE}={secret}", Origin="http://elsewhere.example"),
    ]
    assert answers == [(401, {"detail": "Not authenticated"})] * 4
    failures = gateway_server.gateway.metrics.auth_failures
    assert (failures["missing"], failures["rejected"], failures["origin"]) == (1, 1, 1)
    assert (await me(gateway_server, Cookie=f"{COOKIE}={secret}"))[0] == 200


async def test_ward_handover_reaches_the_ward_with_a_checked_payload(
    gateway_server: GatewayTestServer,
) -> None:
    nurse = await gateway_server.connect("u-nurse", roles=["nurse"], namespaces=["/ward"])
    doctor = await gateway_server.connect("u-doctor", roles=["doctor"], namespaces=["/ward"])
    clerk = await gateway_server.connect("u-clerk", roles=["staff"], namespaces=["/ward"])

    note = {"patientId": "p-1001", "summary": "Stable overnight", "priority": "urgent"}
    ack = await nurse.call("handover", note, namespace="/ward")
    assert ack["success"] is True
    heard = await doctor.receive("handover", namespace="/ward")
    assert (heard["patientId"], heard["priority"], heard["from"]) == ("p-1001", "urgent", "u-nurse")
    assert await nurse.receive("handover", namespace="/ward") == heard

    bad = await nurse.call("handover", {**note, "priority": "high"}, namespace="/ward")
    assert (bad["success"], bad["code"], bad["field"]) == (False, "invalid_payload", "priority")
    refused = await clerk.call("handover", note, namespace="/ward")
    assert (refused["success"], refused["code"]) == (False, "forbidden")
    assert clerk.received("handover", namespace="/ward") == []


async def test_admin_api_and_built_in_namespaces_are_served(
    gateway_server: GatewayTestServer,
) -> None:
    doctor = await gateway_server.connect(
        "u-doctor", roles=["doctor"], namespaces=["/", "/notifications"]
    )
    async with gateway_server.http.get("/api/socket.io/health") as response:
        health = await response.json()
    assert (response.status, health["data"]["activeConnections"]) == (200, 2)
    await gateway_server.gateway.notify_role("doctor", "Ward round", "At ten")
    assert (await doctor.receive("notification", namespace="/notifications"))["title"] == (
        "Ward round"
    )
