"""One INFO record says the gateway is up: path, namespaces, authenticator and
authorizer classes, cluster or not, recovery on or off."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from realtime_gateway import (
    Gateway,
    SignedTokenAuthenticator,
    default_namespaces,
    reference_rules,
)

from .conftest import SECRET, Clients, quick_config


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def started(self) -> list[logging.LogRecord]:
        return [r for r in self.records if getattr(r, "rtg", {}).get("what") == "gateway_started"]


@pytest.fixture
def records() -> Iterator[Records]:
    logger = logging.getLogger("realtime_gateway")
    handler, level = Records(), logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.mark.parametrize("recovery", [False, True], ids=["recovery-off", "recovery-on"])
async def test_one_info_line_at_start(
    server_kind: str,
    authenticator: SignedTokenAuthenticator,
    clients: Clients,
    records: Records,
    recovery: bool,
) -> None:
    config = quick_config(path="/rt", recovery_window=120 if recovery else None)
    gateway = Gateway(
        authenticator=authenticator,
        authorizer=reference_rules(),
        config=config,
        namespaces=default_namespaces(),
    )
    async with clients.serve(gateway, server_kind):
        [record] = records.started()
    assert record.levelno == logging.INFO
    fields = record.rtg  # type: ignore[attr-defined]
    assert fields == {
        "what": "gateway_started",
        "path": "/rt",
        "namespaces": "/,/chat,/notifications,/updates",
        "authenticator": "SignedTokenAuthenticator",
        "authorizer": "RuleAuthorizer",
        "cluster": False,
        "recovery": "on" if recovery else "off",
    }
    await gateway.start()  # started already: no second line
    assert len(records.started()) == 1


def test_the_line_names_the_cluster_without_its_password(records: Records) -> None:
    # The line as a clustered gateway's start() writes it, without joining a cluster
    # (which test_cluster.py does with gateway processes of their own).
    gateway = Gateway(
        authenticator=SignedTokenAuthenticator([SECRET], salt="s", max_age=60),
        authorizer=reference_rules(),
        config=quick_config(redis_url="redis://ops:hunter2@10.0.0.7:6380/0"),
        namespaces=default_namespaces(),
    )
    gateway._log_started()
    [record] = records.started()
    fields = record.rtg  # type: ignore[attr-defined]
    assert fields["cluster"] is True
    assert fields["redis"] == "10.0.0.7:6380"
    assert fields["process"] == gateway.process
    assert "hunter2" not in record.getMessage()
