"""What a passkey costs a decision: approvals decided in the command service's application, on a
SQLite file, with and without a passkey assertion to check (py_webauthn, ES256), in one run.

    .venv/bin/python benchmarks/bench_passkeys.py [--decisions N] [--json]

Both halves ask N requests in a workspace requiring passkeys at high risk, then approve each one
with ``Approvals.handle`` (decide, check, save with synchronous FULL, fold): at ``medium`` risk
(no passkey: today's path, the baseline) and at ``high`` (each approval signed by a software
authenticator, tests/authenticator.py, and checked). It prints both rates and their ratio, and the
time of ``assertions.check`` alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from uuid import uuid4

sys.path.insert(0, str(Path(__file__).parents[1]))

from approvals.schemas import commands
from approvals.schemas.passkeys import SignedDecision, Statement, b64
from approvals.schemas.workspace import Member, Passkeys, WorkspaceSettings
from approvals.services.approvals import assertions
from approvals.services.approvals.application import Approvals
from approvals.services.approvals.store import store_env
from approvals.services.runtime.settings import Settings
from tests.authenticator import ORIGIN, RP_ID, Authenticator

WS = "bench"
SETTINGS = WorkspaceSettings(
    members={"user:admin": Member(roles=("admin",)), "user:ana": Member(roles=("approver",)),
             "service:agent": Member(roles=("requester",))},
    passkeys=Passkeys(require=("high",)),
)  # fmt: skip
ACTION = commands.Action(kind="crm_write", mode="live", destination="hubspot")


def run(decisions: int, signed: bool) -> float:
    """Approvals per second over ``decisions`` approvals (signed or not)."""
    with tempfile.TemporaryDirectory() as tmp:
        app = Approvals(store_env(Settings(sqlite_path=Path(tmp) / "bench.db")))
        app.handle(WS, commands.Configure(settings=SETTINGS, by="user:admin"))
        device = Authenticator()
        nonce = os.urandom(32)
        app.handle(WS, commands.RegisterPasskey(
            member="user:ana", credential=device.register(nonce), challenge=b64(nonce),
            rp_id=RP_ID, origin=ORIGIN))  # fmt: skip
        risk = "high" if signed else "medium"
        asked = [
            app.handle(
                WS,
                commands.Request(
                    requested_by="service:agent",
                    skill_name="s",
                    skill_execution_id=str(n),
                    title="t",
                    summary="s",
                    risk_level=risk,
                    action=ACTION,
                ),
            ).approval
            for n in range(decisions)
        ]
        approvals = []
        for approval in asked:
            assert approval is not None
            passkey = device.sign(Statement(
                workspace_id=WS, approval_id=approval.id, version=approval.version,
                decision="approve", digest=approval.request.digest, approver="user:ana",
            )) if signed else None  # fmt: skip
            approvals.append(
                commands.Approve(
                    approval_id=approval.id,
                    approver="user:ana",
                    digest=approval.request.digest,
                    passkey=passkey,
                )
            )
        started = time.perf_counter()
        for approve in approvals:
            assert app.handle(WS, approve).outcome == "approved"
        elapsed = time.perf_counter() - started
        app.close()
    return decisions / elapsed


def check_alone(times: int) -> float:
    """Microseconds per ``assertions.check`` of one ES256 assertion."""
    device = Authenticator()
    registered = assertions.check_registration(device.register(b"x" * 32), b"x" * 32, RP_ID,
                                               ORIGIN)  # fmt: skip
    credential = assertions.Credential("user:ana", registered.credential_id,
                                       registered.public_key, RP_ID, ORIGIN)  # fmt: skip
    statement = Statement(workspace_id=WS, approval_id=uuid4(), version=1,
                          decision="approve", digest="0" * 64, approver="user:ana")  # fmt: skip
    signed = SignedDecision(member="user:ana", version=1, decision="approve",
                            assertion=device.sign(statement))  # fmt: skip
    started = time.perf_counter()
    for _ in range(times):
        assertions.check(credential, statement, signed, None)
    return (time.perf_counter() - started) / times * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    plain = run(options.decisions, signed=False)
    signed = run(options.decisions, signed=True)
    result = {"decisions": options.decisions, "unsigned_per_s": round(plain, 1),
              "signed_per_s": round(signed, 1), "ratio": round(signed / plain, 3),
              "check_us": round(check_alone(500), 1)}  # fmt: skip
    if options.json:
        print(json.dumps(result))
        return
    print(f"approvals without a passkey  {plain:8.1f}/s  (baseline)")
    print(f"approvals with a passkey     {signed:8.1f}/s  ratio {signed / plain:.3f}")
    print(f"one assertion check          {result['check_us']:8.1f} us")


if __name__ == "__main__":
    main()
