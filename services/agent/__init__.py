"""Agents' access: the MCP server (``approvals mcp``)."""
