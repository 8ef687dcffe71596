"""Strict YAML loading for every operator-written file under `policies/`.

Plain `yaml.safe_load` keeps the *last* of two equal keys without a word, so a rule an operator
believes is in force can be silently overridden a few lines further down. Every loader reads its
file through here instead: safe types only, a repeated key is an error, and every error names the
file and line so the operator can fix it. Validation of the loaded data stays with each file's
pydantic model; this module only turns bytes into plain Python values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

__all__ = ["YAMLFileError", "load_yaml_file", "parse_yaml"]

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YAMLFileError(ValueError):
    """A file that cannot be read as YAML; `str()` is `file:line: problem` (line when known)."""

    def __init__(self, source: str, line: int | None, problem: str) -> None:
        super().__init__(f"{source}:{line}: {problem}" if line is not None else f"{source}: {problem}")
        self.source = source
        self.line = line
        self.problem = problem


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys in any mapping, at any depth."""


def _mapping_without_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    # Only keys written in this mapping count: a key that overrides one pulled in by a `<<:` merge
    # is YAML's documented way to override, not an accident.
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            earlier = first_line.get(key)
        except TypeError:
            continue  # an unhashable key: construct_mapping below refuses it with its own message
        if earlier is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {earlier})", key_node.start_mark
            )
        first_line[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def parse_yaml(content: str | bytes, source: str) -> Any:
    """Parse one YAML document strictly; `source` names it in errors (a file name or path).

    Bytes are decoded by YAML's own rules (UTF-8, or UTF-16 with a byte-order mark).
    An empty document is `None`.
    """
    try:
        return yaml.load(content, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
        raise YAMLFileError(source, mark.line + 1 if mark is not None else None, problem) from None
    except yaml.YAMLError as exc:
        # ReaderError (bytes that are not text) carries a byte position, not a line.
        raise YAMLFileError(source, None, str(exc).splitlines()[0]) from None


def load_yaml_file(path: Path) -> Any:
    """Read and parse `path` strictly; raise YAMLFileError naming `path` on any problem."""
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise YAMLFileError(str(path), None, f"cannot read: {exc.strerror or exc}") from None
    return parse_yaml(content, str(path))
