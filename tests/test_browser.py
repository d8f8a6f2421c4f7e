"""The clinic example in a real browser: Debian's headless Chromium, driven by
Playwright, runs the dashboard with the official socket.io JavaScript client.

The example runs as its own process, as ``make demo`` starts it (with short
lifetimes where the session lifecycle is under test). Each user signs in through
the login page in a browser context of their own (their own cookie); a second tab
of the same browser shares that context. On failure, a screenshot of each open page
and the server's output are kept under the test's ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import pytest
from playwright.async_api import Browser, Locator, Page, WebSocket, async_playwright, expect

from realtime_gateway import Identity, SignedTokenAuthenticator

from .conftest import Clients, socketio_client

ROOT = Path(__file__).resolve().parent.parent
KEY = "browser-test-key-0123456789abcdef"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NAMESPACE_STATES = ("state-main", "state-notifications", "state-chat", "state-updates")
SALT = "realtime_gateway.session"  # the library's default, which the clinic uses
COOKIE = "rtg_session"
# What a namespace state shows once the server has ended the socket and socket.io
# is not trying again (it would add ", reconnecting…").
ENDED = "disconnected (io server disconnect)"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _open_log(path: Path) -> IO[bytes]:
    return path.open("wb")


@contextlib.asynccontextmanager
async def running_clinic(tmp_path: Path, *args: str) -> AsyncIterator[str]:
    """The example clinic on a free port, publishing patient updates twice a second,
    with ``args`` added to its command line; yields its URL."""
    port = _free_port()
    with _open_log(tmp_path / "clinic.log") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "examples/aiohttp_clinic/app.py"),
            *("--port", str(port), "--update-interval", "0.5", *args),
            env={**os.environ, "RTG_SECRET_KEY": KEY},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as session, asyncio.timeout(20):
                while True:
                    assert process.returncode is None, f"the example exited, see {output.name}"
                    try:
                        async with session.get(url) as response:
                            if response.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
            yield url
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 15)


@pytest.fixture
async def clinic(tmp_path: Path) -> AsyncIterator[str]:
    """The example clinic with its default session lifetimes."""
    async with running_clinic(tmp_path) as url:
        yield url


@pytest.fixture
def chromium_path() -> Path:
    """Debian's Chromium; its absence is a failure, not a skip."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium package "
            "(`make browser`, or `make test`, which installs it)"
        )
    return CHROMIUM


@pytest.fixture
async def browser(chromium_path: Path) -> AsyncIterator[Browser]:
    """Debian's Chromium, headless; never a browser Playwright downloads."""
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(chromium_path), args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@dataclass
class Dashboards:
    """Signed-in dashboard pages by name, each in a browser context of its own (its
    own cookie), kept here as soon as they open so that a failure can show them."""

    browser: Browser
    base_url: str
    pages: dict[str, Page] = field(default_factory=dict)
    websockets: dict[str, list[WebSocket]] = field(default_factory=dict)

    async def sign_in(self, name: str, user_id: str) -> Page:
        """Sign in as ``user_id`` on the login page; return the connected dashboard."""
        context = await self.browser.new_context(base_url=self.base_url)
        page = self._keep(name, await context.new_page())
        await page.goto("/")
        await page.get_by_test_id(f"login-{user_id}").click()
        await expect(page).to_have_url(f"{self.base_url}/dashboard")
        await expect_connected(page)
        return page

    async def another_tab(self, name: str, of: str) -> Page:
        """Open the dashboard in a second tab of ``of``'s browser (the same cookie)."""
        page = self._keep(name, await self.pages[of].context.new_page())
        await page.goto("/dashboard")
        await expect_connected(page)
        return page

    def _keep(self, name: str, page: Page) -> Page:
        self.pages[name] = page
        opened = self.websockets[name] = []
        page.on("websocket", lambda websocket: opened.append(websocket))
        return page

    async def close(self, name: str) -> None:
        """Close a user's page (and browser context)."""
        await self.pages.pop(name).context.close()

    async def close_tab(self, name: str) -> None:
        """Close one tab, leaving the others of its browser (context) open."""
        await self.pages.pop(name).close()

    async def screenshots(self, directory: Path) -> list[str]:
        """Save a screenshot of each open page in ``directory``; list what was saved."""
        saved = []
        for name, page in self.pages.items():
            path = directory / f"{name}.png"
            try:
                await page.screenshot(path=path, full_page=True)
            except Exception as exc:
                saved.append(f"{name}: no screenshot ({exc})")
            else:
                saved.append(str(path))
        return saved


