"""A schema's rules in words: a value that breaks one is told what was expected the way a person
can act on (``a digest: 64 lower-case hex characters``), not as the regular expression that is
the contract (``matching regex '^[0-9a-f]{64}$(?!\\n)'``). The patterns stay the contract (JSON
Schema publishes them); this is how the doors say them."""

from __future__ import annotations

from typing import Any, get_args

import msgspec

from approvals.schemas import commands, passkeys, subjects, types, workspace


def pattern_of(annotated: Any) -> str:
    """The pattern of an ``Annotated[str, msgspec.Meta(pattern=...)]`` type."""
    meta = next(arg for arg in get_args(annotated)[1:] if isinstance(arg, msgspec.Meta))
    assert meta.pattern is not None
    return meta.pattern


NAME = "a lower-case letter, then up to {n} lower-case letters, digits, '-' or '_'"
WORDS: dict[str, str] = {
    types.ACTOR_PATTERN: "an actor: user:<id>, service:<name>, policy:<rule> or grant:<id>",
    pattern_of(types.Person): "a person: user:<id>",
    pattern_of(types.Digest): "a digest: 64 lower-case hex characters (SHA-256)",
    pattern_of(commands.Door): "a door: a lower-case letter, then up to 31 lower-case letters, "
    "digits or '_'",
    pattern_of(commands.KeyId): "an API key id: 12 to 32 lower-case letters and digits",
    pattern_of(workspace.GroupName): "a name: " + NAME.format(n=63),
    pattern_of(workspace.Channel): "a channel: " + NAME.format(n=31),
    pattern_of(workspace.SecretName): "a secret's name: an upper-case letter, then up to 127 "
    "upper-case letters, digits or '_'",
    subjects.TOKEN_PATTERN: "only letters, digits, '-' and '_', 1 to 64 of them",
    pattern_of(commands.ResumeUrl): "an http:// or https:// URL with a host (no user@ part, no "
    "spaces)",
    pattern_of(passkeys.B64): "base64url: letters, digits, '-' and '_' (no padding)",
    pattern_of(passkeys.CredentialId): "a passkey's credential id: 16 to 1400 base64url "
    "characters (letters, digits, '-' and '_')",
    pattern_of(passkeys.Challenge): "a challenge: 16 to 512 base64url characters (letters, "
    "digits, '-' and '_')",
}


def in_words(message: str) -> str:
    """A msgspec validation message with each pattern it names said in words."""
    for pattern, words in WORDS.items():
        # msgspec quotes the pattern as Python's repr does.
        message = message.replace(f"`str` matching regex {pattern!r}", words)
    return message
