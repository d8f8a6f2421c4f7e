"""The soak scenario of the benchmark harness (``SOAK``), in its smoke version, so that
it cannot rot: a handful of churning clients for a few seconds against the gateway,
with the slow reader and the flooder. Nothing is timed here: the test asserts that
the report has every figure, that the slow reader was evicted by the pending-output
bound, that the flooder was never answered past its burst without ``rate_limited``,
and that the registry equals the live sockets at the end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from realtime_gateway import GatewayConfig

ROOT = Path(__file__).resolve().parent.parent
FLOOD_BURST = GatewayConfig().rate_burst  # answers a socket gets before rate_limited
RUN = ROOT / "benchmarks" / "run.py"
SMOKE_WITHIN = 50.0  # seconds: the smoke soak runs for 8 and takes about 12


@pytest.mark.timeout(SMOKE_WITHIN + 10)
def test_smoke_soak_reports_every_figure_and_a_registry_equal_to_live_sockets(
    tmp_path: Path,
) -> None:
    report, results = tmp_path / "RESULTS.md", tmp_path / "results.json"
    argv = [sys.executable, str(RUN), "--smoke", "--scenarios", "SOAK", "--servers", "A"]
    try:
        done = subprocess.run(  # noqa: S603 (our own harness, with this interpreter)
            [*argv, "--out", str(report), "--json", str(results)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=SMOKE_WITHIN,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the smoke soak took more than {SMOKE_WITHIN:.0f} s:\n{exc.stdout!r}")
    told = f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    assert done.returncode == 0, told

    found = json.loads(results.read_text())
    [check] = [check for check in found["checks"] if check["scenario"] == "SOAK"]
    assert check["server"] == "A"
    assert check["ok"], check
    assert check["expected"] > 0  # client lives long enough to need a message
    soak = found["soak"]
    assert soak["errors"] == [], soak["errors"]

    rss = soak["rss"]
    assert 0 < rss["min_mib"] <= rss["max_mib"]
    assert rss["spread"] >= 0
    tasks = soak["tasks"]
    assert tasks["quiet_mean"] > 0
    assert tasks["tail_mean"] > 0
    assert tasks["back_to_idle"], tasks

    registry = soak["registry"]
    assert registry["equal"], registry
    frozen, closed = registry["frozen"], registry["closed"]
    assert registry["held"] > 1  # churning clients and the controller
    assert frozen["registry"] == frozen["connections"] == registry["held"]
    assert frozen["eio_sessions"] == registry["held"]
    assert closed["registry"] == closed["connections"] == closed["eio_sessions"] == 0

    acks = soak["acks"]
    assert acks["quiet_calls"] > 0
    assert acks["flood_calls"] > 0
    assert acks["quiet_p99_ms"] > 0
    assert acks["flood_p99_ms"] > 0
    assert acks["ratio"] > 0
    assert acks["failed"] == {}
    assert acks["wrong"] == {}

    slow = soak["slow_reader"]
    assert slow["evicted"], slow
    assert slow["registry_cleaned"], slow
    assert soak["slow_consumers_total"] == 1  # the slow reader alone
    flood = soak["flooder"]
    # Under load the window may end before the first answers are back (the gateway
    # reads a flooding connection only as fast as it answers it).
    assert flood["sent"] > 0
    assert flood["sent"] >= flood["answers"] >= flood["rate_limited"]
    if flood["answers"] > FLOOD_BURST:
        assert flood["rate_limited"] > 0
    assert flood["server_rate_limited"] >= flood["rate_limited"]
    churn = soak["churn"]
    assert churn["lives"] > soak["clients"]  # every client came back at least once
    assert churn["connect_failures"] == 0
    assert churn["lives_without_messages"] == 0
    assert churn["messages"] > 0
    assert set(soak["server_busy"]) == {"warm-up", "quiet", "flood", "slow reader", "tail"}

    markdown = report.read_text()
    section = markdown.split("## Soak:", 1)[1]
    for figure in ("RSS after warm-up", "asyncio tasks", "at the freeze", "ack p99"):
        assert figure in section
    for figure in ("slow reader", "flooder", "churn", "Over time"):
        assert figure in section
    assert "**missed**" not in section.split("| ack p99", 1)[1].split("\n", 1)[1]
