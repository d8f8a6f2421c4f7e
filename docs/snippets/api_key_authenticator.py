from collections.abc import Mapping

from realtime_gateway import (
    AuthenticationFailed,
    AuthFailureReason,
    ChainAuthenticator,
    Handshake,
    Identity,
    SignedTokenAuthenticator,
)


class ApiKeyAuthenticator:
    """Devices (a ward's wall display, say) connect with an API key header."""

    def __init__(self, keys: Mapping[str, Identity]) -> None:
        self.keys = dict(keys)  # in real life: a database lookup of the key's hash

    async def authenticate(self, handshake: Handshake) -> Identity:
        key = handshake.headers.get("X-Api-Key")
        if not key:
            raise AuthenticationFailed(AuthFailureReason.MISSING)
        identity = self.keys.get(key)
        if identity is None:
            raise AuthenticationFailed(AuthFailureReason.REJECTED)
        return identity


authenticator = ChainAuthenticator(
    ApiKeyAuthenticator({"wall-display-key": Identity(user_id="display-3", roles={"staff"})}),
    SignedTokenAuthenticator(["a-long-random-secret-key"], salt="my-app.session", max_age=3600),
)
