"""Command line: ``python -m realtime_gateway token ...`` mints a signed token."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ._auth import DEFAULT_TOKEN_SALT, SignedTokenAuthenticator
from ._exceptions import ConfigurationError
from ._identity import Identity

SECRET_KEY_ENV = "RTG_SECRET_KEY"  # noqa: S105 (a variable name, not a secret)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m realtime_gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser(
        "token", help="print a signed token that SignedTokenAuthenticator accepts"
    )
    token.add_argument(
        "--secret-key", help=f"signing key (default: the {SECRET_KEY_ENV} environment variable)"
    )
    token.add_argument("--user-id", required=True)
    token.add_argument("--role", action="append", default=[], help="repeat for several roles")
    token.add_argument(
        "--permission", action="append", default=[], help="repeat for several permissions"
    )
    token.add_argument("--name", help="display name shown to other users")
    token.add_argument(
        "--session-id",
        help="session id (sid claim), what revoke_session revokes (default: random)",
    )
    token.add_argument("--ttl", type=float, default=3600.0, help="lifetime in seconds")
    token.add_argument("--salt", default=DEFAULT_TOKEN_SALT)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m realtime_gateway``."""
    args = _parser().parse_args(argv)
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
    sys.exit(main())
