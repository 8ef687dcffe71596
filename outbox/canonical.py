"""JSON for the outbox: what it accepts, and the one canonical form it hashes and signs.

Accepted JSON is I-JSON (RFC 7493), the subset every JSON implementation reads the same way, plus
what the storage can hold. A request body is refused when it has

- `NaN`, `Infinity` or `-Infinity`: not JSON at all (RFC 8259 §6), Python merely tolerates them;
- a number that is not a finite IEEE 754 double (`1e400`), or a number outside ±(2^53 − 1),
  the range in which every JSON reader agrees on an integer's value (RFC 7493 §2.2); an integer
  literal of thousands of digits is refused from its length, before it is converted. Fractional
  numbers are bounded too: PostgreSQL's jsonb rewrites `1e+300` as 301 digits, which read back
  as an integer and would change the canonical form (and every digest) of what was stored;
- a string or object key holding a lone surrogate (`"\\ud800"`, half of a split pair): it is
  not Unicode text, cannot be encoded as UTF-8, and RFC 7493 §2.1 forbids it;
- a NUL character (PostgreSQL text cannot store one), duplicate keys in one object (readers
  disagree on which one wins, RFC 7493 §2.3), or nesting deeper than MAX_DEPTH.

The same rules bound values built in Python (`value_problems`), so every face of the service
refuses the same inputs. What is accepted can always be written by `canonical_json`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

# RFC 7493 §2.2: integers in this range are exact in every IEEE 754 double-based reader.
MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 32
# The longest integer literal that can be in range: 16 digits and a sign; leading zeros are not JSON.
_MAX_INTEGER_LITERAL = 17
_SURROGATE = re.compile("[\ud800-\udfff]")


def canonical_json(value: Any) -> str:
    """Sorted keys, no insignificant whitespace, UTF-8 kept as is (RFC 8785 in spirit)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def storable_text(data: bytes) -> str | None:
    """`data` as text a JSON column keeps exactly, or None: valid UTF-8 without NUL (PostgreSQL's
    jsonb refuses \\u0000). Bytes that are not go along in base64 instead."""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def shown_text(data: bytes) -> str:
    """`data` as readable text for a JSON column: invalid UTF-8 and NUL become U+FFFD."""
    return data.decode("utf-8", errors="replace").replace("\0", "\ufffd")


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def digest(value: Any) -> str:
    return sha256_hex(canonical_json(value))


@dataclass(frozen=True, slots=True)
class JSONProblem:
    """One refused value: where it is (`args.to[0]`, `body` for the whole document) and why."""

    path: str
    message: str
    not_json: bool = False


class JSONInputError(ValueError):
    """The input is not JSON the outbox accepts.

    `not_json` is true when the text is not JSON at all (syntax, encoding, NaN); otherwise it is
    JSON whose values the outbox refuses to hold (`problems` names each one).
    """

    def __init__(self, problems: list[JSONProblem], *, not_json: bool) -> None:
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))
        self.problems = problems
        self.not_json = not_json


@dataclass(frozen=True, slots=True)
class _Refused:
    """Stands in for a number the parser refused, so that the walk can say where it was."""

    message: str
    not_json: bool = False


class _DuplicateKeys(dict[str, Any]):
    def __init__(self, pairs: list[tuple[str, Any]], duplicates: list[str]) -> None:
        super().__init__(pairs)
        self.duplicates = duplicates


def _parse_int(literal: str) -> int | _Refused:
    digits = literal.lstrip("-")
    if len(literal) > _MAX_INTEGER_LITERAL:
        return _Refused(f"an integer of {len(digits)} digits is outside ±(2^53 - 1)")
    value = int(literal)
    if abs(value) > MAX_SAFE_INTEGER:
        return _Refused(f"the integer {literal} is outside ±(2^53 - 1) = ±{MAX_SAFE_INTEGER}")
    return value


def _parse_float(literal: str) -> float | _Refused:
    value = float(literal)
    shown = literal if len(literal) <= 40 else literal[:37] + "..."
    if not math.isfinite(value):
        return _Refused(f"the number {shown} is too large for a 64-bit float (IEEE 754 double)")
    if abs(value) > MAX_SAFE_INTEGER:
        return _Refused(f"the number {shown} is outside ±(2^53 - 1) = ±{MAX_SAFE_INTEGER}")
    return value


