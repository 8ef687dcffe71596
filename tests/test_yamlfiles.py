"""Strict YAML: safe types only, no repeated keys, every error says file:line: problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from outbox.yamlfiles import YAMLFileError, load_yaml_file, parse_yaml


def write(tmp_path: Path, text: str | bytes, name: str = "conf.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_a_plain_document_loads_as_plain_python_values(tmp_path: Path) -> None:
    path = write(tmp_path, "hosts:\n  - name: a\n    port: 443\nenabled: true\n")
    assert load_yaml_file(path) == {"hosts": [{"name": "a", "port": 443}], "enabled": True}


def test_an_empty_file_is_none(tmp_path: Path) -> None:
    assert load_yaml_file(write(tmp_path, "")) is None
    assert load_yaml_file(write(tmp_path, "# only a comment\n")) is None


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("a: 1\nb: 2\na: 3\n", 3, "'a'"),  # top level
        ("outer:\n  x: 1\n  y: 2\n  x: 1\n", 4, "'x'"),  # nested, even with the same value
        ("items:\n  - k: 1\n    k: 2\n", 3, "'k'"),  # inside a list item
        ("{a: 1, b: 2, a: 3}\n", 1, "'a'"),  # flow style
        ("1: one\n0x1: also one\n", 2, "1"),  # equal after YAML resolves the scalars
        ("yes: 1\ntrue: 2\n", 2, "True"),  # YAML 1.1 booleans spelled two ways
        ("\"a\": 1\n'a': 2\n", 2, "'a'"),  # quoting does not make a different key
    ],
)
def test_a_repeated_key_is_refused_with_its_line_and_the_first_one(
    tmp_path: Path, text: str, line: int, key: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(YAMLFileError) as raised:
        load_yaml_file(path)
    assert raised.value.line == line
    assert str(raised.value).startswith(f"{path}:{line}: ")
    assert f"duplicate key {key}" in str(raised.value)
    assert "(first on line " in raised.value.problem


def test_overriding_a_merged_key_is_yaml_not_a_duplicate(tmp_path: Path) -> None:
    text = "base: &base\n  port: 80\n  tls: false\nsite:\n  <<: *base\n  port: 443\n"
    assert load_yaml_file(write(tmp_path, text))["site"] == {"port": 443, "tls": False}


def test_a_key_repeated_next_to_a_merge_is_still_refused(tmp_path: Path) -> None:
    text = "base: &base\n  port: 80\nsite:\n  <<: *base\n  port: 443\n  port: 8443\n"
    with pytest.raises(YAMLFileError, match=r":6: .*duplicate key 'port'"):
        load_yaml_file(write(tmp_path, text))


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: [1, 2\nb: 3\n", 2),  # unclosed flow sequence
        ("a: 1\n  b: 2\n", 2),  # bad indentation
        ("a: 'unterminated\n", 2),
        ("a: *nowhere\n", 1),  # alias to an undefined anchor
        ("\tkey: 1\n", 1),  # a tab where YAML wants spaces
    ],
)
def test_malformed_yaml_names_the_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, text)
    with pytest.raises(YAMLFileError) as raised:
        load_yaml_file(path)
    assert raised.value.line == line
    assert str(raised.value).startswith(f"{path}:{line}: ")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "text",
    [
        "x: !!python/object/apply:os.system ['true']\n",
        "x: !!python/name:os.system\n",
        "x: !custom 1\n",
    ],
)
def test_tags_that_would_build_objects_are_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(YAMLFileError, match=r":1: .*could not determine a constructor"):
        load_yaml_file(write(tmp_path, text))


def test_an_unhashable_key_is_refused_not_crashed_on(tmp_path: Path) -> None:
    with pytest.raises(YAMLFileError, match=r":1: .*unhashable key"):
        load_yaml_file(write(tmp_path, "? [a, b]\n: 1\n"))


@pytest.mark.parametrize("content", [b"a: \xff\xfe\x00bad\n", b"a: caf\xe9\n", b"a: 1\x00\n"])
def test_bytes_that_are_not_text_are_refused(tmp_path: Path, content: bytes) -> None:
    path = write(tmp_path, content)
    with pytest.raises(YAMLFileError) as raised:
        load_yaml_file(path)
    assert str(raised.value).startswith(f"{path}")
    assert "\n" not in str(raised.value)


def test_utf8_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    assert load_yaml_file(write(tmp_path, "\ufeffname: café\n".encode())) == {"name": "café"}


def test_a_missing_file_or_a_directory_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(YAMLFileError, match=r"absent\.yaml: cannot read"):
        load_yaml_file(tmp_path / "absent.yaml")
    with pytest.raises(YAMLFileError, match=r"cannot read"):
        load_yaml_file(tmp_path)


def test_parse_yaml_names_the_source_it_is_given() -> None:
    with pytest.raises(YAMLFileError) as raised:
        parse_yaml("a: 1\na: 2\n", "tests/cases.yaml")
    assert str(raised.value).startswith("tests/cases.yaml:2: ")
    assert isinstance(raised.value, ValueError)
