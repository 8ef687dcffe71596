"""The operator's console pages in Chromium: actions and their timelines, mail (with the kill
switch), audit and policy, each rendered without a script error, a CSP report or a failed request."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.console.e2e.harness import ConsoleServer, PageWatch, screenshot, sign_in
from tests.support.processes import wait_until

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
OPERATOR = "ops@example.com"
SUBDOMAIN = "agents.mail.example.com"


@pytest.fixture(scope="module")
def mail_key(console_server: ConsoleServer) -> str:
    console_server.user(OPERATOR, PASSWORD, operator=True)
    return console_server.agent("report-bot", "mailer")


def send_report(server: ConsoleServer, key: str, subject: str) -> str:
    response = server.submit(
        key,
        "email.send",
        {
            "from": f"reports@{SUBDOMAIN}",
            "to": ["ann@example.net"],
            "subject": subject,
            "text": "Hello Ann",
            "category": "transactional",
        },
        idempotency_key=f"report-{uuid.uuid4().hex}",
    )
    assert response.status_code == 202, response.text
    action_id: str = response.json()["id"]
    return action_id


def status_of(server: ConsoleServer, key: str, action_id: str) -> str:
    return str(server.action(key, action_id)["status"])


def test_a_pause_from_the_mail_page_stops_sends_until_resumed(
    console_server: ConsoleServer, mail_key: str, page: Page, watch: PageWatch, screenshots: Path
) -> None:
    server = console_server
    sent = send_report(server, mail_key, f"before {uuid.uuid4().hex[:6]}")
    assert wait_until(lambda: status_of(server, mail_key, sent) == "succeeded", 30)

    sign_in(page, server, OPERATOR, PASSWORD)
    page.get_by_role("link", name="Mail").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Mail")
    screenshot(page, screenshots, "mail")
    section = page.get_by_role("region", name=re.compile(f"^{re.escape(SUBDOMAIN)}"))
    expect(section.locator("h2 .pill")).to_have_text("ok")
    section.get_by_label("Reason").fill("incident 42: complaints from a list import")
    section.get_by_role("button", name=f"Pause mail from {SUBDOMAIN}").click()  # confirmed by the fixture
    section = page.get_by_role("region", name=re.compile(f"^{re.escape(SUBDOMAIN)}"))
    expect(section.locator("h2 .pill")).to_have_text("paused")
    expect(section.get_by_text("incident 42: complaints from a list import").first).to_be_visible()

    held = send_report(server, mail_key, f"during {uuid.uuid4().hex[:6]}")
    assert wait_until(lambda: status_of(server, mail_key, held) == "deferred", 30)
    assert "incident 42" in str(server.action(mail_key, held)["status_reason"])

    section.get_by_label("Reason").fill("incident 42 closed")
    section.get_by_role("button", name=f"Resume mail from {SUBDOMAIN}").click()
    section = page.get_by_role("region", name=re.compile(f"^{re.escape(SUBDOMAIN)}"))
    expect(section.locator("h2 .pill")).to_have_text("ok")
    assert wait_until(lambda: status_of(server, mail_key, held) == "succeeded", 30)
    watch.assert_clean()


def test_every_operator_page_renders(
    console_server: ConsoleServer, mail_key: str, page: Page, watch: PageWatch, screenshots: Path
) -> None:
    server = console_server
    subject = f"timeline {uuid.uuid4().hex[:6]}"
    action_id = send_report(server, mail_key, subject)
    assert wait_until(lambda: status_of(server, mail_key, action_id) == "succeeded", 30)
    sign_in(page, server, OPERATOR, PASSWORD)

    page.get_by_role("link", name="Actions").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Actions")
    screenshot(page, screenshots, "actions")
    page.get_by_role("link", name=action_id).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Action {action_id}")
    timeline = page.get_by_role("list", name="Timeline")
    expect(timeline.get_by_role("heading", name="action.received")).to_be_visible()
    expect(timeline).to_contain_text("succeeded")
    # The arguments as recorded, and the tool's response (the relay's answer for each recipient).
    arguments = page.get_by_role("heading", name="Arguments", exact=True).locator("xpath=following-sibling::pre[1]")
    expect(arguments).to_contain_text(subject)
    expect(page.get_by_role("heading", name="Tool response", exact=True)).to_be_visible()
    expect(page.get_by_text("No response recorded.")).to_have_count(0)
    screenshot(page, screenshots, "action-timeline")

    page.get_by_role("link", name="Audit").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Audit log")
    page.get_by_role("button", name="Verify now").click()
    expect(page.get_by_role("heading", name=re.compile(r"^Verification at .*: passed$"))).to_be_visible()
    expect(page.get_by_text("Chain intact")).to_be_visible()
    screenshot(page, screenshots, "audit")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download JSONL").click()
    exported = Path(download.value.path()).read_text()
    assert action_id in exported
    assert all(line.startswith("{") for line in exported.splitlines())

    page.get_by_role("link", name="Policy").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Policy")
    running = page.get_by_role("definition").filter(has_text="sha256:").first
    expect(running).to_have_text(str(server.action(mail_key, action_id)["decision"]["policy_version"]))
    screenshot(page, screenshots, "policy")
    watch.assert_clean()