def _parse_constant(name: str) -> _Refused:
    return _Refused(f"{name} is not a JSON value (RFC 8259 has no NaN or Infinity)", not_json=True)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) == len(pairs):
        return result
    seen: set[str] = set()
    duplicates: list[str] = []
    for key, _ in pairs:
        if key in seen:
            duplicates.append(key)
        seen.add(key)
    return _DuplicateKeys(pairs, duplicates)


_UNSHOWABLE = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def _shown(text: str) -> str:
    """A key as it may be echoed in a response: controls and lone surrogates escaped, never raw."""
    return _UNSHOWABLE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def _child(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{_shown(key)}" if path else _shown(key)


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "NUL characters are not allowed"
    surrogate = _SURROGATE.search(text)
    if surrogate is not None:
        return f"a lone surrogate (U+{ord(surrogate.group()):04X}) is not Unicode text"
    return None


def value_problems(value: Any, *, limit: int = 10) -> list[JSONProblem]:
    """Every value the outbox refuses in `value` (at most `limit` of them), walking iteratively."""
    problems: list[JSONProblem] = []
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack and len(problems) < limit:
        item, path, depth = stack.pop()
        where = path or "body"
        if depth > MAX_DEPTH:
            problems.append(JSONProblem(where, f"nesting deeper than {MAX_DEPTH} levels"))
            continue
        if isinstance(item, str):
            message = _string_problem(item)
            if message is not None:
                problems.append(JSONProblem(where, message))
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, _Refused):
            problems.append(JSONProblem(where, item.message, not_json=item.not_json))
        elif isinstance(item, int):
            if abs(item) > MAX_SAFE_INTEGER:
                problems.append(JSONProblem(where, f"integers must be within ±(2^53 - 1) = ±{MAX_SAFE_INTEGER}"))
        elif isinstance(item, float):
            if not math.isfinite(item):
                problems.append(JSONProblem(where, f"{item} is not a finite number"))
            elif abs(item) > MAX_SAFE_INTEGER:
                problems.append(JSONProblem(where, f"numbers must be within ±(2^53 - 1) = ±{MAX_SAFE_INTEGER}"))
        elif isinstance(item, dict):
            if isinstance(item, _DuplicateKeys):
                names = ", ".join(sorted({repr(_shown(k)) for k in item.duplicates}))
                problems.append(JSONProblem(where, f"duplicate key(s) {names} in one object"))
            for key, child in reversed(item.items()):
                if not isinstance(key, str):
                    problems.append(JSONProblem(where, "object keys must be strings"))
                    continue
                message = _string_problem(key)
                if message is not None:
                    problems.append(JSONProblem(_child(path, key), f"in the key: {message}"))
                stack.append((child, _child(path, key), depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((child, _child(path, index), depth + 1) for index, child in reversed(list(enumerate(item))))
        else:
            problems.append(JSONProblem(where, f"{type(item).__name__} is not a JSON value"))
    return problems


def loads_strict(raw: bytes | str) -> Any:
    """Parse a request body by the rules above; raises JSONInputError naming what is refused."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        value = json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
            object_pairs_hook=_object,
        )
    except UnicodeDecodeError as exc:
        raise JSONInputError(
            [JSONProblem("body", f"not UTF-8: {exc.reason} at byte {exc.start}")], not_json=True
        ) from exc
    except RecursionError as exc:
        # Too deep for the parser itself: refused as unparseable, like a syntax error.
        raise JSONInputError([JSONProblem("body", f"nesting deeper than {MAX_DEPTH} levels")], not_json=True) from exc
    except json.JSONDecodeError as exc:
        raise JSONInputError([JSONProblem("body", f"not JSON: {exc}")], not_json=True) from exc
    problems = value_problems(value)
    if problems:
        # A NaN makes the whole text "not JSON"; the rest is JSON the outbox does not hold.
        raise JSONInputError(problems, not_json=any(p.not_json for p in problems))
    return value
