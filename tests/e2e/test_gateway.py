"""The gateway as callers and people meet it: ``approvals dev`` as a process, the HTTP API with
API keys, the web inbox with sessions and CSRF tokens, sign-in links, the review queue, and a
schema-driven run of the whole API (schemathesis) that must find no server error."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate

from tests.e2e.devserver import APPROVALS, EXAMPLE, Dev, free_port
from tests.integration.test_delivery import Mailbox

if TYPE_CHECKING:
    from collections.abc import Iterator

AGENT = "service:agent"
LIVE = {"kind": "crm_write", "mode": "live", "destination": "hubspot:list/42",
        "scope": {"table": "contacts", "row_count": 40}}  # fmt: skip


@dataclass
class Gateway:
    dev: Dev
    base: str
    data: Path
    mailbox: Mailbox

    def cli(self, *args: str, workspace: str = "default", env: dict[str, str] | None = None) -> Any:
        done = subprocess.run(
            [APPROVALS, "--nats-url", self.dev.url, "-w", workspace, "--json", *args],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert done.returncode == 0, (done.stdout, done.stderr)
        return json.loads(done.stdout)

    def doors(self, approval_id: str) -> dict[str, dict[str, Any] | None]:
        """Each event type of an approval's history (from the store) and the door it came by."""
        env = {**os.environ, "APPROVALS_SQLITE_PATH": str(self.data / "approvals.db")}
        story = self.cli("audit", "history", approval_id, env=env)
        return {entry["type"]: entry["via"] for entry in story["entries"]}

    def key(self, actor: str, workspace: str = "default") -> dict[str, str]:
        created = self.cli("keys", "create", "--as", actor, "--by", "user:admin",
                           workspace=workspace)  # fmt: skip
        return {"Authorization": f"Bearer {created['key']}"}

    def api(self, workspace: str = "default") -> str:
        return f"{self.base}/v1/workspaces/{workspace}/approvals"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("gateway")
    port = free_port()
    mailbox = Mailbox()
    env = {"APPROVALS_GATEWAY_PORT": str(port), "APPROVALS_GATEWAY_CACHE_S": "0.2",
           "APPROVALS_TRUSTED_HEADER": "X-Forwarded-User",
           "APPROVALS_TRUSTED_PROXIES": "127.0.0.1/32", "APPROVALS_SMTP_HOST": "127.0.0.1",
           "APPROVALS_SMTP_PORT": str(mailbox.port)}  # fmt: skip
    dev = Dev(root / "data", free_port(), root / "dev.log", env=env)
    try:
        dev.wait_for_line("ready")
        found = Gateway(dev, f"http://127.0.0.1:{port}", root / "data", mailbox)
        found.cli("workspace", "apply", EXAMPLE, "--as", "user:admin", workspace="acme")
        yield found
    finally:
        dev.kill()
        mailbox.controller.stop()


def ask(gateway: Gateway, headers: dict[str, str], **changes: Any) -> dict[str, Any]:
    body = {"requested_by": AGENT, "skill_name": "crm-sync", "skill_execution_id": "e",
            "title": "Sync 40 contacts", "summary": "to HubSpot", "risk_level": "medium",
            "action": LIVE, "proposed_payload": {"contacts": 40}, **changes}  # fmt: skip
    reply = httpx.post(gateway.api(), json=body, headers=headers, timeout=30)
    assert reply.status_code == 201, reply.text
    return reply.json()["approval"]  # type: ignore[no-any-return]


def error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["ok"] is False
    assert body["error"]["code"] == code, body
    return body["error"]  # type: ignore[no-any-return]


# -- the HTTP API ------------------------------------------------------------------------------