def member(page: Page, user_id: str) -> Locator:
    """The entry of ``user_id`` in the page's chat presence list."""
    return page.locator(f'[data-testid="member"][data-user-id="{user_id}"]')


async def expect_connected(page: Page) -> None:
    """Every namespace of the dashboard shows connected."""
    for state in NAMESPACE_STATES:
        await expect(page.get_by_test_id(state)).to_have_text("connected")


async def expect_ended(page: Page, message: str, *, within: float = 5.0) -> None:
    """The dashboard says why the session ended (within ``within`` seconds), links to
    the login page, and has every namespace disconnected by the server with no
    reconnection under way."""
    await expect(page.get_by_test_id("banner")).to_contain_text(message, timeout=within * 1000)
    await expect(page.get_by_test_id("sign-in-again")).to_have_attribute("href", "/")
    for state in NAMESPACE_STATES:
        await expect(page.get_by_test_id(state)).to_have_text(ENDED)


async def session_cookie(page: Page) -> str:
    """The value of the page's session cookie."""
    [value] = [c["value"] for c in await page.context.cookies() if c["name"] == COOKIE]
    return value


def session_of(token: str) -> Identity:
    """The identity in a token the clinic signed (any lifetime up to a day)."""
    return SignedTokenAuthenticator([KEY], salt=SALT, max_age=86400).verify(token)


async def clinic_metrics(url: str) -> dict[str, Any]:
    """The gateway's counters, read through the admin API as an admin."""
    admin = Identity(user_id="u-admin", roles={"admin"})
    token = SignedTokenAuthenticator([KEY], salt=SALT, max_age=60).issue(admin)
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            url + "/api/socket.io/metrics", headers={"Authorization": f"Bearer {token}"}
        ) as response,
    ):
        assert response.status == 200
        metrics: dict[str, Any] = (await response.json())["data"]["metrics"]
        return metrics


async def in_browser(
    browser: Browser, url: str, tmp_path: Path, scenario: Callable[[Dashboards], Awaitable[None]]
) -> None:
    """Run ``scenario``; on failure, say where the screenshots and server output are."""
    users = Dashboards(browser, url)
    try:
        await scenario(users)
    except Exception as exc:
        shots = await users.screenshots(tmp_path)
        raise AssertionError(
            f"the browser scenario failed: {exc}\n"
            f"screenshots of the open pages: {', '.join(shots) or 'none'}\n"
            f"server output: {tmp_path / 'clinic.log'}"
        ) from exc


async def notify_role(admin: Page, role: str, message: str) -> None:
    """Send a notification to ``role`` with the admin's dashboard form."""
    await admin.get_by_test_id("notify-role").select_option(role)
    await admin.get_by_test_id("notify-title").fill("Shift change")
    await admin.get_by_test_id("notify-message").fill(message)
    await admin.get_by_test_id("notify-send").click()
    await expect(admin.get_by_test_id("notify-result")).to_contain_text(
        f"HTTP 200: sent to role {role}"
    )


async def subscribe_patient(page: Page, patient_id: str) -> None:
    """Ask for a patient's live updates with the dashboard form."""
    await page.get_by_test_id("patient-id").fill(patient_id)
    await page.get_by_test_id("subscribe").click()


