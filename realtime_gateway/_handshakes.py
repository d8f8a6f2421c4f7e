"""Budgets on new engine.io sessions: which address a handshake comes from, and a
token bucket per address in a table that stays bounded.

Each refused handshake costs the gateway one HTTP answer and no session. An
address is the transport's peer unless the host says a proxy in front of it sets
a header naming the client (``trusted_proxy_header``): a client could write that
header itself, so it is read only when the host says so, and then its last hop,
the one the proxy appended. IPv6 clients share the bucket of their /64, which one
host or one subscriber line usually holds whole.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from ._identity import _remote_address

__all__ = ["AddressBudget", "client_address"]

_MAX_ADDRESSES = 10_000
"""Buckets kept at most; the least recently used one goes first (it may be full
already, which is the same as not being there)."""
_EXPIRED_PER_TAKE = 2
"""Buckets expired per handshake: more than one, so the table shrinks when idle
buckets pile up, and few, so one handshake never does much work."""


def client_address(environ: Mapping[str, Any], trusted_header: str | None) -> str | None:
    """The address a request comes from: the last hop of ``trusted_header`` when
    that is set and present, otherwise the transport's peer."""
    if trusted_header is not None:
        value = environ.get("HTTP_" + trusted_header.upper().replace("-", "_"))
        if isinstance(value, str):
            # Servers join repeated headers with commas; the proxy appends last.
            hop = value.rsplit(",", 1)[-1].strip()
            if hop:
                return hop
    return _remote_address(environ)


def bucket_key(address: str | None) -> str:
    """The bucket an address spends from: itself, an IPv6 address's /64, or one
    shared bucket for anything that is not an IP address."""
    if not address:
        return "unknown"
    try:
        parsed = ipaddress.ip_address(address.strip("[]"))
    except ValueError:
        return "invalid"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return f"{int(parsed) >> 64:x}::/64"
    return str(parsed)


class AddressBudget:
    """A token bucket per key, ``burst`` deep and refilled at ``rate`` per second.

    The table holds at most ``max_keys`` buckets: every :meth:`take` drops a
    couple of the least recently used ones if they have refilled (a full bucket
    is the same as none), and beyond ``max_keys`` the least recently used one
    is dropped whatever it holds.
    """

    def __init__(self, rate: float, burst: int, *, max_keys: int = _MAX_ADDRESSES) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        # key -> [tokens, monotonic time of the last take]; oldest use first.
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float | None = None) -> bool:
        """Spend one token of ``key``'s bucket; ``False`` when it is empty."""
        if now is None:
            now = time.monotonic()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = [self.burst, now]
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        allowed = bucket[0] >= 1.0
        if allowed:
            bucket[0] -= 1.0
        # After the take: this bucket is now short of full, so it stays.
        self._expire(now)
        return allowed

    def _expire(self, now: float) -> None:
        for _ in range(_EXPIRED_PER_TAKE):
            if not self._buckets:
                return
            key, (tokens, stamp) = next(iter(self._buckets.items()))
            if tokens + (now - stamp) * self.rate < self.burst:
                return
            del self._buckets[key]
