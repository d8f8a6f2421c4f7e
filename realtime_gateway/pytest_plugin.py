"""pytest fixtures over :mod:`realtime_gateway.testing` (needs pytest-asyncio).

Enable them in your ``conftest.py`` (the plugin is not loaded on its own, so that
installing the library changes no other project's test run)::

    pytest_plugins = ["realtime_gateway.pytest_plugin"]

    @pytest.fixture
    def gateway() -> Gateway:
        return build_gateway()  # a new gateway for each test: a gateway mounts once

and ask for ``gateway_server`` in a test::

    async def test_ping(gateway_server: GatewayTestServer) -> None:
        client = await gateway_server.connect("n1", roles=["nurse"])
        assert (await client.call("ping"))["success"] is True

Fixtures you may override: ``gateway`` (required), ``gateway_app`` (the host app to
serve; ``None`` by default: an empty aiohttp app, or no ASGI host app),
``gateway_server_kind`` (``"aiohttp"`` by default; parametrize it, say
``@pytest.mark.parametrize("gateway_server_kind", ["aiohttp", "asgi"])``, to run a
test on both) and ``gateway_mint`` (how identities become credentials; ``None``
signs them with the gateway's :class:`~realtime_gateway.SignedTokenAuthenticator`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from .testing import GatewayTestServer, Minter, ServerKind, serve

if TYPE_CHECKING:
    from ._gateway import Gateway

__all__ = ["gateway_app", "gateway_mint", "gateway_server", "gateway_server_kind"]


@pytest.fixture
def gateway_server_kind() -> ServerKind:
    """Which web server serves the gateway: ``"aiohttp"`` or ``"asgi"`` (uvicorn)."""
    return "aiohttp"


@pytest.fixture
def gateway_app() -> Any:
    """The host app to serve the gateway in; ``None`` for none."""
    return None


@pytest.fixture
def gateway_mint() -> Minter | None:
    """Makes credentials for ``gateway_server.connect(identity)``; ``None`` for the
    gateway's own signed tokens."""
    return None


@pytest_asyncio.fixture
async def gateway_server(
    gateway: Gateway,
    gateway_app: Any,
    gateway_server_kind: ServerKind,
    gateway_mint: Minter | None,
) -> AsyncIterator[GatewayTestServer]:
    """The ``gateway`` fixture served on 127.0.0.1 for the test (see
    :func:`realtime_gateway.testing.serve`); its clients leave at the end."""
    async with serve(gateway, gateway_app, kind=gateway_server_kind, mint=gateway_mint) as server:
        yield server
