"""Passkeys in a real browser: Chromium's virtual authenticator (the DevTools protocol's WebAuthn
domain: ctap2, internal, resident keys, user verification) registers a member's passkey in the
web inbox and signs a high-risk approval with it; the receipt verifies offline with the member's
public key from an export of the registered credentials; a second member completes a quorum of
two the same way; and the other doors are refused with ``passkey_required`` and the web page.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from approvals.services.runtime.settings import Settings
from approvals.services.runtime.signed_links import ConfirmTokens
from tests.e2e.devserver import APPROVALS, Dev, free_port
from tests.e2e.test_gateway import csrf_token

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

AGENT = "service:agent"
WORKSPACE = "team"
FILE = """
[members."user:admin"]
roles = ["admin"]
[members."user:ana"]
roles = ["approver"]
[members."user:bob"]
roles = ["approver"]
[members."user:carol"]
roles = ["approver"]
[members."service:agent"]
roles = ["requester"]
[quorum]
critical = 2
[passkeys]
require = ["high", "critical"]
"""
ACTION = {"kind": "crm_write", "mode": "live", "destination": "hubspot:list/42",
          "scope": {"table": "contacts", "row_count": 40}}  # fmt: skip


@dataclass
class Stack:
    dev: Dev
    base: str
    root: Path
    agent: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "APPROVALS_SQLITE_PATH": str(self.root / "data" / "approvals.db")}
        return subprocess.run(
            [APPROVALS, "--nats-url", self.dev.url, "-w", WORKSPACE, *args],
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip

    def cli(self, *args: str) -> Any:
        done = self.run("--json", *args)
        assert done.returncode == 0, (done.stdout, done.stderr)
        return json.loads(done.stdout)

    def ask(self, risk: str, title: str, action: dict[str, Any] = ACTION) -> dict[str, Any]:
        body = {"requested_by": AGENT, "skill_name": "crm-sync", "skill_execution_id": title,
                "title": title, "summary": "to HubSpot", "risk_level": risk,
                "action": action}  # fmt: skip
        reply = httpx.post(f"{self.base}/v1/workspaces/{WORKSPACE}/approvals", json=body,
                           headers=self.agent, timeout=30)  # fmt: skip
        assert reply.status_code == 201, reply.text
        return reply.json()["approval"]  # type: ignore[no-any-return]

    def approval(self, approval_id: str) -> dict[str, Any]:
        got = httpx.get(f"{self.base}/v1/workspaces/{WORKSPACE}/approvals/{approval_id}",
                        headers=self.agent, timeout=30)  # fmt: skip
        assert got.status_code == 200, got.text
        return got.json()["approval"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("passkeys")
    port = free_port()
    # WebAuthn needs a secure context and a domain for the relying party: http://localhost is
    # both (an IP address is not a valid RP ID).
    base = f"http://localhost:{port}"
    env = {"APPROVALS_GATEWAY_PORT": str(port), "APPROVALS_WEB_URL": base,
           "APPROVALS_GATEWAY_CACHE_S": "0.2"}  # fmt: skip
    dev = Dev(root / "data", free_port(), root / "dev.log", env=env)
    try:
        dev.wait_for_line("ready")
        found = Stack(dev, base, root, {})
        workspace_file = root / "team.toml"
        workspace_file.write_text(FILE)
        found.cli("workspace", "apply", str(workspace_file), "--as", "user:admin")
        created = found.cli("keys", "create", "--as", AGENT, "--by", "user:admin")
        found.agent["Authorization"] = f"Bearer {created['key']}"
        yield found
    finally:
        dev.kill()


def page_of(approval: dict[str, Any]) -> str:
    """The approval's page, once the status view holds it (``min_version``: the page waits)."""
    return f"{approval['web_url']}?min_version={approval['version']}"


def with_authenticator(context: Any, page: Any) -> Any:
    """A virtual platform authenticator for this page: user verified, resident keys."""
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
        "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
        "hasUserVerification": True, "isUserVerified": True,
        "automaticPresenceSimulation": True,
    }})  # fmt: skip
    return cdp


