"""SignedTokenAuthenticator, CallbackAuthenticator and ChainAuthenticator, unit level."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
import string
import time
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode, base64_encode

from realtime_gateway import (
    AuthenticationFailed,
    Authenticator,
    CallbackAuthenticator,
    ChainAuthenticator,
    ConfigurationError,
    Handshake,
    Identity,
    SignedTokenAuthenticator,
)

KEY = "test-secret-key-0123456789"
OLD_KEY = "old-secret-key-0123456789"
NEW_KEY = "new-secret-key-0123456789"
SALT = "tests.session"
MAX_AGE = 3600.0


def make_authenticator(
    keys: str | list[str] = KEY, *, salt: str = SALT, **kwargs: Any
) -> SignedTokenAuthenticator:
    return SignedTokenAuthenticator(
        keys, salt=salt, max_age=kwargs.pop("max_age", MAX_AGE), **kwargs
    )


@pytest.fixture
def authenticator() -> SignedTokenAuthenticator:
    return make_authenticator()


def refusal(authenticator: SignedTokenAuthenticator, token: object) -> str:
    """The reason ``verify`` refuses ``token`` with (fails the test if accepted)."""
    with pytest.raises(AuthenticationFailed) as info:
        authenticator.verify(token)
    return info.value.reason


async def handshake_refusal(authenticator: Authenticator, handshake: Handshake) -> str:
    with pytest.raises(AuthenticationFailed) as info:
        await authenticator.authenticate(handshake)
    return info.value.reason


def seconds_from_now(moment: dt.datetime | None) -> float:
    assert moment is not None
    return (moment - dt.datetime.now(dt.UTC)).total_seconds()


# --- Where the token comes from -----------------------------------------------------------


def via_auth(token: str) -> Handshake:
    return Handshake(namespace="/", auth={"token": token})


def via_header(token: str) -> Handshake:
    return Handshake(namespace="/", headers={"Authorization": f"Bearer {token}"})


def via_cookie(token: str) -> Handshake:
    return Handshake(namespace="/", cookies={"rtg_session": token})


def via_cookie_header(token: str) -> Handshake:
    cookie = f"theme=dark; rtg_session={token}"
    return Handshake.from_http(path="/admin", headers={"Cookie": cookie})


@pytest.mark.parametrize(
    "carry", [via_auth, via_header, via_cookie, via_cookie_header], ids=lambda carry: carry.__name__
)
async def test_valid_token_accepted_from_each_source(
    authenticator: SignedTokenAuthenticator, carry: Callable[[str], Handshake]
) -> None:
    token = authenticator.issue(Identity(user_id="u1", roles={"nurse"}))
    identity = await authenticator.authenticate(carry(token))
    assert identity.user_id == "u1"
    assert identity.roles == {"nurse"}


async def test_bearer_scheme_is_case_insensitive(authenticator: SignedTokenAuthenticator) -> None:
    token = authenticator.issue(Identity(user_id="u1"))
    handshake = Handshake(namespace="/", headers={"authorization": f"bearer {token}"})
    assert (await authenticator.authenticate(handshake)).user_id == "u1"


def three_tokens(authenticator: SignedTokenAuthenticator) -> dict[str, str]:
    return {
        source: authenticator.issue(Identity(user_id=f"from-{source}"))
        for source in ("auth", "header", "cookie")
    }


def carrying(tokens: dict[str, str]) -> Handshake:
    headers = {"Authorization": f"Bearer {tokens['header']}"} if "header" in tokens else {}
    return Handshake(
        namespace="/",
        auth={"token": tokens["auth"]} if "auth" in tokens else {},
        headers=headers,
        cookies={"rtg_session": tokens["cookie"]} if "cookie" in tokens else {},
    )


@pytest.mark.parametrize(
    ("present", "winner"),
    [
        (("auth", "header", "cookie"), "auth"),
        (("auth", "cookie"), "auth"),
        (("header", "cookie"), "header"),
        (("cookie",), "cookie"),
    ],
)
async def test_source_order_is_auth_then_header_then_cookie(
    authenticator: SignedTokenAuthenticator, present: tuple[str, ...], winner: str
) -> None:
    tokens = three_tokens(authenticator)
    handshake = carrying({source: tokens[source] for source in present})
    assert (await authenticator.authenticate(handshake)).user_id == f"from-{winner}"


async def test_sources_restricts_where_tokens_are_read() -> None:
    cookie_only = make_authenticator(sources=("cookie",))
    tokens = three_tokens(cookie_only)
    assert cookie_only.sources == ("cookie",)
    everything = carrying(tokens)
    assert (await cookie_only.authenticate(everything)).user_id == "from-cookie"
    no_cookie = carrying({"auth": tokens["auth"], "header": tokens["header"]})
    assert await handshake_refusal(cookie_only, no_cookie) == "missing"


async def test_sources_order_is_respected() -> None:
    header_first = make_authenticator(sources=("header", "auth"))
    tokens = three_tokens(header_first)
    assert (await header_first.authenticate(carrying(tokens))).user_id == "from-header"


async def test_custom_cookie_name() -> None:
    authenticator = make_authenticator(cookie_name="sid")
    token = authenticator.issue(Identity(user_id="u1"))
    assert await handshake_refusal(authenticator, via_cookie(token)) == "missing"
    handshake = Handshake(namespace="/", cookies={"sid": token})
    assert (await authenticator.authenticate(handshake)).user_id == "u1"


@pytest.mark.parametrize(
    "handshake",
    [
        Handshake(namespace="/"),
        Handshake(namespace="/", auth={"user": "u1"}),
        Handshake(namespace="/", headers={"Authorization": "Basic dTE6cHc="}),
        Handshake(namespace="/", cookies={"other": "value"}),
        Handshake(namespace="/", auth={"token": ""}),
    ],
    ids=["nothing", "auth-without-token", "basic-auth", "other-cookie", "empty-token"],
)
async def test_no_credential_is_missing(
    authenticator: SignedTokenAuthenticator, handshake: Handshake
) -> None:
    assert await handshake_refusal(authenticator, handshake) == "missing"


# --- What the token says -------------------------------------------------------------------


def test_identity_round_trip(authenticator: SignedTokenAuthenticator) -> None:
    original = Identity(
        user_id="u1",
        roles={"nurse", "admin"},
        permissions={"view:patient", "edit:patient"},
        session_id="sess-1",
        display_name="Nurse Joy",
        attributes={"ward": "3B", "teams": ["a", "b"], "level": 2},
    )
    identity = authenticator.verify(authenticator.issue(original))
    assert identity == attrs.evolve(
        original, issued_at=identity.issued_at, expires_at=identity.expires_at
    )
    assert identity.roles == {"nurse", "admin"}
    assert identity.permissions == {"view:patient", "edit:patient"}
    assert identity.session_id == "sess-1"
    assert identity.display_name == "Nurse Joy"
    assert dict(identity.attributes) == {"ward": "3B", "teams": ["a", "b"], "level": 2}


def test_minimal_identity_round_trip(authenticator: SignedTokenAuthenticator) -> None:
    identity = authenticator.verify(authenticator.issue(Identity(user_id="u1")))
    assert identity.user_id == "u1"
    assert identity.roles == frozenset()
    assert identity.permissions == frozenset()
    assert identity.display_name is None
    assert dict(identity.attributes) == {}


def test_tokens_carry_a_random_session_id_and_their_issue_time(
    authenticator: SignedTokenAuthenticator,
) -> None:
    before = dt.datetime.now(dt.UTC)
    first = authenticator.verify(authenticator.issue(Identity(user_id="u1")))
    second = authenticator.verify(authenticator.issue(Identity(user_id="u1")))
    after = dt.datetime.now(dt.UTC)
    assert first.session_id
    assert second.session_id
    assert first.session_id != second.session_id
    assert len(first.session_id) >= 20  # 16 random bytes, base64url
    assert first.issued_at is not None
    # Milliseconds, not the signature's whole seconds.
    assert before - dt.timedelta(milliseconds=1) <= first.issued_at <= after
    kept = authenticator.verify(authenticator.issue(Identity(user_id="u1", session_id="s-9")))
    assert kept.session_id == "s-9"


@pytest.mark.parametrize("iat", [-1, 1.5, "1", True, 10**30])
def test_a_bad_issue_time_is_malformed(
    authenticator: SignedTokenAuthenticator, iat: object
) -> None:
    token = authenticator._serializer.dumps({"sub": "u1", "iat": iat})
    with pytest.raises(AuthenticationFailed) as caught:
        authenticator.verify(token)
    assert caught.value.reason == "malformed"


def test_expiry_is_signing_time_plus_max_age(authenticator: SignedTokenAuthenticator) -> None:
    identity = authenticator.verify(authenticator.issue(Identity(user_id="u1")))
    assert identity.expires_at is not None
    assert identity.expires_at.tzinfo is not None
    assert seconds_from_now(identity.expires_at) == pytest.approx(MAX_AGE, abs=2)
    assert not identity.is_expired()


def test_timedelta_max_age() -> None:
    authenticator = make_authenticator(max_age=dt.timedelta(minutes=5))
    assert authenticator.max_age == 300.0
    identity = authenticator.verify(authenticator.issue(Identity(user_id="u1")))
    assert seconds_from_now(identity.expires_at) == pytest.approx(300, abs=2)


def test_ttl_shortens_the_token(authenticator: SignedTokenAuthenticator) -> None:
    identity = authenticator.verify(authenticator.issue(Identity(user_id="u1"), ttl=60))
    assert seconds_from_now(identity.expires_at) == pytest.approx(60, abs=2)


def test_ttl_cannot_lengthen_beyond_max_age(authenticator: SignedTokenAuthenticator) -> None:
    identity = authenticator.verify(authenticator.issue(Identity(user_id="u1"), ttl=10 * MAX_AGE))
    assert seconds_from_now(identity.expires_at) == pytest.approx(MAX_AGE, abs=2)


def test_identity_expiry_shortens_the_token(authenticator: SignedTokenAuthenticator) -> None:
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=120)
    identity = authenticator.verify(authenticator.issue(Identity(user_id="u1", expires_at=soon)))
    assert seconds_from_now(identity.expires_at) == pytest.approx(120, abs=2)


@pytest.mark.parametrize("ttl", [0, -5])
def test_non_positive_ttl_is_refused(authenticator: SignedTokenAuthenticator, ttl: float) -> None:
    with pytest.raises(ValueError, match="ttl"):
        authenticator.issue(Identity(user_id="u1"), ttl=ttl)


def test_issue_produces_distinct_well_formed_tokens(
    authenticator: SignedTokenAuthenticator,
) -> None:
    first = authenticator.issue(Identity(user_id="u1"))
    second = authenticator.issue(Identity(user_id="u2"))
    assert first != second
    assert first.count(".") == 2
    assert "u1" not in first  # the claims are encoded, not plain text


# --- Refusals ------------------------------------------------------------------------------


def signed_with_same_key(payload: object) -> str:
    """A genuinely signed token whose content the authenticator did not issue."""
    token: str = URLSafeTimedSerializer(KEY, salt=SALT).dumps(payload)
    return token


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "not a token at all",
        "a.b",
        "a.b.c.d",
        "a..c",
        "eyJzdWIiOiJ1MSJ9.ZZZ.sig/with/slash",
        "a.b.c\n",
        42,
        4.2,
        True,
        {"token": "x"},
        ["a", "b", "c"],
        b"YQ.Yg.Yw",
        "A" * 5000 + "." + "B" * 5000 + ".C",
    ],
    ids=repr,
)
def test_malformed_tokens(authenticator: SignedTokenAuthenticator, token: object) -> None:
    assert refusal(authenticator, token) == "malformed"


def test_overlong_genuine_token_is_malformed(authenticator: SignedTokenAuthenticator) -> None:
    # Hash output does not compress, so the token really is long.
    noise = "".join(hashlib.sha256(str(n).encode()).hexdigest() for n in range(200))
    token = authenticator.issue(Identity(user_id="u1", attributes={"blob": noise}))
    assert len(token) > 8192
    assert refusal(authenticator, token) == "malformed"


def test_signed_payload_that_is_not_a_mapping_is_malformed(
    authenticator: SignedTokenAuthenticator,
) -> None:
    assert refusal(authenticator, signed_with_same_key(["u1", "admin"])) == "malformed"
    assert refusal(authenticator, signed_with_same_key("u1")) == "malformed"


@pytest.mark.parametrize(
    "claims",
    [
        {"roles": ["admin"]},
        {"sub": ""},
        {"sub": 7},
        {"sub": "u1", "roles": "admin"},
        {"sub": "u1", "roles": ["admin", 3]},
        {"sub": "u1", "perms": {"view": True}},
        {"sub": "u1", "sid": 12},
        {"sub": "u1", "name": ["Joy"]},
        {"sub": "u1", "exp": "tomorrow"},
        {"sub": "u1", "exp": True},
        {"sub": "u1", "attrs": ["not", "a", "mapping"]},
    ],
    ids=lambda claims: json.dumps(claims),
)
def test_signed_claims_of_the_wrong_shape_are_malformed(
    authenticator: SignedTokenAuthenticator, claims: dict[str, object]
) -> None:
    assert refusal(authenticator, signed_with_same_key(claims)) == "malformed"


def test_signed_payload_that_is_not_json_is_malformed(
    authenticator: SignedTokenAuthenticator,
) -> None:
    signer = URLSafeTimedSerializer(KEY, salt=SALT).make_signer()
    token = signer.sign(base64_encode(b"not json")).decode()
    assert refusal(authenticator, token) == "malformed"


def test_plain_serializer_token_with_sub_is_accepted(
    authenticator: SignedTokenAuthenticator,
) -> None:
    # Control for the tests above: the same signing path with good claims verifies.
    identity = authenticator.verify(signed_with_same_key({"sub": "u1", "roles": ["a"]}))
    assert identity.user_id == "u1"
    assert identity.roles == {"a"}


def test_tampered_payload_is_bad_signature(authenticator: SignedTokenAuthenticator) -> None:
    token = authenticator.issue(Identity(user_id="mallory"))
    _, timestamp, signature = token.split(".")
    forged_claims = base64_encode(json.dumps({"sub": "admin", "roles": ["admin"]})).decode()
    forged = f"{forged_claims}.{timestamp}.{signature}"
    assert refusal(authenticator, forged) == "bad_signature"


def test_tampered_signature_is_bad_signature(authenticator: SignedTokenAuthenticator) -> None:
    token = authenticator.issue(Identity(user_id="u1"))
    # Both spell a last character with clear unused bits: the signature is only wrong.
    flipped = "A" if token[-1] != "A" else "E"
    assert refusal(authenticator, token[:-1] + flipped) == "bad_signature"


def test_tampered_timestamp_is_bad_signature(authenticator: SignedTokenAuthenticator) -> None:
    token = authenticator.issue(Identity(user_id="u1"))
    payload, _, signature = token.split(".")
    later = base64_encode((int(time.time()) + 10_000).to_bytes(4, "big")).decode()
    assert refusal(authenticator, f"{payload}.{later}.{signature}") == "bad_signature"


def test_wrong_key_is_bad_signature(authenticator: SignedTokenAuthenticator) -> None:
    token = make_authenticator("another-secret-key-987654").issue(Identity(user_id="u1"))
    assert refusal(authenticator, token) == "bad_signature"


def test_wrong_salt_is_bad_signature(authenticator: SignedTokenAuthenticator) -> None:
    token = make_authenticator(salt="other.purpose").issue(Identity(user_id="u1"))
    assert refusal(authenticator, token) == "bad_signature"


# --- One spelling per token ----------------------------------------------------------------

BASE64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
# By a segment's length mod 4: the bits of its last character that carry no data.
UNUSED_BITS = {2: 0b1111, 3: 0b11}


def respelled(segment: str) -> str:
    """``segment`` with the unused bits of its last character set: other text, same bytes."""
    unused = UNUSED_BITS[len(segment.removeprefix(".")) % 4]
    last = BASE64URL.index(segment[-1])
    assert last & unused == 0  # as itsdangerous spells it
    return segment[:-1] + BASE64URL[last | unused]


def signed_as_is(payload: str, timestamp: str) -> str:
    """A token of exactly this payload and timestamp text, genuinely signed (as only a
    holder of the key could sign it)."""
    signer = URLSafeTimedSerializer(KEY, salt=SALT).make_signer()
    body = f"{payload}.{timestamp}"
    return f"{body}.{signer.get_signature(body).decode()}"


def itsdangerous_reading(token: str) -> tuple[Any, dt.datetime]:
    """What itsdangerous alone makes of ``token``: its claims and signing time."""
    claims, signed_at = URLSafeTimedSerializer(KEY, salt=SALT).loads(
        token, max_age=int(MAX_AGE), return_timestamp=True
    )
    return claims, signed_at


def compressed_token(authenticator: SignedTokenAuthenticator, notes: int = 40) -> str:
    """A token whose payload itsdangerous compressed (the leading ".")."""
    token = authenticator.issue(Identity(user_id="u1", attributes={"notes": "ward round " * notes}))
    assert token.startswith(".")
    return token


def issued_with_payload_length(
    authenticator: SignedTokenAuthenticator, remainder: int, *, compressed: bool
) -> str:
    """An issued token whose payload segment's length is ``remainder`` mod 4."""
    for size in range(1, 200):
        if compressed:
            token = compressed_token(authenticator, notes=40 + size)
        else:
            token = authenticator.issue(Identity(user_id="u" * size))
        if len(token.removeprefix(".").split(".")[0]) % 4 == remainder:
            return token
    raise AssertionError(f"no payload of length {remainder} mod 4")


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "compressed"])
def test_signature_respelled_in_unused_bits_is_malformed(
    authenticator: SignedTokenAuthenticator, compressed: bool
) -> None:
    token = (
        compressed_token(authenticator)
        if compressed
        else authenticator.issue(Identity(user_id="u1"))
    )
    head, _, signature = token.rpartition(".")
    assert len(signature) % 4 == 3  # 20 bytes of HMAC-SHA1 in 27 characters
    odd = f"{head}.{respelled(signature)}"
    assert odd != token
    assert itsdangerous_reading(odd) == itsdangerous_reading(token)
    assert authenticator.verify(token).user_id == "u1"
    assert refusal(authenticator, odd) == "malformed"


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "compressed"])
def test_timestamp_respelled_in_unused_bits_is_malformed(
    authenticator: SignedTokenAuthenticator, compressed: bool
) -> None:
    token = (
        compressed_token(authenticator)
        if compressed
        else authenticator.issue(Identity(user_id="u1"))
    )
    payload, timestamp, _ = token.rsplit(".", 2)
    assert signed_as_is(payload, timestamp) == token  # re-signing reproduces the token
    assert len(timestamp) % 4 == 2  # 4 bytes in 6 characters
    odd = signed_as_is(payload, respelled(timestamp))
    assert itsdangerous_reading(odd) == itsdangerous_reading(token)
    assert refusal(authenticator, odd) == "malformed"


