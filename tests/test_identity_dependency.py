"""Gateway.identity_dependency(): an HTTP route's caller, authenticated as a socket is,
in FastAPI and in plain Starlette, behind uvicorn."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from realtime_gateway import Gateway, Identity, SignedTokenAuthenticator, reference_rules
from realtime_gateway.testing import GatewayTestServer, serve

from .conftest import SALT, SECRET, quick_config

FRAMEWORKS = ("fastapi", "starlette")


def fastapi_app(gateway: Gateway) -> FastAPI:
    current_identity = gateway.identity_dependency()
    api = FastAPI()

    # Depends() as the default: under `from __future__ import annotations` FastAPI
    # resolves annotations in the module's globals, where current_identity is not.
    async def whoami(identity: Identity = Depends(current_identity)) -> dict[str, Any]:  # noqa: B008
        return {"userId": identity.user_id, "roles": sorted(identity.roles)}

    api.add_api_route("/patients/{patient_id}/whoami", whoami, methods=["GET", "POST"])
    return api


def starlette_app(gateway: Gateway) -> Starlette:
    current_identity = gateway.identity_dependency()

    async def whoami(request: Request) -> JSONResponse:
        identity = await current_identity(request)
        return JSONResponse({"userId": identity.user_id, "roles": sorted(identity.roles)})

    return Starlette(
        routes=[Route("/patients/{patient_id}/whoami", whoami, methods=["GET", "POST"])]
    )


@pytest.fixture(params=FRAMEWORKS)
async def server(request: pytest.FixtureRequest) -> Any:
    gateway = Gateway(
        authenticator=SignedTokenAuthenticator([SECRET], salt=SALT, max_age=600),
        authorizer=reference_rules(),
        config=quick_config(allowed_origins=("https://ward.example",)),
    )
    build = fastapi_app if request.param == "fastapi" else starlette_app
    async with serve(gateway, build(gateway), kind="asgi") as running:
        yield running


async def whoami(server: GatewayTestServer, method: str = "GET", **headers: str) -> tuple[int, Any]:
    async with server.http.request(method, "/patients/p-1001/whoami", headers=headers) as response:
        body = await response.json() if response.status == 200 else await response.text()
        return response.status, (body, response.headers.get("WWW-Authenticate"))


async def test_the_credentials_of_a_socket_identify_a_route_caller(
    server: GatewayTestServer,
) -> None:
    token = await server.token("d1", roles=["doctor"])
    expected = (200, ({"userId": "d1", "roles": ["doctor"]}, None))
    assert await whoami(server, Authorization=f"Bearer {token}") == expected
    assert await whoami(server, "POST", Cookie=f"rtg_session={token}") == expected
    # A listed origin may send the cookie, and so may the app's own.
    listed = {"Cookie": f"rtg_session={token}", "Origin": "https://ward.example"}
    assert await whoami(server, "POST", **listed) == expected
    own = {"Cookie": f"rtg_session={token}", "Origin": server.url}
    assert await whoami(server, "POST", **own) == expected


async def test_every_refusal_is_the_same_401_and_counted_by_reason(
    server: GatewayTestServer,
) -> None:
    token = await server.token("d1", roles=["doctor"])
    identity = server.gateway.authenticator.verify(token)  # type: ignore[attr-defined]
    answers = [
        await whoami(server),
        await whoami(server, Authorization="Bearer not.a.token"),
        await whoami(server, "POST", Cookie=f"rtg_session={token}", Origin="http://evil.example"),
    ]
    assert identity.session_id is not None
    await server.gateway.revoke_session(identity.session_id)
    answers.append(await whoami(server, Authorization=f"Bearer {token}"))
    # FastAPI answers {"detail": ...}, Starlette the text; either way, one answer.
    assert len(set(map(repr, answers))) == 1
    status, (body, challenge) = answers[0]
    assert (status, challenge) == (401, "Bearer")
    assert "Not authenticated" in body
    failures = server.gateway.metrics.auth_failures
    assert {
        reason: failures[reason] for reason in ("missing", "malformed", "origin", "revoked")
    } == {
        "missing": 1,
        "malformed": 1,
        "origin": 1,
        "revoked": 1,
    }


async def test_logs_name_the_route_template_not_the_path(
    server: GatewayTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="realtime_gateway")
    await whoami(server)
    (record,) = [r for r in caplog.records if "auth_failed" in r.getMessage()]
    assert "p-1001" not in record.getMessage()
