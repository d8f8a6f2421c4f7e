"""The clinic example in a real browser: Debian's headless Chromium, driven by
Playwright, runs the dashboard with the official socket.io JavaScript client.

The example runs as its own process, as ``make demo`` starts it. Each user signs
in through the login page in a browser context of their own (their own cookie).
On failure, a screenshot of each open page and the server's output are kept under
the test's ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import aiohttp
import pytest
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

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


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _open_log(path: Path) -> IO[bytes]:
    return path.open("wb")


@pytest.fixture
async def clinic(tmp_path: Path) -> AsyncIterator[str]:
    """The example clinic on a free port, publishing patient updates twice a second."""
    port = _free_port()
    with _open_log(tmp_path / "clinic.log") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "examples/aiohttp_clinic/app.py"),
            *("--port", str(port), "--update-interval", "0.5"),
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

    async def sign_in(self, name: str, user_id: str) -> Page:
        """Sign in as ``user_id`` on the login page; return the connected dashboard."""
        context = await self.browser.new_context(base_url=self.base_url)
        page = self.pages[name] = await context.new_page()
        await page.goto("/")
        await page.get_by_test_id(f"login-{user_id}").click()
        await expect(page).to_have_url(f"{self.base_url}/dashboard")
        for state in NAMESPACE_STATES:
            await expect(page.get_by_test_id(state)).to_have_text("connected")
        return page

    async def close(self, name: str) -> None:
        """Close a user's page (and browser context)."""
        await self.pages.pop(name).context.close()

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
    users = Dashboards(browser, clinic)
    try:
        await scenario(users)
    except Exception as exc:
        shots = await users.screenshots(tmp_path)
        raise AssertionError(
            f"the browser scenario failed: {exc}\n"
            f"screenshots of the open pages: {', '.join(shots) or 'none'}\n"
            f"server output: {tmp_path / 'clinic.log'}"
        ) from exc
