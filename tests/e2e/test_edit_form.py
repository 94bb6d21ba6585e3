"""The web inbox's "Edit, then approve" form in a real browser (Chromium): a JSON editor that
validates before submit when the request has no payload_schema, and a form built from the
schema when it has one; either way the approval binds to the edited version."""

from __future__ import annotations

import json
import shutil
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.e2e.test_gateway import AGENT, LIVE, ask, browser_sign_in, gateway

if TYPE_CHECKING:
    from collections.abc import Iterator

    from tests.e2e.test_gateway import Gateway

__all__ = ["gateway"]  # the fixture: `approvals dev` with the gateway, module-wide

ROWS = {**LIVE, "max_credits": 50, "scope": {"table": "contacts", "row_ids": ["c1", "c2", "c3"],
                                             "row_count": 3}}  # fmt: skip
SCHEMA = {
    "type": "object",
    "properties": {
        "subject": {"type": "string", "maxLength": 60},
        "count": {"type": "integer", "minimum": 1, "maximum": 50},
        "urgent": {"type": "boolean"},
        "tone": {"enum": ["plain", "warm"]},
    },
    "required": ["subject", "count"],
}


@pytest.fixture
def page(gateway: Gateway) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium package is not installed (see README, set-up)"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            ana = browser.new_context().new_page()
            browser_sign_in(ana, gateway.base, "user:ana")
            yield ana
        finally:
            browser.close()


def approval(gateway: Gateway, headers: dict[str, str], approval_id: str) -> dict[str, Any]:
    got = httpx.get(f"{gateway.api()}/{approval_id}", headers=headers, timeout=30)
    assert got.status_code == 200, got.text
    return got.json()["approval"]  # type: ignore[no-any-return]


@pytest.mark.timeout(300)
def test_without_a_schema_the_json_editor_validates_before_submit(
    gateway: Gateway, page: Any
) -> None:
    from playwright.sync_api import expect

    agent = gateway.key(AGENT)
    asked = ask(gateway, agent, skill_execution_id="edit-json", title="Sync 3 contacts",
                action=ROWS, proposed_payload={"contacts": 3})  # fmt: skip
    page.goto(f"{gateway.base}/workspaces/default/approvals/{asked['id']}#edit")
    # Check: the edit form opens from the link channels carry, with a JSON editor
    expect(page.locator("#edit-payload")).to_be_visible()
    expect(page.locator("#edit-payload-form")).to_have_count(0)
    # Check: malformed JSON never leaves the browser
    page.fill("#edit-payload", '{"contacts": 2,')
    page.click("#approve-edited")
    expect(page.locator("#edit-error")).to_contain_text("not JSON")
    expect(page.locator("#status")).to_have_text("pending")
    # Check: a narrower version (fewer rows, a lower ceiling, another payload) is approved
    page.fill("#edit-payload", '{"contacts": 2}')
    page.uncheck("input[name=row_id][value=c2]")
    page.fill("#edit-max-credits", "20")
    page.click("#approve-edited")
    expect(page.locator("#status")).to_have_text("approved")
    expect(page.locator("#changes")).to_contain_text("/scope/row_ids")
    got = approval(gateway, agent, asked["id"])
    assert got["approved_payload"] == {"contacts": 2}
    assert got["approved_action"]["scope"]["row_ids"] == ["c1", "c3"]
    assert got["approved_action"]["max_credits"] == 20
    assert got["approved_digest"] != got["digest"]


@pytest.mark.timeout(300)
def test_with_a_payload_schema_the_payload_is_a_form(gateway: Gateway, page: Any) -> None:
    from playwright.sync_api import expect

    agent = gateway.key(AGENT)
    payload = {"subject": "Intro", "count": 3, "urgent": False, "tone": "plain"}
    asked = ask(gateway, agent, skill_execution_id="edit-form", title="Write 3 emails",
                action=ROWS, proposed_payload=payload, payload_schema=SCHEMA)  # fmt: skip
    page.goto(f"{gateway.base}/workspaces/default/approvals/{asked['id']}")
    page.click("#edit summary")
    # Check: one input per property, typed by the schema; no raw JSON editor
    expect(page.locator("#edit-payload")).to_have_count(0)
    expect(page.locator("#payload-subject")).to_have_value("Intro")
    expect(page.locator("#payload-count")).to_have_value("3")
    # Check: a value outside the schema's bounds is stopped by the browser
    page.fill("#payload-count", "60")
    page.click("#approve-edited")
    expect(page.locator("#status")).to_have_text("pending")
    assert page.eval_on_selector("#payload-count", "e => e.validity.rangeOverflow") is True
    # Check: a valid edit is approved with exactly the payload the form shows
    page.fill("#payload-count", "2")
    page.fill("#payload-subject", "Hello")
    page.check("#payload-urgent")
    page.select_option("#payload-tone", label="warm")
    page.click("#approve-edited")
    expect(page.locator("#status")).to_have_text("approved")
    got = approval(gateway, agent, asked["id"])
    assert got["approved_payload"] == {"subject": "Hello", "count": 2, "urgent": True,
                                       "tone": "warm"}  # fmt: skip
    assert got["payload_schema"] == SCHEMA


def test_the_http_api_approves_with_edits_and_approvals_verify_names_both_digests(
    gateway: Gateway,
) -> None:
    agent, ana = gateway.key(AGENT), gateway.key("user:ana")
    asked = ask(gateway, agent, skill_execution_id="edit-api", action=ROWS,
                proposed_payload={"contacts": 3})  # fmt: skip
    url = f"{gateway.api()}/{asked['id']}/approve"
    # Check: a widening edit is refused, naming the field
    wide = httpx.post(url, json={"digest": asked["digest"], "edits": {"max_credits": 51}},
                      headers=ana, timeout=30)  # fmt: skip
    assert wide.status_code == 400, wide.text
    assert wide.json()["error"]["details"]["field"] == "edits.max_credits"
    # Check: a narrower one is approved
    done = httpx.post(url, json={"digest": asked["digest"], "edits": {"max_credits": 5}},
                      headers=ana, timeout=30)  # fmt: skip
    assert done.status_code == 200, done.text
    receipt = done.json()["approval"]["receipt"]
    assert receipt["requested_digest"] == asked["digest"] != receipt["digest"]
    # Check: `approvals verify` verifies the edited receipt and shows both digests
    verified = gateway.cli("verify", json.dumps(receipt))
    assert verified["valid"] is True
    assert (verified["receipt"]["digest"], verified["receipt"]["requested_digest"]) == (
        receipt["digest"], asked["digest"],
    )  # fmt: skip
