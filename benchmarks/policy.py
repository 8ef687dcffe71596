"""Policy decision cost as the rule count grows: 100, 1,000 and 10,000 rules.

    .venv/bin/python benchmarks/policy.py            # indexed decisions, plus casbin's scan
    .venv/bin/python benchmarks/policy.py --no-baseline
    .venv/bin/python benchmarks/policy.py --no-shadow    # skip the shadow policy's cost

Each policy is a realistic mix: many agents and roles (agents hold roles from the database and
roles inherit roles through `g`), HTTP services with per-path grants and admin denies, Kubernetes
clusters and namespaces, mail subdomains and recipient domains. Queries are agents asking for
objects drawn from the same vocabulary, so some hit rules and many do not (the default deny).

Prints decision p50/p99 for `PolicySnapshot.decide` (the rule index) and, for comparison, for
casbin's own scan of every rule (`decide_by_scan`), and each figure's ratio to the 100-rule one.
The goal: the 10,000-rule decision costs at most 3x the 100-rule decision.

Then the cost of a shadow policy (docs/shadow-policy.md) on the submission path, measured in the
same run: the live effective decision alone, against the live decision plus the shadow's (a copy
of the policy with 1% of its grants turned to denies), both outcomes (`outcome_of`, with each
side's approval gates) and their `changes`. The goal: at most 2x the decision without a shadow.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from outbox.actions.shadow import ShadowDecision, shadow_outcome  # noqa: E402
from outbox.policy.approval_gates import ApprovalsConfig, load_approvals_config  # noqa: E402
from outbox.policy.counterfactual import Outcome, changes, outcome_of  # noqa: E402
from outbox.policy.effective import EffectiveDecision, effective_decision  # noqa: E402
from outbox.policy.engine import PolicySnapshot, load_policy  # noqa: E402
from outbox.policy.matching import Subject  # noqa: E402
from outbox.policy.store import ActivePolicy  # noqa: E402
from outbox.toolkit.base import Target  # noqa: E402

SIZES = (100, 1_000, 10_000)
GOAL_RATIO = 3.0
SHADOW_GOAL_RATIO = 2.0
# Share of the shadow's `p` rules that differ from the live policy's (an allow made a deny).
SHADOW_CHANGED = 0.01
RESOURCES = ["orders", "invoices", "customers", "reports", "tickets", "users", "jobs", "exports"]


@dataclass
class World:
    rules: list[str]
    agents: list[tuple[str, tuple[str, ...]]]
    hosts: list[str]
    clusters: list[str]
    namespaces: list[str]
    subdomains: list[str]
    domains: list[str]


def build_world(size: int, rng: random.Random) -> World:
    roles = [f"role:team-{i}" for i in range(max(5, size // 25))]
    agents = []
    for i in range(max(10, size // 10)):
        held = tuple(rng.sample(roles, rng.randint(1, 3)))
        agents.append((f"agent:bot-{i}", held))
    hosts = [f"svc-{i}.internal:8443" for i in range(max(3, size // 40))]
    clusters = [f"cluster-{i}" for i in range(max(2, size // 1000))]
    namespaces = [f"ns-{i}" for i in range(max(5, size // 20))]
    subdomains = [f"agents{i}.mail.example.com" for i in range(max(1, size // 500))]
    domains = [f"customer-{i}.example" for i in range(max(5, size // 20))]

    rules: list[str] = []
    # Role hierarchy: some teams inherit others (chains of a few levels).
    for role in rng.sample(roles, len(roles) // 3):
        rules.append(f"g, {role}, {rng.choice(roles)}")
    subjects = roles + [name for name, _ in agents]
    while len([r for r in rules if r.startswith("p,")]) < size:
        subject = rng.choice(roles) if rng.random() < 0.6 else rng.choice(subjects)
        kind = rng.random()
        if kind < 0.5:
            host, resource = rng.choice(hosts), rng.choice(RESOURCES)
            shape = rng.random()
            if shape < 0.4:
                obj, act, effect = f"http:{host}/api/{resource}/**", "get|head", "allow"
            elif shape < 0.7:
                obj, act, effect = f"http:{host}/api/{resource}/*", "post|put|patch", "allow"
            elif shape < 0.85:
                obj, act, effect = f"http:{host}/api/{resource}/*", "delete", "approve"
            else:
                obj, act, effect = f"http:{host}/admin/**", "get|head|post|put|patch|delete", "deny"
        elif kind < 0.8:
            cluster, namespace = rng.choice(clusters), rng.choice(namespaces)
            shape = rng.random()
            if shape < 0.4:
                obj, act, effect = f"k8s:{cluster}/namespace/{namespace}", "read", "allow"
            elif shape < 0.7:
                obj, act, effect = f"k8s:{cluster}/namespace/{namespace}/deployment/*", "scale", "approve"
            elif shape < 0.9:
                obj, act, effect = f"k8s:{cluster}/namespace/{namespace}", "delete", "approve"
            else:
                obj, act, effect = f"k8s:{cluster}/namespace/kube-system", "delete", "deny"
        else:
            sub, domain = rng.choice(subdomains), rng.choice(domains)
            obj, act, effect = f"mail:{sub}/*@{domain}", "send", rng.choice(["allow", "approve"])
        rules.append(f"p, {subject}, {obj}, {act}, {effect}")
    return World(rules, agents, hosts, clusters, namespaces, subdomains, domains)


def random_target(world: World, rng: random.Random) -> Target:
    kind = rng.random()
    if kind < 0.5:
        host, resource = rng.choice(world.hosts), rng.choice(RESOURCES)
        path = rng.choice([f"/api/{resource}/{rng.randint(1, 999)}", f"/api/{resource}", "/admin/users"])
        return Target(f"http:{host}{path}", rng.choice(["get", "post", "delete", "head"]))
    if kind < 0.8:
        cluster, namespace = rng.choice(world.clusters), rng.choice(world.namespaces)
        if rng.random() < 0.5:
            return Target(f"k8s:{cluster}/namespace/{namespace}", rng.choice(["read", "delete"]))
        return Target(f"k8s:{cluster}/namespace/{namespace}/deployment/web", "scale")
    sub, domain = rng.choice(world.subdomains), rng.choice(world.domains)
    return Target(f"mail:{sub}/person{rng.randint(1, 99)}@{domain}", "send")


def write_policy(world: World, directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.conf").write_text((ROOT / "policies" / "model.conf").read_text())
    (directory / "rules.csv").write_text("\n".join(world.rules) + "\n")
    return directory


def measure(
    decide: Callable[[Subject, Sequence[Target]], object], queries: Sequence[tuple[Subject, Target]]
) -> tuple[float, float]:
    for subject, target in queries[: min(50, len(queries))]:  # warm caches
        decide(subject, [target])
    samples = []
    for subject, target in queries:
        started = time.perf_counter_ns()
        decide(subject, [target])
        samples.append((time.perf_counter_ns() - started) / 1000)
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return p50, p99


def shadow_world(world: World, rng: random.Random) -> World:
    """The live policy with a few grants turned to denies: a candidate change under trial."""
    rules = list(world.rules)
    grants = [i for i, rule in enumerate(rules) if rule.endswith(", allow")]
    for i in rng.sample(grants, max(1, int(len(grants) * SHADOW_CHANGED))):
        rules[i] = rules[i].removesuffix(", allow") + ", deny"
    return World(rules, world.agents, world.hosts, world.clusters, world.namespaces, world.subdomains, world.domains)


@dataclass(frozen=True)
class Side:
    snapshot: PolicySnapshot
    approvals: ApprovalsConfig

    @property
    def active(self) -> ActivePolicy:
        return ActivePolicy(self.snapshot, {}, self.approvals)


Decider = Callable[[Subject, Sequence[Target]], object]
TOOL = "http.request"


def shadow_deciders(live: Side, shadow: Side) -> dict[str, tuple[Decider, Decider]]:
    """Without and with a shadow, two ways: `decide` is the decision alone (live decide, against
    live decide + the shadow's outcome as a submission gets it (`shadow_outcome`: the live one
    when no changed rule can touch the call, else a second decision) + both outcomes' `changes`);
    `as recorded` adds to both sides what a submission builds from its decision (the rules column,
    the decision record of its two audit events, the explanation) and, with a shadow, the
    shadow's record (outbox/actions/shadow.py)."""
    live_active, shadow_active = live.active, shadow.active

    def live_decision(subject: Subject, targets: Sequence[Target]) -> EffectiveDecision:
        return effective_decision(live.snapshot, subject, targets, blast_radius=None)

    def shadow_decision(verdict: EffectiveDecision, subject: Subject, targets: Sequence[Target]) -> ShadowDecision:
        live_outcome = outcome_of(verdict, TOOL, live.approvals)

        def decide_in_shadow() -> Outcome:
            shadowed = effective_decision(shadow.snapshot, subject, targets, blast_radius=None)
            return outcome_of(shadowed, TOOL, shadow.approvals)

        outcome = shadow_outcome(shadow_active, live_active, subject, targets, live_outcome, decide_in_shadow)
        return ShadowDecision(TOOL, live_outcome, outcome, changes(live_outcome, outcome))

    def recorded(verdict: EffectiveDecision) -> object:
        return verdict.policy.rules(), verdict.record(), verdict.record(), verdict.explain()

    def with_shadow(subject: Subject, targets: Sequence[Target]) -> object:
        verdict = live_decision(subject, targets)
        return shadow_decision(verdict, subject, targets)

    def recorded_without(subject: Subject, targets: Sequence[Target]) -> object:
        return recorded(live_decision(subject, targets))

    def recorded_with(subject: Subject, targets: Sequence[Target]) -> object:
        verdict = live_decision(subject, targets)
        return recorded(verdict), shadow_decision(verdict, subject, targets).record()

    return {"decide": (live_decision, with_shadow), "as recorded": (recorded_without, recorded_with)}


