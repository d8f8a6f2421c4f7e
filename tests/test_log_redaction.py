"""Credentials and forged lines kept out of every log: the access loggers and filters of
``realtime_gateway._accesslog``, the escaping of ``realtime_gateway._log.log``, and the
clinic and Starlette examples run as their own processes through an attack-style
scenario while all their output is captured."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import logging.config
import re
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.test_utils import make_mocked_request
from aiohttp.web_log import AccessLogger
from uvicorn.logging import AccessFormatter
from yarl import URL

from realtime_gateway import (
    AuthenticationFailed,
    RedactingAccessLogger,
    RedactingFilter,
    SignedTokenAuthenticator,
    uvicorn_log_config,
)
from realtime_gateway._accesslog import MASK, redact_target, request_error_logger
from realtime_gateway._log import escape, log

from .test_examples import ENV, KEY, ROOT, _free_port, _stop, _wait_until_ready, mint

SALT = "realtime_gateway.session"

# -- capturing records -------------------------------------------------------------------


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def kept(name: str, level: int = logging.DEBUG) -> Iterator[list[logging.LogRecord]]:
    """The records of logger ``name`` while the block runs (level and handlers restored)."""
    logger = logging.getLogger(name)
    handler = _Keep()
    saved = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved)


def formatted(record: logging.LogRecord) -> str:
    """The record as a plain text handler writes it, traceback included."""
    return logging.Formatter("%(levelname)s %(name)s %(message)s").format(record)


# A parser for ``what key=value ...`` records, as a log pipeline would have one.
_FIELD = re.compile(r' ([A-Za-z_]+)=("(?:[^"\\]|\\.)*"|[^ "]*)')


def parse_fields(message: str) -> dict[str, str]:
    what = message.partition(" ")[0]
    fields: dict[str, str] = {}
    position = len(what)
    for found in _FIELD.finditer(message, position):
        assert found.start() == position, f"unparsable at {message[position:]!r}"
        fields[found.group(1)] = found.group(2)
        position = found.end()
    assert position == len(message), f"unparsable at {message[position:]!r}"
    return fields


# -- escape() and log() -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("Mozilla/5.0 (X11; Linux) é", "Mozilla/5.0 (X11; Linux) é"),
        ("a\r\nconnect sid=x", "a\\x0d\\x0aconnect sid=x"),
        ("tab\there", "tab\\x09here"),
        ("nel\x85ls\u2028ps\u2029", "nel\\x85ls\\u2028ps\\u2029"),
        ('say "hi"', 'say \\"hi\\"'),
        ("back\\slash", "back\\\\slash"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("\U000e0041", "\\U000e0041"),
    ],
)
def test_escape_keeps_text_on_one_line(text: str, escaped: str) -> None:
    assert escape(text) == escaped
    assert len(escape(text).splitlines()) <= 1


def test_log_escapes_and_quotes_client_values() -> None:
    forged = "10.0.0.1\r\nINFO realtime_gateway connect sid=FORGED user=u-admin"
    with kept("realtime_gateway") as records:
        log(
            logging.WARNING,
            "auth_failed",
            remote=forged,
            reason="no rule allows it",
            agent='x" sid="y',
            empty="",
            equals="a=b",
            count=3,
            ratio=0.5,
            flag=True,
        )
    [record] = records
    message = record.getMessage()
    assert len(formatted(record).splitlines()) == 1
    assert parse_fields(message) == {
        "remote": '"10.0.0.1\\x0d\\x0aINFO realtime_gateway connect sid=FORGED user=u-admin"',
        "reason": '"no rule allows it"',
        "agent": '"x\\" sid=\\"y"',
        "empty": '""',
        "equals": '"a=b"',
        "count": "3",
        "ratio": "0.5",
        "flag": "True",
    }
    rtg: dict[str, Any] = record.rtg  # type: ignore[attr-defined]
    assert rtg["remote"] == parse_fields(message)["remote"][1:-1]  # the same, unquoted
    assert rtg["agent"] == 'x\\" sid=\\"y'
    assert (rtg["count"], rtg["ratio"], rtg["flag"]) == (3, 0.5, True)
    assert all("\n" not in str(value) and "\r" not in str(value) for value in rtg.values())


def test_log_leaves_plain_values_as_they_were() -> None:
    with kept("realtime_gateway") as records:
        log(logging.INFO, "connect", sid="Ab-12_x", namespace="/chat", ms=1.5, room="patient:1")
    [record] = records
    assert record.getMessage() == "connect sid=Ab-12_x namespace=/chat ms=1.5 room=patient:*"


# -- redact_target -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "redacted"),
    [
        (
            "/socket.io/?EIO=4&transport=polling&sid=abc",
            f"/socket.io/?EIO=4&transport=polling&sid={MASK}",
        ),
        (
            "/?token=t&access_token=a&auth=b&x=1",
            f"/?token={MASK}&access_token={MASK}&auth={MASK}&x=1",
        ),
        ("/?SID=a&Token=b&AUTH=c", f"/?SID={MASK}&Token={MASK}&AUTH={MASK}"),
        ("/?%73id=a&%74oken=b", f"/?%73id={MASK}&%74oken={MASK}"),
        ("/?x=1;sid=a;y=2", f"/?x=1;sid={MASK};y=2"),
        ("/?sid=a&sid=b", f"/?sid={MASK}&sid={MASK}"),
        ("/?sid=", f"/?sid={MASK}"),
        ("/?sidecar=1&tokens=2&mysid=3", "/?sidecar=1&tokens=2&mysid=3"),
        ("/path/sid=abc", "/path/sid=abc"),
        ("/?sid", "/?sid"),
        ("GET /x?token=abc HTTP/1.1", f"GET /x?token={MASK} HTTP/1.1"),
        ("sent /?a=1 then sid=abc&x", f"sent /?a=1 then sid={MASK}&x"),
    ],
)
def test_redact_target_masks_credential_parameters(target: str, redacted: str) -> None:
    assert redact_target(target) == redacted


# -- RedactingAccessLogger ------------------------------------------------------------------


def access_line(
    log_format: str = AccessLogger.LOG_FORMAT,
    *,
    path: str = "/",
    headers: dict[str, str] | None = None,
    response: web.StreamResponse | None = None,
    remote: str = "127.0.0.1",
) -> logging.LogRecord:
    request = make_mocked_request("GET", path, headers=headers or {}).clone(remote=remote)
    with kept("rtg.test.access") as records:
        logger = RedactingAccessLogger(logging.getLogger("rtg.test.access"), log_format)
        assert logger.enabled
        logger.log(request, response or web.Response(text="ok"), 0.25)
    [record] = records
    return record


def test_access_log_masks_query_credentials_in_the_request_line() -> None:
    record = access_line(
        path="/socket.io/?EIO=4&transport=polling&sid=LIVESID&t=x&token=TOKEN1&AUTH=TOKEN2"
    )
    line = formatted(record)
    assert "LIVESID" not in line
    assert "TOKEN1" not in line
    assert "TOKEN2" not in line
    query = f"EIO=4&transport=polling&sid={MASK}&t=x&token={MASK}&AUTH={MASK}"
    assert f'"GET /socket.io/?{query} HTTP/1.1" 200' in line
    assert record.first_request_line.endswith("HTTP/1.1")  # type: ignore[attr-defined]
    assert "LIVESID" not in repr(vars(record))


def test_access_log_never_writes_credential_headers() -> None:
    response = web.Response(text="ok", headers={"Set-Cookie": "rtg_session=SETCOOKIE; Path=/"})
    record = access_line(
        '%a "%{Authorization}i" "%{Cookie}i" "%{Proxy-Authorization}i" "%{Set-Cookie}o" '
        '"%{Referer}i" "%{X-Missing}i" %s',
        headers={
            "Authorization": "Bearer BEARER",
            "Cookie": "rtg_session=COOKIE; rtg_eio_abc=BINDING",
            "Proxy-Authorization": "Basic PROXY",
            "Referer": "http://host/page?token=REFTOKEN&x=1",
        },
        response=response,
    )
    line = formatted(record)
    for secret in ("BEARER", "COOKIE", "BINDING", "PROXY", "SETCOOKIE", "REFTOKEN"):
        assert secret not in line
        assert secret not in repr(vars(record))
    assert line.endswith(
        f'127.0.0.1 "{MASK}" "{MASK}" "{MASK}" "{MASK}" "http://host/page?token={MASK}&x=1" "-" 200'
    )
    assert record.request_header["Authorization"] == MASK  # type: ignore[attr-defined]


def test_access_log_escapes_what_the_client_sent() -> None:
    forged = "INFO realtime_gateway connect sid=FORGED user=u-admin"
    record = access_line(
        path="/%0d%0aconnect%20sid=FORGED",
        headers={"User-Agent": f'probe\r\n{forged}\u2028{forged}"', "Referer": "a\nb"},
        remote=f"10.0.0.1\n{forged}",
    )
    line = formatted(record)
    assert len(line.splitlines()) == 1
    assert "\\x0d\\x0aINFO realtime_gateway connect" in line
    assert "\\u2028INFO" in line
    assert '\\"' in line  # the client's quote cannot close the field
    assert line.startswith("INFO rtg.test.access 10.0.0.1\\x0aINFO")


def test_access_log_format_directives() -> None:
    response = web.Response(text="hello", status=201, headers={"X-Trace": "t-1"})
    record = access_line(
        "%% %P %r %s %b %T %Tf %D %t %{X-Trace}o %{HOME}e %q",
        path="/a?b=c",
        response=response,
    )
    message = record.getMessage()
    assert re.fullmatch(
        r"% <\d+> GET /a\?b=c HTTP/1\.1 201 0 0 0\.250000 250000 "
        r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] t-1 %\{HOME\}e %q",
        message,
    ), message


def test_access_log_is_disabled_with_its_logger() -> None:
    quiet = logging.getLogger("rtg.test.quiet")
    quiet.setLevel(logging.WARNING)
    assert not RedactingAccessLogger(quiet, AccessLogger.LOG_FORMAT).enabled


# -- RedactingFilter and uvicorn ------------------------------------------------------------


def uvicorn_access_record(path: str, client: str = "127.0.0.1:5000") -> logging.LogRecord:
    return logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        (client, "GET", path, "1.1", 200),
        None,
    )


def test_filter_masks_and_escapes_uvicorn_access_records() -> None:
    record = uvicorn_access_record(
        "/socket.io/?EIO=4&transport=polling&sid=LIVESID&token=TOKEN1",
        client="1.2.3.4:5\r\nINFO realtime_gateway connect sid=FORGED",
    )
    assert RedactingFilter().filter(record) is True
    assert RedactingFilter().filter(record) is True  # a second filter changes nothing
    formatter = AccessFormatter(
        '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False
    )
    line = formatter.format(record)
    assert "LIVESID" not in line
    assert "TOKEN1" not in line
    assert len(line.splitlines()) == 1
    assert line == (
        "INFO:     1.2.3.4:5\\x0d\\x0aINFO realtime_gateway connect sid=FORGED - "
        f'"GET /socket.io/?EIO=4&transport=polling&sid={MASK}&token={MASK} HTTP/1.1" 200 OK'
    )


def test_filter_masks_uvicorn_websocket_handshake_lines() -> None:
    record = logging.LogRecord(
        "uvicorn.error",
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5000", "/socket.io/?EIO=4&transport=websocket&sid=LIVESID"),
        None,
    )
    RedactingFilter().filter(record)
    assert record.getMessage() == (
        f'127.0.0.1:5000 - "WebSocket /socket.io/?EIO=4&transport=websocket&sid={MASK}" [accepted]'
    )


def test_filter_handles_mapping_args_and_preformatted_messages() -> None:
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "%(path)s", ({"path": "/?auth=SECRET\n"},), None
    )
    RedactingFilter().filter(record)
    assert record.getMessage() == f"/?auth={MASK}\\x0a"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "GET /?sid=SECRET", None, None)
    RedactingFilter().filter(record)
    assert record.getMessage() == f"GET /?sid={MASK}"


def parser_error(error: Exception) -> tuple[type[BaseException], BaseException, Any]:
    try:
        raise error
    except Exception as exc:
        return type(exc), exc, exc.__traceback__


def test_filter_drops_the_request_bytes_of_aiohttp_parser_errors() -> None:
    record = logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("127.0.0.1",),
        parser_error(LineTooLong(b"Bearer OVERSIZED" + b"A" * 84 + b"...", 8190)),
    )
    RedactingFilter().filter(record)
    text = formatted(record)
    assert "OVERSIZED" not in text
    assert text == (
        "ERROR aiohttp.server Error handling request from 127.0.0.1 "
        "(LineTooLong, status 400; request bytes not logged)"
    )


def test_filter_keeps_other_tracebacks() -> None:
    record = logging.LogRecord(
        "uvicorn.error",
        logging.ERROR,
        __file__,
        1,
        "Exception in ASGI application\n",
        None,
        parser_error(RuntimeError("the application's own error")),
    )
    RedactingFilter().filter(record)
    assert "RuntimeError: the application's own error" in formatted(record)


def test_uvicorn_log_config_installs_the_filter_on_uvicorns_loggers() -> None:
    from uvicorn.config import LOGGING_CONFIG

    config = uvicorn_log_config()
    assert "filters" not in LOGGING_CONFIG  # uvicorn's own dict is left alone
    [(name, settings)] = config["filters"].items()
    # As logging.config.dictConfig builds it (without configuring this process).
    built = logging.config.DictConfigurator(config).configure_filter(dict(settings))
    assert isinstance(built, RedactingFilter)
    assert config["loggers"]["uvicorn.access"]["filters"] == [name]
    assert config["loggers"]["uvicorn.error"]["filters"] == [name]
    assert config["handlers"] == LOGGING_CONFIG["handlers"]
    assert config["formatters"] == LOGGING_CONFIG["formatters"]
    assert json.loads(json.dumps(config)) == config  # for uvicorn --log-config


# -- aiohttp's request error log under run_aiohttp -------------------------------------------


def test_request_error_logger_drops_parser_error_bytes_and_escapes() -> None:
    with kept("aiohttp.server") as records:
        logger = request_error_logger()
        logger.exception(
            "Error handling request from %s",
            "127.0.0.1\nforged",
            exc_info=LineTooLong(b"Bearer OVERSIZED...", 8190),
        )
        logger.debug(
            "Error handling request from %s",
            "127.0.0.1",
            exc_info=BadHttpMessage("Invalid header token: b'connect sid=FORGED'"),
        )
        logger.exception("Unhandled exception", exc_info=RuntimeError("kept"))
        try:
            raise LineTooLong(b"Bearer CURRENT...", 8190)
        except LineTooLong:
            logger.exception("Error handling request from %s", "127.0.0.1")
    oversized, bad, other, current = records
    assert "CURRENT" not in formatted(current)
    assert current.exc_info is None
    assert (oversized.name, oversized.levelno) == ("aiohttp.server", logging.ERROR)
    assert oversized.exc_info is None
    assert formatted(oversized) == (
        "ERROR aiohttp.server Error handling request from 127.0.0.1\\x0aforged "
        "(LineTooLong, status 400; request bytes not logged)"
    )
    assert bad.levelno == logging.DEBUG
    assert "FORGED" not in formatted(bad)
    assert "BadHttpMessage, status 400" in formatted(bad)
    assert "RuntimeError: kept" in formatted(other)


# -- the examples as processes, under attack ---------------------------------------------------

TOKEN = re.compile(r"\.?[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{16,}")
FORGED = re.compile(r"(?:[A-Z]+ [\w.]+ )?connect sid=FORGED")
LOG_LEVEL_OF = {"aiohttp_clinic": ["--log-level", "DEBUG"], "asgi_starlette": []}


@contextlib.asynccontextmanager
async def example_process(example: str, output: Path, *args: str) -> AsyncIterator[str]:
    """``examples/{example}/app.py`` on a free port with stdout and stderr in ``output``;
    yields its URL once healthy and stops it (output complete) on the way out."""
    port = _free_port()
    with output.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, str(ROOT / "examples" / example / "app.py"), "--port", str(port)),
            *args,
            env=ENV,
            stdout=sink,
            stderr=sink,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_until_ready(process, url + "/api/socket.io/health", output)
        yield url
    finally:
        await _stop(process)


def live_tokens(text: str) -> list[str]:
    """Every string in ``text`` that is a token the examples' key signed."""
    verifier = SignedTokenAuthenticator([KEY], salt=SALT, max_age=8 * 3600)
    found = []
    for candidate in TOKEN.findall(text):
        with contextlib.suppress(AuthenticationFailed):
            verifier.verify(candidate)
            found.append(candidate)
    return found


