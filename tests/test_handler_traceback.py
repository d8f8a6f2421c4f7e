"""A handler that raises answers ``internal``; the ERROR record names only the
error's type, and at DEBUG a second record has the stack (where in the code), never
the payload, the exception's message or the frames' local variables."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from realtime_gateway import (
    AllowAll,
    Connection,
    Gateway,
    GatewayNamespace,
    Identity,
    SignedTokenAuthenticator,
    event,
)

from .conftest import Clients, call, quick_config

SECRET_VALUE = "patient-Jane-Doe-1970"


def look_up_chart(chart: dict[str, Any]) -> str:
    mrn = chart["mrn"]  # a local the record must not show
    raise RuntimeError(f"no chart for {mrn}")


class Charts(GatewayNamespace):
    @event("chart:open", payload=dict)
    async def open_chart(self, conn: Connection, chart: dict[str, Any]) -> None:
        try:
            look_up_chart(chart)
        except RuntimeError as exc:
            raise LookupError(f"lookup failed: {exc}") from exc


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.arrived = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.arrived.set()

    def of(self, what: str) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "rtg", {}).get("what") == what]


@pytest.fixture
def captured() -> Iterator[Captured]:
    logger = logging.getLogger("realtime_gateway")
    handler, level = Captured(), logger.level
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def raise_in_handler(
    authenticator: SignedTokenAuthenticator, clients: Clients, captured: Captured
) -> None:
    gateway = Gateway(
        authenticator=authenticator,
        authorizer=AllowAll(),
        config=quick_config(),
        namespaces=[Charts("/")],
    )
    token = authenticator.issue(Identity(user_id="u1"))
    async with clients.serve(gateway, "aiohttp") as server:
        client = await clients.connect(server.url, auth={"token": token})
        ack = await call(client, "chart:open", {"mrn": SECRET_VALUE})
        assert ack == {"success": False, "error": "Internal error", "code": "internal"}
        async with asyncio.timeout(5):
            while not captured.of("handler_failed"):
                captured.arrived.clear()
                await captured.arrived.wait()


async def test_traceback_at_debug_without_values(
    authenticator: SignedTokenAuthenticator, clients: Clients, captured: Captured
) -> None:
    logging.getLogger("realtime_gateway").setLevel(logging.DEBUG)
    await raise_in_handler(authenticator, clients, captured)
    [failed] = captured.of("handler_failed")
    assert failed.levelno == logging.ERROR
    assert failed.rtg["error"] == "LookupError"  # type: ignore[attr-defined]
    [stack] = captured.of("handler_failed_traceback")
    assert stack.levelno == logging.DEBUG
    text = stack.getMessage()
    assert stack.rtg["event"] == "chart:open"  # type: ignore[attr-defined]
    # Where: both functions, this file, the raising lines, both exception types.
    assert "in open_chart" in text
    assert "in look_up_chart" in text
    assert "test_handler_traceback.py" in text
    assert 'raise RuntimeError(f"no chart for {mrn}")' in text
    assert text.index("RuntimeError") < text.index("which led to") < text.rindex("LookupError")
    # Never what: no payload, no message, no locals.
    for record in captured.records:
        assert SECRET_VALUE not in record.getMessage()
        assert SECRET_VALUE not in repr(getattr(record, "rtg", {}))
    assert "no chart for" not in text.replace('f"no chart for {mrn}"', "")
    assert "lookup failed" not in text.replace('f"lookup failed: {exc}"', "")


async def test_no_traceback_above_debug(
    authenticator: SignedTokenAuthenticator, clients: Clients, captured: Captured
) -> None:
    logging.getLogger("realtime_gateway").setLevel(logging.INFO)
    await raise_in_handler(authenticator, clients, captured)
    assert captured.of("handler_failed")
    assert not captured.of("handler_failed_traceback")
