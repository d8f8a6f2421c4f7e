"""The example clinic: an aiohttp app with a login page, a live dashboard and a
realtime_gateway serving the four built-in namespaces under the reference rules,
with the app's chat membership table (:data:`CONVERSATIONS`) plugged into them.

Run with ``make demo`` or ``python examples/aiohttp_clinic/app.py [--host H]
[--port P] [--update-interval SECONDS] [--token-ttl SECONDS] [--refresh-ahead SECONDS]
[--idle-timeout SECONDS] [--print-demo-token] [--log-level LEVEL]`` and open the
printed URL. Pick a demo user: the server signs a short-lived session token (a new
session id per login) into the HttpOnly ``rtg_session`` cookie, which the dashboard's
socket.io connections and its admin API calls carry (same origin). Before the token
expires the dashboard fetches a fresh one for the same session from
``POST /session/refresh`` and hands it to the gateway with ``auth:refresh``; logging
out revokes the session, so the old cookie opens nothing and the sockets it opened
are closed; a dashboard left without input for ``--idle-timeout`` is signed out. A
background task publishes simulated vitals for a few patients so the page moves on
its own. Requests are logged without credentials (``Gateway.run_aiohttp``).

The signing key comes from ``RTG_SECRET_KEY``; without it a throwaway key is made
and sessions and tokens only work until the process stops. The library's
default cookie name and token salt are used, so a token minted with
``python -m realtime_gateway token`` and the same key works here too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import html
import json
import logging
import math
import os
import random
import secrets
import string
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from realtime_gateway import (
    AdminAPI,
    AuthenticationFailed,
    Gateway,
    GatewayConfig,
    Handshake,
    Identity,
    SignedTokenAuthenticator,
    default_namespaces,
    reference_rules,
)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
JS_CLIENT = REPO_ROOT / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"

SALT = "realtime_gateway.session"  # the library's default token salt, as the CLI uses
TOKEN_TTL = 900.0  # seconds: the life of a session token (login cookie, refreshes)
REFRESH_AHEAD = 60.0  # seconds before a token expires that the dashboard is warned
IDLE_TIMEOUT = 900.0  # seconds without input before a dashboard is signed out
PATIENT_IDS = ("p-1001", "p-1002", "p-1003")

# Sent with every page: scripts, styles and connections from this origin only.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

log = logging.getLogger("aiohttp_clinic")


# -- demo users -------------------------------------------------------------------


@dataclass(frozen=True)
class DemoUser:
    """A user of the login page: one per role of the reference rules."""

    user_id: str
    name: str
    role: str
    permissions: tuple[str, ...] = ()

    def identity(self, session_id: str | None = None) -> Identity:
        """The identity a token of this user carries. Without ``session_id``,
        :meth:`SignedTokenAuthenticator.issue` gives the token a new random one."""
        return Identity(
            user_id=self.user_id,
            roles={self.role},
            permissions=self.permissions,
            display_name=self.name,
            session_id=session_id,
        )


DEMO_USERS = (
    DemoUser("u-admin", "Ada Admin", "admin"),
    DemoUser("u-doctor", "Dr Dee", "doctor", ("view:patient", "view:clinical_notes")),
    DemoUser("u-nurse", "Nat Nurse", "nurse", ("view:patient",)),
    DemoUser("u-staff", "Sam Staff", "staff"),
    DemoUser("u-patient", "Pat Patient", "patient"),
)
USERS_BY_ID = {user.user_id: user for user in DEMO_USERS}
ROLES = tuple(user.role for user in DEMO_USERS)

# Who is in which chat conversation: the app's own data (in a real app, its database),
# which the authorizer consults through the reference rules' membership hook.
CONVERSATIONS: Mapping[str, frozenset[str]] = {
    "ward-round": frozenset({"u-admin", "u-doctor", "u-nurse"}),
    "billing-desk": frozenset({"u-admin", "u-staff"}),
}
DEFAULT_CONVERSATION = "ward-round"


def conversation_member(identity: Identity, params: Mapping[str, str]) -> bool:
    """The reference rules' ``conversation_member`` check: only the members listed in
    :data:`CONVERSATIONS` may join and write to a conversation; unknown ones have none."""
    return identity.user_id in CONVERSATIONS.get(params["conversation_id"], frozenset())


def conversations_of(user_id: str) -> list[str]:
    """The conversations ``user_id`` is a member of, in table order."""
    return [name for name, members in CONVERSATIONS.items() if user_id in members]


# -- configuration ------------------------------------------------------------------


def secret_key() -> str:
    """The signing key from ``RTG_SECRET_KEY``, else a loudly announced throwaway."""
    key = os.environ.get("RTG_SECRET_KEY")
    if key:
        return key
    print(
        "WARNING: RTG_SECRET_KEY is not set; using a throwaway key. "
        "Sessions and tokens signed with it stop working when this process exits.",
        file=sys.stderr,
    )
    return secrets.token_urlsafe(32)


def require_js_client() -> None:
    """Exit, saying how to get it, if the official socket.io browser client is missing."""
    if not JS_CLIENT.is_file():
        raise SystemExit(
            f"The socket.io JavaScript client is missing ({JS_CLIENT}).\n"
            f"Install it with `npm ci` in {REPO_ROOT} (or run `make demo`, which does)."
        )


# -- pages --------------------------------------------------------------------------


class Safe(str):
    """Markup that :func:`render` inserts as is (everything else is escaped)."""


def render(template: str, **values: str) -> str:
    """Fill ``templates/{template}`` (``$name`` placeholders) with ``values``,
    HTML-escaped unless they are :class:`Safe`."""
    text = (HERE / "templates" / template).read_text(encoding="utf-8")
    escaped = {
        name: value if isinstance(value, Safe) else html.escape(value)
        for name, value in values.items()
    }
    return string.Template(text).substitute(escaped)


def page(body: str) -> web.Response:
    """An HTML response with the page security headers."""
    return web.Response(text=body, content_type="text/html", headers=PAGE_HEADERS)


def redirect(location: str) -> web.Response:
    """A 303 redirect (after a POST, the browser follows it with a GET)."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


