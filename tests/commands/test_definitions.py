"""Loading `policies/tools/*.yaml`: the shipped set, JSON Schemas, and broken files reported by file and field."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from outbox.commands import CommandToolDefinition, ToolDefinitionError, load_command_tools
from tests.commands.conftest import SHIPPED_TOOLS

VALID_TOOL = """
tools:
  - name: demo.delete_thing
    description: Delete one thing, named exactly.
    parameters:
      name:
        type: string
        pattern: '^[a-z][a-z0-9-]{0,30}$'
        description: The thing's exact name.
    argv: [demo, delete, "{name}"]
    targets:
      - {object: "demo:thing/{name}", act: delete}
"""


def write(directory: Path, name: str, content: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(content))
    return path


def test_shipped_definitions_load_with_the_promised_tools() -> None:
    tool_set = load_command_tools(SHIPPED_TOOLS)

    assert set(tool_set.definitions) == {
        "k8s.get_pods",
        "k8s.scale_deployment",
        "k8s.delete_namespace",
        "k8s.delete_namespaces",
        "terraform.plan",
        "terraform.apply",
        "fs.list_directory",
        "git.log",
    }
    assert tool_set.sources["k8s.delete_namespace"] == SHIPPED_TOOLS / "k8s.yaml"
    assert re.fullmatch(r"[0-9a-f]{64}", tool_set.digest)


def test_delete_namespace_matches_the_issue_contract() -> None:
    definition = load_command_tools(SHIPPED_TOOLS).definitions["k8s.delete_namespace"]

    assert set(definition.parameters) == {"cluster", "name"}
    assert definition.dry_run == [
        "kubectl",
        "--context",
        "{cluster}",
        "delete",
        "namespace",
        "{name}",
        "--dry-run=server",
    ]
    assert [(target.object, target.act) for target in definition.targets] == [
        ("k8s:{cluster}/namespace/{name}", "delete")
    ]


@pytest.mark.parametrize("name", sorted(load_command_tools(SHIPPED_TOOLS).definitions))
def test_every_shipped_schema_is_closed_and_strict(name: str) -> None:
    schema = load_command_tools(SHIPPED_TOOLS).definitions[name].args_schema()

    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    for prop in schema["properties"].values():
        leaf = prop["items"] if prop["type"] == "array" else prop
        assert prop.get("description")
        if leaf["type"] == "string":
            assert "enum" in leaf or (leaf["pattern"].startswith("^") and leaf["pattern"].endswith("$"))
        if leaf["type"] == "integer":
            assert {"minimum", "maximum"} <= set(leaf)


def test_array_schema_carries_bounds_uniqueness_and_item_pattern() -> None:
    schema = load_command_tools(SHIPPED_TOOLS).definitions["k8s.delete_namespaces"].args_schema()

    assert schema["required"] == ["cluster", "names"]
    assert schema["properties"]["cluster"]["enum"] == ["staging", "production"]
    names = schema["properties"]["names"]
    assert (names["minItems"], names["maxItems"], names["uniqueItems"]) == (1, 10, True)
    assert names["items"]["pattern"] == "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


def test_parameters_with_defaults_are_optional_in_the_schema() -> None:
    schema = load_command_tools(SHIPPED_TOOLS).definitions["git.log"].args_schema()

    assert schema["required"] == []
    assert schema["properties"]["max_count"] == {
        "type": "integer",
        "description": "How many commits to show.",
        "minimum": 1,
        "maximum": 50,
        "default": 10,
    }


def test_a_missing_directory_means_no_command_tools(tmp_path: Path) -> None:
    assert dict(load_command_tools(tmp_path / "absent").definitions) == {}


def test_the_digest_changes_with_the_files(tmp_path: Path) -> None:
    write(tmp_path, "demo.yaml", VALID_TOOL)
    before = load_command_tools(tmp_path).digest
    write(tmp_path, "demo.yaml", VALID_TOOL.replace("Delete one thing", "Remove one thing"))

    assert load_command_tools(tmp_path).digest != before


BROKEN = [
    pytest.param(
        ("pattern: '^[a-z][a-z0-9-]{0,30}$'", "pattern: '[a-z]+'"),
        "tools[0].parameters.name.pattern",
        "must be anchored",
        id="unanchored-pattern",
    ),
    pytest.param(
        ("pattern: '^[a-z][a-z0-9-]{0,30}$'", "pattern: '^prod|staging$'"),
        "tools[0].parameters.name.pattern",
        "top-level | escapes the anchors",
        id="alternation-escaping-anchors",
    ),
    pytest.param(
        ("pattern: '^[a-z][a-z0-9-]{0,30}$'", r"pattern: '^[a-z]+\$'"),
        "tools[0].parameters.name.pattern",
        "must be anchored",
        id="escaped-dollar-is-not-an-anchor",
    ),
    pytest.param(
        ("pattern: '^[a-z][a-z0-9-]{0,30}$'", "pattern: '^[a-z+$'"),
        "tools[0].parameters.name.pattern",
        "not a valid regular expression",
        id="invalid-regex",
    ),
    pytest.param(
        ('argv: [demo, delete, "{name}"]', 'argv: [demo, delete, "{nmae}"]'),
        "tools[0].argv[2]",
        "unknown parameter 'nmae'",
        id="argv-unknown-parameter",
    ),
    pytest.param(
        ('argv: [demo, delete, "{name}"]', 'argv: ["{name}", delete]'),
        "tools[0].argv[0]",
        "never a parameter",
        id="program-from-a-parameter",
    ),
    pytest.param(
        ('argv: [demo, delete, "{name}"]', 'argv: [demo, delete, "ns/{name}.yaml"]'),
        "tools[0].argv[2]",
        "placeholder must be a whole element",
        id="placeholder-inside-text",
    ),
    pytest.param(
        ("act: delete", "act: Delete!"),
        "tools[0].targets[0].act",
        "should match pattern",
        id="bad-act",
    ),
    pytest.param(
        ('object: "demo:thing/{name}"', 'object: "demo:thing/{nam}"'),
        "tools[0].targets[0].object",
        "unknown parameter 'nam'",
        id="target-unknown-parameter",
    ),
    pytest.param(
        ("        description: The thing's exact name.\n", ""),
        "tools[0].parameters.name.description",
        "describe the parameter",
        id="undocumented-parameter",
    ),
    pytest.param(
        ("    argv:", "    argvs: [demo]\n    argv:"),
        "tools[0].argvs",
        "Extra inputs are not permitted",
        id="unknown-key",
    ),
    pytest.param(
        ("    argv:", "    sandbox: roomy\n    argv:"),
        "tools[0].sandbox",
        "unknown sandbox profile 'roomy'",
        id="unknown-profile",
    ),
    pytest.param(
        ("    argv:", "    timeout_seconds: '60'\n    argv:"),
        "tools[0].timeout_seconds",
        "valid integer",
        id="string-where-integer",
    ),
    pytest.param(
        ("name: demo.delete_thing", "name: delete thing"),
        "tools[0].name",
        "should match pattern",
        id="bad-tool-name",
    ),
    pytest.param(
        ("    argv:", "    secrets: [{name: token, env: PATH}]\n    argv:"),
        "tools[0].secrets[0]",
        "may not set PATH",
        id="secret-overriding-path",
    ),
]


@pytest.mark.parametrize(("edit", "field", "message"), BROKEN)
def test_a_broken_definition_is_reported_with_file_and_field(
    tmp_path: Path, edit: tuple[str, str], field: str, message: str
) -> None:
    old, new = edit
    assert old in VALID_TOOL
    path = write(tmp_path, "demo.yaml", VALID_TOOL.replace(old, new, 1))

    with pytest.raises(ToolDefinitionError) as raised:
        load_command_tools(tmp_path)

    assert raised.value.file == path
    assert raised.value.field == field
    assert message in raised.value.problems[0].message
    assert f"{path}: {field}: " in str(raised.value)


PARAMETER_PROBLEMS = [
    pytest.param(
        "{type: string, enum: [staging, --all], description: d}",
        "tools[0].parameters.name",
        "starts with '-'",
        id="enum-value-that-is-an-option",
    ),
    pytest.param(
        "{type: string, enum: [yes, no], description: d}",
        "tools[0].parameters.name.enum[0]",
        "valid string",
        id="yaml-boolean-in-enum",
    ),
    pytest.param(
        "{type: string, description: d}",
        "tools[0].parameters.name",
        "exactly one of `pattern` or `enum`",
        id="unconstrained-string",
    ),
    pytest.param(
        "{type: integer, minimum: -5, maximum: 5, description: d}",
        "tools[0].parameters.name",
        "negative value would become an argument starting with '-'",
        id="negative-integer",
    ),
    pytest.param(
        "{type: string, pattern: '^[a-z]+$', default: 'A', description: d}",
        "tools[0].parameters.name",
        "does not match",
        id="default-failing-its-own-pattern",
    ),
    pytest.param(
        "{type: array, items: {type: string, pattern: '^[a-z]+$'}, description: d}",
        "tools[0].parameters.name.max_items",
        "Field required",
        id="unbounded-array",
    ),
    pytest.param(
        "{type: array, max_items: 5, items: {type: string, pattern: 'x'}, description: d}",
        "tools[0].parameters.name.items.pattern",
        "must be anchored",
        id="array-item-pattern",
    ),
    pytest.param(
        "{type: float, description: d}",
        "tools[0].parameters.name",
        "does not match any of the expected tags",
        id="unknown-type",
    ),
]


@pytest.mark.parametrize(("spec", "field", "message"), PARAMETER_PROBLEMS)
def test_parameter_problems_name_the_parameter(tmp_path: Path, spec: str, field: str, message: str) -> None:
    content = VALID_TOOL.replace(
        """      name:
        type: string
        pattern: '^[a-z][a-z0-9-]{0,30}$'
        description: The thing's exact name.