async def raw_request(url: str, request: bytes) -> bytes:
    """Send ``request`` as is; the status line of the answer."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 10)
    except ConnectionError:  # the server may close before reading all of it
        return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def secret_parts(name: str, secret: str) -> dict[str, str]:
    """A secret and, for a token, its long parts (payload, signature)."""
    parts = {name: secret}
    if secret.count(".") >= 2:
        parts[f"{name} (payload)"] = secret.lstrip(".").split(".")[0]
        parts[f"{name} (signature)"] = secret.rpartition(".")[2]
    return parts


def cookies(http: aiohttp.ClientSession, url: str) -> dict[str, str]:
    """The cookies the server set, by name."""
    jar = http.cookie_jar.filter_cookies(URL(url + "/socket.io/"))
    return {f"cookie {name}": morsel.value for name, morsel in jar.items()}


async def polling_connect(http: aiohttp.ClientSession, url: str, token: str) -> str:
    """Open an engine.io session over polling and connect to ``/``; its sid."""
    base = f"{url}/socket.io/?EIO=4&transport=polling"
    async with http.get(base) as response:
        assert response.status == 200
        opened = await response.text()
    assert opened.startswith("0"), opened
    sid: str = json.loads(opened[1:])["sid"]
    async with http.post(f"{base}&sid={sid}", data="40" + json.dumps({"token": token})) as r:
        assert r.status == 200
    async with http.get(f"{base}&sid={sid}") as response:
        assert response.status == 200
        assert (await response.text()).startswith("40{"), "not connected"
    return sid


async def polling_close(http: aiohttp.ClientSession, url: str, sid: str) -> None:
    """Leave: the engine.io CLOSE packet, with no long-poll pending."""
    async with http.post(f"{url}/socket.io/?EIO=4&transport=polling&sid={sid}", data="1") as r:
        assert r.status == 200


async def try_sid(url: str, sid: str, tag: str) -> None:
    """Someone else trying a live sid over polling, with odd spellings of its name."""
    async with aiohttp.ClientSession() as thief:
        for query in (f"sid={sid}", f"SID={sid}", f"%73id={sid}"):
            target = f"{url}/socket.io/?EIO=4&transport=polling&{query}&t={tag}"
            async with thief.get(URL(target, encoded=True)) as response:
                await response.read()


async def attack(url: str, secrets: dict[str, str]) -> None:
    """Requests an attacker (and ordinary clients) send, each carrying credentials the
    logs must not show; every credential used is added to ``secrets``."""
    tag = uuid.uuid4().hex[:8]
    nurse, admin, query_token, oversized = await asyncio.gather(
        mint("u-nurse", roles=["nurse"], permissions=["view:patient"]),
        mint("u-admin", roles=["admin"]),
        mint(f"u-query-{tag}", roles=["nurse"]),
        mint(f"u-oversized-{tag}", roles=["admin"]),
    )
    secrets.update(nurse=nurse, admin=admin, query_token=query_token, oversized=oversized)
    forged = f"INFO realtime_gateway connect sid=FORGED{tag} user=u-admin namespace=/"

    async with aiohttp.ClientSession() as session:
        for params in (
            {"token": query_token},
            {"access_token": query_token, "x": "1"},
            {"AUTH": query_token},
        ):
            async with session.get(url + "/api/socket.io/health", params=params) as response:
                assert response.status == 200
        async with session.get(
            url + "/api/socket.io/connections", headers={"Authorization": f"Bearer {admin}"}
        ) as response:
            assert response.status == 200
        async with session.get(
            url + "/api/socket.io/connections", headers={"Cookie": f"rtg_session={nurse}"}
        ) as response:
            assert response.status in (401, 403)
        async with session.get(
            url + "/", headers={"User-Agent": f"probe\u2028{forged}\u0085{forged}"}
        ) as response:
            assert response.status == 200

    # Socket.io over polling, spoken directly (python-engineio's client leaves a
    # long-poll pending when it closes, which the server holds until its ping timeout),
    # and python-socketio's client upgrading to websocket: their engine.io session ids
    # go in the query of every request they make.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        sid = await polling_connect(http, url, nurse)
        secrets["engine.io sid (polling)"] = sid
        await try_sid(url, sid, tag)
        # A CONNECT whose namespace is a forged record (and whose auth is not JSON).
        poll = f"{url}/socket.io/?EIO=4&transport=polling&sid={sid}"
        async with http.post(poll, data=f'40/x\r\n{forged},{{"token":') as response:
            assert response.status == 200
        async with http.get(poll) as response:
            await response.read()
        secrets.update(cookies(http, url))
        await polling_close(http, url, sid)
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    client = socketio.AsyncClient(reconnection=False, http_session=http)
    try:
        await client.connect(url, auth={"token": nurse}, wait_timeout=5)
        assert client.transport() == "websocket"
        secrets["engine.io sid (websocket)"] = client.eio.sid
        await try_sid(url, client.eio.sid, tag)
        secrets.update(cookies(http, url))
    finally:
        await client.disconnect()
        await http.close()

    # A login: the session cookie the server sets.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.post(url + "/login", data={"user": "u-doctor"}) as response:
            await response.read()
        for name, cookie in browser.cookie_jar.filter_cookies(URL(url)).items():
            secrets[f"login cookie {name}"] = cookie.value

    # What aiohttp quotes of an oversized header is its first 100 bytes: a marker there.
    secrets["oversized header marker"] = marker = f"OVERSIZED{tag}"
    oversized_header = f"Bearer {marker}{oversized}".encode() + b"A" * 9000
    status = await raw_request(
        url,
        b"GET /api/socket.io/connections HTTP/1.1\r\nHost: x\r\n"
        b"Authorization: " + oversized_header + b"\r\nConnection: close\r\n\r\n",
    )
    assert status.startswith(b"HTTP/1.1 4") or status.startswith(b"HTTP/1.0 4"), status
    huge = f"Bearer {marker}{oversized}".encode() + b"A" * 20000
    await raw_request(url, b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: " + huge + b"\r\n\r\n")
    status = await raw_request(
        url,
        b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: probe\r\n"
        + forged.encode()
        + b"\r\nConnection: close\r\n\r\n",
    )
    assert b" 400 " in status, status
    status = await raw_request(
        url,
        b"GET /%0d%0a"
        + forged.replace(" ", "%20").encode()
        + b"?token="
        + query_token.encode()
        + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert b" 404 " in status, status


def assert_clean(output: str, secrets: dict[str, str]) -> None:
    leaked = [
        name
        for label, secret in secrets.items()
        for name, part in secret_parts(label, secret).items()
        if part in output
    ]
    assert leaked == [], f"in the output: {leaked}\n{output}"
    assert live_tokens(output) == []
    # Any line break a log reader may split on (splitlines: CR, LF, NEL, U+2028, ...).
    forged = [line for line in output.splitlines() if FORGED.match(line.lstrip())]
    assert forged == [], output


@pytest.mark.parametrize("example", ["aiohttp_clinic", "asgi_starlette"])
async def test_no_credential_or_forged_line_in_an_examples_output(
    example: str, tmp_path: Path
) -> None:
    output = tmp_path / f"{example}.log"
    secrets: dict[str, str] = {}
    async with example_process(example, output, *LOG_LEVEL_OF[example]) as url:
        await attack(url, secrets)
    text = output.read_text(encoding="utf-8", errors="backslashreplace")
    assert_clean(text, secrets)
    # The scenario did reach the logs: masked values and the refusals are there.
    assert f"token={MASK}" in text
    assert f"sid={MASK}" in text
    assert f"%73id={MASK}" in text
    if example == "aiohttp_clinic":
        assert "(LineTooLong, status 400; request bytes not logged)" in text
        assert "(BadHttpMessage, status 400; request bytes not logged)" in text
        assert "\\u2028INFO realtime_gateway connect" in text
    else:
        assert "Invalid HTTP request received." in text
        assert re.search(r'"WebSocket /socket\.io/\?[^"]*&sid=\*\*\*&[^"]*" \[accepted\]', text)


async def test_the_clinic_prints_a_demo_token_only_when_asked(tmp_path: Path) -> None:
    quiet, loud = tmp_path / "quiet.log", tmp_path / "loud.log"
    async with example_process("aiohttp_clinic", quiet):
        pass
    async with example_process("aiohttp_clinic", loud, "--print-demo-token"):
        pass
    assert live_tokens(quiet.read_text()) == []
    [token] = live_tokens(loud.read_text())
    identity = SignedTokenAuthenticator([KEY], salt=SALT, max_age=3600).verify(token)
    assert identity.user_id == "u-nurse"
