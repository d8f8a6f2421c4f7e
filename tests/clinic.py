"""The reference clinic set-up shared by the built-in namespace tests: one user per
role, the reference rules, the four built-in namespaces, and an inbox that records
what each client receives."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import socketio

from realtime_gateway import (
    Authenticator,
    Gateway,
    GatewayConfig,
    GatewayNamespace,
    Identity,
    RuleAuthorizer,
    default_namespaces,
    reference_rules,
)

from .conftest import Clients, quick_config, socketio_client

NAMESPACES = ("/", "/notifications", "/chat", "/updates")

USERS = {
    "admin": Identity(user_id="u-admin", roles={"admin"}, display_name="Ada Admin"),
    "doctor": Identity(
        user_id="u-doctor",
        roles={"doctor"},
        permissions={"view:patient", "view:clinical_notes"},
        display_name="Dr Dee",
    ),
    "nurse": Identity(
        user_id="u-nurse", roles={"nurse"}, permissions={"view:patient"}, display_name="Nat Nurse"
    ),
    "staff": Identity(user_id="u-staff", roles={"staff"}, display_name="Sam Staff"),
    "patient": Identity(user_id="u-patient", roles={"patient"}, display_name="Pat Patient"),
}
"""One user per reference role."""


def clinic_gateway(
    authenticator: Authenticator,
    *,
    authorizer: RuleAuthorizer | None = None,
    config: GatewayConfig | None = None,
    namespaces: Iterable[GatewayNamespace] | None = None,
) -> Gateway:
    """A gateway with the reference rules and the built-in namespaces."""
    return Gateway(
        authenticator=authenticator,
        authorizer=authorizer or reference_rules(),
        config=config or quick_config(),
        namespaces=default_namespaces() if namespaces is None else namespaces,
    )


class Inbox:
    """Everything one client receives, by namespace and event, with waits.

    To show that something did *not* arrive, send the client a later event and wait
    for that one: a socket receives its events in the order they were emitted.
    """

    def __init__(self) -> None:
        self.received: dict[tuple[str, str], list[Any]] = defaultdict(list)
        self._changed = asyncio.Event()

    def listen(self, client: socketio.AsyncClient, namespaces: Iterable[str]) -> None:
        for namespace in namespaces:
            client.on("*", self._recorder(namespace), namespace=namespace)

    def _recorder(self, namespace: str) -> Callable[..., Any]:
        async def record(name: str, data: Any = None, *more: Any) -> None:
            self.received[(namespace, name)].append(data)
            self._changed.set()

        return record

    def of(self, event: str, namespace: str = "/") -> list[Any]:
        """What arrived so far as ``event`` in ``namespace``."""
        return list(self.received.get((namespace, event), ()))

    async def wait(
        self, event: str, namespace: str = "/", *, count: int = 1, within: float = 5.0
    ) -> list[Any]:
        """Wait until ``count`` ``event``s have arrived in ``namespace``; return them."""
        async with asyncio.timeout(within):
            while len(self.received.get((namespace, event), ())) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.of(event, namespace)


async def connect_as(
    clients: Clients,
    url: str,
    token: str,
    *,
    namespaces: Iterable[str] = NAMESPACES,
    transport: str = "websocket",
) -> tuple[socketio.AsyncClient, Inbox]:
    """Connect with ``token`` to ``namespaces``, recording every server event."""
    namespaces = tuple(namespaces)
    inbox = Inbox()
    client = socketio_client()
    inbox.listen(client, namespaces)
    clients.adopt(client)
    await client.connect(
        url,
        namespaces=list(namespaces),
        transports=[transport],
        auth={"token": token},
        wait_timeout=5,
    )
    return client, inbox


ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def assert_iso_utc(value: object) -> None:
    """An ISO 8601 UTC timestamp with milliseconds, within a minute of now."""
    assert isinstance(value, str)
    assert ISO_UTC.fullmatch(value), value
    moment = dt.datetime.fromisoformat(value)
    assert abs((dt.datetime.now(dt.UTC) - moment).total_seconds()) < 60


def assert_epoch_ms(value: object) -> None:
    """Epoch milliseconds (an integer, as JavaScript's ``Date.now()``), within a
    minute of now."""
    assert isinstance(value, int)
    assert not isinstance(value, bool)
    assert abs(time.time() * 1000 - value) < 60_000, value


def without_timestamp(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` minus its (checked, epoch milliseconds) ``timestamp``."""
    assert_epoch_ms(payload["timestamp"])
    return {key: value for key, value in payload.items() if key != "timestamp"}


def assert_refused(ack: Any, code: str, field: Any = ...) -> None:
    """A failure envelope with ``code`` and a message; ``field``, when given (``None``
    included), is what the envelope names."""
    assert isinstance(ack, dict)
    assert ack["success"] is False, ack
    assert ack["code"] == code, ack
    assert isinstance(ack["error"], str)
    assert ack["error"]
    if field is not ...:
        assert ack.get("field") == field, ack
