"""Web server logs without credentials or forged lines, for aiohttp and uvicorn.

A request line is client text that may carry credentials: a signed token sent as
``?token=``, or the engine.io session id (``sid``) every polling request and every
websocket upgrade of a socket.io client carries. Both web servers log it whole:
aiohttp's default access log (``%r``), uvicorn's ``uvicorn.access`` records and its
``"WebSocket /path?query" [accepted]`` lines on ``uvicorn.error``. aiohttp also logs
a malformed request with the parser's exception, whose message holds up to 100 bytes
of the offending line: an oversized ``Authorization`` header shows its token there.

- :class:`RedactingAccessLogger`: an aiohttp access logger taking aiohttp's format
  directives; query values of :data:`SENSITIVE_PARAMS` and the headers in
  :data:`SENSITIVE_HEADERS` are written as :data:`MASK`, and every value is escaped.
- :class:`RedactingFilter`: a :class:`logging.Filter` doing the same to the
  arguments of any record (uvicorn's among them), and dropping the request bytes
  of aiohttp's parser errors.
- :func:`uvicorn_log_config`: uvicorn's ``LOGGING_CONFIG`` with that filter on
  ``uvicorn.access`` and ``uvicorn.error``.
- :func:`request_error_logger`: what :meth:`Gateway.run_aiohttp` hands aiohttp for
  its per-request error log.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import unquote_plus

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from ._log import escape

__all__ = [
    "MASK",
    "SENSITIVE_HEADERS",
    "SENSITIVE_PARAMS",
    "RedactingAccessLogger",
    "RedactingFilter",
    "redact_target",
    "request_error_logger",
    "uvicorn_log_config",
]

SENSITIVE_PARAMS = frozenset({"sid", "token", "access_token", "auth"})
"""Query parameters whose values are never logged (names compared case-insensitively)."""

SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
"""Headers whose values are never logged."""

MASK = "***"
"""What a redacted value is written as."""

# Whitespace too: no server accepts it in a target, and in other text (a request
# line, a message) it ends the query.
_QUERY_SEPARATOR = re.compile(r"([&;\s]+)")


def redact_target(target: str) -> str:
    """``target`` (``/path?query``, or any text) with the value of each query
    parameter named in :data:`SENSITIVE_PARAMS` replaced by :data:`MASK`.

    Everything after the first ``?`` is read as a query split on ``&``, ``;`` and
    whitespace; names are percent-decoded first, as servers decode them (``%73id``
    is ``sid``). Not escaped: see :func:`~realtime_gateway._log.escape`."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    parts = _QUERY_SEPARATOR.split(query)
    for index in range(0, len(parts), 2):
        name, equals, _ = parts[index].partition("=")
        if equals and unquote_plus(name).strip().lower() in SENSITIVE_PARAMS:
            parts[index] = f"{name}={MASK}"
    return f"{path}?{''.join(parts)}"


def _clean(text: str) -> str:
    return escape(redact_target(text))


def _header(value: str | None, name: str) -> str:
    if value is None:
        return "-"
    if name.lower() in SENSITIVE_HEADERS:
        return MASK
    return _clean(value)


def _protocol_error(exc_info: Any) -> HttpProcessingError | None:
    if exc_info is True:
        exc_info = sys.exc_info()
    exc = exc_info[1] if isinstance(exc_info, tuple) else exc_info
    return exc if isinstance(exc, HttpProcessingError) else None


def _without_request_bytes(msg: str, error: HttpProcessingError) -> str:
    # aiohttp's parser errors quote the request's own bytes (up to 100 of an
    # oversized header, a whole malformed line): only their kind is kept.
    return f"{msg} ({type(error).__name__}, status {error.code}; request bytes not logged)"


# -- aiohttp access log ------------------------------------------------------------------

_Field = Callable[[BaseRequest, StreamResponse, float], str]

# aiohttp's access log directives (``aiohttp.web_log.AccessLogger``) but ``%{FOO}e``:
# an environment variable has no business in an access log.
_DIRECTIVE = re.compile(r"%(?:\{([A-Za-z0-9_-]+)\}([io])|(Tf|[atPrsbTD%]))")


