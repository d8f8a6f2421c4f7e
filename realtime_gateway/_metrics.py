"""In-process counters of what the gateway did. Label values are bounded sets
(reason categories, error codes, namespaces), never user ids or room names."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ._log import suppressed_total

__all__ = ["Metrics"]


class Metrics:
    """Counters a gateway keeps; ``snapshot()`` returns them as plain JSON data."""

    def __init__(self) -> None:
        self.connections_total = 0
        self.reconnections = 0
        self.audit_failures = 0
        self.cluster_messages_dropped = 0
        self.cluster_bus_deaf = 0
        self.cluster_bus_deafened = 0
        self.cluster_messages_unsent = 0
        self.cluster_publish_waits = 0
        self.session_binding_refused = 0
        self.sessions_refreshed = 0
        self.slow_consumers = 0
        self.recovered_events = 0
        self.emits: Counter[str] = Counter()
        self.auth_failures: Counter[str] = Counter()
        self.access_denied: Counter[str] = Counter()
        self.events_received: Counter[str] = Counter()
        self.events_refused: Counter[str] = Counter()
        self.protocol_errors: Counter[str] = Counter()
        self.sessions_ended: Counter[str] = Counter()
        self.handshakes_refused: Counter[str] = Counter()
        self.limits_exceeded: Counter[str] = Counter()
        self.recoveries: Counter[str] = Counter()

    def snapshot(self) -> dict[str, Any]:
        """The counters as a JSON-able dict."""
        return {
            "connections_total": self.connections_total,
            "reconnections": self.reconnections,
            "audit_failures": self.audit_failures,
            "cluster_messages_dropped": self.cluster_messages_dropped,
            "cluster_bus_deaf": self.cluster_bus_deaf,
            "cluster_bus_deafened": self.cluster_bus_deafened,
            "cluster_messages_unsent": self.cluster_messages_unsent,
            "cluster_publish_waits": self.cluster_publish_waits,
            "session_binding_refused": self.session_binding_refused,
            "sessions_refreshed": self.sessions_refreshed,
            "slow_consumers": self.slow_consumers,
            "recovered_events": self.recovered_events,
            "log_records_suppressed": suppressed_total(),
            "emits": dict(self.emits),
            "auth_failures": dict(self.auth_failures),
            "access_denied": dict(self.access_denied),
            "events_received": dict(self.events_received),
            "events_refused": dict(self.events_refused),
            "protocol_errors": dict(self.protocol_errors),
            "sessions_ended": dict(self.sessions_ended),
            "handshakes_refused": dict(self.handshakes_refused),
            "limits_exceeded": dict(self.limits_exceeded),
            "recoveries": dict(self.recoveries),
        }