def signed_in(browser: Any, base: str, member: str) -> Any:
    context = browser.new_context()
    page = context.new_page()
    with_authenticator(context, page)
    page.goto(f"{base}/sign-in")
    page.fill("#member", member)
    page.click("#dev-sign-in")
    page.wait_for_url(f"{base}/")
    return page


def register(page: Any, base: str, name: str) -> None:
    from playwright.sync_api import expect

    page.goto(f"{base}/workspaces/{WORKSPACE}/approvals")
    page.click("#passkeys-link")  # the inbox links to the member's own passkeys
    expect(page.locator("#no-passkeys")).to_be_visible()
    page.fill("#passkey-name", name)
    page.click("#register-passkey")
    expect(page.locator("#done")).to_contain_text("Passkey registered")
    expect(page.locator("#passkeys")).to_contain_text(name)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium package is not installed (see README, set-up)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.mark.timeout(300)
def test_a_passkey_signs_approvals_in_the_browser(stack: Stack, browser: Any) -> None:
    from playwright.sync_api import expect

    ana = signed_in(browser, stack.base, "user:ana")
    bob = signed_in(browser, stack.base, "user:bob")
    # Check: ana registers a passkey from the web inbox; it is a workspace event
    register(ana, stack.base, "ana's laptop")
    export = stack.cli("passkeys", "export")
    assert [(k["member"], k["name"]) for k in export["passkeys"]] == [("user:ana", "ana's laptop")]
    assert export["passkeys"][0]["rp_id"] == "localhost"
    # Check: she approves a high-risk request: her browser signs the decision with it
    high = stack.ask("high", "Sync 40 contacts")
    ana.goto(page_of(high))
    expect(ana.locator("#passkey-note")).to_be_visible()
    ana.click("#approve")
    expect(ana.locator("#status")).to_have_text("approved")
    expect(ana.locator("#receipt-passkeys")).to_contain_text("user:ana")
    expect(ana.locator("#timeline")).to_contain_text("passkey")
    receipt = stack.approval(high["id"])["receipt"]
    assert [s["member"] for s in receipt["passkeys"]] == ["user:ana"]
    # Check: the receipt verifies offline, with the service's key and ana's public key
    keys, passkeys = stack.root / "keys.json", stack.root / "passkeys.json"
    keys.write_text(json.dumps(stack.cli("keys")))
    passkeys.write_text(json.dumps(stack.cli("passkeys", "export")))
    receipt_file = stack.root / "receipt.json"
    receipt_file.write_text(json.dumps(receipt))
    verified = stack.cli("verify", str(receipt_file), "--keys", str(keys),
                         "--passkeys", str(passkeys))  # fmt: skip
    assert verified["ok"] is True, verified
    assert [p["member"] for p in verified["passkeys"]] == ["user:ana"]

    # Check: a critical request needs two: ana signs her vote, bob registers and signs his
    register(bob, stack.base, "bob's phone")
    critical = stack.ask("critical", "Sync 400 contacts")
    ana.goto(page_of(critical))
    ana.click("#approve")
    expect(ana.locator("#quorum")).to_contain_text("1 of 2")
    bob.goto(page_of(critical))
    bob.click("#approve")
    expect(bob.locator("#status")).to_have_text("approved")
    receipt = stack.approval(critical["id"])["receipt"]
    assert [s["member"] for s in receipt["passkeys"]] == ["user:ana", "user:bob"]
    receipt_file.write_text(json.dumps(receipt))
    passkeys.write_text(json.dumps(stack.cli("passkeys", "export")))
    verified = stack.cli("verify", str(receipt_file), "--keys", str(keys),
                         "--passkeys", str(passkeys))  # fmt: skip
    assert verified["ok"] is True, verified
    # Check: every signed decision in the log checks out
    audited = stack.cli("audit", "verify", "--no-checkpoints")
    assert audited["ok"] is True, audited
    assert audited["passkeys"] == 3  # ana's high, ana's and bob's critical


