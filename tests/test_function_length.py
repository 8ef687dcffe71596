"""No function in outbox/ or workers/ runs over 60 lines unless it says why it is clearer whole.

The convention: a function longer than 60 lines (from its `def` to its last line) carries a
comment containing "clearer whole" either directly above it (above its decorators, if any) or
in the first lines of its body (after its signature and docstring, before its first statement),
saying why one readable sequence beats named steps. Anything else is split into steps.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 60
MARK = "clearer whole"

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _justified(lines: list[str], node: FunctionNode) -> bool:
    """Whether the comment block right above the function, or the comments opening its body, say
    why it is clearer whole."""
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    above = first - 2  # 0-based index of the line before the function
    while above >= 0 and _is_comment(lines[above]):
        if MARK in lines[above].lower():
            return True
        above -= 1
    body = node.body
    has_docstring = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
    first_statement = body[1] if has_docstring and len(body) > 1 else body[0]
    opening = lines[node.lineno : first_statement.lineno - 1]  # after the `def` line, before the statement
    return any(_is_comment(line) and MARK in line.lower() for line in opening)


def long_functions(source: str) -> list[tuple[str, int, int]]:
    """(name, first line, length) of every function over MAX_LINES lines without the comment."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > MAX_LINES and not _justified(lines, node):
                found.append((node.name, node.lineno, length))
    return found


def _function(length: int, *, above: str = "", opening: str = "", docstring: bool = False) -> str:
    """Source of a function `f` exactly `length` lines long."""
    head = [above] if above else []
    body = ['    """Doc."""'] if docstring else []
    body += [f"    {opening}"] if opening else []
    filler = length - 1 - len(body)
    body += [f"    x{i} = {i}" for i in range(filler)]
    return "\n".join([*head, "def f() -> None:", *body]) + "\n"


def test_no_module_has_a_long_function_without_saying_why() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line} {name} ({length} lines)"
        for package in ("outbox", "workers")
        for path in sorted((ROOT / package).rglob("*.py"))
        for name, line, length in long_functions(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], (
        f"functions over {MAX_LINES} lines: split them into named steps, or say why one is "
        f'clearer whole in a comment containing "{MARK}" (see this module\'s docstring):\n' + "\n".join(offenders)
    )


def test_sixty_lines_are_allowed_and_sixty_one_are_not() -> None:
    assert long_functions(_function(60)) == []
    assert long_functions(_function(61)) == [("f", 1, 61)]


def test_a_comment_right_above_or_opening_the_body_justifies_a_long_function() -> None:
    assert long_functions(_function(80, above="# Clearer whole: one pipeline in docstring order.")) == []
    assert long_functions(_function(80, opening="# clearer whole: the steps share every local.")) == []
    assert long_functions(_function(80, docstring=True, opening="# Clearer whole: one sequence.")) == []
    decorated = "# Clearer whole: a table of cases.\n@staticmethod\n" + _function(80)
    assert long_functions(decorated) == []


def test_a_comment_elsewhere_or_without_the_words_does_not() -> None:
    assert long_functions(_function(80, above="# One function on purpose.")) == [("f", 2, 80)]
    assert long_functions(_function(80, opening="# long, sorry")) == [("f", 1, 80)]
    separated = "# Clearer whole: but not attached.\n\n" + _function(80)
    assert long_functions(separated) == [("f", 3, 80)]
    buried = _function(80).replace("    x40 = 40\n", "    # clearer whole, says a line deep inside\n    x40 = 40\n")
    assert long_functions(buried) == [("f", 1, 81)]


def test_nested_functions_and_methods_are_measured_too() -> None:
    method = "class C:\n" + textwrap.indent(_function(61), "    ")
    assert long_functions(method) == [("f", 2, 61)]
    async_function = _function(61).replace("def f", "async def f")
    assert long_functions(async_function) == [("f", 1, 61)]