def measure_shadow(
    live: Side, shadow: Side, queries: Sequence[tuple[Subject, Target]]
) -> dict[str, tuple[float, float]]:
    """p50 without and with the shadow, per way, the best of three alternating rounds each (same
    run, same queries, so the ratio is not skewed by the machine's drift)."""
    found = {}
    for way, (without, with_shadow) in shadow_deciders(live, shadow).items():
        rounds = [(measure(without, queries)[0], measure(with_shadow, queries)[0]) for _ in range(3)]
        found[way] = (min(r[0] for r in rounds), min(r[1] for r in rounds))
    return found


def load_side(world: World, directory: Path) -> Side:
    write_policy(world, directory)
    (directory / "approvals.yaml").write_text((ROOT / "policies" / "approvals.yaml").read_text())
    return Side(load_policy(directory), load_approvals_config(directory))


def report_shadow(shadow_results: dict[int, dict[str, tuple[float, float]]]) -> bool:
    print()
    print("decision cost with a shadow policy, one target, p50 microseconds")
    print(f"{'rules':>7}  {'way':<12} {'without':>8}  {'with shadow':>11}  {'ratio':>6}")
    for size, ways in shadow_results.items():
        for way, (without, with_shadow) in ways.items():
            print(f"{size:>7}  {way:<12} {without:>8.1f}  {with_shadow:>11.1f}  {with_shadow / without:>5.2f}x")
    met = True
    for way in ("decide", "as recorded"):
        worst = max(ways[way][1] / ways[way][0] for ways in shadow_results.values())
        verdict = "met" if worst <= SHADOW_GOAL_RATIO else "MISSED"
        met = met and worst <= SHADOW_GOAL_RATIO
        print(f"goal ({way}): with a shadow <= {SHADOW_GOAL_RATIO:g}x without: worst {worst:.2f}x, {verdict}")
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=5000, help="indexed decisions per size")
    parser.add_argument("--baseline-queries", type=int, default=60, help="casbin-scan decisions per size")
    parser.add_argument("--no-baseline", action="store_true", help="skip casbin's scan of every rule")
    parser.add_argument("--no-shadow", action="store_true", help="skip the shadow policy's cost")
    parser.add_argument("--seed", type=int, default=2026)
    options = parser.parse_args()

    results: dict[int, dict[str, tuple[float, float]]] = {}
    load_times: dict[int, float] = {}
    shadow_results: dict[int, dict[str, tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for size in SIZES:
            rng = random.Random(options.seed + size)
            world = build_world(size, rng)
            started = time.perf_counter()
            snapshot: PolicySnapshot = load_policy(write_policy(world, Path(scratch) / str(size)))
            load_times[size] = time.perf_counter() - started
            assert snapshot.indexed
            queries = []
            for _ in range(options.queries):
                name, roles = rng.choice(world.agents)
                queries.append((Subject(name, roles), random_target(world, rng)))
            # The index must agree with casbin on what is measured.
            for subject, target in queries[:20]:
                assert snapshot.decide(subject, [target]).targets == snapshot.decide_by_scan(subject, [target]).targets
            results[size] = {"index": measure(snapshot.decide, queries)}
            if not options.no_shadow:
                live = load_side(world, Path(scratch) / f"{size}-live")
                shadow = load_side(shadow_world(world, rng), Path(scratch) / f"{size}-shadow")
                shadow_results[size] = measure_shadow(live, shadow, queries)
            if not options.no_baseline:
                results[size]["casbin"] = measure(snapshot.decide_by_scan, queries[: options.baseline_queries])

    print(f"policy decision latency, one target, microseconds ({options.queries} queries per size)")
    print(f"{'rules':>7}  {'load s':>7}  {'index p50':>10} {'p99':>8} {'x100 p50':>9} {'x100 p99':>9}", end="")
    print(f"  {'casbin p50':>11} {'p99':>9} {'x100 p50':>9}" if not options.no_baseline else "")
    base = results[SIZES[0]]
    for size in SIZES:
        p50, p99 = results[size]["index"]
        line = (
            f"{size:>7}  {load_times[size]:>7.2f}  {p50:>10.1f} {p99:>8.1f} "
            f"{p50 / base['index'][0]:>8.2f}x {p99 / base['index'][1]:>8.2f}x"
        )
        if "casbin" in results[size]:
            c50, c99 = results[size]["casbin"]
            line += f"  {c50:>11.1f} {c99:>9.1f} {c50 / base['casbin'][0]:>8.1f}x"
        print(line)
    ratio = results[SIZES[-1]]["index"][0] / base["index"][0]
    verdict = "met" if ratio <= GOAL_RATIO else "MISSED"
    print(f"goal: p50 at {SIZES[-1]:,} rules <= {GOAL_RATIO:g}x the {SIZES[0]}-rule p50: {ratio:.2f}x, {verdict}")
    shadow_met = report_shadow(shadow_results) if shadow_results else True
    return 0 if ratio <= GOAL_RATIO and shadow_met else 1


if __name__ == "__main__":
    sys.exit(main())
