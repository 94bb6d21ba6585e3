"""The command service decides every verb through one table: verb -> decide-function."""

from __future__ import annotations

from approvals.schemas import commands, subjects
from approvals.services.approvals.verbs import VERBS


def test_every_command_of_the_wire_contract_has_one_decide_function() -> None:
    assert set(VERBS) == set(commands.COMMANDS.values())
    assert set(commands.COMMANDS) == set(subjects.COMMAND_VERBS)