@pytest.mark.parametrize("remainder", [2, 3])
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "compressed"])
def test_payload_respelled_in_unused_bits_is_malformed(
    authenticator: SignedTokenAuthenticator, remainder: int, compressed: bool
) -> None:
    token = issued_with_payload_length(authenticator, remainder, compressed=compressed)
    payload, timestamp, _ = token.rsplit(".", 2)
    assert signed_as_is(payload, timestamp) == token
    odd = signed_as_is(respelled(payload), timestamp)
    assert odd.startswith(".") is compressed
    assert itsdangerous_reading(odd) == itsdangerous_reading(token)
    assert refusal(authenticator, odd) == "malformed"


def test_timestamp_with_a_leading_zero_byte_is_malformed(
    authenticator: SignedTokenAuthenticator,
) -> None:
    token = authenticator.issue(Identity(user_id="u1"))
    payload, timestamp, _ = token.split(".")
    padded = base64_encode(b"\x00" + base64_decode(timestamp)).decode()
    odd = signed_as_is(payload, padded)
    assert itsdangerous_reading(odd) == itsdangerous_reading(token)
    assert refusal(authenticator, odd) == "malformed"


def test_segment_of_impossible_length_is_malformed(
    authenticator: SignedTokenAuthenticator,
) -> None:
    # No byte string encodes to a length of 1 mod 4: the shape matches, the base64 cannot.
    token = authenticator.issue(Identity(user_id="u1"))
    payload, timestamp, signature = token.split(".")
    assert refusal(authenticator, f"{payload}.{timestamp}AAA.{signature}") == "malformed"
    assert refusal(authenticator, f"{token}AA") == "malformed"


