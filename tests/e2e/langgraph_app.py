"""The graph the LangGraph tests drive: one node asks before sending rows, and writes one line
per send to a file (the side effect that must happen at most once). Run as a module, it asks
and prints the interrupt, then waits to be killed: the process that asked is gone when the
person decides. Run with ``follow``, it is a follower: it resumes the threads as their
approvals end, keeps the last stream sequence it handled in POSITION (and starts after it), and
prints a line per ending it read.

    python -m tests.e2e.langgraph_app NATS_URL CHECKPOINTS EFFECTS THREAD_ID
    python -m tests.e2e.langgraph_app follow NATS_URL CHECKPOINTS EFFECTS POSITION
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any, TypedDict

import msgspec
from langgraph.graph import END, START, StateGraph

from approvals.client import ApprovalsClient
from approvals.client.integrations.langgraph import follow, require

AGENT = "service:agent"
LIVE = {"kind": "provider_call", "mode": "live", "provider": "clearbit", "max_credits": 40}


class Rows(TypedDict, total=False):
    rows: list[int]
    action: dict[str, Any]
    expires_in_s: int
    result: str


def build(
    client: ApprovalsClient, checkpointer: Any, effects: Path, requested_by: str = AGENT
) -> Any:
    """The graph, compiled on ``checkpointer``; each send appends its payload to ``effects``."""

    async def send_rows(state: Rows) -> Rows:
        decision = await require(client, action=state.get("action", LIVE),
                                 payload={"rows": state["rows"]}, requested_by=requested_by,
                                 title="Send rows", skill_name="send-rows",
                                 expires_in_s=state.get("expires_in_s"))  # fmt: skip
        if not decision.approved:
            return {"result": f"{decision.status}: {decision.reason} rerun={decision.rerun}"}
        with effects.open("a") as out:
            out.write(json.dumps(decision.payload) + "\n")
        return {"result": f"sent {decision.payload['rows']}"}

    builder = StateGraph(Rows)
    builder.add_node("send_rows", send_rows)
    builder.add_edge(START, "send_rows")
    builder.add_edge("send_rows", END)
    return builder.compile(checkpointer=checkpointer)


async def ask(url: str, checkpoints: str, effects: str, thread_id: str) -> None:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    client = await ApprovalsClient.connect(url, "default", reply_timeout=10.0)
    async with AsyncSqliteSaver.from_conn_string(checkpoints) as saver:
        graph = build(client, saver, Path(effects))
        out = await graph.ainvoke({"rows": [1, 2, 3]}, {"configurable": {"thread_id": thread_id}})
        print(json.dumps(out["__interrupt__"][0].value), flush=True)
        await asyncio.Event().wait()  # until killed, between the ask and the decision


def saved_position(position: Path) -> int:
    """The last stream sequence the follower handled (0: none yet)."""
    return int(position.read_text()) if position.exists() else 0


def save_position(position: Path, sequence: int) -> None:
    position.write_text(str(sequence))


async def follower(url: str, checkpoints: str, effects: str, position: str) -> None:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    saved = Path(position)
    since = saved_position(saved)
    client = await ApprovalsClient.connect(url, "default", reply_timeout=10.0)
    async with AsyncSqliteSaver.from_conn_string(checkpoints) as saver:
        graph = build(client, saver, Path(effects))
        print(json.dumps({"since": since}), flush=True)
        async for followed in follow(graph, client, since=since):
            save_position(saved, followed.sequence)
            print(json.dumps(msgspec.to_builtins(followed)), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "follow":
        asyncio.run(follower(*sys.argv[2:6]))
    else:
        asyncio.run(ask(*sys.argv[1:5]))
