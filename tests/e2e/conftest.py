"""Fixtures shared by the end-to-end modules: ``stack``, the command service and projection the
agent-framework integrations are tested on (a module defining its own ``stack`` overrides it)."""

from tests.e2e.agent_stack import stack

__all__ = ["stack"]