def test_the_api_carries_the_whole_flow(gateway: Gateway) -> None:
    agent, ana = gateway.key(AGENT), gateway.key("user:ana")
    approval = ask(gateway, agent, skill_execution_id="flow")
    assert approval["web_url"] == f"{gateway.base}/workspaces/default/approvals/{approval['id']}"
    url = f"{gateway.api()}/{approval['id']}"
    got = httpx.get(url, headers=agent, timeout=30)
    assert (got.status_code, got.json()["approval"]["status"]) == (200, "pending")
    listed = httpx.get(gateway.api(), params={"skill_name": "crm-sync"}, headers=agent, timeout=30)
    assert approval["id"] in [item["id"] for item in listed.json()["items"]]
    # Check: the approver is the key's member, and the digest binds what was shown.
    error(httpx.post(f"{url}/approve", json={"digest": "0" * 64}, headers=ana, timeout=30),
          409, "digest_mismatch")  # fmt: skip
    approved = httpx.post(f"{url}/approve", json={"digest": approval["digest"], "reason": "ok"},
                          headers=ana, timeout=30)  # fmt: skip
    assert (approved.status_code, approved.json()["outcome"]) == (200, "approved")
    assert approved.json()["approval"]["decided_by"] == "user:ana"
    waited = httpx.get(f"{url}/wait", params={"timeout_s": 10}, headers=agent, timeout=30)
    assert waited.json()["approval"]["status"] == "approved"
    redeemed = httpx.post(f"{url}/redeem", json={"digest": approval["digest"]}, headers=agent,
                          timeout=30)  # fmt: skip
    assert redeemed.json()["outcome"] == "redeemed"
    error(httpx.post(f"{url}/redeem", json={"digest": approval["digest"]}, headers=agent,
                     timeout=30), 409, "already_redeemed")  # fmt: skip
    reported = httpx.post(f"{url}/report", headers=agent, timeout=30,
                          json={"credits_used": 0, "outcome": "succeeded"})  # fmt: skip
    assert reported.json()["outcome"] == "run_reported"
    history = httpx.get(f"{url}/history", headers=agent, timeout=30).json()["timeline"]
    assert [e["type"] for e in history][-3:] == ["approved", "redeemed", "run_reported"]
    # The audit trail names the door and the key each step came by.
    agent_key, ana_key = (h["Authorization"].split("_")[1].split(".")[0] for h in (agent, ana))
    doors = gateway.doors(approval["id"])
    for step, key in (("requested", agent_key), ("approved", ana_key), ("redeemed", agent_key),
                      ("run_reported", agent_key)):  # fmt: skip
        assert doors[step] == {"channel": "api", "auth": "api_key", "ref": key}, step
    # Check: a rejection that asks for a new request reaches the requester with its reason.
    other = ask(gateway, agent, skill_execution_id="flow-rejected")
    url = f"{gateway.api()}/{other['id']}"
    rejected = httpx.post(f"{url}/reject", json={"reason": "wrong list", "rerun": True},
                          headers=ana, timeout=30)  # fmt: skip
    assert rejected.json()["outcome"] == "rejected", rejected.text
    rejection = ("rejected", "wrong list", True)
    waited = httpx.get(f"{url}/wait", params={"timeout_s": 10}, headers=agent, timeout=30)
    got = httpx.get(url, headers=agent, timeout=30)
    listed = httpx.get(gateway.api(), params={"status": "rejected"}, headers=agent, timeout=30)
    found = [i for i in listed.json()["items"] if i["id"] == other["id"]]
    for approval in (rejected.json()["approval"], waited.json()["approval"],
                     got.json()["approval"], *found):  # fmt: skip
        assert (approval["status"], approval["reason"], approval["rerun"]) == rejection
    assert len(found) == 1
    # Check: an answer instead of a decision reaches the requester the same way, never runs.
    asked = ask(gateway, agent, skill_execution_id="flow-answered")
    url = f"{gateway.api()}/{asked['id']}"
    error(httpx.post(f"{url}/respond", json={"message": ""}, headers=ana, timeout=30),
          400, "invalid")  # fmt: skip
    error(httpx.post(f"{url}/respond", json={"message": "mine"}, headers=agent, timeout=30),
          403, "forbidden")  # fmt: skip
    answered = httpx.post(f"{url}/respond", json={"message": "Which list?"}, headers=ana,
                          timeout=30)  # fmt: skip
    assert (answered.status_code, answered.json()["outcome"]) == (200, "responded"), answered.text
    waited = httpx.get(f"{url}/wait", params={"timeout_s": 10}, headers=agent, timeout=30)
    got = httpx.get(url, headers=agent, timeout=30)
    for approval in (
        answered.json()["approval"],
        waited.json()["approval"],
        got.json()["approval"],
    ):
        assert (approval["status"], approval["reason"], approval["decided_by"]) == (
            "responded", "Which list?", "user:ana",
        )  # fmt: skip
    error(httpx.post(f"{url}/redeem", json={"digest": asked["digest"]}, headers=agent,
                     timeout=30), 409, "not_approved")  # fmt: skip


