"""What missed-message recovery's in-memory log keeps per event, measured in a fresh
process (the harness runs it as a subprocess, for S7):

    python benchmarks/recovery_memory.py --size 100 --entries 100000

Appends ``entries`` events of ``size`` characters to a ``MemoryRecoveryStore``
(window and bounds large enough that nothing is trimmed) the way the gateway's
fan-out does for each room emit (``FanOutManager.emit``: an offset from
``next_offset``, the socket.io packet encoded once with the offset as its last
argument, a ``LogEntry`` with the room, no skip and that frame). Prints one JSON
object: Python heap bytes per kept entry (tracemalloc), RSS bytes per kept entry
(a second store, not traced), the bytes of one entry's frame, and the
microseconds the log's own part takes per event (offset, entry and append, the
frames encoded beforehand).
"""

from __future__ import annotations

import argparse
import gc
import json
import secrets
import time
import tracemalloc
from pathlib import Path

from socketio import packet

from realtime_gateway import LogEntry, MemoryRecoveryStore
from realtime_gateway._recovery import ENTRY_OVERHEAD

NAMESPACE = "/"
ROOM = "bench:all"


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return 1024 * int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fill(store: MemoryRecoveryStore, payload: str, entries: int) -> None:
    """Append ``entries`` events carrying ``payload`` as the fan-out does."""
    for seq in range(entries):
        offset = store.next_offset()
        encoded = packet.Packet(
            packet.EVENT, namespace=NAMESPACE, data=["bench:msg", seq, payload, offset]
        ).encode()
        parts = encoded if isinstance(encoded, list) else [encoded]
        store.append(NAMESPACE, LogEntry(offset=offset, rooms=ROOM, skip=None, frames=tuple(parts)))


def append_seconds(store: MemoryRecoveryStore, frames: list[str], repeat: int = 5) -> float:
    """Seconds the log's part of an emit takes per event (the best of ``repeat``)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for frame in frames:
            offset = store.next_offset()
            store.append(NAMESPACE, LogEntry(offset=offset, rooms=ROOM, skip=None, frames=(frame,)))
        best = min(best, (time.perf_counter() - started) / len(frames))
    return best


def _store(entries: int) -> MemoryRecoveryStore:
    return MemoryRecoveryStore(window=86_400.0, max_events=entries + 1, max_bytes=1 << 40)


def measure(size: int, entries: int) -> dict[str, float]:
    payload = secrets.token_urlsafe(size)[:size]
    # Warm up what the first appends allocate once (the namespace's log, caches).
    fill(_store(entries), payload, 1000)
    gc.collect()

    plain = _store(entries)
    before = _rss_bytes()
    fill(plain, payload, entries)
    gc.collect()
    rss = (_rss_bytes() - before) / entries
    assert len(plain) == entries
    frame = plain.size / entries - ENTRY_OVERHEAD  # the store counts both
    del plain
    gc.collect()

    traced = _store(entries)
    tracemalloc.start()
    start, _ = tracemalloc.get_traced_memory()
    fill(traced, payload, entries)
    gc.collect()
    end, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(traced) == entries
    del traced
    gc.collect()
    frames = [
        packet.Packet(
            packet.EVENT, namespace=NAMESPACE, data=["bench:msg", seq, payload, str(seq)]
        ).encode()
        for seq in range(min(entries, 20_000))
    ]
    # A short window: from the second round on, every append trims one entry, as in
    # a log that is full of its window.
    timed = MemoryRecoveryStore(window=0.001, max_events=entries + 1, max_bytes=1 << 40)
    append = append_seconds(timed, frames)
    return {
        "size": size,
        "entries": entries,
        "heap_bytes": (end - start) / entries,
        "rss_bytes": rss,
        "frame_bytes": frame,
        "append_us": 1e6 * append,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--size", type=int, required=True, help="payload characters")
    parser.add_argument("--entries", type=int, default=100_000, help="events kept")
    args = parser.parse_args()
    print(json.dumps(measure(args.size, args.entries)))


if __name__ == "__main__":
    main()