""",
        f"      name: {spec}\n",
    )
    write(tmp_path, "demo.yaml", content)

    with pytest.raises(ToolDefinitionError) as raised:
        load_command_tools(tmp_path)

    assert raised.value.field == field
    assert message in raised.value.problems[0].message


def test_an_array_must_be_a_policy_target_and_needs_an_approval_bound(tmp_path: Path) -> None:
    write(
        tmp_path,
        "demo.yaml",
        """
        tools:
          - name: demo.delete_things
            description: Delete things.
            parameters:
              names: {type: array, max_items: 5, items: {type: string, pattern: '^[a-z]+$'}, description: d}
            argv: [demo, delete, "{names}"]
            targets:
              - {object: "demo:things", act: delete}
        """,
    )

    with pytest.raises(ToolDefinitionError) as raised:
        load_command_tools(tmp_path)

    problems = {(problem.field, problem.message.split(";")[0]) for problem in raised.value.problems}
    assert problems == {
        (
            "tools[0].parameters.names",
            "an array parameter must appear in a target object, so policy checks each item",
        ),
        (
            "tools[0].approval_above_targets",
            "required when a parameter is an array: how many targets one action may touch before a human approves",
        ),
    }


def test_a_target_may_expand_only_one_array(tmp_path: Path) -> None:
    write(
        tmp_path,
        "demo.yaml",
        """
        tools:
          - name: demo.copy
            description: Copy things.
            parameters:
              src: {type: array, max_items: 5, items: {type: string, pattern: '^[a-z]+$'}, description: d}
              dst: {type: array, max_items: 5, items: {type: string, pattern: '^[a-z]+$'}, description: d}
            argv: [demo, "{src}", "{dst}"]
            targets:
              - {object: "demo:{src}/{dst}", act: copy}
            approval_above_targets: 2
        """,
    )

    with pytest.raises(ToolDefinitionError) as raised:
        load_command_tools(tmp_path)

    assert raised.value.field == "tools[0].targets[0].object"
    assert "several array parameters (dst, src)" in raised.value.problems[0].message


def test_duplicate_yaml_keys_are_refused_not_silently_overridden(tmp_path: Path) -> None:
    path = write(tmp_path, "demo.yaml", VALID_TOOL.replace("    argv:", "    argv: [rm, -rf, /]\n    argv:"))

    with pytest.raises(ToolDefinitionError) as raised:
        load_command_tools(tmp_path)

    assert raised.value.file == path
    assert "duplicate key 'argv'" in raised.value.problems[0].message


def test_invalid_yaml_and_wrong_shape_are_reported_per_file(tmp_path: Path) -> None:
    invalid = write(tmp_path, "a.yaml", "tools: [unclosed\n")
    shapeless = write(tmp_path, "b.yaml", "- name: demo.x\n")
    write(tmp_path, "c.yaml", VALID_TOOL)

    with pytest.raises(ToolDefinitionError) as raised:
        load_command_tools(tmp_path)

    by_file = {problem.file: problem.message for problem in raised.value.problems}
    assert by_file.keys() == {invalid, shapeless}
    assert by_file[invalid].startswith("not valid YAML")
    assert "one key, `tools`" in by_file[shapeless]


def test_a_tool_defined_twice_is_reported_where_it_is_repeated(tmp_path: Path) -> None:
    first = write(tmp_path, "a.yaml", VALID_TOOL)
    second = write(tmp_path, "b.yaml", VALID_TOOL)

    with pytest.raises(ToolDefinitionError) as raised:
        load_command_tools(tmp_path)

    (problem,) = raised.value.problems
    assert (problem.file, problem.field) == (second, "tools[0].name")
    assert str(first) in problem.message


def test_one_broken_file_fails_the_whole_load_so_the_previous_set_stays(tmp_path: Path) -> None:
    write(tmp_path, "good.yaml", VALID_TOOL)
    previous = load_command_tools(tmp_path)
    write(tmp_path, "bad.yaml", VALID_TOOL.replace("demo.delete_thing", "demo.other").replace("'^[a-z]", "'[a-z]"))

    with pytest.raises(ToolDefinitionError):
        load_command_tools(tmp_path)

    assert list(previous.definitions) == ["demo.delete_thing"]


def test_profiles_can_be_supplied_by_the_deployment(tmp_path: Path) -> None:
    write(tmp_path, "demo.yaml", VALID_TOOL.replace("    argv:", "    sandbox: roomy\n    argv:"))

    tool_set = load_command_tools(tmp_path, profiles={"roomy"})

    assert tool_set.definitions["demo.delete_thing"].sandbox == "roomy"


def test_definitions_built_in_code_are_checked_the_same_way() -> None:
    with pytest.raises(ValueError, match=r"argv\[1\]: unknown parameter 'x'"):
        CommandToolDefinition.model_validate(
            {
                "name": "demo.x",
                "description": "d",
                "argv": ["demo", "{x}"],
                "targets": [{"object": "demo:x", "act": "read"}],
            }
        )
