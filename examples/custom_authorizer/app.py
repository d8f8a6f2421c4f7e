"""Extending the gateway with a custom Authorizer: a care-team rule.

A nurse may receive a patient's live updates only if she is on that patient's care
team, as recorded in a SQLite table (standard library ``sqlite3``). The rule is
composed with the reference rules, which still decide everything else: doctors and
admins see every patient, patients see none, and a nurse needs ``view:patient``
before the care team is even asked.

Run with ``python examples/custom_authorizer/app.py [--host H] [--port P]
[--print-demo-token]``. The signing key comes from ``RTG_SECRET_KEY``; without it a
throwaway key is made and tokens only work until the process stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator, Iterable, Mapping

from aiohttp import web

from realtime_gateway import (
    AdminAPI,
    AllOf,
    AuthenticationFailed,
    Gateway,
    GatewayError,
    Handshake,
    Identity,
    PermissionDenied,
    SignedTokenAuthenticator,
    default_namespaces,
    reference_rules,
)

# The salt `python -m realtime_gateway token` signs with by default.
SALT = "realtime_gateway.session"

DEMO_PATIENTS = ("p-1001", "p-1002", "p-1003")
DEMO_CARE_TEAM = (("u-nurse", "p-1001"), ("u-nurse", "p-1002"), ("u-nurse-2", "p-1003"))
UPDATE_INTERVAL = 3.0  # seconds between simulated vitals of each patient

log = logging.getLogger("custom_authorizer")


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


class CareTeamDirectory:
    """The ``care_team`` table: which nurse looks after which patient.

    sqlite3 blocks, so every query runs in a worker thread (``asyncio.to_thread``)
    and the event loop keeps serving sockets meanwhile, as it must with a real
    database. One connection is shared by those threads; sqlite3 does not serialize
    their use of it, so a lock does.
    """

    def __init__(self, path: str = ":memory:") -> None:
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS care_team ("
                " nurse_id TEXT NOT NULL, patient_id TEXT NOT NULL,"
                " PRIMARY KEY (nurse_id, patient_id))"
            )

    def seed(self, rows: Iterable[tuple[str, str]]) -> None:
        """Insert ``(nurse_id, patient_id)`` rows (at start-up, before serving)."""
        with self._lock, self._db:
            self._db.executemany("INSERT OR IGNORE INTO care_team VALUES (?, ?)", rows)

    async def is_on_team(self, nurse_id: str, patient_id: str) -> bool:
        """True if ``nurse_id`` is on ``patient_id``'s care team."""
        return await asyncio.to_thread(self._is_on_team, nurse_id, patient_id)

    async def assign(self, nurse_id: str, patient_id: str) -> bool:
        """Put ``nurse_id`` on the care team; False if she already was."""
        return await asyncio.to_thread(
            self._change, "INSERT OR IGNORE INTO care_team VALUES (?, ?)", nurse_id, patient_id
        )

    async def unassign(self, nurse_id: str, patient_id: str) -> bool:
        """Take ``nurse_id`` off the care team; False if she was not on it."""
        return await asyncio.to_thread(
            self._change,
            "DELETE FROM care_team WHERE nurse_id = ? AND patient_id = ?",
            nurse_id,
            patient_id,
        )

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def _is_on_team(self, nurse_id: str, patient_id: str) -> bool:
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM care_team WHERE nurse_id = ? AND patient_id = ?",
                (nurse_id, patient_id),
            ).fetchone()
        return row is not None

    def _change(self, statement: str, nurse_id: str, patient_id: str) -> bool:
        with self._lock, self._db:
            changed = self._db.execute(statement, (nurse_id, patient_id)).rowcount
        return changed == 1


class CareTeamRule:
    """An :class:`~realtime_gateway.Authorizer`: a nurse may reach a patient's room
    (``patient:{id}``) only if she is on that patient's care team.

    It has no opinion on anything else, and allows it: it narrows, it never grants,
    so it is only meaningful inside ``AllOf`` with rules that do grant. It covers
    every action on a patient room, not just ``subscribe``, so that a rule added
    later (nurses may ``join`` patient rooms from ``/``, say) cannot bypass it.
    Holders of ``exempt_roles`` are judged by the other rules alone.
    """

    def __init__(
        self,
        directory: CareTeamDirectory,
        *,
        role: str = "nurse",
        exempt_roles: Iterable[str] = ("admin", "doctor"),
    ) -> None:
        self.directory = directory
        self.role = role
        self.exempt_roles = frozenset(exempt_roles)

    async def authorize(self, identity: Identity, action: str, target: str) -> None:
        """Refuse a nurse a patient room unless she is on the patient's care team."""
        kind, colon, patient_id = target.partition(":")
        if (
            (kind, colon) != ("patient", ":")
            or not identity.has_role(self.role)
            or identity.has_role(*self.exempt_roles)
        ):
            return
        if not await self.directory.is_on_team(identity.user_id, patient_id):
            raise PermissionDenied(action, target, reason="not on the patient's care team")