async def scenario(users: Dashboards) -> None:
    """Chat, typing, presence, role notifications and permission-gated updates."""
    nurse = await users.sign_in("nurse", "u-nurse")
    await expect(member(nurse, "u-nurse")).to_have_text("Nat Nurse (you)")
    doctor = await users.sign_in("doctor", "u-doctor")
    await expect(member(nurse, "u-doctor")).to_have_text("Dr Dee")
    await expect(member(doctor, "u-nurse")).to_have_text("Nat Nurse")

    # Typing, then the message itself.
    text = f"Bed 4 needs a fluid chart ({uuid.uuid4().hex[:8]})"
    await doctor.get_by_test_id("chat-input").fill(text)
    await expect(nurse.get_by_test_id("typing")).to_have_text("Dr Dee is typing…")
    await doctor.get_by_test_id("chat-send").click()
    message = nurse.get_by_test_id("chat-message").filter(has_text=text)
    await expect(message).to_have_count(1)
    await expect(message).to_contain_text("Dr Dee")
    await expect(nurse.get_by_test_id("typing")).to_have_text("")

    # A role notification reaches the nurses only. The doctor's own notification,
    # sent after it on the same connection, shows that the nurses' never came.
    admin = await users.sign_in("admin", "u-admin")
    for_nurses = f"Handover at 19:00 ({uuid.uuid4().hex[:8]})"
    await notify_role(admin, "nurse", for_nurses)
    await expect(nurse.get_by_test_id("notification").filter(has_text=for_nurses)).to_have_count(1)
    for_doctors = f"Rounds at 08:00 ({uuid.uuid4().hex[:8]})"
    await notify_role(admin, "doctor", for_doctors)
    await expect(doctor.get_by_test_id("notification").filter(has_text=for_doctors)).to_have_count(
        1
    )
    await expect(doctor.get_by_test_id("notifications")).not_to_contain_text(for_nurses)

    # Patient updates: the doctor's feed fills, the patient is refused.
    await subscribe_patient(doctor, "p-1001")
    await expect(doctor.get_by_test_id("updates-status")).to_contain_text("Subscribed to p-1001")
    latest = doctor.get_by_test_id("update").first
    await expect(latest).to_contain_text("p-1001 vitals")
    patient = await users.sign_in("patient", "u-patient")
    await expect(patient.get_by_test_id("chat-unavailable")).to_contain_text("not available")
    await subscribe_patient(patient, "p-1001")
    await expect(patient.get_by_test_id("updates-status")).to_contain_text("Not allowed")
    # A newer update has reached the doctor since the refusal; none reached the patient.
    seen = await latest.locator("time").get_attribute("datetime")
    assert seen is not None
    await expect(latest.locator("time")).not_to_have_attribute("datetime", seen)
    await expect(patient.get_by_test_id("update")).to_have_count(0)
    # Stop sends unsubscribe as two arguments, (resourceType, resourceId).
    await doctor.get_by_test_id("subscriptions").get_by_role("button", name="Stop").click()
    await expect(doctor.get_by_test_id("updates-status")).to_have_text("Stopped p-1001.")
    await expect(doctor.get_by_test_id("subscriptions")).to_be_empty()

    # Conversations have members: the staff user's chat is the billing desk.
    staff = await users.sign_in("staff", "u-staff")
    await expect(staff.get_by_test_id("conversation-id")).to_have_text("billing-desk")
    await expect(member(staff, "u-staff")).to_have_text("Sam Staff (you)")
    # The admin, a member of both, moves from the ward round to the billing desk.
    await expect(member(nurse, "u-admin")).to_have_text("Ada Admin")
    await admin.get_by_test_id("conversation-pick").select_option("billing-desk")
    await expect(member(admin, "u-staff")).to_have_text("Sam Staff")
    await expect(member(staff, "u-admin")).to_have_text("Ada Admin")
    await expect(member(admin, "u-nurse")).to_have_count(0)
    await expect(member(nurse, "u-admin")).to_have_count(0)
    # The ward round refuses the staff user (who leaves the billing desk for it).
    await staff.get_by_test_id("conversation-pick").select_option("ward-round")
    await expect(staff.get_by_test_id("chat-unavailable")).to_contain_text(
        'Chat "ward-round" is not available to you (forbidden: Not allowed to join'
    )
    await expect(member(admin, "u-staff")).to_have_count(0)

    # Closing the doctor's page takes him out of the nurse's presence list. That news
    # came after the staff user's refused join, which therefore never showed him there.
    await users.close("doctor")
    await expect(member(nurse, "u-doctor")).to_have_count(0)
    await expect(member(nurse, "u-nurse")).to_have_count(1)
    await expect(member(nurse, "u-staff")).to_have_count(0)


