"""The deployment files: every command they run exists in the CLI, and they hold together.

There is no container engine or cluster here, so the files are checked by parsing them, and by
`docker compose config` and `kubectl kustomize` when those clients are installed.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import typer
import yaml

from outbox import metrics
from outbox.cli.main import app
from outbox.config import Settings
from outbox.execution.queue_state import read_queue_state
from outbox.runtime import Runtime

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
K8S = REPO / "deploy" / "k8s"
OUR_IMAGE = re.compile(r"^(\$\{OUTBOX_IMAGE:-)?agent-outbox")


def check_cli_argv(argv: list[str]) -> None:
    """Parse argv with the real Typer app, as `outbox …` would, without running anything."""
    assert argv[0] == "outbox", f"{argv} does not run the outbox CLI"
    command: click.Command = typer.main.get_command(app)
    args = list(argv[1:])
    path = ["outbox"]
    while isinstance(command, click.Group):
        assert args, f"{argv}: `{' '.join(path)}` needs a subcommand"
        name = args.pop(0)
        assert name in command.commands, f"{argv}: `{' '.join(path)}` has no command {name!r}"
        command = command.commands[name]
        path.append(name)
    try:
        command.make_context(" ".join(path), args)
    except click.ClickException as exc:
        pytest.fail(f"{argv} is not a valid `{' '.join(path)}` invocation: {exc.format_message()}")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return loaded


def k8s_documents() -> Iterator[dict[str, Any]]:
    for path in sorted(K8S.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(document, dict) and "kind" in document:
                yield document


def outbox_containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    spec = document.get("spec", {}).get("template", {}).get("spec", {})
    containers = [*spec.get("initContainers", []), *spec.get("containers", [])]
    return [c for c in containers if OUR_IMAGE.match(c.get("image", ""))]


def test_every_compose_command_exists_in_the_cli() -> None:
    services = compose()["services"]
    ours = {name: s for name, s in services.items() if OUR_IMAGE.match(s.get("image", ""))}
    assert set(ours) == {"migrate", "api", "worker", "beat"}
    for service in ours.values():
        check_cli_argv(service["command"])


def test_every_kubernetes_command_exists_in_the_cli() -> None:
    commands = [c["command"] for d in k8s_documents() if d["kind"] == "Deployment" for c in outbox_containers(d)]
    assert len(commands) == 4  # migrate (init), api, worker, beat
    for argv in commands:
        check_cli_argv(argv)


def test_the_image_runs_the_cli_as_a_non_root_user() -> None:
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert len(re.findall(r"^FROM ", dockerfile, re.MULTILINE)) >= 2, "multi-stage build"
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    check_cli_argv(json.loads(cmd))
    users = re.findall(r"^USER (\S+)$", dockerfile, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"0", "root"}


def test_compose_keeps_redis_durable_and_secrets_out_of_the_file() -> None:
    services = compose()["services"]
    redis_command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_command
    assert "--maxmemory-policy noeviction" in redis_command
    secret_name = re.compile(r"PASSWORD|TOKEN|SECRET|DATABASE_URL|BROKER_URL", re.IGNORECASE)
    for name, service in services.items():
        for variable in service.get("environment", {}) or {}:
            assert not secret_name.search(variable), f"{name} sets {variable} in the compose file"
    for name in ("api", "worker", "beat", "migrate"):
        assert services[name]["env_file"] == "deploy/outbox.env"
    assert "healthcheck" in services["api"] and "healthcheck" in services["worker"]
    assert "replicas" not in services["beat"].get("deploy", {})


def test_env_example_names_only_settings_that_exist() -> None:
    text = (REPO / "deploy" / "env.example").read_text(encoding="utf-8")
    named = set(re.findall(r"^#?\s*(OUTBOX_[A-Z0-9_]+)=", text, re.MULTILINE))
    known = {f"OUTBOX_{field.upper()}" for field in [*Settings.model_fields, *metrics.MetricsSettings.model_fields]}
    assert named, "env.example names no settings"
    assert named <= known, f"unknown settings in env.example: {sorted(named - known)}"
    assert {"OUTBOX_DATABASE_URL", "OUTBOX_BROKER_URL", "OUTBOX_ADMIN_TOKEN"} <= named


def test_docker_compose_config_validates(tmp_path: Path) -> None:
    """`docker compose config` needs no engine. The file is validated in a copy of the tree where
    deploy/outbox.env exists, as it does once an operator has created it. The legacy v1
    `docker-compose` predates the top-level `name`; it validates everything else."""
    client: list[str] | None = None
    for candidate in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(candidate[0]) is None:
            continue
        if subprocess.run([*candidate, "version"], capture_output=True, check=False).returncode == 0:
            client = candidate
            break
    if client is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed; compose file not validated")
    document = compose()
    if client == ["docker-compose"]:
        document.pop("name")
        (tmp_path / "docker-compose.yml").write_text(yaml.safe_dump(document), encoding="utf-8")
    else:
        shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    (tmp_path / "deploy").mkdir()
    shutil.copy(REPO / "deploy" / "env.example", tmp_path / "deploy" / "outbox.env")
    for profiles in ([], ["--profile", "staging", "--profile", "observability"]):
        result = subprocess.run(
            [*client, *profiles, "config", "--quiet"], cwd=tmp_path, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr


def load_sync_policies() -> Any:
    spec = importlib.util.spec_from_file_location("sync_policies", K8S / "sync_policies.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_policy_component_is_in_sync_with_the_policies_directory() -> None:
    sync = load_sync_policies()
    assert sync.main(["--check"]) == 0, "run `python deploy/k8s/sync_policies.py` and commit the result"


def test_kubernetes_manifests_render_with_probes_budgets_and_autoscaling() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed; kustomize build not checked")
    result = subprocess.run(
        ["kubectl", "kustomize", "--load-restrictor=LoadRestrictionsNone", str(K8S)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    documents = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = {
        (d["kind"], d["metadata"]["name"].rsplit("-", 1)[0] if d["kind"] == "ConfigMap" else d["metadata"]["name"])
        for d in documents
    }
    assert {("Deployment", "outbox-api"), ("Deployment", "outbox-worker"), ("Deployment", "outbox-beat")} <= kinds
    assert {("PodDisruptionBudget", "outbox-api"), ("PodDisruptionBudget", "outbox-worker")} <= kinds
    assert ("ScaledObject", "outbox-worker") in kinds
    assert not [d for d in documents if d["kind"] == "Secret"], "secrets are created out of band, never rendered"

    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    api = deployments["outbox-api"]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (policies_map,) = [
        d for d in documents if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("outbox-policies-")
    ]
    expected = {p.as_posix() for p in load_sync_policies().policy_files()}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for container in [*pod.get("initContainers", []), *pod["containers"]]:
            assert container["resources"]["requests"] and container["resources"]["limits"], (
                f"{name}/{container['name']}"
            )
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
        (volume,) = [v for v in pod["volumes"] if v["name"] == "policies"]
        assert volume["configMap"]["name"] == policies_map["metadata"]["name"]
        assert {item["path"] for item in volume["configMap"]["items"]} == expected, name
        assert {item["key"] for item in volume["configMap"]["items"]} == set(policies_map["data"])


def metric_sample_names(text: str) -> set[str]:
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "info": ["_info"], "gauge": [""]}
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        base = name.removesuffix("_total") if kind == "counter" else name
        names.update(base + suffix for suffix in suffixes.get(kind, [""]))
    return names


@pytest.fixture
def exposed_names(runtime: Runtime) -> Iterator[set[str]]:
    def mail(_runtime: Runtime) -> list[metrics.Reading]:
        return [
            metrics.BudgetUse("a.example.com", "hour", used=1, limit=2),
            metrics.SubdomainHealth("a.example.com", breaker_tripped=False, paused=False, dns_ok=True),
        ]

    metrics.register_collector("test-names", mail)
    try:
        yield metric_sample_names(metrics.render_metrics(runtime, read_queue_state).decode())
    finally:
        metrics.unregister_collector("test-names")


def test_alerts_and_dashboard_use_only_metrics_that_exist(exposed_names: set[str]) -> None:
    alerts = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    rules = [rule for group in alerts["groups"] for rule in group["rules"]]
    for rule in rules:
        assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        assert rule["annotations"]["summary"]
    names = {rule["alert"] for rule in rules}
    assert {"OutboxQueueLagHigh", "OutboxBreakerTripped", "OutboxApprovalBacklog", "OutboxPolicySkew"} <= names

    dashboard = json.loads((REPO / "deploy" / "grafana" / "dashboards" / "outbox.json").read_text(encoding="utf-8"))
    expressions = [rule["expr"] for rule in rules] + [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    referenced = {name for expr in expressions for name in re.findall(r"\boutbox_[a-z0-9_]+", expr)}
    assert referenced, "no outbox metric referenced"
    assert referenced <= exposed_names, f"not exposed by any collector: {sorted(referenced - exposed_names)}"