def _remote(request: BaseRequest, response: StreamResponse, time: float) -> str:
    return escape(request.remote) if request.remote else "-"


def _start_time(request: BaseRequest, response: StreamResponse, time: float) -> str:
    started = dt.datetime.now().astimezone() - dt.timedelta(seconds=time)
    return started.strftime("[%d/%b/%Y:%H:%M:%S %z]")


def _pid(request: BaseRequest, response: StreamResponse, time: float) -> str:
    return f"<{os.getpid()}>"


def _request_line(request: BaseRequest, response: StreamResponse, time: float) -> str:
    version = request.version
    target = redact_target(request.path_qs)
    return escape(f"{request.method} {target} HTTP/{version.major}.{version.minor}")


def _status(request: BaseRequest, response: StreamResponse, time: float) -> str:
    return str(response.status)


def _size(request: BaseRequest, response: StreamResponse, time: float) -> str:
    return str(response.body_length)


def _seconds(request: BaseRequest, response: StreamResponse, time: float) -> str:
    return str(round(time))


def _seconds_frac(request: BaseRequest, response: StreamResponse, time: float) -> str:
    return f"{time:06f}"


def _micros(request: BaseRequest, response: StreamResponse, time: float) -> str:
    return str(round(time * 1_000_000))


# Directive -> (the ``extra`` key aiohttp's own logger uses, the field).
_FIELDS: dict[str, tuple[str, _Field]] = {
    "a": ("remote_address", _remote),
    "t": ("request_start_time", _start_time),
    "P": ("process_id", _pid),
    "r": ("first_request_line", _request_line),
    "s": ("response_status", _status),
    "b": ("response_size", _size),
    "T": ("request_time", _seconds),
    "Tf": ("request_time_frac", _seconds_frac),
    "D": ("request_time_micro", _micros),
}


def _request_header(name: str) -> _Field:
    def field(request: BaseRequest, response: StreamResponse, time: float) -> str:
        return _header(request.headers.get(name), name)

    return field


def _response_header(name: str) -> _Field:
    def field(request: BaseRequest, response: StreamResponse, time: float) -> str:
        return _header(response.headers.get(name), name)

    return field


_Part = str | tuple[str | tuple[str, str], _Field]


@functools.lru_cache(maxsize=16)
def _parsed(log_format: str) -> tuple[_Part, ...]:
    """``log_format`` as literal text and (extra key, field) pairs, in order."""
    parts: list[_Part] = []
    position = 0
    for found in _DIRECTIVE.finditer(log_format):
        parts.append(log_format[position : found.start()])
        position = found.end()
        header, direction, code = found.groups()
        if code == "%":
            parts.append("%")
        elif code is not None:
            parts.append(_FIELDS[code])
        elif direction == "i":
            parts.append((("request_header", header), _request_header(header)))
        else:
            parts.append((("response_header", header), _response_header(header)))
    parts.append(log_format[position:])
    return tuple(parts)


class RedactingAccessLogger(AbstractAccessLogger):
    """An aiohttp access logger that keeps credentials and forged lines out.

    Give it to aiohttp as ``access_log_class`` (``web.AppRunner(app,
    access_log_class=RedactingAccessLogger)``, ``web.run_app(...)`` alike);
    :meth:`Gateway.run_aiohttp` does. It understands aiohttp's format directives
    (``%a %t %P %r %s %b %T %Tf %D %{Header}i %{Header}o``, default
    ``aiohttp.web_log.AccessLogger.LOG_FORMAT``) and passes the same ``extra`` fields
    to the record, but in the request line (``%r``) and in header values the query
    values of :data:`SENSITIVE_PARAMS` are masked, the headers in
    :data:`SENSITIVE_HEADERS` are written as :data:`MASK` whatever they hold, and
    every value is escaped (a User-Agent with CR/LF stays on its line).
    """

    def __init__(self, logger: logging.Logger, log_format: str) -> None:
        super().__init__(logger, log_format)
        # aiohttp makes one access logger per TCP connection: the parsed format is
        # shared by all of them.
        self._parts = _parsed(log_format)

    @property
    def enabled(self) -> bool:
        """True if the logger would write an INFO record (else nothing is formatted)."""
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        """Write one line for ``request``, answered with ``response`` in ``time`` s."""
        try:
            line: list[str] = []
            extra: dict[str, Any] = {}
            for part in self._parts:
                if isinstance(part, str):
                    line.append(part)
                    continue
                key, field = part
                value = field(request, response, time)
                line.append(value)
                if isinstance(key, str):
                    extra[key] = value
                else:
                    extra.setdefault(key[0], {})[key[1]] = value
            self.logger.info("".join(line), extra=extra)
        except Exception:
            self.logger.exception("Error in access logging")


