"""The gateway in a FastAPI app: cookie sessions in SQLite, served by uvicorn.

- ``POST /login`` ``{"user": "u-nurse"}`` opens a session: a row in a SQLite table
  (standard library ``sqlite3``) and an HttpOnly ``rtg_session`` cookie carrying
  the session's secret. ``POST /logout`` ends it and disconnects its sockets.
- The gateway authenticates sockets with a :class:`CallbackAuthenticator` over that
  table (the cookie, an ``Authorization: Bearer`` header or the socket.io ``auth``
  payload ``{"token": ...}``), chained with a :class:`SignedTokenAuthenticator` so
  that services and operators can use tokens from ``python -m realtime_gateway token``.
- FastAPI routes get the caller with ``gateway.identity_dependency()``: ``GET /me``
  answers who you are, or 401, from the same credentials a socket presents.
- The four built-in namespaces plus ``/ward``, a custom namespace whose
  ``handover`` event takes a typed payload (an attrs class) and reaches every nurse
  and doctor connected to it; the admin API is mounted at ``/api/socket.io``.

Run with ``python examples/fastapi_app/app.py [--host H] [--port P] [--db PATH]``.
Sessions live in ``--db`` (default: a new file in a temporary folder); the signing
key comes from ``RTG_SECRET_KEY`` (a throwaway key without it).
"""

# No `from __future__ import annotations` here: FastAPI reads the annotations of the
# routes at run time, and those defined inside create_app() name local aliases
# (CurrentIdentity), which only eager annotations can resolve.

import argparse
import asyncio
import datetime as dt
import hashlib
import logging
import os
import secrets
import sqlite3
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import attrs
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Response
from pydantic import BaseModel

from realtime_gateway import (
    AdminAPI,
    AnyOf,
    AuthenticationFailed,
    AuthFailureReason,
    CallbackAuthenticator,
    ChainAuthenticator,
    Connection,
    Gateway,
    GatewayConfig,
    GatewayNamespace,
    Handshake,
    Identity,
    Rule,
    RuleAuthorizer,
    SignedTokenAuthenticator,
    default_namespaces,
    event,
    reference_rules,
    uvicorn_log_config,
)

COOKIE = "rtg_session"
# The salt `python -m realtime_gateway token` signs with by default.
SALT = "realtime_gateway.session"
SESSION_TTL = dt.timedelta(hours=8)
WARD = "/ward"
WARD_ROOM = "ward"

# Who may log in to the demo (a real app checks a password or an identity provider).
USERS: Mapping[str, dict[str, Any]] = {
    "u-nurse": {"roles": ["nurse"], "permissions": ["view:patient"], "name": "Nurse Demo"},
    "u-doctor": {
        "roles": ["doctor"],
        "permissions": ["view:patient", "view:clinical_notes"],
        "name": "Dr Demo",
    },
    "u-clerk": {"roles": ["staff"], "permissions": [], "name": "Clerk Demo"},
    "u-admin": {"roles": ["admin"], "permissions": [], "name": "Admin Demo"},
}

log = logging.getLogger("fastapi_app")


def secret_key() -> str:
    """The signing key from ``RTG_SECRET_KEY``, or a loudly announced throwaway one."""
    key = os.environ.get("RTG_SECRET_KEY")
    if key:
        return key
    print(
        "WARNING: RTG_SECRET_KEY is not set; using a throwaway key. "
        "Tokens signed with it stop working when this process exits.",
        file=sys.stderr,
    )
    return secrets.token_urlsafe(32)


