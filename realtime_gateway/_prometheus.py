"""Prometheus text exposition of a gateway's figures, through prometheus_client.

Only bounded label values appear: reason categories, actions, error codes,
registered namespaces and emit kinds; never user ids or room names.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["exposition"]

# stats key -> (metric name, help, label name or None for a plain number)
_COUNTERS = (
    ("connections_total", "rtg_connections", "Namespace connections admitted.", None),
    ("reconnections", "rtg_reconnections", "Connections counted as reconnections.", None),
    ("audit_failures", "rtg_audit_failures", "Audit records the sink failed to take.", None),
    (
        "session_binding_refused",
        "rtg_session_binding_refused",
        "Requests naming an engine.io session without its binding cookie.",
        None,
    ),
    ("auth_failures", "rtg_auth_failures", "Refused authentications.", "reason"),
    ("access_denied", "rtg_access_denied", "Authorization refusals.", "action"),
    ("events_received", "rtg_events_received", "Client events received.", "namespace"),
    ("events_refused", "rtg_events_refused", "Client events answered with an error.", "code"),
    ("emits", "rtg_emits", "Server-side publish calls.", "kind"),
    (
        "protocol_errors",
        "rtg_protocol_errors",
        "Packets refused for breaking the protocol.",
        "reason",
    ),
    ("sessions_ended", "rtg_sessions_ended", "Sessions the gateway ended.", "reason"),
    (
        "handshakes_refused",
        "rtg_handshakes_refused",
        "Engine.io handshakes refused before a session was created.",
        "reason",
    ),
    (
        "limits_exceeded",
        "rtg_limits_exceeded",
        "Rooms, connections and events refused by a per-socket or per-user bound.",
        "reason",
    ),
    (
        "sessions_refreshed",
        "rtg_sessions_refreshed",
        "Credentials replaced in place by auth:refresh.",
        None,
    ),
    (
        "slow_consumers",
        "rtg_slow_consumers",
        "Connections disconnected for going over max_pending_output.",
        None,
    ),
    (
        "recoveries",
        "rtg_recoveries",
        "Connects that asked to recover a dropped socket, by result.",
        "result",
    ),
    (
        "recovered_events",
        "rtg_recovered_events",
        "Missed events replayed to recovered sockets.",
        None,
    ),
    (
        "cluster_bus_deafened",
        "rtg_cluster_bus_deafened",
        "Times this process stopped hearing its own canary on the cluster bus.",
        None,
    ),
    (
        "cluster_messages_unsent",
        "rtg_cluster_messages_unsent",
        "Messages for the other processes dropped while Redis was unreachable.",
        None,
    ),
    (
        "cluster_publish_waits",
        "rtg_cluster_publish_waits",
        "Times an emit waited for room in the full cluster publish queue.",
        None,
    ),
    (
        "log_records_suppressed",
        "rtg_log_records_suppressed",
        "Log records left out by the repeat limit (process-wide).",
        None,
    ),
)
_GAUGES = (
    ("connections_active", "rtg_connections_active", "Connected sockets."),
    ("users_connected", "rtg_users_connected", "Users with at least one connected socket."),
    (
        "cluster_bus_deaf",
        "rtg_cluster_bus_deaf",
        "1 while this process does not hear its own canary on the cluster bus.",
    ),
)


class _Snapshot:
    def __init__(self, stats: Mapping[str, Any]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        for key, name, help_text, label in _COUNTERS:
            value = self.stats.get(key, 0)
            if label is None:
                yield CounterMetricFamily(name, help_text, value=value)
                continue
            family = CounterMetricFamily(name, help_text, labels=[label])
            for label_value, count in sorted(value.items()):
                family.add_metric([str(label_value)], count)
            yield family
        for key, name, help_text in _GAUGES:
            yield GaugeMetricFamily(name, help_text, value=self.stats.get(key, 0))


def exposition(stats: Mapping[str, Any]) -> str:
    """``stats`` (see :meth:`Gateway.stats`) in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(stats))
    return generate_latest(registry).decode()
