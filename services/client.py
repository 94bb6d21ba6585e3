"""Deprecated: the client moved to ``approvals.client`` (the ``approvals-client`` distribution).

Kept for one release so that callers importing ``approvals.services.client`` keep working; it
warns once on import and re-exports the client's public names.
"""

from __future__ import annotations

import warnings

from approvals.client import (
    CLIENT_VIA,
    ApprovalDenied,
    ApprovalPending,
    ApprovalsClient,
    ApprovalsError,
    ApprovalsHttpClient,
    Run,
    connect_once,
    require_approval,
    verify_receipt,
)

warnings.warn(
    "approvals.services.client is deprecated: import approvals.client instead "
    "(pip install approvals-client)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "CLIENT_VIA",
    "ApprovalDenied",
    "ApprovalPending",
    "ApprovalsClient",
    "ApprovalsError",
    "ApprovalsHttpClient",
    "Run",
    "connect_once",
    "require_approval",
    "verify_receipt",
]