def script_json(data: Mapping[str, Any]) -> Safe:
    """``data`` as JSON that is safe inside a ``<script type="application/json">``."""
    text = json.dumps(data)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return Safe(text)


def login_buttons() -> Safe:
    """One submit button per demo user for the login form."""
    rows = []
    for user in DEMO_USERS:
        permissions = ", ".join(user.permissions) or "no permissions"
        rows.append(
            "<li>"
            f'<button type="submit" name="user" value="{html.escape(user.user_id)}" '
            f'data-testid="login-{html.escape(user.user_id)}">{html.escape(user.name)}</button> '
            f'<span class="muted">{html.escape(user.role)} · {html.escape(permissions)}</span>'
            "</li>"
        )
    return Safe("\n".join(rows))


def same_origin(request: web.Request) -> bool:
    """Whether a request that acts on the session cookie comes from this app's own
    pages: browsers send ``Origin`` on every cross-site POST and fetch, and the
    gateway, left at its default ``allowed_origins``, admits its own origin only; a
    request without one is a non-browser client, which holds the cookie itself."""
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


def refusal(status: int, code: str, error: str) -> web.Response:
    """A JSON failure envelope, as the gateway's own HTTP answers are shaped."""
    return web.json_response(
        {"success": False, "code": code, "error": error},
        status=status,
        headers={"Cache-Control": "no-store"},
    )


