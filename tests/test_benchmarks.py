"""The benchmark harness, in its smoke version, so that it cannot rot: every scenario
but the soak (test_soak_benchmark.py) with a handful of clients against the three
servers (the gateway, raw python-socketio, Node's socket.io; S6, the expiry storm,
and S7, fan-out with missed-message recovery on and off, against the gateway only).
Nothing is timed here: the test asserts only that each server delivered every
message in order, that in S6 every expiring socket was ended as specified, that in
S7 every message of the recovering server carried an offset (and none of the other's),
and that the report has its table with all seven scenarios and all three servers.

The harness installs Node's socket.io into benchmarks/node/node_modules when it is
missing; if that is impossible (no node or npm, no registry), the test fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN = ROOT / "benchmarks" / "run.py"
SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "S6", "S7")
SERVERS = {"A": "realtime_gateway", "B": "python-socketio", "C": "Node socket.io"}
ONLY = {"S6": ("A",), "S7": ("A",)}  # the scenarios that run on some servers only
SMOKE_WITHIN = 240.0  # seconds: the smoke run takes about 35, an npm install a little more


@pytest.mark.timeout(SMOKE_WITHIN + 30)
def test_smoke_run_delivers_everything_in_order_and_reports(tmp_path: Path) -> None:
    report, results = tmp_path / "RESULTS.md", tmp_path / "results.json"
    output = ["--out", str(report), "--json", str(results)]
    try:
        done = subprocess.run(  # noqa: S603 (our own harness, with this interpreter)
            [sys.executable, str(RUN), "--smoke", "--scenarios", ",".join(SCENARIOS), *output],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=SMOKE_WITHIN,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the smoke run took more than {SMOKE_WITHIN:.0f} s:\n{exc.stdout!r}")
    told = f"stdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
    assert done.returncode == 0, told

    found = json.loads(results.read_text())
    assert found["servers"] == SERVERS
    checks = {(check["scenario"], check["server"]): check for check in found["checks"]}
    assert set(checks) == {
        (name, key) for name in SCENARIOS for key in ONLY.get(name, tuple(SERVERS))
    }, told
    for (name, key), check in checks.items():
        assert check["ok"], f"{name} on {key}: {check}"
        assert check["expected"] > 0
        assert check["received"] == check["expected"]
    for name in ("S1", "S5", "S7"):  # the scenarios whose messages are sequence-checked
        for key in ONLY.get(name, tuple(SERVERS)):
            assert checks[(name, key)]["in_order"], f"{name} on {key} out of order"
    measures = found["measures"]
    for key in ("S6-quiet-p99", "S6-storm-p99", "S6-ratio", "S4-timers"):
        assert measures[key]["values"]["A"] is not None, key
    for size in (100, 1024):
        for key in (f"S7-off-{size}", f"S7-on-{size}", f"S7-ratio-{size}"):
            assert measures[key]["values"]["A"] is not None, key
        # The log keeps at least each event's encoded frame (the payload and more).
        assert measures[f"S7-log-bytes-{size}"]["values"]["A"] > size
    # Measured on 10 sockets only: a figure, whose sign the smoke cannot promise.
    assert measures["S7-parked"]["values"]["A"] is not None

    markdown = report.read_text()
    table = markdown.split("## Results", 1)[1].split("\n\n", 2)[1].splitlines()
    header = table[0]
    for key, name in SERVERS.items():
        assert f"{key}: {name}" in header
    assert "A/B" in header
    assert "A/C" in header
    rows = table[2:]
    for name in SCENARIOS:
        matching = [row for row in rows if row.startswith(f"| {name} ")]
        assert matching, f"no row for {name} in\n{chr(10).join(table)}"
        for row in matching:
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            assert len(cells) == len(header.strip("|").split("|"))
            assert "failed" not in cells, row
    # Every expiring socket of the smoke's storm (20 of them) was ended as specified.
    assert "20 of 20 expiring sockets ended as specified" in markdown
    assert "## Delivery checks" in markdown
    assert "## Negotiated websocket extensions" in markdown
