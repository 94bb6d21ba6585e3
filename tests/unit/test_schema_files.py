"""The committed JSON Schema files are what the Structs generate today."""

from __future__ import annotations

from pathlib import Path

import pytest

from approvals import schemas
from approvals.schemas.export import schemas as generated_schemas

COMMITTED = Path(schemas.__file__).parent / "json"
GENERATED = generated_schemas()
FIX = "the Structs and schemas/json disagree: run `approvals schema export schemas/json`"


def test_the_committed_files_are_the_generated_ones() -> None:
    committed = sorted(path.name for path in COMMITTED.glob("*.json"))
    assert committed == sorted(GENERATED), FIX


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_a_committed_schema_has_the_generated_bytes(name: str) -> None:
    path = COMMITTED / name
    assert path.is_file(), f"{name} is missing; {FIX}"
    assert path.read_bytes() == GENERATED[name], f"{name} is out of date; {FIX}"
