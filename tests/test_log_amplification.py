"""No client can make the gateway write log lines in proportion to what it sends.

One event is at most one ``access_denied`` record per reason, with the count of
refusals (the audit trail and the metrics still get every decision); records at
WARNING and above are rate limited per kind, with one ``log_suppressed`` record
saying how many were left out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from realtime_gateway import (
    AdminAPI,
    AuditRecord,
    ConfigurationError,
    Gateway,
    GatewayConfig,
    SignedTokenAuthenticator,
    default_namespaces,
    pseudonym,
    reference_rules,
)
from realtime_gateway._log import log, set_log_limit

from .clinic import USERS, clinic_gateway, connect_as
from .conftest import Clients, call, quick_config

CHANNELS = 100


class Records(logging.Handler):
    """The ``realtime_gateway`` logger's records, with a wait for one of a kind."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.changed.set()

    def of(self, what: str) -> list[dict[str, Any]]:
        found = (getattr(record, "rtg", None) for record in self.records)
        return [fields for fields in found if fields is not None and fields["what"] == what]

    async def wait_for(self, what: str, within: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while not self.of(what):
                self.changed.clear()
                await self.changed.wait()
        return self.of(what)[0]


@pytest.fixture
def records() -> Iterator[Records]:
    logger = logging.getLogger("realtime_gateway")
    handler = Records()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        set_log_limit(GatewayConfig().log_repeat_limit, GatewayConfig().log_repeat_interval)


async def test_one_subscribe_of_many_unknown_channels_is_one_record(
    records: Records,
    authenticator: SignedTokenAuthenticator,
    clients: Clients,
    server_kind: str,
) -> None:
    audited: list[AuditRecord] = []
    gateway = Gateway(
        authenticator=authenticator,
        authorizer=reference_rules(),
        namespaces=default_namespaces(),
        config=quick_config(),
        audit=audited.append,
    )
    async with clients.serve(gateway, server_kind) as server:
        client, _ = await connect_as(
            clients, server.url, authenticator.issue(USERS["nurse"]), namespaces=["/notifications"]
        )
        channels = [f"ward-{n}" for n in range(CHANNELS)]
        ack = await call(client, "subscribe", {"channels": channels}, "/notifications")
        assert ack == {"success": True, "subscribedChannels": [], "deniedChannels": channels}
        # A well-behaved single refusal is still one record, with count 1.
        ack = await call(client, "subscribe", {"channels": ["one-more"]}, "/notifications")
        assert ack["deniedChannels"] == ["one-more"]

    denied = records.of("access_denied")
    assert [record["count"] for record in denied] == [CHANNELS, 1]
    assert denied[0] == {
        "what": "access_denied",
        "user": pseudonym("u-nurse"),
        "action": "subscribe",
        "target": "channel:*",
        "reason": denied[0]["reason"],
        "count": CHANNELS,
    }
    # The audit trail and the metrics keep every decision.
    refusals = [record for record in audited if not record.allowed and record.action == "subscribe"]
    assert sorted(record.target for record in refusals) == sorted(
        f"channel:{channel}" for channel in [*channels, "one-more"]
    )
    assert gateway.metrics.access_denied["subscribe"] == CHANNELS + 1


async def test_repeated_warnings_are_limited_and_summed_up(
    records: Records, authenticator: SignedTokenAuthenticator, clients: Clients
) -> None:
    limit, interval, attempts = 3, 1.0, 12
    gateway = clinic_gateway(
        authenticator, config=quick_config(log_repeat_limit=limit, log_repeat_interval=interval)
    )
    async with clients.serve(gateway, "aiohttp", AdminAPI(gateway)) as server:
        for _ in range(attempts):
            refusal = await clients.refusal(server.url, auth={"token": "not-a-token"})
            assert refusal.data["data"]["code"] == "unauthenticated"
        # Each handshake is refused (and counted) whether its record is written or not.
        assert sum(gateway.metrics.auth_failures.values()) == attempts
        assert len(records.of("auth_failed")) == limit
        stats = await gateway.stats()
        assert stats["log_records_suppressed"] >= attempts - limit
        # The summary comes when the interval ends, with no other record to carry it.
        summary = await records.wait_for("log_suppressed", within=interval + 5)
        assert summary == {
            "what": "log_suppressed",
            "kind": "auth_failed",
            "suppressed": attempts - limit,
            "interval_s": interval,
        }
        [written] = [r for r in records.records if r.getMessage().startswith("log_suppressed")]
        assert written.levelno == logging.WARNING
        # A new interval writes records again.
        await clients.refusal(server.url, auth={"token": "not-a-token"})
        assert len(records.of("auth_failed")) == limit + 1


def test_the_limit_counts_each_kind_apart_and_spares_info(records: Records) -> None:
    set_log_limit(2, 60.0)
    for _ in range(5):
        log(logging.WARNING, "kind_a", n=1)
        log(logging.ERROR, "kind_b")
        log(logging.INFO, "kind_c")
    assert len(records.of("kind_a")) == 2
    assert len(records.of("kind_b")) == 2
    assert len(records.of("kind_c")) == 5
    set_log_limit(None, 60.0)
    for _ in range(5):
        log(logging.WARNING, "kind_a")
    assert len(records.of("kind_a")) == 7


def test_without_an_event_loop_the_next_record_carries_the_summary(records: Records) -> None:
    set_log_limit(1, 0.05)
    for _ in range(4):
        log(logging.WARNING, "kind_a")
    assert records.of("log_suppressed") == []
    time.sleep(0.06)  # no event loop here: the interval has to pass
    log(logging.WARNING, "kind_a")
    assert records.of("log_suppressed") == [
        {"what": "log_suppressed", "kind": "kind_a", "suppressed": 3, "interval_s": 0.05}
    ]
    assert len(records.of("kind_a")) == 2


@pytest.mark.parametrize(
    ("field", "value"),
    [("log_repeat_limit", 0), ("log_repeat_limit", 1.5), ("log_repeat_interval", 0)],
)
def test_bad_limits_are_refused(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError) as raised:
        GatewayConfig(**{field: value})
    assert raised.value.field == field