def random_identity(rng: random.Random) -> Identity:
    alphabet = string.ascii_letters + string.digits + '-_.:@ éü漢字🙂"\\<>'

    def text(low: int, high: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))

    return Identity(
        user_id=text(1, 40),
        roles={text(1, 12) for _ in range(rng.randint(0, 3))},
        permissions={text(1, 20) for _ in range(rng.randint(0, 3))},
        session_id=rng.choice([None, text(8, 24)]),
        display_name=rng.choice([None, text(0, 30)]),
        # A repeated note makes itsdangerous compress the payload now and then.
        attributes=rng.choice(
            [{}, {"ward": text(1, 8)}, {"notes": text(1, 4) * rng.randint(20, 80)}]
        ),
    )


def test_every_issued_token_verifies(authenticator: SignedTokenAuthenticator) -> None:
    rng = random.Random(20_11)  # noqa: S311 (test data, not security)
    shapes = set()
    for _ in range(600):
        identity = random_identity(rng)
        token = authenticator.issue(identity, ttl=rng.uniform(1, MAX_AGE))
        verified = authenticator.verify(token)
        assert (verified.user_id, verified.roles, verified.permissions) == (
            identity.user_id,
            identity.roles,
            identity.permissions,
        )
        assert verified.name == identity.name
        assert verified.session_id == identity.session_id or (
            identity.session_id is None and verified.session_id
        )
        assert verified.attributes == identity.attributes
        payload = token.removeprefix(".").split(".")[0]
        shapes.add((token.startswith("."), len(payload) % 4))
    # Every payload length a base64 segment can have, compressed and not.
    assert shapes == {(compressed, rest) for compressed in (False, True) for rest in (0, 2, 3)}


