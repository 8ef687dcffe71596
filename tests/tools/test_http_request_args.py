"""`http.request` arguments: what an agent may and may not ask for, and the policy target it makes."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from outbox.toolkit.base import Target
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


# --- The URL: validated, stored and decided in its one canonical form ----------------------------


@pytest.mark.parametrize(
    ("url", "stored", "target"),
    [
        ("http://LOCALHOST:8765/orders", "http://127.0.0.1:8765/orders", "http:127.0.0.1:8765/orders"),
        ("http://localhost.:8765/orders", "http://127.0.0.1:8765/orders", "http:127.0.0.1:8765/orders"),
        ("http://[::1]:8765/admin/users", "http://127.0.0.1:8765/admin/users", "http:127.0.0.1:8765/admin/users"),
        ("http://[::ffff:127.0.0.1]:8765/a", "http://127.0.0.1:8765/a", "http:127.0.0.1:8765/a"),
        ("http://127.0.0.1:8765/%61dmin/users", "http://127.0.0.1:8765/admin/users", "http:127.0.0.1:8765/admin/users"),
        ("http://127.0.0.1:8765/a/%7e?x=%2f", "http://127.0.0.1:8765/a/~?x=%2F", "http:127.0.0.1:8765/a/~"),
        ("HTTP://Api.Internal:80/v1", "http://api.internal/v1", "http:api.internal/v1"),
    ],
)
def test_the_url_is_stored_and_decided_in_canonical_form(url: str, stored: str, target: str) -> None:
    args = tool().parse_args({"method": "GET", "url": url})
    assert args.url == stored
    assert tool().targets(args) == [Target(target, "get")]
    assert tool().preview(args)["url"] == stored


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8765//admin/users",
        "http://127.0.0.1:8765/orders//admin",
        "http://127.0.0.1:8765/admin;x=1/users",
        "http://127.0.0.1:8765/admin;/users",
        "http://127.0.0.1:8765/a/%252e%252e/admin",
        "http://127.0.0.1:8765/a/%2e%2e/admin",
        "http://127.0.0.1:8765/a/./admin",
        "http://127.0.0.1:8765/a\\..\\admin",
        "http://127.1:8765/admin",
        "http://0x7f.0.0.1:8765/admin",
        "http://2130706433:8765/admin",
        "http://0177.0.0.1:8765/admin",
        "http://0.0.0.0:8765/admin",
        "http://127.0.0.1:8765/ａdmin",
        "http://127.0.0.1:8765/admin%00",
        "http://evil.example@127.0.0.1:8765/",
    ],
)
def test_ambiguous_urls_are_refused_naming_the_url(url: str) -> None:
    with pytest.raises(ValidationError) as raised:
        HttpRequestArgs.model_validate({"method": "GET", "url": url})
    [error] = raised.value.errors()
    assert error["loc"] == ("url",)


# --- Headers that proxies and frameworks read as the target, host, client or method ----------------


@pytest.mark.parametrize(
    "name",
    [
        "X-Original-URL",
        "x-original-url",
        "X-ORIGINAL-URL",
        "X_Original_URL",
        "X-Original-Uri",
        "X-Rewrite-URL",
        "x-rewrite-url",
        "X-Forwarded-For",
        "x-forwarded-host",
        "X-FORWARDED-PROTO",
        "X-Forwarded-Port",
        "X-Forwarded-Prefix",
        "X-Forwarded-Server",
        "X-Forwarded-Uri",
        "X-Forwarded-Anything-New",
        "X_Forwarded_For",
        "x_forwarded-host",
        "Forwarded",
        "FORWARDED",
        "X-Host",
        "X-Original-Host",
        "X-HTTP-Method-Override",
        "x-http-method",
        "X-Method-Override",
        "X-Real-IP",
        "True-Client-IP",
        "Proxy-Connection",
        "Keep-Alive",
        "Authorization",
        "AUTHORIZATION",
        "Cookie",
        "Host",
        "hOsT",
        "Transfer-Encoding",
        "Idempotency-Key",
        "Idempotency_Key",
    ],
)
def test_headers_that_name_the_target_host_client_or_method_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as raised:
        HttpRequestArgs.model_validate({"method": "GET", "url": "http://api.internal/", "headers": {name: "x"}})
    [error] = raised.value.errors()
    assert error["loc"] == ("headers",)
    assert "may not be set by agents" in error["msg"]


@pytest.mark.parametrize("name", ["X-Request-Id", "Accept", "Content-Type", "X-Forwarded", "X-Forward-Id", "Hostname"])
def test_ordinary_headers_are_accepted(name: str) -> None:
    args = HttpRequestArgs.model_validate({"method": "GET", "url": "http://api.internal/", "headers": {name: "x"}})
    assert args.headers == {name: "x"}


@pytest.mark.parametrize("pair", [("X-Trace", "x-trace"), ("Accept", "ACCEPT"), ("X-A_B", "x-a-b")])
def test_a_header_given_twice_in_two_spellings_is_refused(pair: tuple[str, str]) -> None:
    with pytest.raises(ValidationError, match="given twice"):
        HttpRequestArgs.model_validate(
            {"method": "GET", "url": "http://api.internal/", "headers": {pair[0]: "1", pair[1]: "2"}}
        )


# --- Per-host configuration under every name of the host ------------------------------------------


def test_host_keys_are_canonical_so_limits_apply_under_every_name() -> None:
    config = HttpToolConfig.model_validate(
        {"hosts": {"localhost:8765": {"max_concurrent": 1}, "API.Internal:80": {"requests_per_minute": 5}}}
    )
    assert set(config.hosts) == {"127.0.0.1:8765", "api.internal"}
    for url in ["http://[::1]:8765/x", "http://localhost.:8765/x", "http://127.0.0.1:8765/x"]:
        authority = tool().parse_args({"method": "GET", "url": url}).url.split("/")[2]
        assert config.limits_for(authority).max_concurrent == 1


@pytest.mark.parametrize(
    "hosts",
    [
        {"localhost:8765": {}, "127.0.0.1:8765": {}},
        {"[::1]:1": {}, "localhost:1": {}},
        {"api.internal": {}, "API.internal:80": {}},
    ],
)
def test_two_keys_for_one_host_are_refused(hosts: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="same host"):
        HttpToolConfig.model_validate({"hosts": hosts})


@pytest.mark.parametrize("key", ["127.1:80", "user@api.internal", "api.internal/x", "0.0.0.0:1"])
def test_a_host_key_the_canonical_form_refuses_is_refused(key: str) -> None:
    with pytest.raises(ValidationError):
        HttpToolConfig.model_validate({"hosts": {key: {}}})


@pytest.mark.parametrize("path", ["/ADMIN/users", "/Admin/Users", "/admin/USERS", "/%41DMIN/users"])
def test_on_a_case_insensitive_host_every_spelling_of_a_path_is_one_object(path: str) -> None:
    config = HttpToolConfig.model_validate({"hosts": {"iis.internal": {"case_insensitive_paths": True}}})
    iis = HttpRequestTool(config, services=None)  # type: ignore[arg-type]
    args = iis.parse_args({"method": "GET", "url": f"http://IIS.internal{path}"})
    assert iis.targets(args) == [Target("http:iis.internal/admin/users", "get")]
    assert iis.canonical_url(args).wire == "http://iis.internal/admin/users"


def test_paths_stay_case_sensitive_on_other_hosts() -> None:
    args = tool().parse_args({"method": "GET", "url": "http://api.internal/ADMIN/users"})
    assert tool().targets(args) == [Target("http:api.internal/ADMIN/users", "get")]


@pytest.mark.parametrize(
    "text",
    [
        "defaults:\n  requests_per_minute: 60\n  requests_per_minute: 6000\n",
        "hosts:\n  127.0.0.1:8080: {}\n  127.0.0.1:8080: {}\n",
    ],
)
def test_a_repeated_key_in_http_yaml_is_refused_with_its_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "http.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"{path}:3: duplicate key"):
        HttpToolConfig.load(path)
