"""Who the gateway takes a browser for: the proxy header only from the proxy, signed links only
as issued and only until they expire."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from approvals.services.gateway.identity import Identity, LinkInvalid, person_name
from approvals.services.runtime.settings import Settings

SETTINGS = Settings(trusted_header="X-Forwarded-User", trusted_proxies="10.0.0.0/8, 127.0.0.1")


def request(host: str | None, headers: dict[str, str], session: Any = None) -> Any:
    client = SimpleNamespace(host=host) if host else None
    return SimpleNamespace(client=client, headers=headers, scope={"session": session})


def test_the_proxy_header_counts_only_from_a_trusted_proxy() -> None:
    identity = Identity(SETTINGS, b"k" * 32)
    header = {"X-Forwarded-User": "ana"}
    assert identity.person(request("10.1.2.3", header)) == "user:ana"
    assert identity.person(request("127.0.0.1", header)) == "user:ana"
    # Check: from anywhere else the header is ignored; the session decides.
    assert identity.person(request("192.168.1.5", header)) is None
    assert identity.person(request(None, header)) is None
    assert identity.person(request("192.168.1.5", header, {"member": "user:bob"})) == "user:bob"
    # Check: without a configured header nobody is taken on a header's word.
    plain = Identity(Settings(), b"k" * 32)
    assert plain.person(request("127.0.0.1", header)) is None


def test_a_link_is_good_only_as_issued_and_until_it_expires() -> None:
    identity = Identity(SETTINGS, b"k" * 32)
    token = identity.link_token("user:ana", ttl_s=60, now=1000.0)
    member, nonce = identity.check_link(token, now=1059.0)
    assert member == "user:ana"
    assert len(nonce) >= 16
    with pytest.raises(LinkInvalid, match="expired"):
        identity.check_link(token, now=1061.0)
    with pytest.raises(LinkInvalid, match="not issued here"):
        Identity(SETTINGS, b"x" * 32).check_link(token, now=1000.0)
    payload, signature = token.split(".")
    forged = ("A" if payload[0] != "A" else "B") + payload[1:]
    with pytest.raises(LinkInvalid, match="not issued here"):
        identity.check_link(f"{forged}.{signature}", now=1000.0)
    with pytest.raises(LinkInvalid, match="malformed"):
        identity.check_link("nonsense", now=1000.0)


def test_names_from_a_proxy_become_people() -> None:
    assert person_name(" ana ") == "user:ana"
    assert person_name("user:bob") == "user:bob"
