"""Integrations of the client with agent frameworks, each an optional extra of
``approvals-client`` (``approvals-client[langgraph]``): importing one needs its framework."""
