"""Deciding many at once, as callers and people meet it: the HTTP API's ``decisions`` call, the
web inbox's selection (by form and in Chromium) and ``approvals approve|reject`` of several ids
or ``--all-matching``. Each item is its own command: some are decided, the others say why not."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.e2e.devserver import APPROVALS
from tests.e2e.test_gateway import (
    AGENT,
    LIVE,
    ask,
    browser_sign_in,
    csrf_token,
    error,
    gateway,
    signed_in,
)

if TYPE_CHECKING:
    from tests.e2e.test_gateway import Gateway

__all__ = ["gateway"]  # the module's own `approvals dev`, as test_gateway.py starts it


def status_of(gateway: Gateway, headers: dict[str, str], approval_id: str,
              workspace: str = "default") -> str:  # fmt: skip
    got = httpx.get(f"{gateway.api(workspace)}/{approval_id}", headers=headers, timeout=30)
    assert got.status_code == 200, got.text
    return str(got.json()["approval"]["status"])


def decide(gateway: Gateway, headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{gateway.api()}/decisions", json=body, headers=headers, timeout=60)


def item(approval: dict[str, Any]) -> dict[str, str]:
    return {"approval_id": approval["id"], "digest": approval["digest"]}


def test_a_bulk_approve_of_50_reports_each_item_and_decides_exactly_the_others(
    gateway: Gateway,
) -> None:
    agent, ana, bob = gateway.key(AGENT), gateway.key("user:ana"), gateway.key("user:bob")
    run = uuid.uuid4().hex[:8]
    # 40 ordinary requests ana may approve; one of them she names with a digest she never saw.
    plain = [ask(gateway, agent, skill_name="bulk", skill_execution_id=f"{run}-p{i}")
             for i in range(40)]  # fmt: skip
    # 3 that bob rejects first; 3 critical ones only the leads (not ana) may decide; 2 high ones
    # that need two approvals; 1 that ana asked for herself; 1 of another workspace.
    decided = [ask(gateway, agent, skill_name="bulk", skill_execution_id=f"{run}-d{i}")
               for i in range(3)]  # fmt: skip
    for approval in decided:
        done = httpx.post(f"{gateway.api()}/{approval['id']}/reject", json={"reason": "no"},
                          headers=bob, timeout=30)  # fmt: skip
        assert done.json()["outcome"] == "rejected", done.text
    critical = [ask(gateway, agent, skill_name="bulk", skill_execution_id=f"{run}-c{i}",
                    risk_level="critical") for i in range(3)]  # fmt: skip
    high = [ask(gateway, agent, skill_name="bulk", skill_execution_id=f"{run}-h{i}",
                risk_level="high") for i in range(2)]  # fmt: skip
    own = ask(gateway, ana, requested_by="user:ana", skill_name="bulk",
              skill_execution_id=f"{run}-own")  # fmt: skip
    acme_key = gateway.key(AGENT, workspace="acme")
    theirs = httpx.post(gateway.api("acme"), headers=acme_key, timeout=30, json={
        "requested_by": AGENT, "skill_name": "s", "skill_execution_id": run, "title": "theirs",
        "summary": "", "risk_level": "low", "action": LIVE}).json()["approval"]  # fmt: skip
    items = [item(a) for a in (*plain, *decided, *critical, *high, own, theirs)]
    items[0] = {**items[0], "digest": "0" * 64}
    assert len(items) == 50

    # Check: a call over the bound, or naming one approval twice, is refused whole: nothing
    # is decided.
    over = [*items, *(item(plain[1]) for _ in range(51))]
    error(decide(gateway, ana, {"decision": "approve", "items": over}), 413, "too_large")
    twice = [item(plain[1]), item(plain[1])]
    error(decide(gateway, ana, {"decision": "approve", "items": twice}), 400, "invalid")
    error(decide(gateway, ana, {"decision": "approve", "items": [{"approval_id": plain[1]["id"]}]}),
          400, "invalid")  # fmt: skip
    assert status_of(gateway, agent, plain[1]["id"]) == "pending"

    # Check: the batch answers each item, in order, and only the decidable ones are decided.
    answered = decide(gateway, ana, {"decision": "approve", "items": items, "reason": "batch"})
    assert answered.status_code == 200, answered.text
    results = answered.json()["results"]
    assert answered.json()["ok"] is True
    assert [r["approval_id"] for r in results] == [i["approval_id"] for i in items]
    by_id = {r["approval_id"]: r for r in results}

    def code(approval: dict[str, Any]) -> str | None:
        result = by_id[approval["id"]]
        return None if result["ok"] else result["error"]["code"]

    assert code(plain[0]) == "digest_mismatch"
    for approval in plain[1:]:
        assert by_id[approval["id"]] == {"approval_id": approval["id"], "ok": True,
                                         "outcome": "approved", "status": "approved"}  # fmt: skip
    assert [code(a) for a in decided] == ["already_decided"] * 3
    assert [code(a) for a in critical] == ["forbidden"] * 3
    assert [by_id[a["id"]]["outcome"] for a in high] == ["vote_cast"] * 2
    assert code(own) == "forbidden"
    assert code(theirs) == "not_found"
    # ...as the stored states say: approved exactly where the batch said so.
    for approval in plain[1:]:
        assert status_of(gateway, agent, approval["id"]) == "approved"
    for approval in (plain[0], *critical, *high, own):
        assert status_of(gateway, agent, approval["id"]) == "pending", approval["title"]
    assert status_of(gateway, acme_key, theirs["id"], workspace="acme") == "pending"
    # The decision came by the API with ana's key, one command per item.
    ana_key = ana["Authorization"].split("_")[1].split(".")[0]
    assert gateway.doors(plain[1]["id"])["approved"] == {"channel": "api", "auth": "api_key",
                                                         "ref": ana_key}  # fmt: skip

    # Check: a bulk reject needs no digest, carries reason and rerun, and reports the rest.
    rejected = decide(gateway, ana, {"decision": "reject", "reason": "later", "rerun": True,
                                     "items": [{"approval_id": plain[0]["id"]},
                                               item(plain[1]), item(theirs)]})  # fmt: skip
    assert [(r["ok"], r.get("outcome") or r["error"]["code"])
            for r in rejected.json()["results"]] == [
        (True, "rejected"), (False, "already_decided"), (False, "not_found")]  # fmt: skip
    got = httpx.get(f"{gateway.api()}/{plain[0]['id']}", headers=agent, timeout=30).json()
    assert (got["approval"]["reason"], got["approval"]["rerun"]) == ("later", True)
    assert status_of(gateway, acme_key, theirs["id"], workspace="acme") == "pending"


def test_the_inbox_form_decides_the_ticked_rows_and_reports_each(gateway: Gateway) -> None:
    agent, bob = gateway.key(AGENT), gateway.key("user:bob")
    skill = f"form-{uuid.uuid4().hex[:6]}"
    first, second, gone = (ask(gateway, agent, skill_name=skill, skill_execution_id=str(i),
                               title=f"Form {i}") for i in range(3))  # fmt: skip
    ana = signed_in(gateway, "user:ana")
    inbox = ana.get(f"/workspaces/default/approvals?skill={skill}")
    for approval in (first, second, gone):
        assert f'value="{approval["id"]}:{approval["digest"]}"' in inbox.text
    # Check: "select all" ticks every pending row shown, without a script.
    everything = ana.get(f"/workspaces/default/approvals?skill={skill}&select=all")
    assert everything.text.count("checked>") == 3
    # bob rejects one while ana's page still shows it.
    httpx.post(f"{gateway.api()}/{gone['id']}/reject", json={}, headers=bob, timeout=30)
    form = {"_csrf_token": csrf_token(inbox.text), "decision": "approve", "reason": "all fine",
            "item": [f"{a['id']}:{a['digest']}" for a in (first, second, gone)]}  # fmt: skip
    # Check: no CSRF token, nothing decided.
    refused = ana.post("/workspaces/default/approvals/decisions",
                       data={k: v for k, v in form.items() if k != "_csrf_token"})  # fmt: skip
    assert refused.status_code == 403
    assert status_of(gateway, agent, first["id"]) == "pending"
    done = ana.post("/workspaces/default/approvals/decisions", data=form)
    assert done.status_code == 200, done.text
    assert "Approved: 2 of 3" in done.text
    assert done.text.count("already decided") == 1
    assert [status_of(gateway, agent, a["id"]) for a in (first, second, gone)] == [
        "approved", "approved", "rejected"]  # fmt: skip
    assert gateway.doors(first["id"])["approved"] == {"channel": "web", "auth": "session",
                                                      "ref": "dev"}  # fmt: skip
    # Check: a non-approver sees no selection; another workspace's pages stay closed.
    assert 'name="item"' not in signed_in(gateway, "user:admin").get(
        f"/workspaces/default/approvals?skill={skill}").text  # fmt: skip
    outsider = signed_in(gateway, "user:stranger")
    page = outsider.get("/sign-in")
    theirs = outsider.post("/workspaces/acme/approvals/decisions",
                           data={**form, "_csrf_token": csrf_token(page.text)})  # fmt: skip
    assert theirs.status_code == 403


def approvals(gateway: Gateway, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([APPROVALS, "--nats-url", gateway.dev.url, "-w", "default", *args],
                          input=stdin, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_the_cli_shows_what_it_would_decide_asks_then_decides_each(gateway: Gateway) -> None:
    agent = gateway.key(AGENT)
    skill = f"cli-{uuid.uuid4().hex[:6]}"
    mine = [ask(gateway, agent, skill_name=skill, skill_execution_id=str(i), title=f"Cli {i}")
            for i in range(3)]  # fmt: skip
    matching = ["approve", "--all-matching", "--skill-name", skill, "--approver", "user:ana"]
    # Check: the preview lists each match with its digest; "no" (or no answer) decides nothing.
    declined = approvals(gateway, *matching, stdin="n\n")
    assert declined.returncode == 1, declined.stderr
    for approval in mine:
        assert approval["id"] in declined.stdout
        assert approval["digest"] in declined.stdout
    assert "Approve 3 approvals? [y/N]" in declined.stdout
    assert "Nothing was decided." in declined.stdout
    assert approvals(gateway, *matching).returncode == 1  # stdin closed: no
    assert {status_of(gateway, agent, a["id"]) for a in mine} == {"pending"}
    # Check: --json cannot ask, so it needs --yes.
    refused = approvals(gateway, "--json", *matching)
    assert refused.returncode != 0
    assert json.loads(refused.stdout)["error"]["code"] == "invalid"
    # Check: "y" approves each, and each result is printed.
    accepted = approvals(gateway, *matching, "--reason", "cli batch", stdin="y\n")
    assert accepted.returncode == 0, (accepted.stdout, accepted.stderr)
    assert "3 of 3 decided" in accepted.stdout
    assert {status_of(gateway, agent, a["id"]) for a in mine} == {"approved"}

    # Check: explicit ids; one already decided, one unknown here: each reported, the rest done.
    more = [ask(gateway, agent, skill_name=skill, skill_execution_id=f"m{i}") for i in range(2)]
    unknown = str(uuid.uuid4())
    ids = (more[0]["id"], mine[0]["id"], unknown, more[1]["id"])
    done = approvals(gateway, "--json", "reject", *ids, "--approver", "user:bob", "--reason", "no",
                     "--yes")  # fmt: skip
    assert done.returncode == 1, done.stderr  # not every item could be decided
    results = json.loads(done.stdout)["results"]
    assert [(r["approval_id"], r.get("outcome") or r["error"]["code"]) for r in results] == [
        (more[0]["id"], "rejected"), (mine[0]["id"], "already_decided"),
        (unknown, "not_found"), (more[1]["id"], "rejected")]  # fmt: skip
    # Check: the one-approval form with --digest is as it was.
    single = ask(gateway, agent, skill_name=skill, skill_execution_id="single")
    one = approvals(gateway, "--json", "approve", single["id"], "--approver", "user:ana",
                    "--digest", single["digest"])  # fmt: skip
    assert json.loads(one.stdout)["outcome"] == "approved", one.stdout


@pytest.mark.timeout(300)
def test_a_person_selects_several_in_chromium_and_approves_them(gateway: Gateway) -> None:
    from playwright.sync_api import expect, sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium package is not installed (see README, set-up)"
    agent = gateway.key(AGENT)
    skill = f"pick-{uuid.uuid4().hex[:6]}"
    picked = [ask(gateway, agent, skill_name=skill, skill_execution_id=str(i),
                  title=f"Pick {i}") for i in range(3)]  # fmt: skip
    left = ask(gateway, agent, skill_name=skill, skill_execution_id="left", title="Leave me")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            ana = browser.new_context(viewport={"width": 1100, "height": 900}).new_page()
            browser_sign_in(ana, gateway.base, "user:ana")
            ana.goto(f"{gateway.base}/workspaces/default/approvals?skill={skill}")
            # Check: the four near-identical requests are one row, open on its items (each
            # still its own to tick); she ticks three of the four and approves them in one go.
            expect(ana.locator("tr.group")).to_have_attribute("data-group-size", "4")
            for approval in picked:
                ana.check(f"tr[data-id='{approval['id']}'] input[name=item]")
            ana.fill("#bulk-reason", "all three look right")
            ana.click("#approve-selected")
            expect(ana.locator("#summary")).to_have_text("Approved: 3 of 3")
            for approval in picked:
                row = ana.locator(f"#results tr[data-id='{approval['id']}']")
                expect(row).to_contain_text(approval["title"])
                expect(row).to_contain_text("approved")
        finally:
            browser.close()
    assert [status_of(gateway, agent, a["id"]) for a in picked] == ["approved"] * 3
    assert status_of(gateway, agent, left["id"]) == "pending"
