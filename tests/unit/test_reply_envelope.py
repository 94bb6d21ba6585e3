"""The one reply envelope: whether a reply succeeded, and the typed error when it did not."""

from __future__ import annotations

import msgspec
import pytest

from approvals.schemas.codec import encode_error, encoder, reply_error
from approvals.schemas.replies import Envelope, ErrorBody


def test_a_success_has_no_error() -> None:
    assert reply_error(encoder.encode({"ok": True, "outcome": "approved", "other": [1]})) is None


def test_a_refusal_gives_its_typed_error() -> None:
    error = reply_error(encode_error("not_found", "no such approval", {"approval_id": "x"}))
    assert error == ErrorBody(code="not_found", message="no such approval",
                              details={"approval_id": "x"})  # fmt: skip


def test_a_refusal_without_a_body_reads_as_internal() -> None:
    error = reply_error(b'{"ok": false}')
    assert error is not None
    assert (error.code, error.message) == ("internal", "refused without a reason")


def test_the_envelope_skips_the_rest_of_the_reply() -> None:
    envelope = msgspec.json.decode(b'{"ok": true, "approval": {"id": 1}}', type=Envelope)
    assert envelope == Envelope(ok=True)


def test_what_is_not_a_reply_is_refused_clearly() -> None:
    with pytest.raises(msgspec.ValidationError):
        reply_error(b'{"outcome": "approved"}')
