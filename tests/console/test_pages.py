"""The console's pages over the real app (TestClient, SQLite and PostgreSQL): sign-in, the
headers every page carries, CSRF, the inbox, the approval page and deciding from it.
Chromium drives the same pages in tests/console/e2e/."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from html import unescape as html_unescape
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import update

from outbox.actions.models import Action
from outbox.actions.service import parse_envelope, submit
from outbox.agents.service import authenticate
from outbox.api.app import create_app
from outbox.console.security import CONTENT_SECURITY_POLICY
from outbox.runtime import Runtime
from outbox.sqltypes import utcnow
from outbox.users.models import ConsoleSession
from tests.approvals.support import approval_of, event_types, force_expiry
from tests.console.conftest import hidden_field, signed_in, submit_bulk_mail, submit_http_delete
from tests.console.e2e.harness import KUBECONFIG
from tests.support.agents import make_agent
from tests.support.dispatchers import RecordingDispatcher

Clients = Callable[[], TestClient]


def page_of(client: TestClient, path: str) -> str:
    answer = client.get(path)
    assert answer.status_code == 200, answer.text
    return answer.text


# Sign-in and the session


def test_every_page_needs_a_signed_in_person(console_client: Clients) -> None:
    client = console_client()
    for path in ("/console", "/console/inbox", "/console/approvals/apr_x"):
        answer = client.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/console/sign-in?next=")


def test_the_inbox_poll_of_a_signed_out_browser_sends_the_whole_page_to_sign_in(console_client: Clients) -> None:
    answer = console_client().get(
        "/console/inbox/items", headers={"HX-Request": "true", "HX-Current-URL": "https://testserver/console/inbox"}
    )
    assert answer.status_code == 200 and answer.text == ""
    # Back to the page after signing in, not to the fragment.
    assert answer.headers["hx-redirect"] == "/console/sign-in?next=/console/inbox"


def test_a_wrong_password_is_refused_with_the_users_service_message(console_client: Clients) -> None:
    client = console_client()
    form = client.get("/console/sign-in")
    answer = client.post(
        "/console/sign-in",
        data={"email": "oncall@example.com", "password": "not it", "form_token": hidden_field(form.text, "form_token")},
    )
    assert answer.status_code == 401
    assert "The e-mail address or the password is wrong." in answer.text
    assert "outbox_console_session" not in answer.headers.get("set-cookie", "")


def test_too_many_failed_sign_ins_answer_429_with_retry_after(
    console_client: Clients, console_runtime: Runtime
) -> None:
    client = console_client()
    limit = console_runtime.settings.console_login_attempts
    for _ in range(limit):
        token = hidden_field(client.get("/console/sign-in").text, "form_token")
        client.post("/console/sign-in", data={"email": "sre@example.com", "password": "guess", "form_token": token})
    token = hidden_field(client.get("/console/sign-in").text, "form_token")
    answer = client.post(
        "/console/sign-in",
        data={"email": "sre@example.com", "password": "correct horse battery staple", "form_token": token},
    )
    assert answer.status_code == 429
    assert int(answer.headers["retry-after"]) > 0
    assert "Too many failed sign-in attempts" in answer.text


def test_a_sign_in_form_without_its_token_checks_nothing(console_client: Clients) -> None:
    client = console_client()
    client.get("/console/sign-in")
    answer = client.post(
        "/console/sign-in",
        data={"email": "oncall@example.com", "password": "correct horse battery staple", "form_token": "forged"},
    )
    assert answer.status_code == 403
    assert "outbox_console_session" not in answer.headers.get("set-cookie", "")


def test_the_session_cookie_is_httponly_samesite_lax_and_secure(console_client: Clients) -> None:
    client = console_client()
    token = hidden_field(client.get("/console/sign-in").text, "form_token")
    answer = client.post(
        "/console/sign-in",
        data={"email": "oncall@example.com", "password": "correct horse battery staple", "form_token": token},
    )
    assert answer.status_code == 303
    cookie = next(c for c in answer.headers.get_list("set-cookie") if c.startswith("outbox_console_session="))
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "secure", "samesite", "path"} <= attributes
    assert "samesite=lax" in cookie.lower()
    assert "path=/console" in cookie.lower()


def test_after_sign_in_the_browser_returns_to_the_page_it_asked_for_and_never_elsewhere(
    console_client: Clients,
) -> None:
    client = console_client()
    for asked, landed in (("/console/approvals/apr_1", "/console/approvals/apr_1"), ("//evil.example/x", "/console")):
        form = client.get("/console/sign-in", params={"next": asked})
        answer = client.post(
            "/console/sign-in",
            data={
                "email": "oncall@example.com",
                "password": "correct horse battery staple",
                "form_token": hidden_field(form.text, "form_token"),
                "next": hidden_field(form.text, "next"),
            },
        )
        assert answer.headers["location"] == landed
        client.cookies.clear()


def test_an_expired_session_sends_the_person_to_sign_in_again(
    console_client: Clients, console_runtime: Runtime
) -> None:
    client = signed_in(console_client(), "oncall@example.com")
    assert client.get("/console").status_code == 200
    with console_runtime.db.session() as session:
        session.execute(update(ConsoleSession).values(expires_at=utcnow().replace(year=2000)))
    answer = client.get("/console")
    assert answer.status_code == 303
    assert answer.headers["location"].endswith("&ended=1")
    assert "Your session has ended" in client.get(answer.headers["location"]).text


def test_a_form_posted_after_the_session_ended_returns_to_its_page_after_sign_in(console_client: Clients) -> None:
    answer = console_client().post(
        "/console/approvals/apr_1/approve",
        data={"csrf_token": "x", "digest": "y"},
        headers={"Referer": "https://testserver/console/approvals/apr_1"},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/sign-in?next=/console/approvals/apr_1"


def test_sign_out_needs_the_csrf_token_and_ends_the_session(console_client: Clients) -> None:
    client = signed_in(console_client(), "oncall@example.com")
    assert client.post("/console/sign-out", data={"csrf_token": "forged"}).status_code == 403
    assert client.get("/console").status_code == 200
    token = hidden_field(page_of(client, "/console"), "csrf_token")
    answer = client.post("/console/sign-out", data={"csrf_token": token})
    assert answer.status_code == 303
    assert client.get("/console").status_code == 303


# What every page carries


def test_every_console_response_carries_the_security_headers(
    console_client: Clients, http_agent: str, console_runtime: Runtime
) -> None:
    action_id = submit_http_delete(console_runtime, http_agent)
    client = signed_in(console_client(), "oncall@example.com")
    responses = [
        client.get("/console/sign-in"),
        client.get("/console"),
        client.get("/console/inbox/items"),
        client.get(f"/console/approvals/{action_id}"),
        client.get("/console/approvals/apr_missing"),
        client.get("/console/static/htmx.min.js"),
        client.post("/console/sign-out", data={"csrf_token": "forged"}),
        console_client().get("/console"),
    ]
    for answer in responses:
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, answer.request.url
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "same-origin"
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY


def test_pages_have_no_inline_script_or_style(
    console_client: Clients, http_agent: str, console_runtime: Runtime
) -> None:
    action_id = submit_http_delete(console_runtime, http_agent)
    client = signed_in(console_client(), "oncall@example.com")
    for path in ("/console", f"/console/approvals/{action_id}", "/console/sign-in"):
        html = client.get(path, follow_redirects=True).text
        assert "<script>" not in html and "<style" not in html and " style=" not in html
        assert " onclick=" not in html and "javascript:" not in html


def test_static_assets_are_served_from_the_package(console_client: Clients) -> None:
    client = console_client()
    htmx = client.get("/console/static/htmx.min.js")
    assert htmx.status_code == 200 and htmx.headers["content-type"].startswith("text/javascript")
    assert "Zero-Clause BSD" in htmx.text.splitlines()[0]
    assert client.get("/console/static/console.css").status_code == 200
    assert client.get("/console/static/..%2Fapp.py").status_code == 404


def test_a_form_without_this_sessions_csrf_token_changes_nothing(
    console_client: Clients, http_agent: str, console_runtime: Runtime
) -> None:
    action_id = submit_http_delete(console_runtime, http_agent)
    digest = approval_of(console_runtime, action_id).digest
    client = signed_in(console_client(), "oncall@example.com")
    for data in ({"digest": digest}, {"digest": digest, "csrf_token": "not-the-token"}):
        answer = client.post(f"/console/approvals/{action_id}/approve", data=data)
        assert answer.status_code == 403
        assert "CSRF" in answer.text
    # Another person's token is not this session's either.
    other = signed_in(console_client(), "lead@example.com")
    stolen = hidden_field(page_of(other, "/console"), "csrf_token")
    assert (
        client.post(
            f"/console/approvals/{action_id}/approve", data={"digest": digest, "csrf_token": stolen}
        ).status_code
        == 403
    )
    assert approval_of(console_runtime, action_id).status == "pending"


# The inbox


def test_the_inbox_lists_a_pending_request_for_an_approver_but_not_for_the_person_it_is_made_for(
    console_client: Clients, http_agent: str, console_runtime: Runtime
) -> None:
    action_id = submit_http_delete(console_runtime, http_agent, on_behalf_of="user:oncall@example.com")
    approval = approval_of(console_runtime, action_id)
    lead = signed_in(console_client(), "lead@example.com")
    assert f'id="inbox-{approval.id}"' in page_of(lead, "/console")
    assert f'id="inbox-{approval.id}"' in page_of(lead, "/console/inbox/items")
    oncall = signed_in(console_client(), "oncall@example.com")
    assert approval.id not in page_of(oncall, "/console")
    # Nor for someone policy does not let approve HTTP calls.
    nobody = signed_in(console_client(), "nobody@example.com")
    assert approval.id not in page_of(nobody, "/console")


def test_the_inbox_lists_oldest_first_with_time_left_and_quorum_progress(
    console_client: Clients, http_agent: str, console_runtime: Runtime
) -> None:
    first = approval_of(console_runtime, submit_http_delete(console_runtime, http_agent, "/items/1"))
    second = approval_of(console_runtime, submit_http_delete(console_runtime, http_agent, "/prod/items/2"))
    html = page_of(signed_in(console_client(), "sre@example.com"), "/console")
    assert html.index(first.id) < html.index(second.id)
    assert "0 of 2 approvals" in html and "0 of 1 approvals" in html
    assert re.search(r'<time data-countdown datetime="[^"]+">in \d+ (min|h)', html)
    assert 'hx-trigger="every 3s"' in html


def test_a_request_approved_by_me_waits_for_others_outside_my_list(
    console_client: Clients, http_agent: str, console_runtime: Runtime
) -> None:
    approval = approval_of(console_runtime, submit_http_delete(console_runtime, http_agent, "/prod/items/3"))
    client = signed_in(console_client(), "sre@example.com")
    token = hidden_field(page_of(client, f"/console/approvals/{approval.id}"), "csrf_token")
    client.post(f"/console/approvals/{approval.id}/approve", data={"csrf_token": token, "digest": approval.digest})
    items = page_of(client, "/console/inbox/items")
    assert "0 waiting for you" in items
    assert "You approved, waiting for others" in items and approval.id in items
    assert approval.id in page_of(signed_in(console_client(), "oncall@example.com"), "/console/inbox/items")


# The approval page and deciding


def test_the_approval_page_shows_the_http_request_rules_policy_version_and_digest(
    console_client: Clients, http_agent: str, console_runtime: Runtime
) -> None:
    approval = approval_of(console_runtime, submit_http_delete(console_runtime, http_agent))
    html = page_of(signed_in(console_client(), "oncall@example.com"), f"/console/approvals/{approval.id}")
    assert "DELETE http://127.0.0.1:9/items/1" in html
    assert "deployer" in html and "remove a stale test item" in html
    assert approval.policy_version in html and approval.digest in html
    assert "p, role:http-writer, http:127.0.0.1:*/**, delete, approve" in html
    assert hidden_field(html, "digest") == approval.digest


def test_the_inbox_says_in_one_line_what_each_call_would_do(
    console_client: Clients, http_agent: str, console_runtime: Runtime
) -> None:
    submit_http_delete(console_runtime, http_agent, "/items/7")
    assert "DELETE http://127.0.0.1:9/items/7" in page_of(signed_in(console_client(), "oncall@example.com"), "/console")


def test_the_approval_page_shows_a_commands_argv_and_its_dry_run_output(
    policy_dir: Path, make_runtime: Callable[..., Runtime], console_people: object, console_client: Clients
) -> None:
    runtime = make_runtime(
        RecordingDispatcher(),
        sandbox_secrets={"kubeconfig": SecretStr(KUBECONFIG)},
        sandbox_destinations={
            name: {"host": f"{name}.cluster.test", "port": 6443} for name in ("staging", "production")
        },
    )
    key = make_agent(runtime.db, "janitor", ["k8s-operator"])
    with runtime.db.session() as session:
        agent = authenticate(session, key)
    assert agent is not None
    envelope = parse_envelope(
        {"tool": "k8s.delete_namespace", "args": {"cluster": "staging", "name": "feature-42"}, "reason": "unused"}
    )
    answer = submit(runtime, agent, envelope, "k8s-1", {"method": "POST", "path": "/v1/actions"})
    assert answer.action_id is not None
    approval = approval_of(runtime, answer.action_id)
    assert approval.preview is not None and "dry_run" in approval.preview
    client = TestClient(create_app(runtime=runtime), base_url="https://testserver", follow_redirects=False)
    with client:
        html = page_of(signed_in(client, "lead@example.com"), f"/console/approvals/{approval.id}")
    text = html_unescape(html)
    assert f'<pre id="command-argv">{json.dumps(approval.preview["argv"])}</pre>' in text
    # The dry run ran at submission (kubectl against a cluster that is not there): its output as recorded.
    dry_run = approval.preview["dry_run"]
    assert json.dumps(dry_run["argv"]) in text and f"exit code {dry_run['exit_code']}" in text
    assert dry_run["stderr"].strip() and dry_run["stderr"].strip() in text


def test_the_approval_page_shows_the_email_in_a_sandboxed_frame_with_its_text_and_headers(
    console_client: Clients, mail_agent: str, console_runtime: Runtime
) -> None:
    html_part = (
        '<h1 style="color:#c00">Big news</h1><img src="https://tracker.example/pixel.gif"><script>alert(1)</script>'
    )
    approval = approval_of(console_runtime, submit_bulk_mail(console_runtime, mail_agent, html_part, "Plain news.\n"))
    client = signed_in(console_client(), "lead@example.com")
    page = page_of(client, f"/console/approvals/{approval.id}")
    assert f'<iframe class="email-frame" sandbox src="/console/approvals/{approval.id}/email"' in page
    assert "allow-scripts" not in page and "allow-same-origin" not in page
    # The message's markup appears on the page only as escaped source text, never as markup.
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Plain news." in page
    assert "News &lt;news@agents.mail.example.com&gt;" in page and "This week&#39;s news" in page
    frame = client.get(f"/console/approvals/{approval.id}/email")
    assert frame.status_code == 200 and frame.text == html_part
    policy = frame.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "sandbox" in policy and "img-src data:" in policy
    assert "script-src" not in policy and "https:" not in policy
    assert "frame-ancestors 'self'" in policy


def test_approving_with_the_digest_shown_queues_the_call(
    console_client: Clients, http_agent: str, console_runtime: Runtime
) -> None:
    approval = approval_of(console_runtime, submit_http_delete(console_runtime, http_agent))
    client = signed_in(console_client(), "oncall@example.com")
    page = page_of(client, f"/console/approvals/{approval.id}")
    answer = client.post(
        f"/console/approvals/{approval.id}/approve",
        data={"csrf_token": hidden_field(page, "csrf_token"), "digest": hidden_field(page, "digest")},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/console/approvals/{approval.id}?outcome=approved"
    assert "the call is queued" in page_of(client, answer.headers["location"])
    after = approval_of(console_runtime, approval.id)
    assert after.status == "approved" and after.decided_by == "user:oncall@example.com"
    assert after.decisions[0].via == "console"
    assert "approval.approved_by" in event_types(console_runtime, approval.action_id)


def test_denying_needs_a_reason_and_the_reason_reaches_the_agent(
    console_client: Clients, http_agent: str, console_runtime: Runtime
) -> None:
    approval = approval_of(console_runtime, submit_http_delete(console_runtime, http_agent))
    client = signed_in(console_client(), "oncall@example.com")
    page = page_of(client, f"/console/approvals/{approval.id}")
    form = {"csrf_token": hidden_field(page, "csrf_token"), "digest": approval.digest}
    refused = client.post(f"/console/approvals/{approval.id}/deny", data={**form, "reason": "  "})
    assert refused.status_code == 422 and "a denial needs a reason" in refused.text
    answer = client.post(f"/console/approvals/{approval.id}/deny", data={**form, "reason": "not this week"})
    assert answer.status_code == 303
    with console_runtime.db.session() as session:
        action = session.get(Action, approval.action_id)
        assert action is not None
        assert action.status == "rejected"
        assert action.problem is not None and "not this week" in action.problem["detail"]


def test_a_stale_digest_is_refused_with_a_message_and_nothing_is_decided(
    console_client: Clients, http_agent: str, console_runtime: Runtime
) -> None:
    approval = approval_of(console_runtime, submit_http_delete(console_runtime, http_agent))
    client = signed_in(console_client(), "oncall@example.com")
    token = hidden_field(page_of(client, f"/console/approvals/{approval.id}"), "csrf_token")
    answer = client.post(f"/console/approvals/{approval.id}/approve", data={"csrf_token": token, "digest": "0" * 64})
    assert answer.status_code == 409
    assert "This page was out of date; nothing was decided." in answer.text
    assert "digest differs" in answer.text
    assert approval_of(console_runtime, approval.id).status == "pending"


def test_the_person_acted_for_gets_the_services_refusal_instead_of_an_approve_button(
    console_client: Clients, http_agent: str, console_runtime: Runtime
) -> None:
    approval = approval_of(
        console_runtime, submit_http_delete(console_runtime, http_agent, on_behalf_of="user:oncall@example.com")
    )
    client = signed_in(console_client(), "oncall@example.com")
    page = page_of(client, f"/console/approvals/{approval.id}")
    assert 'id="approve-form"' not in page
    assert "is the person this call is made for" in page
    # Posting anyway is refused by the service, with its message.
    answer = client.post(
        f"/console/approvals/{approval.id}/approve",
        data={"csrf_token": hidden_field(page, "csrf_token"), "digest": approval.digest},
    )
    assert answer.status_code == 403 and "is the person this call is made for" in answer.text
    assert approval_of(console_runtime, approval.id).status == "pending"


def test_an_expired_request_is_shown_as_expired_and_cannot_be_decided(
    console_client: Clients, http_agent: str, console_runtime: Runtime
) -> None:
    action_id = submit_http_delete(console_runtime, http_agent)
    approval = approval_of(console_runtime, action_id)
    client = signed_in(console_client(), "oncall@example.com")
    token = hidden_field(page_of(client, f"/console/approvals/{approval.id}"), "csrf_token")
    force_expiry(console_runtime, action_id)
    page = page_of(client, f"/console/approvals/{approval.id}")
    assert "expired at" in page and 'id="approve-form"' not in page
    assert approval.id not in page_of(client, "/console/inbox/items")
    answer = client.post(
        f"/console/approvals/{approval.id}/approve", data={"csrf_token": token, "digest": approval.digest}
    )
    assert answer.status_code == 409 and "expired" in answer.text
    assert approval_of(console_runtime, approval.id).status == "expired"


def test_an_unknown_request_is_a_404_page(console_client: Clients) -> None:
    answer = signed_in(console_client(), "oncall@example.com").get("/console/approvals/apr_nope")
    assert answer.status_code == 404
    assert "No such approval request" in answer.text


@pytest.mark.parametrize(
    "body",
    [b"csrf_token=%ff%fe", b"\xff\xfe=1", b"a=%00"],
)
def test_unreadable_forms_are_refused_not_crashed(console_client: Clients, body: bytes) -> None:
    client = signed_in(console_client(), "oncall@example.com")
    answer = client.post(
        "/console/approvals/apr_x/approve", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert answer.status_code == 400


# Behind an authenticating proxy


def proxy_client(runtime: Runtime, peer: str) -> TestClient:
    return TestClient(
        create_app(runtime=runtime), base_url="https://testserver", follow_redirects=False, client=(peer, 40000)
    )


def test_a_trusted_proxys_identity_header_signs_the_person_in(
    make_runtime: Callable[..., Runtime], console_people: object
) -> None:
    runtime = make_runtime(RecordingDispatcher(), console_trusted_proxies=["10.0.0.0/24"])
    with proxy_client(runtime, "10.0.0.5") as client:
        client.headers["X-Forwarded-Email"] = "Oncall@Example.com"
        first = client.get("/console")
        assert first.status_code == 303
        signed = client.get(first.headers["location"])
        assert signed.status_code == 303 and signed.headers["location"] == "/console"
        assert "oncall@example.com" in page_of(client, "/console")


def test_the_identity_header_from_anyone_else_is_refused_with_the_users_service_message(
    make_runtime: Callable[..., Runtime], console_people: object
) -> None:
    runtime = make_runtime(RecordingDispatcher(), console_trusted_proxies=["10.0.0.0/24"])
    with proxy_client(runtime, "192.0.2.7") as client:
        answer = client.get("/console/sign-in", headers={"X-Forwarded-Email": "oncall@example.com"})
        assert answer.status_code == 403
        assert "which is not a trusted proxy; it was ignored" in answer.text
        assert "outbox_console_session" not in answer.headers.get("set-cookie", "")
        assert client.get("/console").status_code == 303
