"""Every message a channel is given fits the channel's limits, for the longest request the wire
contract allows (multi-byte text included): a message over a limit is refused whole by Slack
(``invalid_blocks``) and Discord (400), and a newline in a mail header is an injection.

Slack's blocks are checked by ``slack_sdk``'s own block models (``Block.parse`` then ``to_dict``,
which runs every validator), plus the documented limits the models do not check (a section's
field text, the count of blocks). Discord has no such library here: its documented limits are
written down below. Lengths are counted in UTF-16 code units, never fewer than the characters
either platform might count.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import msgspec
import pytest
from slack_sdk.models.blocks import Block

from approvals.schemas import commands
from approvals.services.approvals.views import web_url
from approvals.services.delivery.adapters import discord, email, slack
from approvals.services.delivery.fitting import fit
from approvals.services.delivery.notice import Notice, Outcome
from approvals.services.delivery.service import Delivery
from approvals.services.runtime.settings import Settings

# Text with characters of one, two and four UTF-8 bytes (the last two UTF-16 units), markup
# and a newline: the worst a reviewer's text can hold.
TEXT = "漢é😀 *<&>\n"
WORKSPACE = "w" * 64  # the longest token a subject allows
GROUP = "g" * 64  # the longest group name


def units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def longest(struct: type[Any], name: str) -> str:
    """A text as long as the wire contract lets ``struct.name`` be, in characters."""
    kinds = msgspec.inspect.type_info(struct)
    assert isinstance(kinds, msgspec.inspect.StructType)
    kind = next(f.type for f in kinds.fields if f.name == name)
    if isinstance(kind, msgspec.inspect.UnionType):
        kind = next(t for t in kind.types if isinstance(t, msgspec.inspect.StrType))
    assert isinstance(kind, msgspec.inspect.StrType)
    assert kind.max_length is not None
    return (TEXT * kind.max_length)[: kind.max_length]


def longest_request() -> commands.Request:
    """A request with every shown field at its maximum, decoded as the command service would."""
    scope = {k: longest(commands.Scope, k) for k in ("table", "column", "workflow")}
    action = {k: longest(commands.Action, k) for k in ("provider", "destination")}
    body = {
        "requested_by": "service:" + "s" * 128, "on_behalf_of": "user:" + "u" * 128,
        "skill_name": longest(commands.Request, "skill_name"),
        "skill_execution_id": longest(commands.Request, "skill_execution_id"),
        "title": longest(commands.Request, "title"),
        "summary": longest(commands.Request, "summary"), "risk_level": "critical",
        "action": {"kind": "outbound_enrollment", "mode": "smoke_test", **action,
                   "scope": {**scope, "row_count": 10**18}, "max_credits": 1.2345678901e300},
    }  # fmt: skip
    return msgspec.json.decode(msgspec.json.encode(body), type=commands.Request)


def notice(prefix: str = "") -> Notice:
    request, approval_id = longest_request(), str(uuid.uuid4())
    view = {
        "workspace_id": WORKSPACE, "id": approval_id, "title": request.title,
        "summary": request.summary, "risk_level": request.risk_level,
        "requested_by": request.requested_by, "on_behalf_of": request.on_behalf_of,
        "skill_name": request.skill_name, "digest": "d" * 64,
        "expires_at": datetime(2026, 12, 31, 23, 59, tzinfo=UTC).isoformat(), "quorum": 9,
        "web_url": web_url("https://approvals.example.com", WORKSPACE, approval_id),
        "spend": None,
    }  # fmt: skip
    requested = {"action": msgspec.to_builtins(request.action)}
    return Delivery.notice(view, requested, prefix)


NOTICES = [notice(), notice("Reminder: "), notice(f"Escalated to {GROUP}: ")]


def outcome() -> Outcome:
    approval_id = str(uuid.uuid4())
    return Outcome(
        workspace_id=WORKSPACE, approval_id=approval_id,
        title=longest(commands.Request, "title"), status="rejected",
        decided_by="service:" + "s" * 128, reason=longest(commands.Reject, "reason"),
        web_url=web_url("https://approvals.example.com", WORKSPACE, approval_id),
    )  # fmt: skip


def shortened_with_link(text: str, url: str) -> bool:
    return "…" in text and url in text


def test_a_shortened_text_keeps_whole_characters_and_says_it_was_shortened() -> None:
    assert fit("short", 5, " more") == "short"
    for limit in range(2, 12):
        cut = fit("😀漢" * 10, limit)
        assert units(cut) <= limit
        assert cut.endswith("…")
        assert cut.encode("utf-16-le").decode("utf-16-le") == cut  # no half of a pair
    assert fit("x" * 200, 100, " <https://a.example|full request>").endswith("|full request>")
    assert fit("x" * 100, 20, " <https://a.example|full request>") == "x" * 19 + "…"


def test_a_blank_title_still_makes_a_slack_header() -> None:
    blank = msgspec.structs.replace(NOTICES[0], title="\n \t")
    check_slack(slack.blocks(blank), "Approval needed")


# -- Slack ---------------------------------------------------------------------------------------


def check_slack(blocks: list[dict[str, Any]], text: str) -> None:
    for raw in blocks:
        Block.parse(raw).to_dict()  # type: ignore[union-attr]  # raises past any limit
    # What slack_sdk's models leave unchecked, and their limits counted in UTF-16 units.
    assert 0 < len(blocks) <= 50
    assert units(text) <= 4000  # the fallback text: Slack takes far more, a reader does not
    for raw in blocks:
        limit = {"header": 150, "section": 3000}.get(raw["type"])
        if limit is not None and "text" in raw:
            assert 0 < units(raw["text"]["text"].strip()) <= limit  # Slack refuses a blank one
        assert len(raw.get("fields", ())) <= 10
        assert all(units(field["text"]) <= 2000 for field in raw.get("fields", ()))
        for element in raw.get("elements", ()):
            assert units(element["text"]["text"]) <= 75
            assert units(element.get("value", "")) <= 2000


@pytest.mark.parametrize("shown", NOTICES, ids=["request", "reminder", "escalation"])
def test_a_slack_message_of_the_longest_request_is_valid_block_kit(shown: Notice) -> None:
    blocks = slack.blocks(shown)
    check_slack(blocks, f"Approval needed: {shown.title}")
    [summary] = [b for b in blocks if b["type"] == "section" and "text" in b]
    assert shortened_with_link(summary["text"]["text"], shown.web_url)


def test_a_slack_message_edited_to_the_longest_outcome_is_valid_block_kit() -> None:
    ended = outcome()
    text, blocks = slack.outcome_message(ended)
    check_slack(blocks, text)
    assert shortened_with_link(blocks[0]["text"]["text"], ended.web_url)


# -- Discord -------------------------------------------------------------------------------------

# https://discord.com/developers/docs/resources/message#embed-object-embed-limits and
# https://discord.com/developers/docs/components/reference
CONTENT, TITLE, DESCRIPTION, FIELDS, FIELD_NAME, FIELD_VALUE = 2000, 256, 4096, 25, 256, 1024
FOOTER, AUTHOR, EMBED_TOTAL, CUSTOM_ID, LABEL = 2048, 256, 6000, 100, 80


def check_discord(message: dict[str, Any]) -> None:
    assert units(message.get("content", "")) <= CONTENT
    for embed in message.get("embeds", ()):
        fields = embed.get("fields", ())
        footer, author = embed.get("footer", {}).get("text", ""), embed.get("author", {})
        texts = [embed.get("title", ""), embed.get("description", ""), footer]
        texts += [author.get("name", "")] + [f["name"] + f["value"] for f in fields]
        assert units(embed.get("title", "")) <= TITLE
        assert units(embed.get("description", "")) <= DESCRIPTION
        assert len(fields) <= FIELDS
        assert all(units(f["name"]) <= FIELD_NAME and 0 < units(f["value"]) <= FIELD_VALUE
                   for f in fields)  # fmt: skip
        assert units(footer) <= FOOTER
        assert units(author.get("name", "")) <= AUTHOR
        assert sum(units(t) for t in texts) <= EMBED_TOTAL
    for row in message.get("components", ()):
        for button in row["components"]:
            assert units(button["label"]) <= LABEL
            assert units(button.get("custom_id", "")) <= CUSTOM_ID


@pytest.mark.parametrize("shown", NOTICES, ids=["request", "reminder", "escalation"])
def test_a_discord_message_of_the_longest_request_fits_discords_limits(shown: Notice) -> None:
    message = discord.message(shown)
    check_discord(message)
    assert shortened_with_link(message["embeds"][0]["description"], shown.web_url)


def test_a_discord_button_carries_a_long_workspace_id_whole() -> None:
    shown = NOTICES[0]
    [row] = discord.message(shown)["components"]
    carried = [discord.parse_custom_id(b["custom_id"]) for b in row["components"][:2]]
    assert carried == [(verb, shown.approval_id, WORKSPACE)
                       for verb in (discord.APPROVE, discord.REJECT)]  # fmt: skip


def test_a_discord_button_sent_before_keeps_working() -> None:
    approval_id = str(uuid.uuid4())
    sent = f"{discord.APPROVE}:{approval_id}:acme"
    assert discord.parse_custom_id(sent) == (discord.APPROVE, approval_id, "acme")


def test_a_discord_message_edited_to_the_longest_outcome_fits_discords_limits() -> None:
    ended = outcome()
    edited = discord.outcome_message(ended)
    check_discord(edited)
    assert shortened_with_link(edited["content"], ended.web_url)


# -- Email ---------------------------------------------------------------------------------------


def check_subject(message: EmailMessage) -> None:
    subject = str(message["Subject"])
    assert len(subject) <= 200
    assert "\n" not in subject
    assert "\r" not in subject
    assert subject.endswith("…")
    message.as_bytes()  # a header that cannot be written raises here


@pytest.mark.parametrize("shown", NOTICES, ids=["request", "reminder", "escalation"])
def test_an_email_of_the_longest_request_has_a_one_line_subject(shown: Notice) -> None:
    adapter = email.EmailAdapter(Settings(gateway_secret="s" * 32))
    message = adapter.compose(shown, "ana@example.com", "approvals@example.com", "d1")
    check_subject(message)
    assert shown.summary in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_an_email_of_the_longest_outcome_has_a_one_line_subject() -> None:
    check_subject(email.outcome_message(outcome(), "ana@example.com", "a@example.com", None))


# -- Markup from requesters ----------------------------------------------------------------------


def test_a_slack_message_shows_a_requesters_markup_as_text() -> None:
    """``<!channel>`` in a summary must not notify the channel, nor a ``<url|label>`` pass off a
    link as ours: Slack reads ``&``, ``<`` and ``>`` as markup unless escaped."""
    sneaky = "<!channel> see <https://elsewhere.example|Details> & more"
    shown = msgspec.structs.replace(NOTICES[0], title=sneaky, summary=sneaky)
    made = slack.blocks(shown)
    summary = made[1]["text"]["text"]
    assert summary == "&lt;!channel&gt; see &lt;https://elsewhere.example|Details&gt; &amp; more"
    rejected = msgspec.structs.replace(outcome(), reason=sneaky)
    text, _ = slack.outcome_message(rejected)
    assert "<!channel>" not in text
    assert "&lt;!channel&gt;" in text


def test_a_shortened_escaped_text_never_ends_in_half_an_escape() -> None:
    for limit in range(2, 30):
        fitted = fit("&<>" * 20, limit, escape=slack.escape)
        assert units(fitted) <= limit
        body = fitted.removesuffix("…")
        assert body.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "") == ""


def test_a_discord_message_mentions_nobody() -> None:
    """A summary that says @everyone is shown, not sent as a ping to the whole server."""
    shown = msgspec.structs.replace(NOTICES[0], title="@everyone", summary="@everyone <@123>")
    assert discord.message(shown)["allowed_mentions"] == {"parse": []}
    assert discord.outcome_message(outcome())["allowed_mentions"] == {"parse": []}