class ClinicPages:
    """The host app's own HTTP routes: login, logout, session refresh, dashboard."""

    def __init__(
        self,
        gateway: Gateway,
        authenticator: SignedTokenAuthenticator,
        *,
        token_ttl: float = TOKEN_TTL,
        idle_timeout: float | None = IDLE_TIMEOUT,
    ) -> None:
        self.gateway = gateway
        self.authenticator = authenticator
        self.token_ttl = token_ttl
        self.idle_timeout = idle_timeout

    async def session(self, request: web.Request) -> Identity | None:
        """The identity in the request's session cookie, if it is valid and its
        session has not been revoked (logged out, or signed out when idle)."""
        if not request.cookies.get(self.authenticator.cookie_name):
            return None
        # The gateway's own check, so refusals are counted and logged as the
        # handshake's are; ``path`` names the route only.
        handshake = Handshake.from_http(
            path=request.path, headers=request.headers, scheme=request.scheme
        )
        try:
            return await self.gateway.authenticate(handshake)
        except AuthenticationFailed:
            return None

    def set_session_cookie(self, response: web.StreamResponse, token: str) -> None:
        """Put ``token`` in the HttpOnly session cookie, for as long as it lives."""
        response.set_cookie(
            self.authenticator.cookie_name,
            token,
            max_age=math.ceil(self.token_ttl),
            path="/",
            httponly=True,
            samesite="Lax",
        )

    async def login_page(self, request: web.Request) -> web.Response:
        """``GET /``: the demo users, one button each."""
        identity = await self.session(request)
        signed_in = Safe("")
        if identity is not None:
            signed_in = Safe(
                f"Signed in as {html.escape(identity.name)}: "
                '<a href="/dashboard">dashboard</a>, or '
                '<form method="post" action="/logout" class="inline">'
                '<button type="submit" class="link" data-testid="logout">log out</button>'
                "</form>."
            )
        return page(render("login.html", users=login_buttons(), signed_in=signed_in))

    async def login(self, request: web.Request) -> web.Response:
        """``POST /login``: sign a new session of the chosen user into the cookie."""
        if not same_origin(request):
            return refusal(403, "forbidden", "Origin not allowed")
        form = await request.post()
        user = USERS_BY_ID.get(str(form.get("user", "")))
        if user is None:
            return redirect("/")
        # No session id here: issue() makes a new random one for every login.
        token = self.authenticator.issue(user.identity(), ttl=self.token_ttl)
        response = redirect("/dashboard")
        self.set_session_cookie(response, token)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        """``POST /logout``: revoke the cookie's session, so that neither the cookie
        nor any token of that session opens a socket any more and the sockets it
        opened (every tab of this browser) are closed with ``auth:revoked``; then
        clear the cookie."""
        if not same_origin(request):
            return refusal(403, "forbidden", "Origin not allowed")
        identity = await self.session(request)
        if identity is not None and identity.session_id is not None:
            await self.gateway.revoke_session(identity.session_id, user_id=identity.user_id)
        response = redirect("/")
        response.del_cookie(self.authenticator.cookie_name, path="/")
        return response

    async def refresh(self, request: web.Request) -> web.Response:
        """``POST /session/refresh``: a fresh token for the cookie's user and session,
        answered as ``{token}`` (for the dashboard's ``auth:refresh``) and put in the
        cookie. The session id stays the same, so logging out still revokes every
        token of the session; a revoked or expired session gets none."""
        if not same_origin(request):
            return refusal(403, "forbidden", "Origin not allowed")
        identity = await self.session(request)
        user = USERS_BY_ID.get(identity.user_id) if identity is not None else None
        if identity is None or user is None or identity.session_id is None:
            return refusal(401, "unauthenticated", "No valid session: sign in again")
        # Roles and permissions come from the user table again, not from the old token.
        token = self.authenticator.issue(user.identity(identity.session_id), ttl=self.token_ttl)
        response = web.json_response({"token": token}, headers={"Cache-Control": "no-store"})
        self.set_session_cookie(response, token)
        return response

    async def dashboard(self, request: web.Request) -> web.Response:
        """``GET /dashboard``: the live page, for a signed-in user only."""
        identity = await self.session(request)
        if identity is None:
            return redirect("/")
        config = {
            "refreshUrl": "/session/refresh",
            # How often the page reports input (session:activity) depends on this.
            "idleTimeout": self.idle_timeout,
            "user": {
                "id": identity.user_id,
                "name": identity.name,
                "roles": sorted(identity.roles),
                "permissions": sorted(identity.permissions),
            },
            # The chat's join ack lists members by id; this maps ids to names.
            "directory": {user.user_id: user.name for user in DEMO_USERS},
            # The chat opens on the user's first conversation. Someone in none gets the
            # default one, which the server refuses: the page shows that refusal.
            "conversationId": next(iter(conversations_of(identity.user_id)), DEFAULT_CONVERSATION),
            "conversations": list(CONVERSATIONS),
            "patientIds": list(PATIENT_IDS),
            "roles": list(ROLES),
        }
        return page(
            render(
                "dashboard.html",
                name=identity.name,
                roles=", ".join(sorted(identity.roles)) or "no role",
                admin_hidden="" if identity.has_role("admin") else "hidden",
                patient_id=PATIENT_IDS[0],
                role_options=Safe(
                    "".join(f"<option>{html.escape(role)}</option>" for role in ROLES)
                ),
                config=script_json(config),
            )
        )


