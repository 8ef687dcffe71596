"""The approver's console in Chromium, against a real `outbox serve` on SQLite and PostgreSQL.

Each test asserts what a person sees: an action arriving in the inbox, the exact preview on the
approval page, the outcome of a decision. The agent's side is its own HTTP call, as an agent
would make it. Requests are told apart by the reason the agent gives, which the inbox shows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.console.e2e.harness import ConsoleServer, PageWatch, screenshot, sign_in
from tests.support.http_target import TargetServer

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery staple"
# Both may approve HTTP calls (policies/rules.csv); lead@ also approves infrastructure and bulk mail.
LEAD = "lead@example.com"
ONCALL = "oncall@example.com"


@dataclass
class Agents:
    server: ConsoleServer
    http_key: str
    k8s_key: str
    mail_key: str


@pytest.fixture(scope="module")
def agents(console_server: ConsoleServer) -> Agents:
    console_server.user(LEAD, PASSWORD, operator=True)
    console_server.user(ONCALL, PASSWORD)
    return Agents(
        console_server,
        http_key=console_server.agent("deploy-bot", "http-writer"),
        k8s_key=console_server.agent("scale-bot", "k8s-operator"),
        mail_key=console_server.agent("news-bot", "mailer"),
    )


@pytest.fixture(scope="module")
def target() -> Iterator[TargetServer]:
    server = TargetServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def agent_calls() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


def unique(what: str) -> str:
    """A reason no other request gives (also its Idempotency-Key, which takes no spaces)."""
    return f"{what}-{uuid.uuid4().hex[:8]}".replace(" ", "-")


def delete_prod(
    agents: Agents, target: TargetServer, reason: str, *, on_behalf_of: str | None = None, wait: int | None = None
) -> httpx.Response:
    """DELETE under /prod/: the shipped gate wants two different approvers (policies/approvals.yaml)."""
    return agents.server.submit(
        agents.http_key,
        "http.request",
        {"method": "DELETE", "url": f"{target.base_url}{prod_path(reason)}"},
        idempotency_key=reason,
        on_behalf_of=on_behalf_of,
        reason=reason,
        wait=wait,
    )


def prod_path(reason: str) -> str:
    return f"/prod/{reason}"


def open_from_inbox(page: Page, reason: str) -> None:
    card = page.locator("li.card").filter(has_text=reason)
    expect(card).to_be_visible()
    card.get_by_role("link").first.click()
    expect(page.locator("#digest")).to_be_visible()


def test_an_action_arrives_in_the_open_inbox_and_two_approvers_release_the_waiting_call(
    agents: Agents,
    target: TargetServer,
    browser: Browser,
    page: Page,
    watch: PageWatch,
    screenshots: Path,
    agent_calls: ThreadPoolExecutor,
) -> None:
    server = agents.server
    page.goto(f"{server.url}/console")
    expect(page).to_have_url(f"{server.url}/console/sign-in?next=/console")
    screenshot(page, screenshots, "sign-in")
    sign_in(page, server, LEAD, PASSWORD)
    reason = unique("drop the orders table")
    expect(page.locator("li.card").filter(has_text=reason)).to_have_count(0)

    # The agent asks while the inbox is open, and waits for the outcome (Prefer: wait).
    call: Future[httpx.Response] = agent_calls.submit(delete_prod, agents, target, reason, wait=60)
    card = page.locator("li.card").filter(has_text=reason)
    expect(card).to_be_visible(timeout=20_000)  # no reload: the inbox polls
    expect(card).to_contain_text("0 of 2 approvals")
    expect(card).to_contain_text("deploy-bot")
    screenshot(page, screenshots, "inbox")

    open_from_inbox(page, reason)
    expect(page.get_by_text("0 of 2 needed")).to_be_visible()
    expect(page.locator("#http-request")).to_contain_text(f"DELETE {target.base_url}/prod/")
    screenshot(page, screenshots, "approval")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("#decision-message")).to_be_visible()
    expect(page.get_by_text("1 of 2 needed")).to_be_visible()
    expect(page.locator("#my-decision")).to_contain_text("You approved")
    assert not call.done()  # one approval is not enough for a quorum-2 gate
    assert target.received(prod_path(reason)) == []

    second = browser.new_context()
    try:
        other = second.new_page()
        sign_in(other, server, ONCALL, PASSWORD)
        open_from_inbox(other, reason)
        other.get_by_role("button", name="Approve").click()
        expect(other.get_by_text("2 of 2 needed")).to_be_visible()
    finally:
        second.close()

    answer = call.result(timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "succeeded"
    assert [r.method for r in target.received(prod_path(reason))] == ["DELETE"]
    watch.assert_clean()


def test_a_denial_reaches_the_waiting_agent_with_its_reason(
    agents: Agents, target: TargetServer, page: Page, watch: PageWatch, agent_calls: ThreadPoolExecutor
) -> None:
    reason = unique("purge inactive users")
    call = agent_calls.submit(delete_prod, agents, target, reason, wait=60)
    sign_in(page, agents.server, LEAD, PASSWORD)
    open_from_inbox(page, reason)
    page.get_by_label("Reason for denying").fill("Not during the change freeze; ask again on Monday.")
    page.get_by_role("button", name="Deny").click()
    expect(page.locator("#decision-message")).to_be_visible()
    expect(page.locator("h1")).to_contain_text("rejected")

    answer = call.result(timeout=60)
    assert answer.status_code == 403, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert "Not during the change freeze; ask again on Monday." in answer.text
    assert target.received(prod_path(reason)) == []
    watch.assert_clean()


def test_the_person_acted_for_cannot_approve(agents: Agents, target: TargetServer, page: Page) -> None:
    reason = unique("clear my own cache")
    created = delete_prod(agents, target, reason, on_behalf_of=f"user:{ONCALL}")
    action_id = created.json()["id"]
    sign_in(page, agents.server, ONCALL, PASSWORD)
    # Not in their inbox; opened by its address, the page refuses the approval and says why.
    expect(page.locator("li.card").filter(has_text=reason)).to_have_count(0)
    page.goto(f"{agents.server.url}/console/approvals/{action_id}")
    expect(page.locator("#approve-refused")).to_be_visible()
    expect(page.locator("#approve-form")).to_have_count(0)
    assert agents.server.action(agents.http_key, action_id)["status"] == "awaiting_approval"


def test_an_expired_request_is_shown_as_expired_and_offers_no_decision(
    agents: Agents, target: TargetServer, page: Page
) -> None:
    reason = unique("too late")
    action_id = delete_prod(agents, target, reason).json()["id"]
    agents.server.expire_approval(action_id)
    sign_in(page, agents.server, LEAD, PASSWORD)
    page.goto(f"{agents.server.url}/console/approvals/{action_id}")
    expect(page.locator("#stale-notice")).to_contain_text("expired")
    expect(page.locator("#approve-form")).to_have_count(0)
    expect(page.locator("#deny-form")).to_have_count(0)


def test_a_form_without_this_sessions_csrf_token_is_refused(agents: Agents, target: TargetServer, page: Page) -> None:
    server = agents.server
    reason = unique("forged approval")
    action_id = delete_prod(agents, target, reason).json()["id"]
    sign_in(page, server, LEAD, PASSWORD)
    page.goto(f"{server.url}/console/approvals/{action_id}")
    page.locator("#approve-form input[name=csrf_token]").evaluate("field => { field.value = 'forged' }")
    page.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Form refused")
    expect(page.get_by_text("CSRF token", exact=False)).to_be_visible()
    # The session cookie alone, no token at all: refused as well.
    response = page.request.post(
        f"{server.url}/console/approvals/{action_id}/approve", form={"digest": "whatever"}, max_redirects=0
    )
    assert response.status == 403
    assert server.action(agents.http_key, action_id)["status"] == "awaiting_approval"


def test_an_expired_session_sends_the_next_page_to_sign_in(agents: Agents, page: Page) -> None:
    server = agents.server
    sign_in(page, server, ONCALL, PASSWORD)
    expect(page.get_by_role("heading", level=1)).to_have_text("Waiting for your decision")
    server.execute_sql(
        "UPDATE console_sessions SET expires_at = created_at WHERE user_id IN "
        "(SELECT id FROM users WHERE email = :email)",
        email=ONCALL,
    )
    page.goto(f"{server.url}/console")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    assert "/console/sign-in" in page.url
    expect(page.get_by_text("Your session has ended")).to_be_visible()
    expect(page.get_by_label("Password")).to_be_visible()


def test_the_approval_page_renders_the_email_without_running_its_scripts_or_loading_remote_images(
    agents: Agents, target: TargetServer, page: Page, watch: PageWatch, screenshots: Path
) -> None:
    reason = unique("November newsletter")
    pixel = f"/pixel-{uuid.uuid4().hex[:8]}.png"
    html = (
        "<h1>November news</h1><p>Three things shipped this month.</p>"
        "<script>document.body.innerHTML = 'SCRIPT RAN'</script>"
        f'<img src="{target.base_url}{pixel}" alt="tracking pixel">'
    )
    created = agents.server.submit(
        agents.mail_key,
        "email.send",
        {
            "from": "news@agents.mail.example.com",
            "to": ["ann@example.net"],
            "subject": "November news",
            "text": "Three things shipped this month (text part).",
            "html": html,
            "category": "bulk",
        },
        idempotency_key=reason,
        reason=reason,
    )
    assert created.json()["status"] == "awaiting_approval", created.text
    sign_in(page, agents.server, LEAD, PASSWORD)
    open_from_inbox(page, reason)

    expect(page.locator("#email-headers")).to_contain_text("ann@example.net")
    expect(page.locator("#email-headers")).to_contain_text("November news")
    expect(page.locator("#email-text")).to_have_text("Three things shipped this month (text part).")
    frame_element = page.locator("iframe.email-frame")
    assert frame_element.get_attribute("sandbox") == ""  # no scripts, no same-origin access
    frame_element.scroll_into_view_if_needed()
    mail = page.frame_locator("iframe.email-frame")
    expect(mail.get_by_text("Three things shipped this month.")).to_be_visible()
    expect(mail.get_by_role("heading", name="November news")).to_be_visible()
    expect(mail.get_by_text("SCRIPT RAN")).to_have_count(0)
    screenshot(page, screenshots, "approval-email")
    assert target.received(pixel) == []
    # Inside the frame Chromium reports the script and the pixel it blocked: the sandbox at work.
    frame_url = f"{agents.server.url}{frame_element.get_attribute('src')}"
    assert any("Blocked script execution" in e and e.endswith(f"{frame_url})") for e in watch.errors), watch.errors
    assert any(pixel in e for e in watch.errors), watch.errors
    watch.assert_clean(forgive_in=frame_url)


def test_the_approval_page_shows_the_commands_argv_and_dry_run_output(
    agents: Agents, page: Page, watch: PageWatch
) -> None:
    reason = unique("scale web for the sale")
    created = agents.server.submit(
        agents.k8s_key,
        "k8s.scale_deployment",
        {"cluster": "production", "namespace": "shop", "deployment": "web", "replicas": 3},
        idempotency_key=reason,
        reason=reason,
    )
    dry_run = created.json()["preview"]["dry_run"]
    sign_in(page, agents.server, LEAD, PASSWORD)
    open_from_inbox(page, reason)
    expect(page.locator("#command-argv")).to_contain_text('"--replicas=3"')
    # kubectl ran in the sandbox at submission; this kubeconfig's cluster is down, and it says so.
    expect(page.locator("#dry-run-output")).to_contain_text("The connection to the server 127.0.0.1:9 was refused")
    assert "The connection to the server 127.0.0.1:9 was refused" in dry_run["stderr"]
    expect(page.get_by_text("exit code 1", exact=False)).to_be_visible()
    watch.assert_clean()


def test_sign_in_by_keyboard_and_the_inbox_fits_a_phone(
    agents: Agents, target: TargetServer, browser: Browser, screenshots: Path
) -> None:
    reason = unique("rotate the signing key")
    delete_prod(agents, target, reason)
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = phone.new_page()
        page.goto(f"{agents.server.url}/console/sign-in")
        # The address field has focus (autofocus applies once the page has loaded: wait for it, or
        # the first keystrokes go nowhere); the rest is Tab and Enter, as on a keyboard alone.
        expect(page.get_by_label("E-mail address")).to_be_focused()
        page.keyboard.type(LEAD)
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        card = page.locator("li.card").filter(has_text=reason)
        expect(card).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        screenshot(page, screenshots, "inbox-phone")
        card.get_by_role("link").first.click()
        expect(page.get_by_role("button", name="Approve")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        screenshot(page, screenshots, "approval-phone")
    finally:
        phone.close()


def test_a_page_left_open_while_another_approver_denies_says_so_instead_of_approving(
    agents: Agents, target: TargetServer, browser: Browser, page: Page
) -> None:
    reason = unique("truncate the audit table")
    action_id = delete_prod(agents, target, reason).json()["id"]
    sign_in(page, agents.server, LEAD, PASSWORD)
    page.goto(f"{agents.server.url}/console/approvals/{action_id}")
    expect(page.get_by_role("button", name="Approve")).to_be_visible()

    other = browser.new_context()
    try:
        oncall = other.new_page()
        oncall.on("dialog", lambda dialog: dialog.accept())
        sign_in(oncall, agents.server, ONCALL, PASSWORD)
        oncall.goto(f"{agents.server.url}/console/approvals/{action_id}")
        oncall.get_by_label("Reason for denying").fill("Never truncate the audit table.")
        oncall.get_by_role("button", name="Deny").click()
        expect(oncall.locator("#decision-message")).to_be_visible()
    finally:
        other.close()

    page.get_by_role("button", name="Approve").click()  # the page still shows the old state
    expect(page.locator("#decision-refused")).to_contain_text("This page was out of date; nothing was decided.")
    expect(page.locator("h1")).to_contain_text("rejected")
    assert agents.server.action(agents.http_key, action_id)["status"] == "rejected"
    assert target.received(prod_path(reason)) == []


def test_a_wrong_password_is_refused_and_sign_out_ends_the_session(agents: Agents, page: Page) -> None:
    server = agents.server
    page.goto(f"{server.url}/console/sign-in")
    page.get_by_label("E-mail address").fill(LEAD)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#sign-in-error")).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")

    sign_in(page, server, LEAD, PASSWORD)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    page.goto(f"{server.url}/console")
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