def _error(
    exc: GatewayError, status: int, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = {"success": False, "error": exc.message, "code": exc.code}
    return web.json_response(body, status=status, headers=headers)


def build_app(
    key: str, directory: CareTeamDirectory
) -> tuple[web.Application, Gateway, SignedTokenAuthenticator]:
    """The aiohttp app, the gateway it serves and the authenticator minting its tokens."""
    authenticator = SignedTokenAuthenticator([key], salt=SALT, max_age=8 * 3600)
    gateway = Gateway(
        authenticator=authenticator,
        # AllOf asks in order and stops at the first refusal: the reference rules
        # (deny by default, view:patient for patient rooms) go first, so the database
        # is only asked about requests they already allow.
        authorizer=AllOf(reference_rules(), CareTeamRule(directory)),
        namespaces=default_namespaces(),
    )
    app = web.Application()
    gateway.attach(app)
    AdminAPI(gateway).attach(app)

    async def index(request: web.Request) -> web.Response:
        """What this app serves."""
        return web.Response(
            text=(
                "realtime_gateway custom authorizer example: a nurse may subscribe only to\n"
                "the patients on her care team (/updates, subscribe:patient).\n"
                f"Patients: {', '.join(DEMO_PATIENTS)}. Care team (nurse, patient): "
                f"{', '.join(f'{nurse} {patient}' for nurse, patient in DEMO_CARE_TEAM)}.\n"
                "Admins change it: PUT or DELETE /care-team/{nurseId}/{patientId}.\n"
            )
        )

    async def change_care_team(request: web.Request) -> web.Response:
        """Admins put a nurse on a care team or take her off it."""
        handshake = Handshake.from_http(
            path="/care-team",  # the route, not the ids: failures are logged with it
            # Bearer only: honouring the session cookie would let a foreign page's form
            # change a care team with an admin's session.
            headers={"Authorization": request.headers.get("Authorization", "")},
            remote_address=request.remote,
        )
        try:
            identity = await gateway.authenticate(handshake)
            await gateway.authorize(identity, "admin", "/care-team")
        except AuthenticationFailed as exc:
            return _error(exc, 401, {"WWW-Authenticate": "Bearer"})
        except PermissionDenied as exc:
            return _error(exc, 403)
        nurse_id = request.match_info["nurseId"]
        patient_id = request.match_info["patientId"]
        answer = {"success": True, "nurseId": nurse_id, "patientId": patient_id}
        if request.method == "PUT":
            added = await directory.assign(nurse_id, patient_id)
            return web.json_response({**answer, "added": added})
        if not await directory.unassign(nurse_id, patient_id):
            return web.json_response(
                {"success": False, "error": "Not on that care team", "code": "not_found"},
                status=404,
            )
        # Later requests consult the table, but subscriptions already made stand
        # until re-checked: reauthorize drops them (the client gets access:revoked).
        revoked = await gateway.reauthorize(nurse_id)
        return web.json_response({**answer, "revokedRooms": sum(map(len, revoked.values()))})

    async def simulated_vitals(app: web.Application) -> AsyncIterator[None]:
        """Publish a vitals update for every demo patient every few seconds."""

        async def publish() -> None:
            for beat in itertools.count():
                await asyncio.sleep(UPDATE_INTERVAL)
                if gateway.state != "running":
                    return
                for index, patient_id in enumerate(DEMO_PATIENTS):
                    vitals = {"heartRate": 64 + (beat * 7 + index * 11) % 24}
                    await gateway.publish_update("patient", patient_id, "vitals", vitals)

        task = asyncio.create_task(publish())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.router.add_get("/", index)
    app.router.add_route("PUT", "/care-team/{nurseId}/{patientId}", change_care_team)
    app.router.add_route("DELETE", "/care-team/{nurseId}/{patientId}", change_care_team)
    app.cleanup_ctx.append(simulated_vitals)
    return app, gateway, authenticator


def main() -> None:
    """Parse the flags, create the care-team table, print tokens and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--print-demo-token",
        action="store_true",
        help="print live one-hour tokens for the demo nurse, doctor and admin at start-up",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    directory = CareTeamDirectory()
    directory.seed(DEMO_CARE_TEAM)
    app, gateway, authenticator = build_app(secret_key(), directory)
    demo_users = {
        "nurse on p-1001 and p-1002": Identity(
            user_id="u-nurse", roles={"nurse"}, permissions={"view:patient"}
        ),
        "doctor": Identity(
            user_id="u-doctor",
            roles={"doctor"},
            permissions={"view:patient", "view:clinical_notes"},
        ),
        "admin": Identity(user_id="u-admin", roles={"admin"}),
    }
    print(f"Gateway on http://{args.host}:{args.port} (socket.io path /socket.io)")
    print(f"Health: http://{args.host}:{args.port}/api/socket.io/health")
    print(f"Care team (nurse, patient): {DEMO_CARE_TEAM}")
    if args.print_demo_token:  # credentials: off by default, start-up output gets shared
        print("Tokens for the socket.io auth payload (or Authorization: Bearer):")
        for label, identity in demo_users.items():
            print(f"  {label} ({identity.user_id}): {authenticator.issue(identity, ttl=3600)}")
    print(
        "Mint others with the same key: RTG_SECRET_KEY=... python -m realtime_gateway "
        "token --user-id u-nurse --role nurse --permission view:patient"
    )
    try:
        # Shuts the gateway down before the web server, and logs requests without
        # their credentials (sid and token query values, Authorization, Cookie).
        asyncio.run(gateway.run_aiohttp(app, host=args.host, port=args.port))
    finally:
        directory.close()
        log.info("care-team database closed")


if __name__ == "__main__":
    main()
