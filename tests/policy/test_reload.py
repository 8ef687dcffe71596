"""Hot reload under load: decisions see one whole policy, and its version names what decided."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from outbox.policy.engine import content_version
from outbox.policy.matching import Subject
from outbox.policy.store import PolicyStore
from outbox.runtime import Runtime
from outbox.toolkit import registry
from outbox.toolkit.base import Target

READER = Subject("agent:r", ("role:http-reader",))
GET = [Target("http:127.0.0.1:8080/v1/x", "get")]


def replace_atomically(path: Path, text: str) -> None:
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_concurrent_reloads_under_load_converge_and_never_mix_versions(runtime: Runtime, policy_dir: Path) -> None:
    """The watcher, SIGHUP and the admin endpoint may all reload at once while agents submit."""
    store: PolicyStore = runtime.policy
    rules = policy_dir / "rules.csv"
    allow_text = rules.read_text()
    deny_text = allow_text + "p, role:http-reader, http:127.0.0.1:*/**, get, deny\n"
    expected = {store.current.version: "allow"}
    replace_atomically(rules, deny_text)
    store.reload()
    expected[store.current.version] = "deny"

    stop = threading.Event()
    problems: list[Any] = []

    def agent() -> None:
        while not stop.is_set():
            active = store.current  # one reference: rules and tools of the same load
            decision = active.snapshot.decide(READER, GET)
            if expected.get(decision.policy_version) != decision.effect:
                problems.append(("mixed", decision.policy_version, decision.effect))
            if "http.request" not in active.tools:
                problems.append(("tools missing", active.version))

    def reloader() -> None:
        while not stop.is_set():
            ok, message = store.reload()
            if not ok:
                problems.append(("reload failed", message))

    threads = [threading.Thread(target=agent) for _ in range(4)] + [threading.Thread(target=reloader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for n in range(60):
            replace_atomically(rules, allow_text if n % 2 else deny_text)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert problems == []
    store.reload()
    assert store.current.version == content_version(policy_dir)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_file_changed_while_loading_is_loaded_again(
    runtime: Runtime, policy_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rules are read once and hashed as read; tools read their own files afterwards. If the
    directory changed in between, the store loads again rather than pair one version's rules
    with another's tools."""
    store: PolicyStore = runtime.policy
    rules = policy_dir / "rules.csv"
    changed = rules.read_text() + "p, role:http-reader, http:127.0.0.1:*/**, get, deny\n"
    calls = {"n": 0}

    def editing_provider(directory: Path, services: registry.ToolServices) -> list[Any]:
        calls["n"] += 1
        if calls["n"] == 1:  # an editor saves the file while the first load is in progress
            replace_atomically(rules, changed)
        return []

    monkeypatch.setattr(store, "providers", [*store.providers, editing_provider])
    ok, version = store.reload()
    assert ok
    assert calls["n"] == 2
    assert version == content_version(policy_dir)
    assert store.current.snapshot.decide(READER, GET).effect == "deny"
