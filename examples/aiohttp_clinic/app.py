"""The example clinic: an aiohttp app with a login page, a live dashboard and a
realtime_gateway serving the four built-in namespaces under the reference rules,
with the app's chat membership table (:data:`CONVERSATIONS`) plugged into them.

Run with ``make demo`` or ``python examples/aiohttp_clinic/app.py [--host H]
[--port P] [--update-interval SECONDS] [--print-demo-token] [--log-level LEVEL]`` and
open the printed URL. Pick a demo user: the server signs a session token into the
HttpOnly ``rtg_session`` cookie, which the dashboard's socket.io connections and its
admin API calls carry (same origin; the page's JavaScript never sees the token). A
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
    Identity,
    SignedTokenAuthenticator,
    default_namespaces,
    reference_rules,
)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
JS_CLIENT = REPO_ROOT / "node_modules" / "socket.io-client" / "dist" / "socket.io.min.js"

SALT = "realtime_gateway.session"  # the library's default token salt, as the CLI uses
SESSION_TTL = 8 * 3600  # seconds
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

    def identity(self) -> Identity:
        """The identity a session of this user carries, with a fresh session id."""
        return Identity(
            user_id=self.user_id,
            roles={self.role},
            permissions=self.permissions,
            display_name=self.name,
            session_id=secrets.token_urlsafe(12),
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


class ClinicPages:
    """The host app's own HTTP routes: login, logout, dashboard."""

    def __init__(self, authenticator: SignedTokenAuthenticator) -> None:
        self.authenticator = authenticator

    def session(self, request: web.Request) -> Identity | None:
        """The identity in the request's session cookie, if it is valid."""
        try:
            return self.authenticator.verify(request.cookies.get(self.authenticator.cookie_name))
        except AuthenticationFailed:
            return None

    async def login_page(self, request: web.Request) -> web.Response:
        """``GET /``: the demo users, one button each."""
        identity = self.session(request)
        signed_in = Safe("")
        if identity is not None:
            signed_in = Safe(
                f"Signed in as {html.escape(identity.name)}: "
                '<a href="/dashboard">dashboard</a>, <a href="/logout">log out</a>.'
            )
        return page(render("login.html", users=login_buttons(), signed_in=signed_in))

    async def login(self, request: web.Request) -> web.Response:
        """``POST /login``: sign the chosen user's session into the cookie."""
        form = await request.post()
        user = USERS_BY_ID.get(str(form.get("user", "")))
        if user is None:
            return redirect("/")
        token = self.authenticator.issue(user.identity(), ttl=SESSION_TTL)
        response = redirect("/dashboard")
        response.set_cookie(
            self.authenticator.cookie_name,
            token,
            max_age=SESSION_TTL,
            path="/",
            httponly=True,
            samesite="Lax",
        )
        return response

    async def logout(self, request: web.Request) -> web.Response:
        """``/logout``: clear the cookie (the token itself is not revoked)."""
        response = redirect("/")
        response.del_cookie(self.authenticator.cookie_name, path="/")
        return response

    async def dashboard(self, request: web.Request) -> web.Response:
        """``GET /dashboard``: the live page, for a signed-in user only."""
        identity = self.session(request)
        if identity is None:
            return redirect("/")
        config = {
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


def build_app(key: str, *, update_interval: float = 3.0) -> Clinic:
    """The clinic: pages, static files, the gateway, its admin API and the data source."""
    require_js_client()
    authenticator = SignedTokenAuthenticator([key], salt=SALT, max_age=SESSION_TTL)
    gateway = Gateway(
        authenticator=authenticator,
        authorizer=reference_rules(conversation_member=conversation_member),
        namespaces=default_namespaces(),
    )
    app = web.Application()
    gateway.attach(app)
    AdminAPI(gateway, roles=ROLES).attach(app)

    pages = ClinicPages(authenticator)
    app.router.add_get("/", pages.login_page)
    app.router.add_post("/login", pages.login)
    app.router.add_get("/logout", pages.logout)
    app.router.add_post("/logout", pages.logout)
    app.router.add_get("/dashboard", pages.dashboard)

    # Registered before the static folder, so these come from node_modules.
    for name in (JS_CLIENT.name, JS_CLIENT.name + ".map"):
        app.router.add_get(f"/static/{name}", file_handler(JS_CLIENT.parent / name))
    app.router.add_static("/static", HERE / "static")
    app.cleanup_ctx.append(data_source(gateway, update_interval))
    return Clinic(app, gateway, authenticator)


def positive_seconds(text: str) -> float:
    """argparse type: a positive number of seconds."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def print_welcome(
    host: str, port: int, authenticator: SignedTokenAuthenticator, *, demo_token: bool = False
) -> None:
    """Say where to log in, and how to connect without a browser; with ``demo_token``,
    print a live one-hour token for Nat Nurse (a credential: never in a shared log)."""
    url = f"http://{host}:{port}"
    print(f"Clinic on {url}: open {url}/ and pick a demo user to log in.")
    print(f"Health: {url}/api/socket.io/health (socket.io path /socket.io)")
    if demo_token:
        token = authenticator.issue(USERS_BY_ID["u-nurse"].identity(), ttl=3600)
        print("Connect a socket.io client with this token in its auth payload (Nat Nurse):")
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
        "--print-demo-token",
        action="store_true",
        help="print a live one-hour token for Nat Nurse at start-up (off by default: "
        "start-up output tends to end up in shared logs)",
    )
    parser.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="INFO",
        help="level of every logger (default INFO)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level, format="%(levelname)s %(name)s %(message)s")
    clinic = build_app(secret_key(), update_interval=args.update_interval)
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