# -- simulated data source ------------------------------------------------------------


def simulated_vitals(rng: random.Random) -> dict[str, Any]:
    """One plausible set of vital signs."""
    return {
        "heartRate": rng.randint(58, 104),
        "bloodPressure": f"{rng.randint(105, 145)}/{rng.randint(65, 92)}",
        "temperature": round(rng.uniform(36.2, 38.1), 1),
        "spo2": rng.randint(91, 100),
    }


async def publish_vitals(gateway: Gateway, interval: float) -> None:
    """Publish a ``vitals`` update for each demo patient every ``interval`` seconds."""
    rng = random.Random()  # noqa: S311 (made-up vitals, not security)
    while True:
        await asyncio.sleep(interval)
        for patient_id in PATIENT_IDS:
            try:
                await gateway.publish_update("patient", patient_id, "vitals", simulated_vitals(rng))
            except Exception:
                # Keep the demo moving; the next tick tries again.
                log.exception("publishing simulated vitals failed")


def data_source(
    gateway: Gateway, interval: float
) -> Callable[[web.Application], AsyncIterator[None]]:
    """An aiohttp cleanup context running :func:`publish_vitals` while the app runs."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(publish_vitals(gateway, interval))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return run


def file_handler(path: Path) -> Callable[[web.Request], Awaitable[web.FileResponse]]:
    """A handler serving the one file at ``path``."""

    async def serve_file(request: web.Request) -> web.FileResponse:
        return web.FileResponse(path)

    return serve_file


# -- the app ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Clinic:
    """The assembled app and the parts of it :func:`main` needs."""

    app: web.Application
    gateway: Gateway
    authenticator: SignedTokenAuthenticator


def build_app(
    key: str,
    *,
    update_interval: float = 3.0,
    token_ttl: float = TOKEN_TTL,
    refresh_ahead: float = REFRESH_AHEAD,
    idle_timeout: float | None = IDLE_TIMEOUT,
) -> Clinic:
    """The clinic: pages, static files, the gateway, its admin API and the data source.

    ``token_ttl`` is the life of every session token (the login cookie's, and each
    refreshed one); sockets are warned ``refresh_ahead`` seconds before their token
    expires, which must leave time to refresh. ``idle_timeout`` (``None``: off)
    signs out a dashboard without input for that long.
    """
    if not 0 < refresh_ahead < token_ttl:
        raise ValueError("refresh_ahead must be positive and shorter than token_ttl")
    require_js_client()
    # max_age caps every token at token_ttl, whatever minted it (the CLI's default is
    # an hour), and is how long a revoked session is remembered.
    authenticator = SignedTokenAuthenticator([key], salt=SALT, max_age=token_ttl)
    gateway = Gateway(
        authenticator=authenticator,
        authorizer=reference_rules(conversation_member=conversation_member),
        namespaces=default_namespaces(),
        # A dashboard that drops for up to two minutes (Wi-Fi hand-over, a laptop lid)
        # gets the updates it missed when it reconnects.
        config=GatewayConfig(
            refresh_ahead=refresh_ahead, idle_timeout=idle_timeout, recovery_window=120
        ),
    )
    app = web.Application()
    gateway.attach(app)
    AdminAPI(gateway, roles=ROLES).attach(app)

    pages = ClinicPages(gateway, authenticator, token_ttl=token_ttl, idle_timeout=idle_timeout)
    app.router.add_get("/", pages.login_page)
    app.router.add_post("/login", pages.login)
    # POST only: a GET that ends a session could be triggered by any other site's link.
    app.router.add_post("/logout", pages.logout)
    app.router.add_post("/session/refresh", pages.refresh)
    app.router.add_get("/dashboard", pages.dashboard)

    # Registered before the static folder, so these come from node_modules.
    for name in (JS_CLIENT.name, JS_CLIENT.name + ".map"):
        app.router.add_get(f"/static/{name}", file_handler(JS_CLIENT.parent / name))
    app.router.add_static("/static", HERE / "static")
    app.cleanup_ctx.append(data_source(gateway, update_interval))
    return Clinic(app, gateway, authenticator)


def positive_seconds(text: str) -> float:
    """argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def seconds_or_off(text: str) -> float | None:
    """argparse type: a positive number of seconds, or 0 for off (``None``)."""
    try:
        if float(text) == 0:
            return None
    except ValueError:
        pass  # positive_seconds says what is wrong
    return positive_seconds(text)


