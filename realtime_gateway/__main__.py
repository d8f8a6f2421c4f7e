"""Command line: ``realtime-gateway token ...`` (or ``python -m realtime_gateway
token ...``) mints a signed token."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __version__
from ._auth import DEFAULT_TOKEN_SALT, SignedTokenAuthenticator
from ._exceptions import ConfigurationError
from ._identity import Identity

SECRET_KEY_ENV = "RTG_SECRET_KEY"  # noqa: S105 (a variable name, not a secret)


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Tools for realtime_gateway's signed tokens."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser(
        "token",
        help="print a signed token that SignedTokenAuthenticator accepts",
        description="Print a signed token that SignedTokenAuthenticator(key, salt=SALT) accepts.",
    )
    token.add_argument(
        "--secret-key", help=f"signing key (default: the {SECRET_KEY_ENV} environment variable)"
    )
    token.add_argument("--user-id", required=True, help="the user's id (required)")
    token.add_argument(
        "--role", action="append", default=[], help="a role; repeat for several (default: none)"
    )
    token.add_argument(
        "--permission",
        action="append",
        default=[],
        help="a permission; repeat for several (default: none)",
    )
    token.add_argument("--name", help="display name shown to other users (default: none)")
    token.add_argument(
        "--session-id",
        help="session id (sid claim), what revoke_session revokes (default: random)",
    )
    token.add_argument(
        "--ttl", type=float, default=3600.0, help="lifetime in seconds (default: %(default)g)"
    )
    token.add_argument(
        "--salt",
        default=DEFAULT_TOKEN_SALT,
        help="the authenticator's salt, which must match (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "realtime-gateway") -> int:
    """Entry point of the ``realtime-gateway`` command and of
    ``python -m realtime_gateway``."""
    args = _parser(prog).parse_args(argv)
    key = args.secret_key or os.environ.get(SECRET_KEY_ENV)
    if not key:
        print(f"error: pass --secret-key or set {SECRET_KEY_ENV}", file=sys.stderr)
        return 2
    if args.ttl <= 0:
        print("error: --ttl must be positive", file=sys.stderr)
        return 2
    try:
        authenticator = SignedTokenAuthenticator(key, salt=args.salt, max_age=args.ttl)
        identity = Identity(
            user_id=args.user_id,
            roles=args.role,
            permissions=args.permission,
            display_name=args.name,
            session_id=args.session_id,
        )
    except (ConfigurationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(authenticator.issue(identity, ttl=args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m realtime_gateway"))
