"""Fixtures for command tools: real bubblewrap, a fake kubectl, and directories the sandbox can read.

The sandbox runs commands as an unprivileged host uid when the tests run as root, so every host
directory bound into a sandbox here is created world-readable (pytest's own tmp_path lives under
a 0700 directory that uid 65534 cannot enter).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from outbox.commands import CommandTool, SandboxProfile, SandboxSettings, builtin_profiles, load_command_tools
from outbox.commands.egress import NamedDestination
from outbox.commands.sandbox import sandbox_problem
from tests.commands.egress_world import NameServer

REPO = Path(__file__).resolve().parents[2]
SHIPPED_TOOLS = REPO / "policies" / "tools"
KUBECONFIG = "apiVersion: v1\nkind: Config\n# kubeconfig-secret-7d1f0c2e9b\n"
# The k8s tools' `destination: "{cluster}"`, configured as a deployment would (TEST-NET-1, unused).
CLUSTER_DESTINATIONS = {
    "staging": NamedDestination(host="staging.cluster.test", port=6443),
    "production": NamedDestination(host="192.0.2.10", port=6443),
}

FAKE_KUBECTL = r'''#!/usr/bin/python3
"""Stand-in for kubectl and its API server: records its argv and answers like kubectl."""
import hashlib
import json
import os
import sys

here = os.path.dirname(os.path.realpath(__file__))
with open(os.path.join(here, "cluster.json")) as state_file:
    clusters = json.load(state_file)
print("ARGV " + json.dumps(sys.argv[1:]), file=sys.stderr)
kubeconfig = os.environ.get("KUBECONFIG", "")
if not os.path.isfile(kubeconfig):
    print("error: no kubeconfig", file=sys.stderr)
    sys.exit(1)
with open(kubeconfig, "rb") as config:
    print("KUBECONFIG-SHA256 " + hashlib.sha256(config.read()).hexdigest(), file=sys.stderr)
context = namespace = dry_run = replicas = None
words = []
args = sys.argv[1:]
while args:
    arg = args.pop(0)
    if arg == "--context":
        context = args.pop(0)
    elif arg == "--namespace":
        namespace = args.pop(0)
    elif arg.startswith("--dry-run="):
        dry_run = arg.split("=", 1)[1]
    elif arg.startswith("--replicas="):
        replicas = arg.split("=", 1)[1]
    elif arg.startswith(("--request-timeout=", "--wait=")) or arg in ("--output", "wide"):
        pass
    elif arg.startswith("-"):
        print(f"error: unknown flag: {arg}", file=sys.stderr)
        sys.exit(1)
    else:
        words.append(arg)
if context not in clusters:
    print(f'error: context "{context}" does not exist', file=sys.stderr)
    sys.exit(1)
existing = clusters[context]
suffix = " (server dry run)" if dry_run == "server" else ""
if words[:2] == ["delete", "namespace"]:
    status = 0
    for name in words[2:]:
        if name in existing:
            print(f'namespace "{name}" deleted{suffix}')
        else:
            print(f'Error from server (NotFound): namespaces "{name}" not found', file=sys.stderr)
            status = 1
    sys.exit(status)
if words[:2] == ["get", "pods"]:
    print("NAME READY STATUS")
    print(f"{namespace}-web-0 1/1 Running")
    sys.exit(0)
if words[:2] == ["scale", "deployment"]:
    print(f"deployment.apps/{words[2]} scaled to {replicas}{suffix}")
    sys.exit(0)
print("error: unsupported command " + " ".join(words), file=sys.stderr)
sys.exit(1)
'''


def _sandbox_readable(path: Path) -> Path:
    for entry in [path, *path.rglob("*")]:
        entry.chmod(0o755 if entry.is_dir() or os.access(entry, os.X_OK) else 0o644)
    return path


@pytest.fixture(scope="session")
def require_sandbox() -> None:
    """Skip sandbox tests where bubblewrap cannot work, unless CI says it must."""
    problem = sandbox_problem(SandboxSettings())
    if problem is None:
        return
    if os.environ.get("OUTBOX_TEST_REQUIRE_BWRAP") == "1":
        pytest.fail(f"bubblewrap required: {problem}")
    pytest.skip(f"sandbox unavailable ({problem}); sandbox tests skipped")


@pytest.fixture(scope="session")
def name_server() -> Iterator[NameServer]:
    """The only resolver the egress proxy is given in tests: a DNS server on loopback."""
    server = NameServer().start()
    yield server
    server.stop()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A fresh directory the sandbox's unprivileged host uid can read (mode 0755)."""
    path = Path(tempfile.mkdtemp(prefix="outbox-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def settings(require_sandbox: None) -> SandboxSettings:
    return SandboxSettings()


def profile_with(name: str, **changes: object) -> SandboxProfile:
    """A built-in profile with some fields replaced (validated like any profile)."""
    return SandboxProfile.model_validate(builtin_profiles()[name].model_dump() | changes)


@pytest.fixture
def fake_cluster(shared_dir: Path) -> Path:
    """A directory holding the fake kubectl and the namespaces its "server" knows."""
    bin_dir = shared_dir / "fakebin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL)
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    namespaces = [
        "feature-branch-login",
        "feature-branch-search",
        "old-branch-cleanup",
        "integration-branch-env",
        "payments",
    ]
    (bin_dir / "cluster.json").write_text(json.dumps({"staging": namespaces, "production": ["payments"]}))
    return _sandbox_readable(bin_dir)


@pytest.fixture
def kube_settings(require_sandbox: None, fake_cluster: Path) -> SandboxSettings:
    """The shipped `network` profile, with the fake kubectl first on PATH.

    The fake kubectl never connects; the clusters' destinations are configured (on addresses
    nothing listens on) because the k8s tools are unavailable without them."""
    network = builtin_profiles()["network"]
    profiles = builtin_profiles() | {
        "network": profile_with(
            "network",
            mounts={"fakebin": "/opt/fakebin"},
            env=network.env | {"PATH": "/opt/fakebin:/usr/bin:/bin"},
        )
    }
    return SandboxSettings(
        profiles=profiles,
        mounts={"fakebin": fake_cluster},
        secrets={"kubeconfig": KUBECONFIG},
        destinations=CLUSTER_DESTINATIONS,
    )


@pytest.fixture
def shipped_tool(kube_settings: SandboxSettings) -> Callable[[str], CommandTool]:
    """A tool from policies/tools/, bound to settings that use the fake kubectl."""
    tools = {tool.name: tool for tool in load_command_tools(SHIPPED_TOOLS).build_tools(kube_settings)}
    return tools.__getitem__


@pytest.fixture(scope="session")
def parsing_tool() -> Callable[[str], CommandTool]:
    """A shipped tool for argument and target checks, which never reach the sandbox."""
    settings = SandboxSettings(destinations=CLUSTER_DESTINATIONS)
    tools = {tool.name: tool for tool in load_command_tools(SHIPPED_TOOLS).build_tools(settings)}
    return tools.__getitem__