class PastSigner(TimestampSigner):
    """Signs as if it were 10,000 seconds ago."""

    def get_timestamp(self) -> int:
        return int(time.time()) - 10_000


class PastSerializer(URLSafeTimedSerializer):
    default_signer = PastSigner


def test_token_older_than_max_age_is_expired(authenticator: SignedTokenAuthenticator) -> None:
    token: str = PastSerializer(KEY, salt=SALT).dumps({"sub": "u1"})
    assert refusal(authenticator, token) == "expired"
    # The same token is fine for an authenticator that allows older tokens.
    assert make_authenticator(max_age=20_000).verify(token).user_id == "u1"


def test_token_past_its_exp_claim_is_expired(authenticator: SignedTokenAuthenticator) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    token = authenticator.issue(Identity(user_id="u1", expires_at=past))
    assert refusal(authenticator, token) == "expired"


def test_exp_claim_in_the_past_is_expired_even_when_freshly_signed(
    authenticator: SignedTokenAuthenticator,
) -> None:
    token = signed_with_same_key({"sub": "u1", "exp": int(time.time()) - 5})
    assert refusal(authenticator, token) == "expired"


async def test_refusal_messages_never_echo_the_token(
    authenticator: SignedTokenAuthenticator,
) -> None:
    token = make_authenticator("another-secret-key-987654").issue(Identity(user_id="u1"))
    with pytest.raises(AuthenticationFailed) as info:
        await authenticator.authenticate(via_auth(token))
    assert token not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