async def test_clinic_dashboard_in_a_real_browser(
    clinic: str, browser: Browser, tmp_path: Path
) -> None:
    await in_browser(browser, clinic, tmp_path, scenario)


async def recovery_scenario(users: Dashboards) -> None:
    """A dashboard whose connection drops gets the patient updates it missed."""
    doctor = await users.sign_in("doctor", "u-doctor")
    witness = await users.sign_in("nurse", "u-nurse")
    for page in (doctor, witness):
        await subscribe_patient(page, "p-1001")
        await expect(page.get_by_test_id("update").first).to_contain_text("p-1001 vitals")
    # The doctor's transport closes, as on a Wi-Fi hand-over, and stays closed for now.
    await doctor.evaluate(
        "() => { const io = window.clinic.sockets[0].io; io.reconnection(false); "
        "io.engine.close(); }"
    )
    await expect(doctor.get_by_test_id("state-updates")).to_contain_text("disconnected")
    # Updates go on meanwhile: the nurse's feed gets a newer one than the doctor saw.
    seen = await doctor.get_by_test_id("update").first.locator("time").get_attribute("datetime")
    assert seen is not None
    newest = witness.get_by_test_id("update").first
    await expect(newest.locator("time")).not_to_have_attribute("datetime", seen)
    missed = await newest.text_content()
    assert missed
    await doctor.evaluate(
        "() => { const sockets = window.clinic.sockets; sockets[0].io.reconnection(true); "
        "sockets.forEach((socket) => socket.connect()); }"
    )
    await expect_connected(doctor)
    await expect(doctor.get_by_test_id("updates-status")).to_have_text(
        re.compile(r"Reconnected: [1-9][0-9]* missed updates? delivered\.")
    )
    await expect(doctor.get_by_test_id("update").filter(has_text=missed)).to_have_count(1)


async def test_a_dashboard_that_dropped_gets_the_updates_it_missed(
    clinic: str, browser: Browser, tmp_path: Path
) -> None:
    await in_browser(browser, clinic, tmp_path, recovery_scenario)


# -- the session lifecycle ------------------------------------------------------------


async def test_logging_out_ends_the_session_in_every_tab_and_for_the_old_cookie(
    clinic: str, browser: Browser, tmp_path: Path, clients: Clients
) -> None:
    async def logout_scenario(users: Dashboards) -> None:
        first = await users.sign_in("first", "u-nurse")
        second = await users.another_tab("second", of="first")
        cookie = await session_cookie(first)
        assert session_of(cookie).session_id

        # The same cookie outside the browser: connected, until the logout.
        told: list[Any] = []
        gone = asyncio.Event()
        client = socketio_client()
        client.on("auth:revoked", told.append, namespace="/updates")
        client.on("disconnect", lambda *reason: gone.set(), namespace="/updates")
        clients.adopt(client)
        await client.connect(
            clinic,
            namespaces=["/updates"],
            transports=["websocket"],
            headers={"Cookie": f"{COOKIE}={cookie}"},
            wait_timeout=5,
        )

        await second.get_by_test_id("logout").click()
        await expect(second).to_have_url(clinic + "/")
        await expect(second.get_by_test_id("signed-in")).to_have_text("")
        await expect_ended(first, "You were signed out.")
        await asyncio.wait_for(gone.wait(), 5)
        assert told == [{"reason": "revoked"}]

        # The old cookie opens nothing any more, and the dashboard has not tried:
        # the one WebSocket of its client connection is all it ever opened.
        refusal = await clients.refusal(clinic, headers={"Cookie": f"{COOKIE}={cookie}"})
        assert refusal.data["data"] == {"code": "unauthenticated", "reason": "revoked"}
        assert len(users.websockets["first"]) == 1
        await first.get_by_test_id("sign-in-again").click()
        await expect(first.get_by_test_id("signed-in")).to_have_text("")

        # Signing in again is a new session, which connects.
        again = await users.sign_in("again", "u-nurse")
        assert session_of(await session_cookie(again)).session_id != session_of(cookie).session_id

    await in_browser(browser, clinic, tmp_path, logout_scenario)


TOKEN_TTL = 8  # seconds; short, so that a token expires during the test
REFRESH_AHEAD = 4
IDLE_AFTER_RENEWALS = 14  # seconds: several renewals fit before this idle logoff


