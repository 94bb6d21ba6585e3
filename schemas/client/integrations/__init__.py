"""Integrations of the client with agent frameworks, each an optional extra of
``approvals-client`` (``approvals-client[langgraph]``, ``approvals-client[pydantic-ai]``): importing
one needs its framework installed; the client itself never imports them."""
