"""The twin's match rule on its own: canonical arguments, ignored fields, recorded order, nearest."""

from __future__ import annotations

import json
from typing import Any

import pytest

from outbox.recordings.export import EXPORT_FORMAT, EXPORT_VERSION
from outbox.recordings.reader import RecordedAction, read_records
from outbox.replay.matching import Call, IgnoreFieldError, Matcher, MatchRule, differing_fields


def recorded(action_id: str, tool: str, args: dict[str, Any], on_behalf_of: str | None = None) -> RecordedAction:
    """One recorded action, read by the export reader from the records an export holds."""
    action = {
        "id": action_id,
        "created_at": "2026-12-01T10:00:00+00:00",
        "agent": "writer",
        "on_behalf_of": on_behalf_of,
        "tool": tool,
        "args": args,
        "status": "succeeded",
        "decision": {"effect": "allow", "policy_version": "sha256:x", "rules": []},
        # As received: what the agent sent (here the same as the stored arguments).
        "request": {"body": json.dumps({"tool": tool, "args": args})},
        "view": {"id": action_id},
    }
    event = {"record": "event", "type": "action.received", "at": action["created_at"], "action_id": action_id}
    header = {"record": "header", "format": EXPORT_FORMAT, "version": EXPORT_VERSION}
    [read] = read_records([header, {**event, "action": action}, {"record": "end", "events": 1}]).actions
    return read


ORDERS = {"method": "POST", "url": "http://127.0.0.1:8765/orders", "json": {"sku": "A1", "at": "10:00"}}


def test_canonical_arguments_match_whatever_the_key_order() -> None:
    matcher = Matcher([recorded("a1", "http.request", ORDERS)])
    reordered = {"json": {"at": "10:00", "sku": "A1"}, "url": ORDERS["url"], "method": "POST"}
    found = matcher.match(Call("http.request", reordered, None))
    assert found is not None
    assert found.id == "a1"


def test_several_matches_answer_in_recorded_order_each_once_then_the_last_again() -> None:
    matcher = Matcher([recorded(f"a{n}", "http.request", ORDERS) for n in (1, 2, 3)])
    answered = [matcher.match(Call("http.request", ORDERS, None)) for _ in range(5)]
    assert [a.id for a in answered if a is not None] == ["a1", "a2", "a3", "a3", "a3"]


def test_on_behalf_of_is_matched_unless_ignored() -> None:
    actions = [recorded("a1", "http.request", ORDERS, "user:ada@example.com")]
    assert Matcher(actions).match(Call("http.request", ORDERS, "user:bob@example.com")) is None
    lenient = Matcher(actions, MatchRule.of(["on_behalf_of"]))
    assert lenient.match(Call("http.request", ORDERS, "user:bob@example.com")) is not None


def test_an_ignored_nested_field_is_left_out_of_the_match_only() -> None:
    matcher = Matcher([recorded("a1", "http.request", ORDERS)], MatchRule.of(["args.json.at"]))
    later = {**ORDERS, "json": {"sku": "A1", "at": "11:00"}}
    assert matcher.match(Call("http.request", later, None)) is not None
    other_sku = {**ORDERS, "json": {"sku": "B2", "at": "10:00"}}
    assert matcher.match(Call("http.request", other_sku, None)) is None


def test_the_nearest_call_has_the_same_tool_and_the_fewest_differing_fields() -> None:
    matcher = Matcher(
        [
            recorded("mail", "email.send", {"to": ["ann@example.net"]}),
            recorded("far", "http.request", {**ORDERS, "method": "PUT", "json": {"sku": "Z"}}),
            recorded("near", "http.request", ORDERS),
        ]
    )
    nearest = matcher.nearest(Call("http.request", {**ORDERS, "url": "http://127.0.0.1:8765/other"}, None))
    assert nearest is not None
    assert (nearest.action_id, nearest.differing) == ("near", ("args.url",))
    unknown = matcher.nearest(Call("shell.exec", {}, None))
    assert unknown is not None
    assert unknown.differing[0] == "tool"


@pytest.mark.parametrize("field", ["tool", "args", "args.", "idempotency_key", "", "args..x"])
def test_an_ignore_that_names_no_call_field_is_refused(field: str) -> None:
    with pytest.raises(IgnoreFieldError):
        MatchRule.of([field])


def test_differing_fields_name_paths_into_objects_and_same_length_arrays() -> None:
    before = {"to": ["a@x", "b@x"], "headers": {"Date": "1"}, "n": 1}
    after = {"to": ["a@x", "c@x"], "headers": {"Date": "2", "X": "y"}}
    assert differing_fields(before, after) == ("headers.Date", "headers.X", "n", "to[1]")
    assert differing_fields({"to": ["a"]}, {"to": ["a", "b"]}) == ("to",)
