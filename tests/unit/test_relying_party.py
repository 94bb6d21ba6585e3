"""The relying party of the web inbox's passkeys is its public address; a loopback address
becomes ``localhost``, which browsers accept as an RP ID and a secure context."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from approvals.services.gateway.passkeys import relying_party
from approvals.services.runtime.settings import Settings


def request_at(web_url: str) -> Any:
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(
        settings=Settings(web_url=web_url))))  # fmt: skip


@pytest.mark.parametrize(("web_url", "expected"), [
    ("https://approvals.example.com", ("approvals.example.com", "https://approvals.example.com")),
    ("https://approvals.example.com:8443/", ("approvals.example.com",
                                             "https://approvals.example.com:8443")),
    ("http://localhost:8080", ("localhost", "http://localhost:8080")),
    ("http://127.0.0.1:8080", ("localhost", "http://localhost:8080")),
])  # fmt: skip
def test_the_relying_party_is_the_public_address(web_url: str, expected: tuple[str, str]) -> None:
    assert relying_party(request_at(web_url)) == expected