# --- Key rotation --------------------------------------------------------------------------


def test_key_rotation() -> None:
    before = make_authenticator([OLD_KEY])
    during = make_authenticator([OLD_KEY, NEW_KEY])
    after = make_authenticator([NEW_KEY])

    old_token = before.issue(Identity(user_id="u1"))
    assert during.verify(old_token).user_id == "u1"
    assert refusal(after, old_token) == "bad_signature"

    new_token = during.issue(Identity(user_id="u2"))
    assert after.verify(new_token).user_id == "u2"
    assert refusal(before, new_token) == "bad_signature"


def test_bytes_and_str_keys_are_interchangeable() -> None:
    token = make_authenticator(KEY).issue(Identity(user_id="u1"))
    as_bytes = SignedTokenAuthenticator(KEY.encode(), salt=SALT, max_age=60)
    assert as_bytes.verify(token).user_id == "u1"
    mixed = SignedTokenAuthenticator([OLD_KEY.encode(), KEY], salt=SALT, max_age=60)
    assert mixed.verify(token).user_id == "u1"


# --- Constructor validation ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"secret_keys": "too-short"}, "secret_keys"),
        ({"secret_keys": b"short"}, "secret_keys"),
        ({"secret_keys": []}, "secret_keys"),
        ({"secret_keys": [KEY, "short"]}, "secret_keys"),
        ({"secret_keys": [KEY, 12345678901234567890]}, "secret_keys"),
        ({"salt": ""}, "salt"),
        ({"salt": None}, "salt"),
        ({"max_age": 0}, "max_age"),
        ({"max_age": -1}, "max_age"),
        ({"max_age": dt.timedelta(0)}, "max_age"),
        ({"max_age": True}, "max_age"),
        ({"max_age": "3600"}, "max_age"),
        ({"cookie_name": ""}, "cookie_name"),
        ({"sources": ()}, "sources"),
        ({"sources": ("auth", "query")}, "sources"),
        ({"sources": ("bearer",)}, "sources"),
    ],
    ids=repr,
)
def test_constructor_validation(overrides: dict[str, Any], field: str) -> None:
    kwargs: dict[str, Any] = {"secret_keys": KEY, "salt": SALT, "max_age": MAX_AGE, **overrides}
    with pytest.raises(ConfigurationError) as info:
        SignedTokenAuthenticator(**kwargs)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")


