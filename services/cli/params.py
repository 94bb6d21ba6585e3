"""Option and argument types that refuse a malformed value before anything is sent, in words a
person understands (the schemas' patterns stay the contract; these say what they mean)."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, ClassVar, get_args
from uuid import UUID

import click

from approvals.schemas import subjects
from approvals.schemas.types import ACTOR_PATTERN, ActionKind

if TYPE_CHECKING:
    from collections.abc import Callable

ACTION_KINDS: tuple[str, ...] = get_args(ActionKind)


class _Checked(click.ParamType[str, str]):
    """A string accepted when ``ok`` holds; otherwise ``what`` says what was expected."""

    name = "text"
    ok: Callable[[str], bool]
    what: str

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or self.ok(str(value)):
            return value
        self.fail(f"{value!r} {self.what}", param, ctx)


class Token(_Checked):
    """A workspace (or any other value that becomes one token of a NATS subject)."""

    name = "workspace"
    what = "is not a workspace: only letters, digits, '-' and '_', 1 to 64 of them"
    ok = staticmethod(subjects.is_token)


class ApprovalId(_Checked):
    name = "approval_id"
    what = "is not an approval id: a UUID such as 0190c7b2-5d3e-7a8b-9c0d-1e2f3a4b5c6d"

    @staticmethod
    def ok(value: str) -> bool:
        try:
            UUID(value)
        except ValueError:
            return False
        return True


_DIGEST = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[a-z0-9]{12,32}")
_ACTOR = re.compile(ACTOR_PATTERN)  # the schema's own rule (anchored with ^ and $(?!\n))
_PERSON = re.compile(r"user:[A-Za-z0-9_.@+-]{1,128}")


class Digest(_Checked):
    name = "digest"
    what = "is not a digest: 64 lower-case hex characters, as `approvals show ID` prints it"
    ok = staticmethod(lambda value: _DIGEST.fullmatch(value) is not None)


class KeyId(_Checked):
    name = "key_id"
    what = (
        "is not an API key id: 12 to 32 lower-case letters and digits, "
        "as `approvals keys create` printed it"
    )
    ok = staticmethod(lambda value: _KEY_ID.fullmatch(value) is not None)


class Actor(_Checked):
    name = "actor"
    what = "is not an actor: user:<id>, service:<name>, policy:<rule> or grant:<id>"
    ok = staticmethod(lambda value: _ACTOR.search(value) is not None)


class Person(_Checked):
    name = "person"
    what = "is not a person: user:<id>, e.g. user:ana"
    ok = staticmethod(lambda value: _PERSON.fullmatch(value) is not None)


class Json(click.ParamType[Any, str]):
    """A JSON value, decoded."""

    name = "json"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except ValueError as error:
            self.fail(f"{value[:40]!r} is not JSON ({error})", param, ctx)


class JsonObject(Json):
    name = "json_object"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        decoded = super().convert(value, param, ctx)
        if not isinstance(decoded, dict):
            self.fail(f"{value[:40]!r} is not a JSON object, such as {{\"country\": \"DE\"}}",
                      param, ctx)  # fmt: skip
        return decoded


WORKSPACE = Token()
APPROVAL_ID = ApprovalId()
DIGEST = Digest()
KEY_ID = KeyId()
ACTOR = Actor()
PERSON = Person()
JSON = Json()
JSON_OBJECT = JsonObject()


class GateCommand(click.Command):
    """A command whose exit codes mean outcomes (``wait``: 2 is expired): a usage mistake exits
    with its error code rather than click's 2."""

    usage_exit: ClassVar[int] = 4
