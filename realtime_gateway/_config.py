"""Gateway configuration: one frozen, validated attrs class."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import attrs

from ._exceptions import ConfigurationError

__all__ = ["GatewayConfig", "redis_address"]

TRANSPORTS = ("polling", "websocket")


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(attribute.name, f"must be a positive number, got {value!r}")


def _at_least(minimum: float, why: str) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """A validator for a time that cannot work below ``minimum`` seconds."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        _positive(instance, attribute, value)
        if value < minimum:
            raise ConfigurationError(
                attribute.name, f"must be at least {minimum:g} s ({why}), got {value!r}"
            )

    return check


def _positive_int(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(attribute.name, f"must be a positive integer, got {value!r}")


def _flag(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(attribute.name, f"must be True or False, got {value!r}")


def _origins(value: str | Iterable[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _valid_origins(
    instance: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...] | None
) -> None:
    for origin in value or ():
        if origin == "*":
            continue
        parts = urlsplit(origin) if isinstance(origin, str) else None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.netloc
            or parts.path
            or parts.query
            or parts.fragment
        ):
            raise ConfigurationError(
                attribute.name,
                f"{origin!r} is not an origin such as 'https://app.example.com' or '*'",
            )


def _names(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _valid_path(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value.startswith("/") or value == "/" or " " in value:
        raise ConfigurationError(
            attribute.name, f"must be a path such as '/socket.io', got {value!r}"
        )


def _valid_transports(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not value or any(transport not in TRANSPORTS for transport in value):
        raise ConfigurationError(
            attribute.name, f"must be a non-empty selection of {', '.join(TRANSPORTS)}"
        )


def _non_negative(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigurationError(attribute.name, f"must be a number >= 0, got {value!r}")


def _optional_key(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, str) or len(value) < 16):
        raise ConfigurationError(attribute.name, "must be a string of 16 characters or more")


def _optional_redis_url(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    scheme = urlsplit(value).scheme if isinstance(value, str) else ""
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(attribute.name, "must be a URL such as 'redis://127.0.0.1:6379/0'")


def redis_address(url: str) -> str:
    """Where ``url`` points, ``host:port`` or a socket path, without its credentials:
    safe to log and to show."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path or "?"
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    host = parts.hostname or "localhost"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _valid_prefix(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ConfigurationError(attribute.name, "must be a non-empty name without spaces")


def _optional_positive_int(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _positive_int(instance, attribute, value)


_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")


def _optional_header(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not _HEADER_NAME.fullmatch(value)):
        raise ConfigurationError(
            attribute.name, f"must be a header name such as 'X-Forwarded-For', got {value!r}"
        )


def _optional_positive(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None:
        _positive(instance, attribute, value)


@attrs.frozen(kw_only=True)
class GatewayConfig:
    """Settings of a :class:`Gateway`. A bad value raises :class:`ConfigurationError`.

    ``allowed_origins``: origins browsers may connect from. ``None`` (the default)
    allows the gateway's own origin only; ``"*"`` allows any origin for clients that
    authenticate with a token, but a handshake carrying cookies must still come from
    the gateway's own origin or one listed explicitly (cross-site WebSocket hijacking).

    Times are in seconds; those that cannot work below a floor refuse it:
    ``ping_interval`` and ``ping_timeout`` at least 1 (engine.io announces the
    interval in whole seconds, python-engineio's own rounding), ``cluster_ttl`` and
    ``revocation_ttl`` at least 1, ``cluster_canary_interval``, ``reconnect_window``
    and ``log_repeat_interval`` at least 0.1. ``max_payload_size`` bounds one
    transport message (bytes); ``max_event_size`` bounds one event's decoded
    payload (bytes of JSON), above which the event is refused with
    ``invalid_payload`` and the connection kept.
    ``max_nesting_depth`` bounds how deep arrays and objects may nest in anything
    the gateway decodes (socket.io packets and admin API bodies; an event's data
    counts one level for its argument list). ``max_attachments`` bounds the binary
    attachments of one packet (socket.io's own cap is 10); while a packet waits
    for them, its text and attachments count against ``max_event_size``.
    ``rate_limit`` is the sustained events per second one connection may send, with
    bursts up to ``rate_burst``; ``None`` turns the limit off.
    ``max_pending_output`` bounds the bytes waiting for one client connection (its
    engine.io queue plus its websocket transport's write buffer, default 1 MiB):
    a packet that takes it over disconnects the connection, every namespace
    socket of it, with reason ``slow_consumer``; one packet alone in an idle
    connection's queue is let through whatever its size. ``user_rate_limit`` and
    ``user_rate_burst`` are the same budget shared by all of one user's sockets in
    this process (per process: each process of a cluster gives the user its own);
    ``None`` turns it off. A socket whose events keep being refused by either budget
    (refusals less than a second apart) for ``rate_limit_disconnect_after`` seconds
    is disconnected (``None``: never).
    ``max_rooms_per_socket`` bounds the rooms one socket may ask to join (the
    gateway's own ``user:`` and ``role:`` rooms are not counted); beyond it a join
    is answered ``limit_exceeded``. ``max_sockets_per_user`` bounds one user's
    namespace sockets (a browser tab on four namespaces holds four), across the
    whole cluster with ``redis_url`` and per process otherwise; beyond it a connect
    is refused with ``limit_exceeded``, reason ``too_many_connections``.

    ``compression`` compresses long-polling responses; ``websocket_compression``
    accepts permessage-deflate on websockets under aiohttp (off by default, as in
    Node's socket.io: deflating every frame costs more CPU than it saves on a LAN;
    under uvicorn set its own ``ws_per_message_deflate``).

    ``handshake_rate`` (default 20/s, ``None`` turns it off) and ``handshake_burst``
    (100) budget the new engine.io sessions one remote address may open; past it a
    handshake is answered 429. The address is the transport's peer; behind a proxy
    every client has the proxy's, unless ``trusted_proxy_header`` names the header
    the proxy sets (for example ``"X-Forwarded-For"``, whose last hop is used). Set
    it only when every request comes through that proxy: a client can write the
    header itself. ``max_pending_sessions`` caps the sessions of this process that
    have not completed a socket.io CONNECT; past it a handshake is answered 503.
    A refused namespace CONNECT closes the client's transport after its
    ``connect_error`` unless the client has another namespace.

    ``max_message_length`` caps a chat message's content (characters).
    ``reconnect_window``: a user's new socket in a namespace counts as a reconnection
    when their previous one there left less than this many seconds before.
    ``shutdown_grace``: how long :meth:`Gateway.shutdown` waits for clients to leave.
    ``refresh_ahead``: how long before its identity's ``expires_at`` a socket is
    told ``auth:expiring``; ``expiry_grace``: how long after it the socket is ended
    with ``auth:expired``. ``idle_timeout`` (default off): a client connection that
    sends no event but ``ping`` (nor ``auth:refresh``) for this long is logged off
    with ``auth:idle`` and its session revoked. ``revocation_ttl``: how long a
    revocation is remembered when the gateway cannot tell how long the credentials
    it covers live (an authenticator other than :class:`SignedTokenAuthenticator`,
    whose ``max_age`` is used otherwise).
    ``recovery_window`` (default off): how long, in seconds, a socket that dropped
    can be recovered with the events it missed (SPEC "Missed-message recovery");
    with it on, every event sent to a room carries its offset as its last
    argument. A recovery replays at most ``recovery_max_packets`` events, or none.
    Each namespace's log keeps the events of the window, at most
    ``recovery_log_events`` of them; in memory all logs together hold at most
    ``recovery_log_bytes`` (encoded events and their entries; the oldest go
    first). With ``redis_url`` all of it lives in Redis (see :class:`RedisRecoveryStore`), under
    ``{redis_prefix}:recovery:``: a stream per namespace (``log:{namespace}``,
    trimmed at each append to ``recovery_log_events`` and to the window; each entry
    the signed cluster message, about 380 bytes for a 100-byte event), the sessions
    of dropped sockets (``parked:{pid digest}``, kept twice the window), and each
    process's live sessions (``live:{process}``, kept ``cluster_ttl`` + the window
    past its last heartbeat, so that the sockets of a process killed without
    notice can be recovered on another).
    ``log_key``: the key of the user pseudonyms in log records (default: a random
    key per process); set it to correlate records across processes and restarts.
    ``log_repeat_limit``: at most this many records of one kind (``what``) at
    WARNING or above are written per ``log_repeat_interval`` seconds; the rest are
    counted (``log_records_suppressed``) and summed up in one ``log_suppressed``
    record when the interval ends (``None``: no limit). Like ``log_key`` this holds
    for the whole process: the gateway built last sets it.

    ``redis_url`` makes several gateway processes one (see :class:`ClusterManager`):
    ``redis_prefix`` names its keys and channel, ``cluster_ttl`` is how long a
    silent process stays in the others' view (each refreshes every third of it),
    and ``cluster_key`` signs the messages between processes (by default the
    newest key of a :class:`SignedTokenAuthenticator`). Each process publishes a
    canary every ``cluster_canary_interval`` seconds; one that has not heard its own
    for three intervals is deaf to the cluster, and ``/health`` answers 503
    ``degraded`` until it hears it again. A process publishes to the others through
    a queue that one task drains in order, pipelining what is waiting (an emit
    never waits for a Redis round trip); ``cluster_publish_queue`` bounds it, in
    messages: past it an emit waits for room (counted, ``cluster_publish_waits``).
    While Redis is unreachable the messages for the others are dropped (counted,
    ``cluster_messages_unsent``) and local delivery goes on.
    """

    allowed_origins: tuple[str, ...] | None = attrs.field(
        default=None, converter=_origins, validator=_valid_origins
    )
    ping_interval: float = attrs.field(
        default=25.0,
        validator=_at_least(1.0, "engine.io tells clients the interval in whole seconds"),
    )
    ping_timeout: float = attrs.field(
        default=20.0, validator=_at_least(1.0, "a pong must have time to cross the network")
    )
    connect_timeout: float = attrs.field(default=45.0, validator=_positive)
    path: str = attrs.field(default="/socket.io", validator=_valid_path)
    transports: tuple[str, ...] = attrs.field(
        default=TRANSPORTS, converter=_names, validator=_valid_transports
    )
    max_payload_size: int = attrs.field(default=1_000_000, validator=_positive_int)
    max_event_size: int = attrs.field(default=64 * 1024, validator=_positive_int)
    max_nesting_depth: int = attrs.field(default=32, validator=_positive_int)
    max_attachments: int = attrs.field(default=10, validator=_positive_int)
    max_pending_output: int = attrs.field(default=1_048_576, validator=_positive_int)
    compression: bool = attrs.field(default=True, validator=_flag)
    websocket_compression: bool = attrs.field(default=False, validator=_flag)
    rate_limit: float | None = attrs.field(default=50.0, validator=_optional_positive)
    rate_burst: int = attrs.field(default=100, validator=_positive_int)
    handshake_rate: float | None = attrs.field(default=20.0, validator=_optional_positive)
    handshake_burst: int = attrs.field(default=100, validator=_positive_int)
    trusted_proxy_header: str | None = attrs.field(default=None, validator=_optional_header)
    max_pending_sessions: int = attrs.field(default=1_000, validator=_positive_int)
    user_rate_limit: float | None = attrs.field(default=100.0, validator=_optional_positive)
    user_rate_burst: int = attrs.field(default=200, validator=_positive_int)
    rate_limit_disconnect_after: float | None = attrs.field(
        default=10.0, validator=_optional_positive
    )
    max_rooms_per_socket: int = attrs.field(default=128, validator=_positive_int)
    max_sockets_per_user: int = attrs.field(default=50, validator=_positive_int)
    max_message_length: int = attrs.field(default=4000, validator=_positive_int)
    reconnect_window: float = attrs.field(
        default=60.0, validator=_at_least(0.1, "a reconnecting client needs some time")
    )
    shutdown_grace: float = attrs.field(default=10.0, validator=_non_negative)
    refresh_ahead: float = attrs.field(default=60.0, validator=_non_negative)
    expiry_grace: float = attrs.field(default=0.0, validator=_non_negative)
    idle_timeout: float | None = attrs.field(default=None, validator=_optional_positive)
    revocation_ttl: float = attrs.field(
        default=86_400.0, validator=_at_least(1.0, "a revocation must outlive a reconnect")
    )
    recovery_window: float | None = attrs.field(default=None, validator=_optional_positive)
    recovery_max_packets: int = attrs.field(default=1000, validator=_positive_int)
    recovery_log_events: int = attrs.field(default=100_000, validator=_positive_int)
    recovery_log_bytes: int = attrs.field(default=64 * 1024 * 1024, validator=_positive_int)
    log_key: str | None = attrs.field(default=None, repr=False, validator=_optional_key)
    log_repeat_limit: int | None = attrs.field(default=20, validator=_optional_positive_int)
    log_repeat_interval: float = attrs.field(
        default=10.0, validator=_at_least(0.1, "a summary record per interval")
    )
    redis_url: str | None = attrs.field(default=None, repr=False, validator=_optional_redis_url)
    redis_prefix: str = attrs.field(default="rtg", validator=_valid_prefix)
    cluster_ttl: float = attrs.field(
        default=15.0,
        validator=_at_least(1.0, "Redis expires the entries in whole seconds"),
    )
    cluster_key: str | None = attrs.field(default=None, repr=False, validator=_optional_key)
    cluster_canary_interval: float = attrs.field(
        default=2.0, validator=_at_least(0.1, "a canary is a Redis round trip")
    )
    cluster_publish_queue: int = attrs.field(default=10_000, validator=_positive_int)

    def __attrs_post_init__(self) -> None:
        if self.max_event_size > self.max_payload_size:
            raise ConfigurationError("max_event_size", "must not exceed max_payload_size")

    @property
    def allows_any_origin(self) -> bool:
        """True when ``"*"`` is among the allowed origins."""
        return self.allowed_origins is not None and "*" in self.allowed_origins