def test_key_of_minimum_length_is_accepted() -> None:
    assert make_authenticator("k" * 16).max_age == MAX_AGE


# --- CallbackAuthenticator -----------------------------------------------------------------


async def test_callback_returns_identity() -> None:
    seen: list[Handshake] = []

    async def lookup(handshake: Handshake) -> Identity | None:
        seen.append(handshake)
        return Identity(user_id=handshake.cookies["session"])

    handshake = Handshake(namespace="/chat", cookies={"session": "u7"})
    identity = await CallbackAuthenticator(lookup).authenticate(handshake)
    assert identity.user_id == "u7"
    assert seen == [handshake]


async def test_callback_none_is_rejected() -> None:
    async def lookup(handshake: Handshake) -> Identity | None:
        return None

    reason = await handshake_refusal(CallbackAuthenticator(lookup), Handshake(namespace="/"))
    assert reason == "rejected"


async def test_callback_refusal_passes_through() -> None:
    raised = AuthenticationFailed("expired", "Session expired")

    async def lookup(handshake: Handshake) -> Identity | None:
        raise raised

    with pytest.raises(AuthenticationFailed) as info:
        await CallbackAuthenticator(lookup).authenticate(Handshake(namespace="/"))
    assert info.value is raised
    assert info.value.reason == "expired"