class SessionStore:
    """The ``sessions`` table: one row per login, keyed by a hash of its secret.

    The cookie carries the secret; the table keeps only its SHA-256, so a copy of the
    database opens no session. sqlite3 blocks, so every query runs in a worker thread
    (``asyncio.to_thread``) under a lock (sqlite3 does not serialize threads that
    share a connection).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS sessions ("
                " secret_hash TEXT PRIMARY KEY, session_id TEXT NOT NULL UNIQUE,"
                " user_id TEXT NOT NULL, roles TEXT NOT NULL, permissions TEXT NOT NULL,"
                " display_name TEXT, issued_at REAL NOT NULL, expires_at REAL NOT NULL)"
            )

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    async def open(self, identity: Identity, ttl: dt.timedelta = SESSION_TTL) -> str:
        """Open a session for ``identity``; returns its secret (the cookie's value)."""
        secret = secrets.token_urlsafe(32)
        now = dt.datetime.now(dt.UTC)
        row = (
            _hash(secret),
            identity.session_id or secrets.token_urlsafe(12),
            identity.user_id,
            " ".join(sorted(identity.roles)),
            " ".join(sorted(identity.permissions)),
            identity.display_name,
            now.timestamp(),
            (now + ttl).timestamp(),
        )
        await asyncio.to_thread(self._write, "INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?)", row)
        return secret

    async def close_session(self, session_id: str) -> None:
        """Forget session ``session_id``."""
        await asyncio.to_thread(
            self._write, "DELETE FROM sessions WHERE session_id = ?", (session_id,)
        )

    async def identity(self, secret: str) -> Identity | None:
        """The identity of the live session whose secret is ``secret``, else ``None``."""
        row = await asyncio.to_thread(self._read, _hash(secret))
        if row is None:
            return None
        session_id, user_id, roles, permissions, name, issued_at, expires_at = row
        expires = dt.datetime.fromtimestamp(expires_at, dt.UTC)
        if expires <= dt.datetime.now(dt.UTC):
            return None
        return Identity(
            user_id=user_id,
            roles=roles.split(),
            permissions=permissions.split(),
            session_id=session_id,
            display_name=name,
            issued_at=dt.datetime.fromtimestamp(issued_at, dt.UTC),
            expires_at=expires,
        )

    async def authenticate(self, handshake: Handshake) -> Identity | None:
        """The :class:`CallbackAuthenticator` callback: the session secret from the
        cookie, a bearer header or the socket.io ``auth`` payload."""
        token = handshake.auth.get("token")
        secret = handshake.cookies.get(COOKIE) or handshake.bearer_token or token
        if not isinstance(secret, str) or not secret:
            raise AuthenticationFailed(AuthFailureReason.MISSING)
        if "." in secret:  # a signed token, never a session secret: the chain goes on
            raise AuthenticationFailed(AuthFailureReason.MALFORMED)
        return await self.identity(secret)

    def _write(self, sql: str, params: Iterable[Any]) -> None:
        with self._lock, self._db:
            self._db.execute(sql, tuple(params))

    def _read(self, secret_hash: str) -> tuple[Any, ...] | None:
        with self._lock:
            row: tuple[Any, ...] | None = self._db.execute(
                "SELECT session_id, user_id, roles, permissions, display_name, issued_at,"
                " expires_at FROM sessions WHERE secret_hash = ?",
                (secret_hash,),
            ).fetchone()
            return row


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@attrs.frozen
class Handover:
    """The ``handover`` payload: ``{patientId, summary, priority}``."""

    patient_id: str = attrs.field(alias="patientId", validator=attrs.validators.instance_of(str))
    summary: str = attrs.field(
        validator=attrs.validators.and_(
            attrs.validators.instance_of(str), attrs.validators.max_len(500)
        )
    )
    priority: Literal["routine", "urgent"] = attrs.field(
        default="routine", validator=attrs.validators.in_(("routine", "urgent"))
    )


class WardNamespace(GatewayNamespace):
    """``/ward``: nurses and doctors hand patients over to each other.

    Every nurse and doctor connected here is in the ``ward`` room; ``handover``
    (allowed to them by the authorizer) reaches all of them, sender included.
    """

    def __init__(self) -> None:
        super().__init__(WARD)

    async def on_connected(self, conn: Connection) -> None:
        if conn.identity.has_role("nurse", "doctor"):
            await self.join(conn, WARD_ROOM, action=None)

    @event("handover", payload=Handover)
    async def handover(self, conn: Connection, note: Handover) -> dict[str, Any]:
        """Hand a patient over to the ward; the ack carries what was sent."""
        await self.gateway.authorize(conn.identity, "handover", WARD_ROOM)
        message = {
            "patientId": note.patient_id,
            "summary": note.summary,
            "priority": note.priority,
            "from": conn.identity.name,
            "timestamp": int(dt.datetime.now(dt.UTC).timestamp() * 1000),
        }
        await self.gateway.emit_to_room(WARD_ROOM, "handover", message, namespace=self.namespace)
        return {"handover": message}


class LoginIn(BaseModel):
    """``POST /login``'s body."""

    user: str


def build_gateway(store: SessionStore, key: str, config: GatewayConfig | None = None) -> Gateway:
    """The gateway: sessions first, then signed tokens; the reference rules plus the
    ward's own rule."""
    signer = SignedTokenAuthenticator([key], salt=SALT, max_age=8 * 3600)
    ward_rules = RuleAuthorizer(
        [Rule(actions="handover", target=WARD_ROOM, roles=("nurse", "doctor"))]
    )
    namespaces = [*default_namespaces(), WardNamespace()]
    reference = reference_rules(namespaces=[namespace.namespace for namespace in namespaces])
    return Gateway(
        authenticator=ChainAuthenticator(CallbackAuthenticator(store.authenticate), signer),
        authorizer=AnyOf(reference, ward_rules),
        namespaces=namespaces,
        config=config,
    )


def create_app(gateway: Gateway, store: SessionStore) -> FastAPI:
    """The FastAPI app around ``gateway`` (not yet mounted: serve
    ``gateway.asgi_app(api)``)."""
    api = FastAPI(title="realtime_gateway FastAPI example")
    admin = AdminAPI(gateway)
    current_identity = gateway.identity_dependency()
    CurrentIdentity = Annotated[Identity, Depends(current_identity)]

    @api.get("/")
    async def index() -> dict[str, Any]:
        """What this app serves."""
        return {
            "app": "realtime_gateway FastAPI example",
            "socketio": {"path": gateway.config.path, "namespaces": sorted(gateway.namespaces)},
            "adminApi": admin.prefix,
            "users": sorted(USERS),
        }

    @api.post("/login")
    async def login(body: LoginIn, response: Response) -> dict[str, Any]:
        """Open a session for a demo user; the cookie carries its secret."""
        profile = USERS.get(body.user)
        if profile is None:
            raise HTTPException(401, detail="Unknown user")
        identity = Identity(
            user_id=body.user,
            roles=profile["roles"],
            permissions=profile["permissions"],
            display_name=profile["name"],
        )
        secret = await store.open(identity)
        response.set_cookie(
            COOKIE,
            secret,
            max_age=int(SESSION_TTL.total_seconds()),
            httponly=True,
            samesite="lax",
            # secure=True behind HTTPS: the cookie then never travels in clear.
        )
        return {"success": True, "userId": identity.user_id}

    @api.post("/logout")
    async def logout(identity: CurrentIdentity, response: Response) -> dict[str, Any]:
        """End the caller's session: its sockets get ``auth:revoked`` and leave."""
        disconnected = 0
        if identity.session_id is not None:
            await store.close_session(identity.session_id)
            disconnected = await gateway.revoke_session(
                identity.session_id, user_id=identity.user_id
            )
        response.delete_cookie(COOKIE)
        return {"success": True, "disconnected": disconnected}

    @api.get("/me")
    async def me(identity: CurrentIdentity) -> dict[str, Any]:
        """Who the caller is, from the same credentials a socket presents."""
        return {
            "userId": identity.user_id,
            "name": identity.name,
            "roles": sorted(identity.roles),
            "permissions": sorted(identity.permissions),
            "connected": await gateway.is_user_connected(identity.user_id),
        }

    api.mount(admin.prefix, admin.asgi_app())
    return api


def main() -> None:
    """Parse the flags, open the session table and serve with uvicorn."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--db", help="the SQLite file of the sessions (default: a temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    db = args.db or str(Path(tempfile.mkdtemp(prefix="rtg-fastapi-")) / "sessions.sqlite3")
    store = SessionStore(db)
    gateway = build_gateway(store, secret_key())
    api = create_app(gateway, store)
    base = f"http://{args.host}:{args.port}"
    print(f"Gateway on {base} (socket.io path {gateway.config.path}); sessions in {db}")
    login = """-H 'Content-Type: application/json' -d '{"user": "u-nurse"}'"""
    print(f"Log in: curl -c jar {login} {base}/login")
    try:
        # socket.io answers at /socket.io; every other request goes to FastAPI.
        uvicorn.run(
            gateway.asgi_app(api),
            host=args.host,
            port=args.port,
            lifespan="on",
            timeout_graceful_shutdown=3,
            log_config=uvicorn_log_config(),
        )
    finally:
        store.close()


if __name__ == "__main__":
    main()
