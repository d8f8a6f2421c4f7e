"""The example's fixtures: the library's pytest plugin, given this app's gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI

from realtime_gateway import Gateway
from realtime_gateway.testing import Minter, ServerKind

from .app import SessionStore, build_gateway, create_app

pytest_plugins = ["realtime_gateway.pytest_plugin"]

KEY = "fastapi-example-test-key-0123456789"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SessionStore]:
    sessions = SessionStore(str(tmp_path / "sessions.sqlite3"))
    yield sessions
    sessions.close()


@pytest.fixture
def gateway(store: SessionStore) -> Gateway:
    return build_gateway(store, KEY)


@pytest.fixture
def gateway_app(gateway: Gateway, store: SessionStore) -> FastAPI:
    return create_app(gateway, store)


@pytest.fixture
def gateway_server_kind() -> ServerKind:
    return "asgi"  # uvicorn, as in production


@pytest.fixture
def gateway_mint(store: SessionStore) -> Minter:
    # The kit's identities become sessions in the table, as a login makes them.
    return store.open
