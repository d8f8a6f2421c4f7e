"""The example apps started the way their READMEs start them, each as its own process,
and answered by real clients: HTTP, and socket.io with tokens minted by the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from realtime_gateway import SignedTokenAuthenticator

from .conftest import Clients

ROOT = Path(__file__).resolve().parent.parent
KEY = "example-test-key-0123456789abcdef"
ENV = {**os.environ, "RTG_SECRET_KEY": KEY, "PYTHONUNBUFFERED": "1"}
EXAMPLES = ("aiohttp_clinic", "asgi_starlette", "custom_authorizer", "fastapi_app")
READY_WITHIN = 20.0  # seconds for an example to answer its health endpoint
STOP_WITHIN = 10.0  # seconds for it to exit after SIGTERM before it is killed


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def _wait_until_ready(process: asyncio.subprocess.Process, url: str, output: Path) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(READY_WITHIN):
        while True:
            if process.returncode is not None:
                told = await asyncio.to_thread(output.read_text)
                pytest.fail(f"the example exited early:\n{told}")
            try:
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), STOP_WITHIN)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


@contextlib.asynccontextmanager
async def running(example: str, output: Path) -> AsyncIterator[str]:
    """Start ``examples/{example}/app.py`` on a free port; yield its URL once it is
    healthy; always stop it. Its output goes to ``output``."""
    port = _free_port()
    with output.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, str(ROOT / "examples" / example / "app.py"), "--port", str(port)),
            env=ENV,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_until_ready(process, url + "/api/socket.io/health", output)
        yield url
    finally:
        await _stop(process)


async def mint(user_id: str, roles: Iterable[str] = (), permissions: Iterable[str] = ()) -> str:
    """A token from ``python -m realtime_gateway token`` with the examples' key."""
    args = ["token", "--user-id", user_id]
    args += [item for role in roles for item in ("--role", role)]
    args += [item for permission in permissions for item in ("--permission", permission)]
    minting = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "realtime_gateway", *args),
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(minting.communicate(), 30)
    assert minting.returncode == 0, err.decode()
    return out.decode().strip()


