"""``python -m realtime_gateway token``: mints tokens SignedTokenAuthenticator accepts."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

import realtime_gateway
from realtime_gateway import AuthenticationFailed, SignedTokenAuthenticator
from realtime_gateway.__main__ import main

KEY = "cli-secret-key-0123456789"
DEFAULT_SALT = "realtime_gateway.session"


@pytest.fixture(autouse=True)
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RTG_SECRET_KEY", raising=False)


def verifier(key: str = KEY, salt: str = DEFAULT_SALT) -> SignedTokenAuthenticator:
    return SignedTokenAuthenticator(key, salt=salt, max_age=24 * 3600)


def minted(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run the CLI, check it succeeded quietly, and return the one token it printed."""
    assert main(["token", *args]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 1
    return lines[0]


def seconds_from_now(moment: dt.datetime | None) -> float:
    assert moment is not None
    return (moment - dt.datetime.now(dt.UTC)).total_seconds()


def test_token_carries_the_identity(capsys: pytest.CaptureFixture[str]) -> None:
    token = minted(
        capsys,
        "--secret-key",
        KEY,
        "--user-id",
        "nurse-1",
        "--role",
        "nurse",
        "--role",
        "charge",
        "--permission",
        "view:patient",
        "--permission",
        "edit:patient",
        "--name",
        "Nurse Joy",
        "--session-id",
        "sess-9",
    )
    identity = verifier().verify(token)
    assert identity.user_id == "nurse-1"
    assert identity.roles == {"nurse", "charge"}
    assert identity.permissions == {"view:patient", "edit:patient"}
    assert identity.display_name == "Nurse Joy"
    assert identity.session_id == "sess-9"
    assert seconds_from_now(identity.expires_at) == pytest.approx(3600, abs=5)


def test_minimal_token(capsys: pytest.CaptureFixture[str]) -> None:
    identity = verifier().verify(minted(capsys, "--secret-key", KEY, "--user-id", "u1"))
    assert identity.user_id == "u1"
    assert identity.roles == frozenset()
    assert identity.permissions == frozenset()
    assert identity.display_name is None


def test_ttl_bounds_the_token(capsys: pytest.CaptureFixture[str]) -> None:
    token = minted(capsys, "--secret-key", KEY, "--user-id", "u1", "--ttl", "90")
    assert seconds_from_now(verifier().verify(token).expires_at) == pytest.approx(90, abs=5)


def test_token_is_bound_to_key_and_salt(capsys: pytest.CaptureFixture[str]) -> None:
    token = minted(capsys, "--secret-key", KEY, "--user-id", "u1", "--salt", "my-app.session")
    assert verifier(salt="my-app.session").verify(token).user_id == "u1"
    for wrong in (verifier(), verifier(key="some-other-secret-key-42", salt="my-app.session")):
        with pytest.raises(AuthenticationFailed) as info:
            wrong.verify(token)
        assert info.value.reason == "bad_signature"


def test_key_from_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTG_SECRET_KEY", KEY)
    token = minted(capsys, "--user-id", "u1", "--role", "admin")
    identity = verifier().verify(token)
    assert identity.user_id == "u1"
    assert identity.roles == {"admin"}


def test_key_option_overrides_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RTG_SECRET_KEY", "environment-secret-key-0000")
    token = minted(capsys, "--secret-key", KEY, "--user-id", "u1")
    assert verifier().verify(token).user_id == "u1"


def test_missing_key_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--user-id", "u1"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "RTG_SECRET_KEY" in err
    assert "--secret-key" in err


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["--secret-key", "short", "--user-id", "u1"], "secret_keys"),
        (["--secret-key", KEY, "--user-id", "u1", "--ttl", "0"], "--ttl"),
        (["--secret-key", KEY, "--user-id", "u1", "--ttl", "-60"], "--ttl"),
        (["--secret-key", KEY, "--user-id", ""], "user_id"),
        (["--secret-key", KEY, "--user-id", "u1", "--salt", ""], "salt"),
    ],
    ids=["short-key", "zero-ttl", "negative-ttl", "empty-user", "empty-salt"],
)
def test_bad_arguments_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], complaint: str
) -> None:
    assert main(["token", *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ")
    assert complaint in err
    assert KEY not in err


@pytest.mark.parametrize(
    "argv",
    [[], ["token", "--secret-key", KEY], ["mint", "--user-id", "u1"]],
    ids=["no-command", "no-user-id", "unknown-command"],
)
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_runs_as_a_module() -> None:
    env = {**os.environ, "RTG_SECRET_KEY": KEY}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "realtime_gateway",
            "token",
            "--user-id",
            "u1",
            "--role",
            "nurse",
            "--permission",
            "view:patient",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    identity = verifier().verify(result.stdout.strip())
    assert identity.user_id == "u1"
    assert identity.roles == {"nurse"}
    assert identity.permissions == {"view:patient"}


ROOT = Path(__file__).resolve().parent.parent
# The console script pip installs next to the interpreter (`make test` installs it).
COMMAND = Path(sys.executable).with_name("realtime-gateway")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    # This checkout's package, whichever one the command was installed from.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(  # noqa: S603 (the commands under test)
        argv, capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_the_installed_command_names_itself() -> None:
    result = run(str(COMMAND), "token", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: realtime-gateway token ")
    assert "python -m" not in result.stdout
    result = run(str(COMMAND), "token")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: realtime-gateway token ")


def test_the_module_names_itself() -> None:
    result = run(sys.executable, "-m", "realtime_gateway", "--help")
    assert result.stdout.startswith("usage: python -m realtime_gateway ")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"realtime-gateway {realtime_gateway.__version__}\n"
    result = run(str(COMMAND), "--version")
    assert (result.returncode, result.stdout.strip()) == (
        0,
        f"realtime-gateway {realtime_gateway.__version__}",
    )


def test_help_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["token", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "lifetime in seconds (default: 3600)" in text
    assert f"(default: {DEFAULT_SALT})" in text
    assert "(default: the RTG_SECRET_KEY environment variable)" in text
    assert "(default: random)" in text