@pytest.mark.timeout(300)
def test_an_edited_approval_and_a_rejection_are_signed_too(stack: Stack, browser: Any) -> None:
    from playwright.sync_api import expect

    carol = signed_in(browser, stack.base, "user:carol")
    register(carol, stack.base, "carol's key")
    rows = {
        **ACTION,
        "max_credits": 30,
        "scope": {"table": "contacts", "row_ids": ["c1", "c2", "c3"], "row_count": 3},
    }
    edited = stack.ask("high", "Sync 3 contacts", rows)
    # Check: "Edit, then approve" signs the edited version's digest, which is what is approved
    carol.goto(page_of(edited) + "#edit")
    carol.uncheck("input[name=row_id][value=c2]")
    carol.fill("#edit-max-credits", "20")
    carol.click("#approve-edited")
    expect(carol.locator("#status")).to_have_text("approved")
    got = stack.approval(edited["id"])
    assert got["approved_digest"] != edited["digest"]
    assert got["receipt"]["digest"] == got["approved_digest"]
    assert [s["member"] for s in got["receipt"]["passkeys"]] == ["user:carol"]
    # Check: a rejection is signed the same way
    rejected = stack.ask("high", "Write 9 deals")
    carol.goto(page_of(rejected))
    carol.fill("#reject-reason", "wrong deals")
    carol.click("#reject")
    expect(carol.locator("#status")).to_have_text("rejected")
    expect(carol.locator("#reason")).to_have_text("wrong deals")


@pytest.mark.timeout(300)
def test_doors_that_cannot_sign_are_sent_to_the_web_page(stack: Stack) -> None:
    high = stack.ask("high", "Write 3 deals")
    web_url = f"{stack.base}/workspaces/{WORKSPACE}/approvals/{high['id']}"
    # Check: the API, with an approver's key, is refused with the page to finish on
    created = stack.cli("keys", "create", "--as", "user:ana", "--by", "user:admin")
    ana = {"Authorization": f"Bearer {created['key']}"}
    reply = httpx.post(f"{stack.base}/v1/workspaces/{WORKSPACE}/approvals/{high['id']}/approve",
                       json={"digest": high["digest"]}, headers=ana, timeout=30)  # fmt: skip
    assert reply.status_code == 403, reply.text
    error = reply.json()["error"]
    assert (error["code"], error["details"]["web_url"]) == ("passkey_required", web_url)
    # Check: so is the CLI, whose message says where
    done = stack.run("approve", high["id"], "--approver", "user:bob", "--digest", high["digest"])
    assert done.returncode != 0
    assert "passkey_required" in done.stdout + done.stderr
    assert web_url in done.stdout + done.stderr
    # Check: so is an email link (one issued before the workspace asked for passkeys): its
    # confirm page, signed in, sends the decision and shows the refusal
    secret = (stack.root / "data" / "gateway-secret").read_text().strip()
    tokens = ConfirmTokens.from_settings(Settings(gateway_secret=secret))
    assert tokens is not None
    token = tokens.issue(high["id"], "approve", "bob@example.com",
                         datetime.fromisoformat(high["expires_at"]))  # fmt: skip
    bob = httpx.Client(base_url=stack.base, timeout=30, follow_redirects=False)
    bob.post(
        "/sign-in/dev",
        data={"member": "user:bob", "_csrf_token": csrf_token(bob.get("/sign-in").text)},
    )
    confirm = f"/workspaces/{WORKSPACE}/approvals/{high['id']}/confirm"
    page = bob.get(confirm, params={"token": token})
    done_by_mail = bob.post(confirm, data={"token": token, "digest": high["digest"],
                                           "_csrf_token": csrf_token(page.text)})  # fmt: skip
    assert done_by_mail.status_code == 303, done_by_mail.text
    shown = bob.get(done_by_mail.headers["location"]).text
    assert "passkey_required" in shown
    assert stack.approval(high["id"])["status"] == "pending"