def print_welcome(
    host: str, port: int, authenticator: SignedTokenAuthenticator, *, demo_token: bool = False
) -> None:
    """Say where to log in, and how to connect without a browser; with ``demo_token``,
    print a live token for Nat Nurse, good for the token lifetime (a credential:
    never in a shared log)."""
    url = f"http://{host}:{port}"
    print(f"Clinic on {url}: open {url}/ and pick a demo user to log in.")
    print(f"Health: {url}/api/socket.io/health (socket.io path /socket.io)")
    if demo_token:
        token = authenticator.issue(USERS_BY_ID["u-nurse"].identity())
        print(
            f"Connect a socket.io client with this token in its auth payload (Nat Nurse, "
            f"valid {authenticator.max_age:g} s):"
        )
        print(f"  {token}")
    print(
        "Mint others with the same key: RTG_SECRET_KEY=... python -m realtime_gateway "
        "token --user-id u1 --role doctor",
        flush=True,
    )


def main() -> None:
    """Parse the flags and serve the clinic until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--update-interval",
        type=positive_seconds,
        default=3.0,
        metavar="SECONDS",
        help="seconds between simulated patient updates (default 3)",
    )
    parser.add_argument(
        "--token-ttl",
        type=positive_seconds,
        default=TOKEN_TTL,
        metavar="SECONDS",
        help=f"life of a session token: the login cookie's and each refreshed one "
        f"(default {TOKEN_TTL:g})",
    )
    parser.add_argument(
        "--refresh-ahead",
        type=positive_seconds,
        default=None,
        metavar="SECONDS",
        help=f"how long before its token expires a dashboard is warned and renews it; "
        f"shorter than --token-ttl (default {REFRESH_AHEAD:g}, or a third of a shorter "
        "--token-ttl)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=seconds_or_off,
        default=IDLE_TIMEOUT,
        metavar="SECONDS",
        help=f"sign a dashboard out after this long without input; 0 for never "
        f"(default {IDLE_TIMEOUT:g})",
    )
    parser.add_argument(
        "--print-demo-token",
        action="store_true",
        help="print a live token for Nat Nurse (good for --token-ttl) at start-up (off "
        "by default: start-up output tends to end up in shared logs)",
    )
    parser.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="INFO",
        help="level of every logger (default INFO)",
    )
    args = parser.parse_args()
    refresh_ahead = args.refresh_ahead
    if refresh_ahead is None:
        refresh_ahead = min(REFRESH_AHEAD, args.token_ttl / 3)
    elif refresh_ahead >= args.token_ttl:
        parser.error("--refresh-ahead must be shorter than --token-ttl")
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s %(message)s")
    clinic = build_app(
        secret_key(),
        update_interval=args.update_interval,
        token_ttl=args.token_ttl,
        refresh_ahead=refresh_ahead,
        idle_timeout=args.idle_timeout,
    )
    # Shuts the gateway down before the web server, so clients are heard leaving, and
    # logs requests without their credentials (sid and token query values, headers).
    asyncio.run(
        clinic.gateway.run_aiohttp(
            clinic.app,
            host=args.host,
            port=args.port,
            started=lambda url: print_welcome(
                args.host, args.port, clinic.authenticator, demo_token=args.print_demo_token
            ),
        )
    )


if __name__ == "__main__":
    main()