async def test_callback_returning_a_non_identity_is_an_error() -> None:
    async def lookup(handshake: Handshake) -> Any:
        return "u1"

    with pytest.raises(TypeError, match="Identity"):
        await CallbackAuthenticator(lookup).authenticate(Handshake(namespace="/"))


def test_callback_must_be_callable() -> None:
    not_callable: Any = "lookup"
    with pytest.raises(ConfigurationError) as info:
        CallbackAuthenticator(not_callable)
    assert info.value.field == "callback"


# --- ChainAuthenticator --------------------------------------------------------------------


class Scripted:
    """An authenticator that returns an identity or refuses with a reason, and counts calls."""

    def __init__(self, outcome: str | Identity) -> None:
        self.outcome = outcome
        self.calls = 0

    async def authenticate(self, handshake: Handshake) -> Identity:
        self.calls += 1
        if isinstance(self.outcome, Identity):
            return self.outcome
        raise AuthenticationFailed(self.outcome)


async def test_chain_first_success_wins() -> None:
    first = Scripted("missing")
    second = Scripted(Identity(user_id="second"))
    third = Scripted(Identity(user_id="third"))
    identity = await ChainAuthenticator(first, second, third).authenticate(Handshake(namespace="/"))
    assert identity.user_id == "second"
    assert (first.calls, second.calls, third.calls) == (1, 1, 0)