async def test_expiring_banner_then_refresh_keeps_the_dashboard_connected(
    browser: Browser, tmp_path: Path
) -> None:
    lifetimes = ("--token-ttl", str(TOKEN_TTL), "--refresh-ahead", str(REFRESH_AHEAD))
    idle = ("--idle-timeout", str(IDLE_AFTER_RENEWALS))

    async def refresh_scenario(users: Dashboards) -> None:
        doctor = await users.sign_in("doctor", "u-doctor")
        first_token = await session_cookie(doctor)
        await subscribe_patient(doctor, "p-1001")
        await expect(doctor.get_by_test_id("updates-status")).to_contain_text("Subscribed")

        banner = doctor.get_by_test_id("banner")
        await expect(banner).to_have_text(
            re.compile(r"Your session expires in \d+ s\."), timeout=TOKEN_TTL * 1000
        )
        expires_at = int(await banner.get_attribute("data-expires-at") or 0)
        first_expiry = session_of(first_token).expires_at
        assert first_expiry is not None
        assert expires_at == round(first_expiry.timestamp() * 1000)
        await expect(banner).to_be_hidden(timeout=REFRESH_AHEAD * 1000)
        await expect(doctor.get_by_test_id("session-status")).to_contain_text("Session renewed")

        # The cookie holds a newer token of the same session.
        renewed = await session_cookie(doctor)
        assert renewed != first_token
        assert session_of(renewed).session_id == session_of(first_token).session_id

        # Past the first token's expiry: an update published after it has arrived,
        # and every namespace is still connected.
        await doctor.wait_for_function(
            """(after) => {
                const latest = document.querySelector('[data-testid="update"] time');
                return latest !== null && Date.parse(latest.dateTime) > after;
            }""",
            arg=expires_at + 1000,
            timeout=(TOKEN_TTL + 4) * 1000,
        )
        await expect_connected(doctor)

        # Renewals are not the person's activity: without input, the page is signed
        # out after the idle timeout all the same (the last input was the subscribe).
        await expect_ended(doctor, "Signed out after inactivity.", within=IDLE_AFTER_RENEWALS)
        metrics = await clinic_metrics(users.base_url)
        assert metrics["sessions_refreshed"] >= 2
        assert metrics["sessions_ended"] == {"idle": 4}
        assert len(users.websockets["doctor"]) == 1

    async with running_clinic(tmp_path, *lifetimes, *idle) as url:
        await in_browser(browser, url, tmp_path, refresh_scenario)


IDLE_TIMEOUT = 3  # seconds


async def test_input_keeps_every_tab_signed_in_and_idleness_signs_out(
    browser: Browser, tmp_path: Path
) -> None:
    async def idle_scenario(users: Dashboards) -> None:
        first = await users.sign_in("first", "u-nurse")
        second = await users.another_tab("second", of="first")
        loop = asyncio.get_running_loop()

        # Input in the first tab only, for twice the idle timeout: the first tab
        # reports it, the second hears of it from the first (same browser, same
        # session), and neither is signed out.
        started = loop.time()
        while loop.time() - started < 2 * IDLE_TIMEOUT:
            await first.keyboard.press("Shift")
            await asyncio.sleep(0.25)
        await first.get_by_test_id("me").click()  # pointer input counts too
        for page in (first, second):
            await expect_connected(page)
            await expect(page.get_by_test_id("banner")).to_be_hidden()

        # Then nobody touches anything: the idle timeout signs the page out and
        # revokes the session, so the cookie no longer signs anyone in.
        await users.close_tab("second")
        await expect_ended(first, "Signed out after inactivity.", within=2 * IDLE_TIMEOUT)
        await first.get_by_test_id("sign-in-again").click()
        await expect(first).to_have_url(users.base_url + "/")
        await expect(first.get_by_test_id("signed-in")).to_have_text("")
        await first.goto("/dashboard")
        await expect(first).to_have_url(users.base_url + "/")

    async with running_clinic(tmp_path, "--idle-timeout", str(IDLE_TIMEOUT)) as url:
        await in_browser(browser, url, tmp_path, idle_scenario)
