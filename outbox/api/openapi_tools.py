"""The body of POST /v1/actions in the OpenAPI document: one schema per tool of the running policy.

`ActionCreate` is a `oneOf` of one call schema per tool (`HttpRequestCall`, `EmailSendCall`, …),
each with `tool` fixed to the tool's name and `args` referring to the tool's own argument schema
(`HttpRequestArgs`, as `Tool.args_schema()` returns it), and a discriminator on `tool` mapping each
name to its call schema. A client generated from the document so gets a typed model for each
tool's arguments, and a validator picks the branch by name instead of trying every one.

Tools are loaded from the policy directory and change with it, so the schemas are built from the
running policy's tools; without any (a document built before the app started), `ActionCreate` is
the generic envelope with `args` an object. Tools can also be called by their function name
(`http__request`); the document names the canonical dotted form only.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from outbox.actions.schemas import ActionCreate
from outbox.toolkit.base import Tool

SCHEMA_PREFIX = "#/components/schemas/"
_LOCAL_DEFS = "#/$defs/"
# Keywords of a standalone JSON Schema that mean nothing inside an OpenAPI component.
_DOCUMENT_KEYWORDS = ("$schema", "$id")


def _pascal(tool_name: str) -> str:
    """`k8s.delete_namespace` → `K8sDeleteNamespace`."""
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[^A-Za-z0-9]+", tool_name) if part)


def _schema_base_names(names: list[str], taken: set[str]) -> dict[str, str]:
    """A clean, unique component name stem per tool (a numeric suffix only on a clash)."""
    result: dict[str, str] = {}
    used = set(taken)
    for name in names:
        stem = _pascal(name) or "Tool"
        candidate, suffix = stem, 2
        while {f"{candidate}Call", f"{candidate}Args"} & used:
            candidate, suffix = f"{stem}{suffix}", suffix + 1
        used |= {f"{candidate}Call", f"{candidate}Args"}
        result[name] = candidate
    return result


def _rewrite_refs(node: Any, renamed: Mapping[str, str]) -> Any:
    """The schema with its local `#/$defs/X` references pointing at the hoisted components."""
    if isinstance(node, dict):
        return {
            key: (
                renamed.get(value, value) if key == "$ref" and isinstance(value, str) else _rewrite_refs(value, renamed)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rewrite_refs(item, renamed) for item in node]
    return node


def _args_components(stem: str, args_schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The tool's argument schema as components: `<Stem>Args`, and each of its `$defs` hoisted
    as `<Stem>Args<Name>` (components cannot hold nested `$defs` references by a local path)."""
    schema = copy.deepcopy(args_schema)
    for keyword in _DOCUMENT_KEYWORDS:
        schema.pop(keyword, None)
    definitions: dict[str, Any] = schema.pop("$defs", {})
    renamed = {f"{_LOCAL_DEFS}{name}": f"{SCHEMA_PREFIX}{stem}Args{_pascal(name)}" for name in definitions}
    components = {f"{stem}Args{_pascal(name)}": _rewrite_refs(d, renamed) for name, d in definitions.items()}
    components[f"{stem}Args"] = _rewrite_refs(schema, renamed)
    return components


def _envelope_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """ActionCreate's own JSON Schema, and its definitions (none today)."""
    schema = ActionCreate.model_json_schema(ref_template=SCHEMA_PREFIX + "{model}")
    definitions: dict[str, Any] = schema.pop("$defs", {})
    return schema, definitions


def _call_schema(name: str, tool: Tool, stem: str, envelope: dict[str, Any]) -> dict[str, Any]:
    properties = dict(envelope["properties"])
    properties["tool"] = {"type": "string", "const": name, "description": "The tool to call."}
    properties["args"] = {"$ref": f"{SCHEMA_PREFIX}{stem}Args"}
    required = ["tool"]
    # `args` may be left out (it defaults to {}) only when the tool requires none of them.
    if tool.args_schema().get("required"):
        required.append("args")
    return {
        "title": f"{stem}Call",
        "description": tool.description,
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": False,
    }


def action_create_components(tools: Mapping[str, Tool] | None, taken: set[str]) -> dict[str, dict[str, Any]]:
    """The components describing the body of POST /v1/actions: `ActionCreate` and what it refers to.

    `taken` are the component names already in the document, which a tool's names must not reuse.
    """
    envelope, definitions = _envelope_schema()
    components: dict[str, dict[str, Any]] = dict(definitions)
    if not tools:
        components["ActionCreate"] = envelope
        return components
    names = sorted(tools)
    stems = _schema_base_names(names, taken | set(definitions) | {"ActionCreate"})
    mapping: dict[str, str] = {}
    for name in names:
        tool, stem = tools[name], stems[name]
        components.update(_args_components(stem, tool.args_schema()))
        components[f"{stem}Call"] = _call_schema(name, tool, stem, envelope)
        mapping[name] = f"{SCHEMA_PREFIX}{stem}Call"
    components["ActionCreate"] = {
        "title": "ActionCreate",
        "description": (
            "A tool call: `tool` names the tool (GET /v1/tools), `args` follows that tool's schema. "
            "The tools are those of the server's running policy when this document was read."
        ),
        "oneOf": [{"$ref": ref} for ref in mapping.values()],
        "discriminator": {"propertyName": "tool", "mapping": mapping},
    }
    return components