async def test_chain_falls_back_from_token_to_callback(
    authenticator: SignedTokenAuthenticator,
) -> None:
    async def lookup(handshake: Handshake) -> Identity | None:
        return Identity(user_id="from-session") if "session" in handshake.cookies else None

    chain = ChainAuthenticator(authenticator, CallbackAuthenticator(lookup))
    token = authenticator.issue(Identity(user_id="from-token"))
    assert (await chain.authenticate(via_auth(token))).user_id == "from-token"
    with_session = Handshake(namespace="/", cookies={"session": "s1"})
    assert (await chain.authenticate(with_session)).user_id == "from-session"
    assert await handshake_refusal(chain, Handshake(namespace="/")) == "rejected"


@pytest.mark.parametrize(
    ("reasons", "expected"),
    [
        (("missing", "rejected", "expired"), "rejected"),
        (("bad_signature", "rejected"), "bad_signature"),
        (("missing", "missing", "malformed"), "malformed"),
        (("missing", "missing"), "missing"),
        (("missing",), "missing"),
        (("expired",), "expired"),
    ],
)
async def test_chain_refusal_is_first_informative_reason(
    reasons: tuple[str, ...], expected: str
) -> None:
    links = [Scripted(reason) for reason in reasons]
    chain = ChainAuthenticator(*links)
    assert await handshake_refusal(chain, Handshake(namespace="/")) == expected
    assert all(link.calls == 1 for link in links)


def test_chain_needs_an_authenticator() -> None:
    with pytest.raises(ConfigurationError) as info:
        ChainAuthenticator()
    assert info.value.field == "authenticators"


def test_builtins_satisfy_the_protocol(authenticator: SignedTokenAuthenticator) -> None:
    async def lookup(handshake: Handshake) -> Identity | None:
        return None

    callback = CallbackAuthenticator(lookup)
    for candidate in (authenticator, callback, ChainAuthenticator(callback)):
        assert isinstance(candidate, Authenticator)
    assert not isinstance(object(), Authenticator)
