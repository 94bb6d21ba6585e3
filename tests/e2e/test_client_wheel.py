"""The light client as a caller installs it: the ``approvals-client`` wheel alone in a fresh
virtualenv (no server dependency comes with it), running its README's worked examples against
``approvals dev``, over NATS and over the gateway's HTTP API with an API key."""

from __future__ import annotations

import json
import os
import subprocess
import venv
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import pytest

from tests.e2e.devserver import APPROVALS, Dev, free_port
from tests.examples import example
from tests.wheels import build_wheels

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).parents[2]
CLIENT_README = ROOT / "schemas" / "README.md"
# What the server needs and a caller must not have to install.
SERVER_ONLY = {"litestar", "uvicorn", "eventsourcing", "faststream", "matplotlib", "slack-sdk",
               "prometheus-client", "psycopg", "mcp", "click", "approvals"}  # fmt: skip
CLIENT_DEPENDENCIES = {"nats-py", "msgspec", "cryptography", "httpx"}
# The agent frameworks the client integrates with: its extras, never its dependencies.
FRAMEWORKS = {"pydantic-ai-slim", "pydantic-ai", "langgraph", "langchain-core",
              "openai-agents", "openai", "temporalio"}  # fmt: skip

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def run(*command: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True,
                          timeout=400, env=env)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the client wheel and what pip resolved for it, nothing else."""
    tmp = tmp_path_factory.mktemp("client-wheel")
    # Check: both wheels build, as pip builds them for a user.
    _, client_wheel = build_wheels(tmp)
    fresh = tmp / "venv"
    venv.create(fresh, with_pip=True)
    python = fresh / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", client_wheel)
    return python


def test_the_client_wheel_brings_no_server_dependency(client_python: Path) -> None:
    listed = json.loads(run(client_python, "-m", "pip", "list", "--format", "json"))
    names = {item["name"].lower().replace("_", "-") for item in listed}
    assert names >= CLIENT_DEPENDENCIES
    assert not names & SERVER_ONLY, names & SERVER_ONLY
    assert not names & FRAMEWORKS, names & FRAMEWORKS
    # Check: only the import root is installed, with the wire contract and the client under it.
    shown = run(client_python, "-m", "pip", "show", "--files", "approvals-client")
    files = [line.strip() for line in shown.split("Files:", 1)[1].splitlines() if line.strip()]
    tops = {f.split("/", 1)[0] for f in files if not f.startswith(("..", "approvals_client-"))}
    assert tops == {"approvals"}, tops
    assert "approvals/schemas/json/commands.schema.json" in files or any(
        f.startswith("approvals/schemas/json/") for f in files
    )
    assert "approvals/client/http.py" in files


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[tuple[Dev, str]]:
    """``approvals dev`` (from the server's environment), and its gateway's URL."""
    gateway_port = free_port()
    env = {"APPROVALS_GATEWAY_PORT": str(gateway_port)}
    server = Dev(tmp_path / "data", free_port(), tmp_path / "dev.log", env=env)
    try:
        server.wait_for_line("ready")
        yield server, f"http://127.0.0.1:{gateway_port}"
    finally:
        server.kill()


def approve_while_running(example_run: subprocess.Popen[str], nats_url: str) -> tuple[str, str]:
    """A person (user:ana, with the CLI) approves what waits until the example ends."""
    while example_run.poll() is None:
        pending = cli(nats_url, "--json", "list", "--status", "pending")
        for item in json.loads(pending)["items"]:
            subprocess.run([APPROVALS, "--nats-url", nats_url, "-w", "default", "approve",
                            item["id"], "--approver", "user:ana", "--digest", item["digest"]],
                           capture_output=True, timeout=60, check=False)  # fmt: skip
        try:
            example_run.wait(timeout=0.2)  # a person's polling interval, not a wait for a state
        except subprocess.TimeoutExpired:
            continue
    out, err = example_run.communicate(timeout=60)
    return out, err


def cli(nats_url: str, *args: str) -> str:
    return run(APPROVALS, "--nats-url", nats_url, "-w", "default", *args)


def run_example(python: Path, name: str, env: dict[str, str], nats_url: str) -> list[str]:
    code = example(name, CLIENT_README)
    started = subprocess.Popen([str(python), "-c", code], env={**os.environ, **env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=python.parent)  # fmt: skip
    out, err = approve_while_running(started, nats_url)
    assert started.returncode == 0, (out, err)
    return out.splitlines()


def test_the_client_examples_run_from_the_client_wheel_over_nats_and_http(
    client_python: Path, dev: tuple[Dev, str]
) -> None:
    server, api_url = dev
    # Check: over NATS, the worked example as written.
    lines = run_example(client_python, "client", {"NATS_URL": server.url}, server.url)
    assert lines[0].startswith("approval_required http")
    assert lines[1:] == ["approved by user:ana ceiling 10.0", "reported 5.0 credits",
                         "gated run used 5.0 credits"]  # fmt: skip
    # Check: over HTTP, with an API key of the agent, the HTTP example as written.
    created = cli(server.url, "--json", "keys", "create", "--as", "service:agent",
                  "--by", "user:admin", "--name", "example")  # fmt: skip
    key = msgspec.json.decode(created)["key"]
    env = {"APPROVALS_API_URL": api_url, "APPROVALS_API_KEY": key}
    lines = run_example(client_python, "http-client", env, server.url)
    assert lines[0].startswith("approval_required http")
    assert lines[1:] == ["approved by user:ana ceiling 10.0", "reported 5.0 credits",
                         "gated run used 5.0 credits"]  # fmt: skip
    # Check: the service saw both runs of each door redeemed and reported.
    page = json.loads(cli(server.url, "--json", "list", "--skill-name", "enrich-leads"))
    assert len(page["items"]) == 4
    assert {(i["status"], i["credits_used"]) for i in page["items"]} == {("approved", 5.0)}
    assert all(i["redeemed_at"] and i["receipt"] for i in page["items"])