@pytest.fixture(params=EXAMPLES)
async def example(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    name: str = request.param
    async with running(name, tmp_path / f"{name}.log") as url:
        yield url


@pytest.fixture
async def starlette_example(tmp_path: Path) -> AsyncIterator[str]:
    async with running("asgi_starlette", tmp_path / "asgi_starlette.log") as url:
        yield url


@pytest.fixture
async def care_team_example(tmp_path: Path) -> AsyncIterator[str]:
    async with running("custom_authorizer", tmp_path / "custom_authorizer.log") as url:
        yield url


async def get_json(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.json()


async def test_example_accepts_a_cli_token_and_refuses_none(example: str, clients: Clients) -> None:
    token = await mint("n1", roles=["nurse"])
    welcomed: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

    async def on_connected(data: dict[str, str]) -> None:
        welcomed.set_result(data)

    client = await clients.connect(
        example, auth={"token": token}, handlers={"connected": on_connected}
    )
    welcome = await asyncio.wait_for(welcomed, 5)
    assert welcome["userId"] == "n1"
    assert welcome["socketId"] == client.get_sid("/")
    ack = await client.call("ping", timeout=5)
    assert ack["success"] is True
    assert ack["status"] == "pong"
    status, health = await get_json(example + "/api/socket.io/health")
    assert (status, health["data"]["status"], health["data"]["activeConnections"]) == (
        200,
        "healthy",
        1,
    )
    refusal = await clients.refusal(example)
    assert refusal.data["data"]["reason"] == "missing"


async def test_starlette_host_routes_answer_next_to_socketio(starlette_example: str) -> None:
    token = await mint("d1", roles=["doctor"], permissions=["view:patient"])
    status, page = await get_json(starlette_example + "/")
    assert status == 200
    assert page["startedAt"]  # set by the host's lifespan, which the gateway kept
    assert page["socketio"]["namespaces"] == ["/", "/chat", "/notifications", "/updates"]

    status, me = await get_json(
        starlette_example + "/me", headers={"Authorization": f"Bearer {token}"}
    )
    assert status == 200
    assert (me["userId"], me["roles"], me["permissions"]) == ("d1", ["doctor"], ["view:patient"])
    status, me = await get_json(
        starlette_example + "/me", headers={"Cookie": f"rtg_session={token}"}
    )
    assert (status, me["userId"]) == (200, "d1")

    async with (
        aiohttp.ClientSession() as session,
        session.get(starlette_example + "/me") as response,
    ):
        refusal = await response.json()
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (refusal["code"], refusal["reason"]) == ("unauthenticated", "missing")


async def test_care_team_rule_narrows_what_nurses_may_subscribe(
    care_team_example: str, clients: Clients
) -> None:
    nurse_token, doctor_token = await asyncio.gather(
        mint("u-nurse", roles=["nurse"], permissions=["view:patient"]),
        mint("u-doctor", roles=["doctor"], permissions=["view:patient"]),
    )
    nurse = await clients.connect(
        care_team_example, namespaces=["/updates"], auth={"token": nurse_token}
    )
    doctor = await clients.connect(
        care_team_example, namespaces=["/updates"], auth={"token": doctor_token}
    )

    on_team = await nurse.call("subscribe:patient", "p-1001", namespace="/updates", timeout=5)
    assert on_team["success"] is True
    assert on_team["patientId"] == "p-1001"
    off_team = await nurse.call("subscribe:patient", "p-1003", namespace="/updates", timeout=5)
    assert (off_team["success"], off_team["code"]) == (False, "forbidden")
    any_patient = await doctor.call("subscribe:patient", "p-1003", namespace="/updates", timeout=5)
    assert any_patient["success"] is True


async def test_leaving_a_care_team_revokes_a_live_subscription(
    care_team_example: str, clients: Clients
) -> None:
    nurse_token, admin_token = await asyncio.gather(
        mint("u-nurse", roles=["nurse"], permissions=["view:patient"]),
        mint("u-admin", roles=["admin"]),
    )
    revoked: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

    async def on_revoked(data: dict[str, str]) -> None:
        revoked.set_result(data)

    nurse = await clients.connect(
        care_team_example,
        namespaces=["/updates"],
        auth={"token": nurse_token},
        handlers={"access:revoked": on_revoked},
    )
    ack = await nurse.call("subscribe:patient", "p-1002", namespace="/updates", timeout=5)
    assert ack["success"] is True

    change = care_team_example + "/care-team/u-nurse/p-1002"
    async with aiohttp.ClientSession() as session:
        async with session.delete(change, headers={"Authorization": f"Bearer {nurse_token}"}) as r:
            assert r.status == 403  # only admins change care teams
        async with session.delete(change, headers={"Authorization": f"Bearer {admin_token}"}) as r:
            assert r.status == 200
            assert (await r.json())["revokedRooms"] == 1
    assert await asyncio.wait_for(revoked, 5) == {
        "room": "patient:p-1002",
        "reason": "reauthorized",
    }
    again = await nurse.call("subscribe:patient", "p-1002", namespace="/updates", timeout=5)
    assert (again["success"], again["code"]) == (False, "forbidden")


async def test_clinic_refresh_keeps_the_session_and_logout_revokes_it(
    tmp_path: Path, clients: Clients
) -> None:
    signer = SignedTokenAuthenticator([KEY], salt="realtime_gateway.session", max_age=3600)
    async with (
        running("aiohttp_clinic", tmp_path / "aiohttp_clinic.log") as url,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser,
    ):

        def cookie() -> str:
            return browser.cookie_jar.filter_cookies(URL(url))["rtg_session"].value

        async with browser.post(url + "/login", data={"user": "u-nurse"}) as response:
            assert response.status == 200  # followed to the dashboard
        login_token = cookie()
        session = signer.verify(login_token)
        assert session.session_id
        assert session.expires_at is not None
        # The clinic's tokens live --token-ttl seconds (default 15 minutes).
        assert 890 <= (session.expires_at - dt.datetime.now(dt.UTC)).total_seconds() <= 900

        own = {"Origin": url}
        async with browser.post(url + "/session/refresh", headers=own) as response:
            assert response.status == 200
            assert response.headers["Cache-Control"] == "no-store"
            refreshed = (await response.json())["token"]
        assert refreshed != login_token
        assert cookie() == refreshed
        assert signer.verify(refreshed).session_id == session.session_id
        assert signer.verify(refreshed).user_id == "u-nurse"

        # Another site's page cannot use the cookie, to refresh or to log out.
        for path in ("/session/refresh", "/logout"):
            foreign = {"Origin": "http://elsewhere.example"}
            async with browser.post(url + path, headers=foreign, allow_redirects=False) as r:
                assert r.status == 403
                assert (await r.json())["code"] == "forbidden"

        # A socket opened with the refreshed token, then the logout.
        revoked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        async def on_revoked(data: Any) -> None:
            revoked.set_result(data)

        await clients.connect(url, auth={"token": refreshed}, handlers={"auth:revoked": on_revoked})
        async with browser.post(url + "/logout", headers=own, allow_redirects=False) as response:
            assert response.status == 303
        assert await asyncio.wait_for(revoked, 5) == {"reason": "revoked"}
        assert "rtg_session" not in browser.cookie_jar.filter_cookies(URL(url))

        # Every token of the session is refused now: the socket handshake, the
        # refresh endpoint and the dashboard.
        for token in (login_token, refreshed):
            refusal = await clients.refusal(url, headers={"Cookie": f"rtg_session={token}"})
            assert refusal.data["data"]["reason"] == "revoked"
            async with aiohttp.ClientSession() as stranger:
                headers = {"Cookie": f"rtg_session={token}", **own}
                async with stranger.post(url + "/session/refresh", headers=headers) as r:
                    assert r.status == 401
                async with stranger.get(
                    url + "/dashboard", headers=headers, allow_redirects=False
                ) as r:
                    assert (r.status, r.headers["Location"]) == (303, "/")
        async with browser.get(url + "/logout") as response:
            assert response.status == 405  # logging out is a POST only

        # The next login is a new session.
        async with browser.post(url + "/login", data={"user": "u-nurse"}) as response:
            assert response.status == 200
        assert signer.verify(cookie()).session_id != session.session_id
