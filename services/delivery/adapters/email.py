"""Email: an HTML and a text part, sent with aiosmtplib. Its Approve / Reject links open a
confirmation page in the gateway that needs a signed-in approver and a POST to decide, so a mail
scanner that follows (or even submits) links can never approve; each link's token is signed,
single-use, bound to the approval, the decision and the recipient, and expires with the request.
"""

from __future__ import annotations

import html
from email.message import EmailMessage
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import urlencode

import aiosmtplib
from opentelemetry.trace import SpanKind

from approvals.services.delivery.adapters.base import DeliveryError
from approvals.services.delivery.fitting import fit, one_line
from approvals.services.runtime import tracing
from approvals.services.runtime.signed_links import ConfirmTokens

if TYPE_CHECKING:
    from approvals.schemas.workspace import ChannelConfig
    from approvals.services.delivery.notice import Notice, Outcome
    from approvals.services.runtime.settings import Settings


SUBJECT = 200  # a subject a mail client shows whole on one line


def subject(text: str) -> str:
    """One line (a newline in a header is an injection, and refused), shortened with "…": the
    full title is in the body."""
    return fit(one_line(text), SUBJECT)


class EmailAdapter:
    kind: ClassVar[str] = "email"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.tokens = ConfirmTokens.from_settings(settings)

    async def send(self, notice: Notice, channel: ChannelConfig, delivery_id: str) -> str:
        if not channel.target:
            raise DeliveryError("the email channel names no target address", permanent=True)
        message = self.compose(notice, channel.target, self.settings.smtp_from, delivery_id)
        return await self.deliver(message)

    async def tell_outcome(
        self, outcome: Outcome, channel: ChannelConfig, ref: str | None, delivery_id: str
    ) -> None:
        if not channel.target:
            return
        message = outcome_message(outcome, channel.target, self.settings.smtp_from, ref)
        message["Message-ID"] = f"<{delivery_id}@approvals>"
        await self.deliver(message)

    async def deliver(self, message: EmailMessage) -> str:
        settings = self.settings
        if not settings.smtp_host:
            raise DeliveryError("no SMTP server is configured (APPROVALS_SMTP_HOST)",
                                permanent=True)  # fmt: skip
        try:
            with tracing.current("smtp send", "approvals.delivery", SpanKind.CLIENT, {
                "server.address": settings.smtp_host, "server.port": settings.smtp_port,
            }):  # fmt: skip
                await aiosmtplib.send(
                    message, hostname=settings.smtp_host, port=settings.smtp_port,
                    username=settings.smtp_username, password=settings.smtp_password,
                    start_tls=settings.smtp_starttls, timeout=settings.delivery_timeout_s,
                )  # fmt: skip
        except aiosmtplib.SMTPException as error:
            raise DeliveryError(f"SMTP {settings.smtp_host} refused: {error}") from None
        except OSError as error:
            raise DeliveryError(f"SMTP {settings.smtp_host} unreachable: {error}") from None
        return str(message["Message-ID"])

    def links(self, notice: Notice, recipient: str) -> dict[str, str]:
        links = {"details": notice.web_url, "edit": notice.edit_url}
        if self.tokens is None or notice.passkey:
            # Without the gateway's secret, or where only the web inbox can sign the decision
            # with a passkey: the detail page only.
            return links
        for decision in ("approve", "reject"):
            token = self.tokens.issue(notice.approval_id, decision, recipient, notice.expires_at)
            links[decision] = f"{notice.web_url}/confirm?{urlencode({'token': token})}"
        return links

    def compose(
        self, notice: Notice, recipient: str, sender: str, delivery_id: str
    ) -> EmailMessage:
        links = self.links(notice, recipient)
        message = EmailMessage()
        message["Subject"] = subject(f"[approval needed] {notice.title}")
        message["From"] = sender
        message["To"] = recipient
        message["Message-ID"] = f"<{delivery_id}@approvals>"  # the same on a resend
        facts = notice.facts()
        text = [notice.title, "", notice.summary, ""]
        text += [f"{label}: {value}" for label, value in facts]
        text += ["", f"Details: {links['details']}", f"Edit, then approve: {links['edit']}"]
        text += [f"{d.title()}: {links[d]}" for d in ("approve", "reject") if d in links]
        text += ["", "Each link opens a page where you confirm, signed in; nothing is decided by "
                 "opening it."]  # fmt: skip
        if notice.passkey:
            text += [notice.PASSKEY_LINE, f"Decide: {links['details']}"]
        message.set_content("\n".join(text))
        rows = "".join(f"<tr><th align=left>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                       for k, v in facts)  # fmt: skip
        buttons = " ".join(
            f'<a href="{html.escape(links[d])}">{d.title()}…</a>'
            for d in ("approve", "reject") if d in links
        )  # fmt: skip
        message.add_alternative(
            f"<h2>{html.escape(notice.title)}</h2><p>{html.escape(notice.summary)}</p>"
            f"<table>{rows}</table><p>{buttons} · "
            f'<a href="{html.escape(links["details"])}">Details</a> · '
            f'<a href="{html.escape(links["edit"])}">Edit…</a></p>'
            "<p>Each link opens a page where you confirm, signed in.</p>"
            + (
                f'<p>{html.escape(notice.PASSKEY_LINE)} <a href="{html.escape(links["details"])}">'
                "Decide with your passkey</a></p>"
                if notice.passkey
                else ""
            ),
            subtype="html",
        )
        return message


def outcome_message(outcome: Outcome, recipient: str, sender: str, ref: str | None) -> EmailMessage:
    """The mail that tells how a request ended, a reply to the one that carried it (``ref``)."""
    message = EmailMessage()
    message["Subject"] = subject(f"[{outcome.status}] {outcome.title}")
    message["From"] = sender
    message["To"] = recipient
    if ref:
        message["In-Reply-To"] = ref
        message["References"] = ref
    message.set_content(f"{outcome.line()}\n\nNo decision is needed any more.\n"
                        f"Details: {outcome.web_url}\n")  # fmt: skip
    return message