# -- any logger, uvicorn's in particular --------------------------------------------------


class RedactingFilter(logging.Filter):
    """A :class:`logging.Filter` that cleans the records it sees, and drops none.

    Every string argument of a record has its query values of
    :data:`SENSITIVE_PARAMS` masked and is escaped; the message itself is masked
    (it is the program's format, not client text). A record carrying one of
    aiohttp's request parser errors loses the traceback, whose message quotes the
    request's bytes, and names the error instead.

    Made for uvicorn, whose ``uvicorn.access`` records have the arguments
    ``(client_addr, method, full_path, http_version, status)`` and whose
    ``uvicorn.error`` logger writes websocket handshakes with their query string:
    :func:`uvicorn_log_config` installs it on both. Installed on a logger, it
    changes the record before any handler sees it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Clean ``record`` in place (once, however many filters see it); keep it."""
        if getattr(record, "rtg_redacted", False):
            return True
        record.rtg_redacted = True
        if isinstance(record.msg, str):
            record.msg = redact_target(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_clean(arg) if isinstance(arg, str) else arg for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {
                key: _clean(arg) if isinstance(arg, str) else arg
                for key, arg in record.args.items()
            }
        error = _protocol_error(record.exc_info)
        if error is not None:
            record.msg = _without_request_bytes(str(record.msg), error)
            record.exc_info = None
            record.exc_text = None
        return True


_FILTER_NAME = "realtime_gateway_redact"


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's default logging configuration (``uvicorn.config.LOGGING_CONFIG``, a
    copy) with :class:`RedactingFilter` on the ``uvicorn.access`` and
    ``uvicorn.error`` loggers: ``uvicorn.run(app, log_config=uvicorn_log_config())``,
    or saved as JSON for ``uvicorn --log-config``.

    Needs uvicorn (the ``asgi`` extra)."""
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    # By name, so that the configuration can be saved as JSON for ``--log-config``.
    config.setdefault("filters", {})[_FILTER_NAME] = {"()": "realtime_gateway.RedactingFilter"}
    loggers = config.setdefault("loggers", {})
    for name in ("uvicorn.access", "uvicorn.error"):
        settings = loggers.setdefault(name, {})
        settings["filters"] = [*settings.get("filters", []), _FILTER_NAME]
    return config


# -- aiohttp's per-request error log ------------------------------------------------------


class _RequestErrorLogger(logging.LoggerAdapter[logging.Logger]):
    """``aiohttp.server`` as aiohttp's request handlers use it, minus the request
    bytes its parser errors quote, with string arguments escaped."""

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        error = _protocol_error(kwargs.get("exc_info"))
        if error is not None:
            msg = _without_request_bytes(str(msg), error)
            kwargs["exc_info"] = None
        cleaned = tuple(escape(arg) if isinstance(arg, str) else arg for arg in args)
        super().log(level, msg, *cleaned, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        # The default would replace a caller's ``extra`` with the adapter's (None).
        return msg, kwargs


def request_error_logger() -> logging.LoggerAdapter[logging.Logger]:
    """The logger to hand aiohttp's request handlers (``web.AppRunner(app,
    logger=...)``): records still go to ``aiohttp.server``, with its levels and
    handlers, but a malformed request is logged as its error's kind and status,
    without the bytes aiohttp quotes from it (an oversized ``Authorization``
    header's first 100 bytes, say)."""
    return _RequestErrorLogger(logging.getLogger("aiohttp.server"))
