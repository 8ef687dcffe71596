"""`egress:` in a tool definition: checked strictly when the definitions load, by file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from outbox.commands import SandboxSettings, load_command_tools
from outbox.commands.egress import AllowedDestination, NamedDestination
from outbox.commands.loader import ToolDefinitionError
from outbox.commands.provider import sandbox_settings
from outbox.commands.sandbox import SandboxConfigurationError
from outbox.config import Settings

TOOL = """
tools:
  - name: demo.fetch
    description: Fetch one thing from a cluster.
    parameters:
      cluster: {type: string, enum: [staging, production], description: The cluster.}
      region: {type: string, pattern: '^[a-z]{2}-[a-z]+-[0-9]$', description: The region.}
      port: {type: integer, minimum: 1, maximum: 65535, description: The port.}
      names: {type: array, min_items: 1, max_items: 3, items: {type: string, pattern: '^[a-z]+$'}, description: N.}
    argv: [demo, "{cluster}", "{region}", "{port}", "{names}"]
    targets:
      - {object: "demo:{cluster}/{names}", act: read}
    approval_above_targets: 3
    sandbox: network
    egress:
EGRESS
"""


def load(tmp_path: Path, egress: str, *, profiles: object = None) -> object:
    (tmp_path / "demo.yaml").write_text(TOOL.replace("EGRESS", egress))
    if profiles is None:
        return load_command_tools(tmp_path, profiles=SandboxSettings().profiles)
    return load_command_tools(tmp_path, profiles=profiles)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("egress", "field", "message"),
    [
        ('      - {host: "*.com", port: 443}', "egress[0].host", "not an address or a top-level domain"),
        ('      - {host: "a.*.example.com", port: 443}', "egress[0].host", "whole labels at the start"),
        ('      - {host: "API.example.com", port: 443}', "egress[0].host", "canonical form, api.example.com"),
        ('      - {host: "0x7f.0.0.1", port: 443}', "egress[0].host", "non-standard form"),
        ('      - {host: "api.example.com", port: 0}', "egress[0].port", ""),
        ('      - {host: "api.example.com", port: 65536}', "egress[0].port", ""),
        ('      - {host: "api.example.com", port: "443"}', "egress[0].port", ""),
        ('      - {host: "api.example.com"}', "egress[0]", "`host` needs a `port`"),
        ('      - {destination: "{cluster}", host: "a.example.com", port: 1}', "egress[0]", "either `destination`"),
        ('      - {destination: "{cluster}", port: 443}', "egress[0]", "remove `port`"),
        ("      - {}", "egress[0]", "either `destination`"),
        ('      - {destination: "{clustr}"}', "egress[0].destination", "{clustr} must name a string parameter"),
        ('      - {destination: "{names}"}', "egress[0].destination", "not a parameter of type array"),
        ('      - {host: "api.{region}.example.com", port: "{cluster}"}', "egress[0].port", "integer parameter"),
        ('      - {host: "{cluster}.example.com", port: "{nope}"}', "egress[0].port", "integer parameter"),
        ('      - {host: "{port}.example.com", port: 443}', "egress[0].host", "not a parameter of type integer"),
        ('      - {host: "*.{cluster}", port: 443}', "egress[0].host", "comes a domain of two or more labels"),
        ('      - {host: "api.example.com", port: 443, allow_private: true}', "egress[0].allow_private", ""),
        ('      - {destination: "x{", port: 443}', "egress[0]", ""),
    ],
)
def test_a_broken_egress_rule_fails_the_load_with_its_file_and_field(
    tmp_path: Path, egress: str, field: str, message: str
) -> None:
    with pytest.raises(ToolDefinitionError) as raised:
        load(tmp_path, egress)

    problems = {problem.field: problem.message for problem in raised.value.problems}
    assert raised.value.file == tmp_path / "demo.yaml"
    assert f"tools[0].{field}" in problems, problems
    assert message in problems[f"tools[0].{field}"]


def test_a_tool_in_a_profile_without_egress_may_not_declare_destinations(tmp_path: Path) -> None:
    content = TOOL.replace("sandbox: network", "sandbox: default").replace(
        "EGRESS", '      - {destination: "{cluster}"}'
    )
    (tmp_path / "demo.yaml").write_text(content)

    with pytest.raises(ToolDefinitionError) as raised:
        load_command_tools(tmp_path, profiles=SandboxSettings().profiles)

    assert [(problem.field, problem.message) for problem in raised.value.problems] == [
        ("tools[0].egress", "sandbox profile 'default' has no egress: use a profile with `egress: true`")
    ]


def test_valid_rules_load_and_render_per_call(tmp_path: Path) -> None:
    rules = (
        '      - {destination: "{cluster}"}\n'
        '      - {host: "*.{region}.example.com", port: "{port}"}\n'
        '      - {host: "2001:db8::10", port: 443}'
    )
    definitions = load(tmp_path, rules)
    settings = SandboxSettings(
        destinations={"staging": NamedDestination(host="10.0.0.5", port=6443, allow_private=True)}
    )
    tool = definitions.build_tools(settings)[0]  # type: ignore[attr-defined]
    args = tool.parse_args({"cluster": "staging", "region": "eu-west-1", "port": 8443, "names": ["a"]})

    assert tool.egress(args) == [
        AllowedDestination("10.0.0.5", 6443, allow_private=True, source="destination staging"),
        AllowedDestination("*.eu-west-1.example.com", 8443),
        AllowedDestination("2001:db8::10", 443),
    ]
    unconfigured = tool.parse_args({"cluster": "production", "region": "eu-west-1", "port": 1, "names": ["a"]})
    with pytest.raises(SandboxConfigurationError, match="destination 'production' is not configured"):
        tool.egress(unconfigured)


def test_a_named_destination_is_checked_like_a_host_pattern() -> None:
    for host in ["localhost", "Example.com", "*.com", "127.1"]:
        with pytest.raises(ValueError, match=r"canonical form|top-level domain|non-standard"):
            NamedDestination(host=host, port=443)
    with pytest.raises(ValueError):
        NamedDestination(host="api.example.com", port=0)


def test_destinations_and_resolver_come_from_the_outbox_settings_and_are_checked_at_start(tmp_path: Path) -> None:
    base = {"data_dir": tmp_path / "data", "policy_dir": tmp_path}
    good = Settings.model_validate(
        base
        | {
            "sandbox_destinations": {"staging": {"host": "api.staging.example.com", "port": 6443}},
            "sandbox_egress_resolver": "127.0.0.1:5353",
        }
    )

    sandbox = sandbox_settings(good)

    assert sandbox.destinations == {"staging": NamedDestination(host="api.staging.example.com", port=6443)}
    assert sandbox.egress_resolver == "127.0.0.1:5353"
    for changes, message in [
        ({"sandbox_destinations": {"staging": {"host": "api.example.com", "port": 70000}}}, "staging.port"),
        ({"sandbox_destinations": {"staging": {"host": "localhost", "port": 1}}}, "canonical form, 127.0.0.1"),
        ({"sandbox_destinations": {"staging": {"host": "a.example.com", "port": 1, "tls": True}}}, "staging.tls"),
        ({"sandbox_egress_resolver": "dns.example.com"}, "expected ip, ip:port or [ipv6]:port"),
    ]:
        with pytest.raises(SandboxConfigurationError, match="sandbox settings refused") as raised:
            sandbox_settings(Settings.model_validate(base | changes))
        assert message in str(raised.value)