def test_the_api_refuses_bad_callers_and_bad_input_with_the_error_shape(gateway: Gateway) -> None:
    agent = gateway.key(AGENT)
    error(httpx.get(gateway.api(), timeout=30), 401, "unauthorized")
    forged = {"Authorization": agent["Authorization"][:-4] + "AAAA"}
    error(httpx.get(gateway.api(), headers=forged, timeout=30), 401, "unauthorized")
    # Check: a key of another workspace opens nothing here, and its approvals are not found.
    acme = gateway.key(AGENT, workspace="acme")
    error(httpx.get(gateway.api(), headers=acme, timeout=30), 401, "unauthorized")
    theirs = httpx.post(gateway.api("acme"), headers=acme, timeout=30, json={
        "requested_by": AGENT, "skill_name": "s", "skill_execution_id": "x", "title": "t",
        "summary": "", "risk_level": "low", "action": LIVE})  # fmt: skip
    assert theirs.status_code == 201, theirs.text
    error(httpx.get(f"{gateway.api()}/{theirs.json()['approval']['id']}", headers=agent,
                    timeout=30), 404, "not_found")  # fmt: skip
    # Check: malformed JSON, wrong types, too large, someone else as requester.
    error(httpx.post(gateway.api(), content=b"{bad", headers=agent, timeout=30), 400, "invalid")
    error(httpx.post(gateway.api(), json={"title": 5}, headers=agent, timeout=30), 400, "invalid")
    huge = {"requested_by": AGENT, "proposed_payload": "x" * 300_000}
    error(httpx.post(gateway.api(), json=huge, headers=agent, timeout=30), 413, "too_large")
    someone_else = {"requested_by": "service:other", "skill_name": "s", "skill_execution_id": "x",
                    "title": "t", "summary": "", "risk_level": "low", "action": LIVE}  # fmt: skip
    error(httpx.post(gateway.api(), headers=agent, timeout=30, json=someone_else),
          403, "forbidden")  # fmt: skip
    # Check: a decision is never a GET.
    approval = ask(gateway, agent, skill_execution_id="get-is-not-a-decision")
    error(httpx.get(f"{gateway.api()}/{approval['id']}/approve", headers=gateway.key("user:ana"),
                    timeout=30), 405, "invalid")  # fmt: skip
    # Check: a revoked key stops working.
    key_id = agent["Authorization"].split("apk_")[1].split(".")[0]
    gateway.cli("keys", "revoke", key_id, "--by", "user:admin")

    def refused() -> bool:
        return httpx.get(gateway.api(), headers=agent, timeout=30).status_code == 401

    wait_until(refused)


def wait_until(check: Any, within_s: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.05)  # between polls of a condition


def test_the_openapi_document_validates(gateway: Gateway) -> None:
    document = httpx.get(f"{gateway.base}/openapi.json", timeout=30).json()
    validate(document)
    assert "/v1/workspaces/{workspace}/approvals/{approval_id}/approve" in document["paths"]
    # The copy docs/http-api.md renders is the served one (tests/unit/test_docs.py rewrites it).
    documented = Path(__file__).parents[2] / "docs" / "openapi.json"
    assert document == json.loads(documented.read_text(encoding="utf-8"))


@pytest.mark.timeout(600)
def test_schemathesis_finds_no_server_error(gateway: Gateway) -> None:
    agent = gateway.key(AGENT)
    schema = schemathesis.openapi.from_url(f"{gateway.base}/openapi.json")
    failures: list[str] = []
    calls: list[int] = []
    operations = 0
    for result in schema.get_all_operations():
        operations += 1
        operation = result.ok()

        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            case.path_parameters = {**(case.path_parameters or {}), "workspace": "default"}
            response = case.call(base_url=gateway.base, headers=agent, timeout=30)
            calls.append(response.status_code)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} "
                                f"{response.text[:200]}")  # fmt: skip

        run()
    assert failures == []
    assert operations >= 11
    assert len(calls) >= 5 * operations  # it really called the API, operation by operation


# -- the web inbox -----------------------------------------------------------------------------


