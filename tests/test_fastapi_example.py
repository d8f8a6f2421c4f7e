"""examples/fastapi_app started as its README starts it, under uvicorn in its own
process, used as a browser and a service would: login cookie, socket, logout."""

from __future__ import annotations

from pathlib import Path

import aiohttp
from yarl import URL

from realtime_gateway import testing

from .conftest import Clients
from .test_examples import mint, running


async def test_a_browser_session_opens_routes_and_sockets_until_logout(
    tmp_path: Path, clients: Clients
) -> None:
    async with (
        running("fastapi_app", tmp_path / "fastapi_app.log") as url,
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser,
    ):
        async with browser.get(url + "/me") as response:
            assert (response.status, await response.json()) == (
                401,
                {"detail": "Not authenticated"},
            )
        async with browser.post(url + "/login", json={"user": "u-nurse"}) as response:
            assert response.status == 200
            assert "HttpOnly" in response.headers["Set-Cookie"]
        secret = browser.cookie_jar.filter_cookies(URL(url))["rtg_session"].value
        async with browser.get(url + "/me") as response:
            assert (await response.json())["userId"] == "u-nurse"

        # The session secret opens a socket (a browser's cookie; here in a header).
        nurse = await testing.connect(
            url, namespaces=["/", "/ward"], headers={"Cookie": f"rtg_session={secret}"}
        )
        clients.adopt(nurse.sio)
        assert (await nurse.receive("connected"))["userId"] == "u-nurse"
        # A service with a CLI token in the same ward.
        doctor = await clients.connect(
            url, namespaces=["/ward"], auth={"token": await mint("u-doctor", roles=["doctor"])}
        )
        note = {"patientId": "p-1001", "summary": "Comfortable", "priority": "routine"}
        ack = await nurse.call("handover", note, namespace="/ward")
        assert (ack["success"], ack["handover"]["from"]) == (True, "Nurse Demo")
        assert doctor.connected

        async with browser.post(url + "/logout") as response:
            assert (await response.json())["disconnected"] == 2  # "/" and "/ward"
        assert await nurse.receive("auth:revoked") == {"reason": "revoked"}
        refusal = await clients.refusal(url, headers={"Cookie": f"rtg_session={secret}"})
        assert refusal.data["data"]["reason"] == "rejected"
