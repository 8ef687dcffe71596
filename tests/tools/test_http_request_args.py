"""`http.request` arguments: what an agent may and may not ask for, and the policy target it makes."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from outbox.tools.base import Target
from outbox.tools.http_request import HttpRequestArgs, HttpRequestTool, HttpToolConfig


def tool() -> HttpRequestTool:
    return HttpRequestTool(HttpToolConfig(), services=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("http://api.internal/v1/orders?limit=5", Target("http:api.internal/v1/orders", "get")),
        ("https://api.internal:443/v1/orders", Target("http:api.internal/v1/orders", "get")),
        ("http://api.internal:8080/", Target("http:api.internal:8080/", "get")),
        ("http://API.Internal", Target("http:api.internal/", "get")),
    ],
)
def test_the_target_is_host_port_and_path_without_the_query(url: str, target: Target) -> None:
    args = tool().parse_args({"method": "get", "url": url})
    assert tool().targets(args) == [target]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"method": "GET", "url": "file:///etc/passwd"}, "url"),
        ({"method": "GET", "url": "http://user:pw@api.internal/"}, "url"),
        ({"method": "GET", "url": "http://api.internal/a/../admin"}, "url"),
        ({"method": "GET", "url": "http://api.internal/a/%2e%2e/admin"}, "url"),
        ({"method": "GET", "url": "http://api.internal/a%2Fb"}, "url"),
        ({"method": "GET", "url": "http://api.internal/#frag"}, "url"),
        ({"method": "CONNECT", "url": "http://api.internal/"}, "method"),
        ({"method": "GET", "url": "http://api.internal/", "headers": {"X-A": "1\r\nX-B: 2"}}, "headers"),
        ({"method": "GET", "url": "http://api.internal/", "headers": {"X A": "1"}}, "headers"),
        ({"method": "GET", "url": "http://api.internal/", "headers": {"Cookie": "s=1"}}, "headers"),
        ({"method": "GET", "url": "http://api.internal/", "headers": {"X-Name": "café"}}, "headers"),
        ({"method": "GET", "url": "http://api.internal/", "timeout": 5}, "timeout"),
    ],
)
def test_unsafe_arguments_are_refused_naming_the_field(args: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as raised:
        HttpRequestArgs.model_validate(args)
    assert raised.value.errors()[0]["loc"][0] == field


def test_json_body_null_is_kept_distinct_from_no_body() -> None:
    without = tool().parse_args({"method": "POST", "url": "http://a/"})
    with_null = tool().parse_args({"method": "POST", "url": "http://a/", "json": None})
    assert "json_body" not in without.model_fields_set
    assert "json_body" in with_null.model_fields_set
    assert with_null.model_dump(by_alias=True, exclude_unset=True) == {
        "method": "POST",
        "url": "http://a/",
        "json": None,
    }