def signed_in(gateway: Gateway, member: str) -> httpx.Client:
    browser = httpx.Client(base_url=gateway.base, timeout=30, follow_redirects=False)
    page = browser.get("/sign-in")
    token = csrf_token(page.text)
    done = browser.post("/sign-in/dev", data={"member": member, "_csrf_token": token})
    assert done.status_code == 303, done.text
    return browser


def csrf_token(html: str) -> str:
    found = re.search(r'name="_csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def test_a_person_decides_in_the_inbox_and_forgeries_are_refused(gateway: Gateway) -> None:
    approval = ask(gateway, gateway.key(AGENT), skill_execution_id="web", title="Web decision")
    page_url = f"/workspaces/default/approvals/{approval['id']}"
    # Check: nobody signed in sees nothing but the sign-in page; a forged session is nobody.
    anonymous = httpx.Client(base_url=gateway.base, timeout=30)
    assert anonymous.get(page_url, follow_redirects=False).status_code == 302
    anonymous.cookies.set("approvals_session", "forged-cookie-value")
    assert anonymous.get(page_url, follow_redirects=False).status_code == 302
    ana = signed_in(gateway, "user:ana")
    inbox = ana.get("/workspaces/default/approvals")
    assert inbox.status_code == 200
    assert "Web decision" in inbox.text
    detail = ana.get(page_url)
    for field in ("Scope", "contacts", "40</strong> rows", "Provider or integration", "crm write",
                  "Mode", "live", "Credit ceiling", "Preview", "Destination", "hubspot:list/42",
                  "Proposed payload", approval["digest"]):  # fmt: skip
        assert field in detail.text, field
    # Check: no CSRF token, no decision; a GET decides nothing.
    no_token = ana.post(f"{page_url}/approve", data={"digest": approval["digest"]})
    assert no_token.status_code == 403
    assert ana.get(f"{page_url}/approve").status_code == 405
    # Check: another workspace's pages are refused to a non-member.
    outsider = signed_in(gateway, "user:stranger")
    assert outsider.get(page_url).status_code == 403
    assert outsider.get("/workspaces/acme/approvals").status_code == 403
    # Check: with the page's token, the approval goes through, as the signed-in person.
    token = csrf_token(detail.text)
    decided = ana.post(f"{page_url}/approve",
                       data={"digest": approval["digest"], "reason": "looks right",
                             "_csrf_token": token})  # fmt: skip
    assert decided.status_code == 303
    after = ana.get(decided.headers["location"])
    assert 'id="status">approved' in after.text
    assert "user:ana" in after.text
    assert "looks right" in after.text
    assert gateway.doors(approval["id"])["approved"] == {
        "channel": "web",
        "auth": "session",
        "ref": "dev",
    }


def test_a_one_time_link_signs_in_once_and_never_on_a_get(gateway: Gateway) -> None:
    secret = (gateway.data / "gateway-secret").read_text().strip()
    env = {"APPROVALS_GATEWAY_SECRET": secret, "APPROVALS_WEB_URL": gateway.base,
           "PATH": "/usr/bin:/bin"}  # fmt: skip
    done = subprocess.run([APPROVALS, "web", "link", "--member", "user:ana"], env=env,
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    link = done.stdout.strip()
    assert link.startswith(f"{gateway.base}/sign-in/link?token=")
    browser = httpx.Client(timeout=30, follow_redirects=False)
    shown = browser.get(link)
    assert "signs you in as <strong>user:ana</strong>" in shown.text
    # Check: the GET signed nobody in.
    assert browser.get(f"{gateway.base}/workspaces/default/approvals").status_code == 302
    token = link.split("token=")[1]
    used = browser.post(f"{gateway.base}/sign-in/link",
                        data={"token": token, "_csrf_token": csrf_token(shown.text)})  # fmt: skip
    assert used.status_code == 303
    assert browser.get(f"{gateway.base}/workspaces/default/approvals").status_code == 200
    again = httpx.Client(timeout=30, follow_redirects=False)
    page = again.get(link)
    reused = again.post(f"{gateway.base}/sign-in/link",
                        data={"token": token, "_csrf_token": csrf_token(page.text)})  # fmt: skip
    assert reused.status_code == 403
    assert "used already" in reused.text
    tampered = again.get(link[:-3] + "abc")
    assert "not issued here" in tampered.text


def test_an_email_link_decides_only_signed_in_by_post_once(gateway: Gateway) -> None:
    # A critical request goes to the inbox, Slack (no adapter here: recorded as failed) and email.
    approval = ask(gateway, gateway.key(AGENT), skill_execution_id="mail", title="Mail me",
                   risk_level="critical")  # fmt: skip

    def mailed() -> list[Any]:
        return [m for m in gateway.mailbox.messages if "Mail me" in str(m["Subject"])]

    wait_until(lambda: len(mailed()) == 1)
    [mail] = mailed()
    text = next(p.get_payload(decode=True).decode() for p in mail.walk()
                if p.get_content_type() == "text/plain")  # fmt: skip
    reject_link = re.search(r"Reject: (\S+)", text)
    assert reject_link, text
    link = reject_link.group(1)
    assert link.startswith(f"{approval['web_url']}/confirm?token=")
    # Check: a scanner following the link, or posting it, decides nothing.
    scanner = httpx.Client(timeout=30, follow_redirects=False)
    assert scanner.get(link).status_code == 302  # to the sign-in page
    token = link.split("token=")[1]
    posted = scanner.post(link.split("?")[0], data={"token": token})
    assert posted.status_code == 403  # no CSRF token, no session
    # Check: a signed-in approver confirms with a POST; the request is rejected, by them.
    bob = signed_in(gateway, "user:bob")
    page = bob.get(link.removeprefix(gateway.base))
    assert "Confirm that you, <strong>user:bob</strong>, <strong>reject</strong>" in page.text
    done = bob.post(link.removeprefix(gateway.base).split("?")[0],
                    data={"token": token, "reason": "not now",
                          "_csrf_token": csrf_token(page.text)})  # fmt: skip
    assert done.status_code == 303
    after = bob.get(done.headers["location"])
    assert 'id="status">rejected' in after.text
    assert "not now" in after.text
    assert gateway.doors(approval["id"])["rejected"] == {
        "channel": "email",
        "auth": "email_link",
        "ref": "dev",
    }
    # Check: the link works once.
    again = bob.post(link.removeprefix(gateway.base).split("?")[0],
                     data={"token": token, "_csrf_token": csrf_token(page.text)})  # fmt: skip
    assert "used already" in bob.get(again.headers["location"]).text


def test_a_trusted_proxy_header_names_the_person(gateway: Gateway) -> None:
    via_proxy = httpx.get(f"{gateway.base}/workspaces/default/approvals",
                          headers={"X-Forwarded-User": "ana"}, timeout=30)  # fmt: skip
    assert via_proxy.status_code == 200
    assert "user:ana" in via_proxy.text


def test_two_reviewers_are_handed_different_reviews(gateway: Gateway) -> None:
    agent = gateway.key(AGENT)
    first = ask(gateway, agent, skill_name="outreach", skill_execution_id="r1", title="Email 1")
    second = ask(gateway, agent, skill_name="outreach", skill_execution_id="r2", title="Email 2")
    ana = gateway.cli("reviews", "next", "--as", "user:ana", "--skill", "outreach")["review"]
    bob = gateway.cli("reviews", "next", "--as", "user:bob", "--skill", "outreach")["review"]
    assert {ana["id"], bob["id"]} == {first["id"], second["id"]}
    # Check: asking again hands the same one back to the same reviewer.
    assert gateway.cli("reviews", "next", "--as", "user:ana", "--skill", "outreach")["review"][
        "id"] == ana["id"]  # fmt: skip
    accepted = gateway.cli("reviews", "accept", ana["id"], "--as", "user:ana")
    assert accepted["outcome"] == "approved"
    rejected = gateway.cli("reviews", "reject", bob["id"], "--as", "user:bob", "--auto-rerun",
                           "--reason", "too pushy")  # fmt: skip
    assert rejected["outcome"] == "rejected"
    history = httpx.get(f"{gateway.api()}/{bob['id']}/history", headers=agent, timeout=30)
    assert history.json()["timeline"][-1]["event"]["rerun"] is True


# -- a real browser --------------------------------------------------------------------------

SCREENSHOTS = Path(__file__).parents[2] / "docs" / "screenshots"


def browser_sign_in(page: Any, base: str, member: str) -> None:
    page.goto(f"{base}/sign-in")
    page.fill("#member", member)
    page.click("#dev-sign-in")
    page.wait_for_url(f"{base}/")


def test_sign_in_returns_to_the_page_asked_for_and_never_to_another_site(gateway: Gateway) -> None:
    browser = httpx.Client(base_url=gateway.base, timeout=30, follow_redirects=False)
    asked = browser.get("/workspaces/default/approvals")
    assert asked.headers["location"] == "/sign-in?next=%2Fworkspaces%2Fdefault%2Fapprovals"
    page = browser.get(asked.headers["location"])
    form = {"member": "user:ana", "_csrf_token": csrf_token(page.text)}
    done = browser.post("/sign-in/dev", data={**form, "next": "/workspaces/default/approvals"})
    assert done.headers["location"] == "/workspaces/default/approvals"
    evil = browser.post("/sign-in/dev", data={**form, "next": "//evil.example/x"})
    assert evil.headers["location"] == "/"


@pytest.mark.timeout(300)
def test_a_person_approves_in_chromium_and_another_browser_sees_it_live(gateway: Gateway) -> None:
    from playwright.sync_api import expect, sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium package is not installed (see README, set-up)"
    agent = gateway.key(AGENT)
    first = ask(gateway, agent, skill_execution_id="browser-1", title="Enrich 40 contacts",
                action={**LIVE, "kind": "provider_call", "provider": "clearbit",
                        "max_credits": 120, "preview": {"c-1": {"title": "CTO"}}})  # fmt: skip
    second = ask(gateway, agent, skill_execution_id="browser-2", title="Sync 12 contacts")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            ana = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
            browser_sign_in(ana, gateway.base, "user:ana")
            ana.click("text=default")
            # Check: the inbox lists the pending request; its page shows every review field.
            expect(ana.locator("#approvals")).to_contain_text("Enrich 40 contacts")
            ana.screenshot(path=str(SCREENSHOTS / "inbox.png"), full_page=True)
            ana.click("text=Enrich 40 contacts")
            expect(ana.locator("#status")).to_have_text("pending")
            expect(ana.locator("#scope")).to_contain_text("contacts")
            expect(ana.locator("#scope")).to_contain_text("40 rows")
            expect(ana.locator("#provider")).to_contain_text("clearbit")
            expect(ana.locator("#mode")).to_have_text("live")
            expect(ana.locator("#ceiling")).to_contain_text("120 credits")
            expect(ana.locator("#budget")).to_contain_text("of 10000 committed")
            expect(ana.locator("#preview")).to_contain_text("CTO")
            expect(ana.locator("#destination")).to_have_text("hubspot:list/42")
            expect(ana.locator("#payload")).to_contain_text('"contacts": 40')
            ana.screenshot(path=str(SCREENSHOTS / "detail.png"), full_page=True)
            phone = browser.new_context(viewport={"width": 390, "height": 844},
                                        is_mobile=True).new_page()  # fmt: skip
            browser_sign_in(phone, gateway.base, "user:ana")
            phone.goto(ana.url)
            expect(phone.locator("#approve")).to_be_visible()
            phone.screenshot(path=str(SCREENSHOTS / "detail-phone.png"), full_page=True)
            # Check: she approves with a reason and sees it decided, by her, and why.
            ana.fill("#approve-reason", "preview looks right")
            ana.click("#approve")
            expect(ana.locator("#status")).to_have_text("approved")
            expect(ana.locator("#outcome")).to_contain_text("user:ana")
            expect(ana.locator("#outcome")).to_contain_text("preview looks right")
            # Check: the budget as it was at request is labelled so; the budget now holds the
            # 120 credits her approval reserved.
            expect(ana.locator("#budget")).to_contain_text("at request: 0 of 10000 committed")
            expect(ana.locator("#budget-now")).to_contain_text("now: 120 of 10000 committed")

            # Check: bob decides the second one in his browser; ana's open page follows live.
            ana.goto(f"{gateway.base}/workspaces/default/approvals/{second['id']}")
            expect(ana.locator("#status")).to_have_text("pending")
            bob = browser.new_context().new_page()
            browser_sign_in(bob, gateway.base, "user:bob")
            bob.goto(f"{gateway.base}/workspaces/default/approvals/{second['id']}")
            bob.fill("#reject-reason", "wrong list")
            bob.check("input[name=rerun]")
            bob.click("#reject")
            expect(bob.locator("#status")).to_have_text("rejected")
            expect(ana.locator("#status")).to_have_text("rejected", timeout=15_000)
            expect(ana.locator("#outcome")).to_contain_text("wrong list")
            # Check: the page says why, and that bob asked for a new request.
            for page in (ana, bob):
                expect(page.locator("#reason")).to_have_text("wrong list")
                expect(page.locator("#rerun")).to_contain_text("asked for a new request")
        finally:
            browser.close()
    assert first["id"] != second["id"]


def test_the_inbox_groups_near_identical_pending_requests_into_one_row(gateway: Gateway) -> None:
    agent = gateway.key(AGENT)
    same = {**LIVE, "destination": "hubspot:list/grouped"}
    alike = [ask(gateway, agent, skill_execution_id=f"g{i}", title=f"Grouped {i}", action=same)
             for i in range(3)]  # fmt: skip
    elsewhere = ask(gateway, agent, skill_execution_id="g-other", title="Grouped elsewhere",
                    action={**same, "destination": "hubspot:list/other"})  # fmt: skip
    ana = signed_in(gateway, "user:ana")
    # ``seen`` waits for the view to hold the last request (it follows the store in order).
    page = ana.get("/workspaces/default/approvals", params={"seen": f"{elsewhere['id']}:1"}).text
    # Check: the three alike are one group row with their count, opening onto each of them,
    # each still linking to its own page (where it is decided on its own digest).
    groups = re.findall(r'<tr class="group" data-group-size="(\d+)">(.*?)</details>', page, re.S)
    mine = [(size, body) for size, body in groups if "hubspot:list/grouped" in body]
    assert len(mine) == 1, groups
    size, body = mine[0]
    assert size == "3"
    assert "<summary>" in body
    assert "3 similar" in body
    for approval in alike:
        assert f'<tr data-id="{approval["id"]}">' in body
        assert f'href="/workspaces/default/approvals/{approval["id"]}"' in body
    # Check: another destination is another row, outside the group.
    assert elsewhere["id"] not in body
    assert f'<tr data-id="{elsewhere["id"]}">' in page
    # Check: a decided one leaves the group; the group row links to the requester's list.
    decided = gateway.cli("reject", alike[0]["id"], "--approver", "user:ana", "--reason", "dup")
    assert decided["outcome"] == "rejected"
    seen = f"{alike[0]['id']}:{decided['approval']['version']}"
    page = ana.get("/workspaces/default/approvals", params={"seen": seen}).text
    sizes = re.findall(r'data-group-size="(\d+)">(?:(?!</details>).)*hubspot:list/grouped', page,
                       re.S)  # fmt: skip
    assert sizes == ["2"]
    listed = ana.get("/workspaces/default/approvals",
                     params={"status": "pending", "requested_by": AGENT}).text  # fmt: skip
    assert alike[1]["id"] in listed
    assert "requested_by=service%3Aagent" in page


@pytest.mark.timeout(300)
def test_a_person_answers_in_chromium_instead_of_deciding(gateway: Gateway) -> None:
    from playwright.sync_api import expect, sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium package is not installed (see README, set-up)"
    agent = gateway.key(AGENT)
    asked = ask(gateway, agent, skill_execution_id="browser-answer", title="Sync 7 contacts")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            bob = browser.new_context().new_page()
            browser_sign_in(bob, gateway.base, "user:bob")
            bob.goto(f"{gateway.base}/workspaces/default/approvals/{asked['id']}")
            expect(bob.locator("#status")).to_have_text("pending")
            # Check: the Respond form sits beside Approve and Reject, and answers with a message.
            expect(bob.locator("#approve")).to_be_visible()
            bob.fill("#respond-message", "Which 7? The list has 12.")
            bob.click("#respond")
            expect(bob.locator("#status")).to_have_text("responded")
            expect(bob.locator("#reason")).to_have_text("Which 7? The list has 12.")
            expect(bob.locator("#outcome")).to_contain_text("user:bob")
            expect(bob.locator("#respond")).to_have_count(0)  # nothing left to decide
            expect(bob.locator("#timeline")).to_contain_text("Which 7? The list has 12.")
        finally:
            browser.close()
    got = httpx.get(f"{gateway.api()}/{asked['id']}", headers=agent, timeout=30).json()
    assert (got["approval"]["status"], got["approval"]["reason"]) == (
        "responded", "Which 7? The list has 12.",
    )  # fmt: skip
