"""The canonical URL form: one form for the policy object and the wire, ambiguous forms refused.

Each class of hostile input is tried in several spellings. A URL either has exactly one
canonical form (and every spelling of the same request maps onto it), or it is refused with a
message that says what to write instead.
"""

from __future__ import annotations

import httpx
import pytest

from outbox.urls import (
    LOOPBACK_HOST,
    MAX_URL_LENGTH,
    CanonicalURL,
    URLRefused,
    canonical_authority,
    canonical_host,
    canonical_path,
    parse_url,
)


def refused(url: str) -> str:
    with pytest.raises(URLRefused) as raised:
        parse_url(url)
    return str(raised.value)


# --- The form ---------------------------------------------------------------------------------


def test_a_url_has_a_wire_form_an_authority_and_a_policy_object() -> None:
    url = parse_url("https://API.Internal:8443/v1/orders?limit=5")

    assert url == CanonicalURL("https", "api.internal", 8443, "/v1/orders", "limit=5")
    assert url.wire == "https://api.internal:8443/v1/orders?limit=5"
    assert url.authority == "api.internal:8443"
    assert url.target == "/v1/orders?limit=5"
    assert url.effective_port == 8443
    assert url.policy_object() == "http:api.internal:8443/v1/orders"
    assert url.policy_object("callback") == "callback:api.internal:8443/v1/orders"
    assert str(url) == url.wire


@pytest.mark.parametrize(
    ("url", "wire"),
    [
        ("http://a.example/x", "http://a.example/x"),
        ("HTTP://A.EXAMPLE/x", "http://a.example/x"),
        ("HtTpS://a.example/x", "https://a.example/x"),
        ("http://a.example:80/x", "http://a.example/x"),
        ("https://a.example:443/x", "https://a.example/x"),
        ("http://a.example:/x", "http://a.example/x"),
        ("http://a.example:0080/x", "http://a.example/x"),
        ("https://a.example:80/x", "https://a.example:80/x"),
        ("http://a.example:443/x", "http://a.example:443/x"),
        ("http://a.example", "http://a.example/"),
        ("http://a.example?q=1", "http://a.example/?q=1"),
        ("http://a.example/x?", "http://a.example/x"),
    ],
)
def test_scheme_and_host_are_lower_cased_and_the_default_port_dropped(url: str, wire: str) -> None:
    assert parse_url(url).wire == wire


def test_the_scheme_does_not_enter_the_object_so_http_and_https_share_one_decision() -> None:
    assert parse_url("http://a.example/x").policy_object() == parse_url("https://a.example/x").policy_object()


def test_the_wire_form_is_a_fixed_point() -> None:
    for url in ["http://A.example:80/a/%7e?q=%2f", "http://LOCALHOST./x/{y}?z=é", "http://[0::1]:9/"]:
        once = parse_url(url).wire
        assert parse_url(once).wire == once


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8765/v1/orders/7?x=1",
        "http://a.example/a/%7Bb%7D/c:d@e!$&'()*+,=",
        "https://xn--bcher-kva.example/x%20y?q=%C3%A9&r=a/b?c",
        "http://[2001:db8::1]:8080/x",
        "http://a.example/50%25",
    ],
)
def test_httpx_sends_the_wire_form_unchanged(url: str) -> None:
    canonical = parse_url(url)
    sent = httpx.URL(canonical.wire)
    assert sent.raw_path == canonical.target.encode("ascii")
    assert sent.raw_host == canonical.host.encode("ascii")
    assert str(sent) == canonical.wire


# --- Not http, not absolute, or carrying what must not be sent --------------------------------


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://a.example/", "gopher://127.0.0.1:6379/_INFO", "javascript:alert(1)", "ws://a/"],
)
def test_only_http_and_https(url: str) -> None:
    assert "only http and https" in refused(url) or "//" in refused(url)


@pytest.mark.parametrize(
    "url", ["/relative/path", "a.example/x", "//a.example/x", "http:a.example/x", "http:/a.example/x", "https:"]
)
def test_the_url_must_be_absolute_with_a_double_slash(url: str) -> None:
    message = refused(url)
    assert "absolute" in message or "//" in message


@pytest.mark.parametrize("url", ["http:///x", "http://", "http://:80/x", "http://?q", "http:///"])
def test_a_host_is_required(url: str) -> None:
    assert "no host" in refused(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pw@a.example/",
        "http://user@a.example/",
        "http://@a.example/",
        "http://a.example@evil.example/",
        "http://127.0.0.1:80@evil.example/",
        "http://%40@a.example/",
    ],
)
def test_userinfo_is_refused(url: str) -> None:
    assert "credentials" in refused(url)


@pytest.mark.parametrize(
    "url", ["http://a.example/#frag", "http://a.example/x#", "http://a.example#/admin", "http://a.example/x?q=1#f"]
)
def test_fragments_are_refused(url: str) -> None:
    assert "fragment" in refused(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://a.example/x\r\nHost: evil",
        "http://a.example/x\n",
        "http://a.example/\x00",
        "http://a.example/\x7f",
        "http://a.example/\x85",
        "http://a.exa\tmple/",
        " http://a.example/",
        "http://a.example/ x",
        "http://a.example/x?q=a b",
        "http://a.example/\u2028",
        "http://a.example/\u3000",
    ],
)
def test_whitespace_and_control_characters_are_refused(url: str) -> None:
    message = refused(url)
    assert "whitespace" in message or "control character" in message


@pytest.mark.parametrize(
    "url",
    [
        "http://a.example\\admin",
        "http://a.example/a\\..\\admin",
        "http:\\\\a.example/",
        "http://a.example/x?q=\\",
        "http://127.0.0.1\\@evil.example/",
    ],
)
def test_backslashes_are_refused(url: str) -> None:
    assert "backslash" in refused(url)


def test_overlong_urls_are_refused_before_and_after_normalisation() -> None:
    assert "longer than" in refused("http://a.example/" + "a" * MAX_URL_LENGTH)
    # Each `"` becomes `%22`: short as written, too long as sent.
    assert "once normalised" in refused("http://a.example/" + '"' * (MAX_URL_LENGTH // 2))


# --- Hosts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("API.Internal", "api.internal"),
        ("api.internal.", "api.internal"),
        ("Bücher.example", "xn--bcher-kva.example"),
        ("BÜCHER.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("ｅｘａｍｐｌｅ．ｃｏｍ", "example.com"),
        ("a。example", "a.example"),
        ("my_service", "my_service"),
        ("svc-1.ns.svc.cluster.local", "svc-1.ns.svc.cluster.local"),
    ],
)
def test_host_names_are_lower_cased_and_idna_encoded(host: str, canonical: str) -> None:
    assert canonical_host(host) == canonical
    assert parse_url(f"http://{host}/x").host == canonical


@pytest.mark.parametrize(
    "host",
    ["a..example", ".a.example", "a.example..", "-a.example", "a-.example", "a!b.example", "a" * 64 + ".example"],
)
def test_malformed_host_names_are_refused(host: str) -> None:
    with pytest.raises(URLRefused):
        parse_url(f"http://{host}/x")


@pytest.mark.parametrize(
    "host", ["xn--zz.example", "xn--.example", "xn--a.example", "xn--ls8h.example", "xn--bcher-kva-.example"]
)
def test_invalid_or_non_canonical_a_labels_are_refused(host: str) -> None:
    with pytest.raises(URLRefused, match="label"):
        parse_url(f"http://{host}/x")


@pytest.mark.parametrize(
    "host", ["127%2E0.0.1", "%6c%6f%63%61%6c%68%6f%73%74", "a%2eexample", "127.0.0.1%00.evil.example"]
)
def test_percent_encoded_hosts_are_refused(host: str) -> None:
    assert "percent-encoding" in refused(f"http://{host}/x")


@pytest.mark.parametrize("host", ["a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 63])
def test_host_names_longer_than_253_characters_are_refused(host: str) -> None:
    assert "253" in refused(f"http://{host}/x")


# IPv4: only four decimal numbers. Everything else is read differently by different parsers
# (inet_aton: 0177 is octal 127; WHATWG: 127.1 is 127.0.0.1; some libraries: decimal 177).
@pytest.mark.parametrize(
    "host",
    [
        "127.1",
        "127.0.1",
        "0x7f.0.0.1",
        "0X7F.0.0.1",
        "0x7f000001",
        "2130706433",
        "0177.0.0.1",
        "0177.0000.0000.0001",
        "127.0.0.01",
        "127.000.000.001",
        "127.0.0.1.",
        "1.2.3.4.5",
        "256.0.0.1",
        "127.0.0.256",
        "a.example.123",
        "a.example.0x1",
        "１２７.１",
    ],
)
def test_non_canonical_numeric_hosts_are_refused(host: str) -> None:
    if host == "127.0.0.1.":
        # A trailing dot is the root label, not a fifth number: this one is fine.
        assert parse_url(f"http://{host}/").host == "127.0.0.1"
        return
    assert "four decimal numbers" in refused(f"http://{host}/x")


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("10.0.0.5", "10.0.0.5"),
        ("192.168.1.254", "192.168.1.254"),
        ("１２７．０．０．１", "127.0.0.1"),
        ("127.0.0.2", "127.0.0.2"),
        ("127.255.255.254", "127.255.255.254"),
    ],
)
def test_dotted_quads_are_kept(host: str, canonical: str) -> None:
    assert parse_url(f"http://{host}:81/").host == canonical


@pytest.mark.parametrize("host", ["0.0.0.0", "0.1.2.3", "[::]", "[0:0:0:0:0:0:0:0]", "[::ffff:0.0.0.0]"])
def test_the_unspecified_addresses_are_refused_they_reach_this_host(host: str) -> None:
    assert "not a destination" in refused(f"http://{host}:8080/")


@pytest.mark.parametrize(
    ("host", "canonical"),
    [
        ("[2001:DB8::1]", "2001:db8::1"),
        ("[2001:0db8:0000:0000:0000:0000:0000:0001]", "2001:db8::1"),
        ("[2001:db8:0:0:1:0:0:1]", "2001:db8::1:0:0:1"),
        ("[fe80::1]", "fe80::1"),
        ("[::ffff:10.0.0.5]", "10.0.0.5"),
        ("[::ffff:a00:5]", "10.0.0.5"),
    ],
)
def test_ipv6_literals_are_written_in_rfc_5952_form_and_mapped_ipv4_as_ipv4(host: str, canonical: str) -> None:
    url = parse_url(f"http://{host}:8080/x")
    assert url.host == canonical
    expected_authority = f"[{canonical}]:8080" if ":" in canonical else f"{canonical}:8080"
    assert url.authority == expected_authority
    assert url.wire == f"http://{expected_authority}/x"


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1/",
        "http://[::1]x/",
        "http://[127.0.0.1]/",
        "http://[fe80::1%25eth0]/",
        "http://[fe80::1%eth0]/",
        "http://[::127.0.0.1]/",
        "http://[::7f00:1]/",
        "http://[gggg::1]/",
        "http://::1/",
        "http://2001:db8::1/",
    ],
)
def test_malformed_or_ambiguous_ipv6_literals_are_refused(url: str) -> None:
    with pytest.raises(URLRefused):
        parse_url(url)


# --- Loopback: every name of the loopback host is one object ------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "LOCALHOST",
        "LocalHost",
        "localhost.",
        "ｌｏｃａｌｈｏｓｔ",
        "api.localhost",
        "Admin.LOCALHOST.",
        "[::1]",
        "[0:0::1]",
        "[0000:0000:0000:0000:0000:0000:0000:0001]",
        "[::ffff:127.0.0.1]",
        "[::FFFF:7F00:1]",
    ],
)
def test_every_loopback_name_is_the_one_loopback_host(host: str) -> None:
    url = parse_url(f"http://{host}:8765/admin/users")
    assert url.host == LOOPBACK_HOST
    assert url.policy_object() == "http:127.0.0.1:8765/admin/users"
    assert url.wire == "http://127.0.0.1:8765/admin/users"


@pytest.mark.parametrize("host", ["127.0.0.2", "[::ffff:127.0.0.2]", "127.1.2.3"])
def test_other_loopback_addresses_stay_distinct_because_a_service_may_listen_on_one_only(host: str) -> None:
    assert parse_url(f"http://{host}:8765/").host != LOOPBACK_HOST


@pytest.mark.parametrize("host", ["localhost.example", "notlocalhost", "localhost-1", "mylocalhost"])
def test_names_that_merely_contain_localhost_are_not_loopback(host: str) -> None:
    assert parse_url(f"http://{host}/").host == host


# --- Ports --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authority",
    [
        "a.example:0",
        "a.example:65536",
        "a.example:99999999",
        "a.example:8o",
        "a.example:+80",
        "a.example:-1",
        "a.example:٨٠",
        "a.example:80:80",
        "a.example: 80",
    ],
)
def test_ports_must_be_decimal_and_in_range(authority: str) -> None:
    with pytest.raises(URLRefused):
        parse_url(f"http://{authority}/")


# --- Paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["//admin/users", "/a//b", "///admin", "/admin//", "/a/b//c/", "//"],
)
def test_empty_segments_are_refused(path: str) -> None:
    assert "empty segment" in refused(f"http://127.0.0.1:8765{path}")


def test_a_single_trailing_slash_is_kept() -> None:
    assert parse_url("http://a.example/admin/").path == "/admin/"
    assert parse_url("http://a.example/").path == "/"


@pytest.mark.parametrize("path", ["/./admin", "/a/../admin", "/..", "/.", "/admin/.", "/orders/../../admin", "/a/./b/"])
def test_dot_segments_are_refused(path: str) -> None:
    assert "dot segment" in refused(f"http://a.example{path}")


@pytest.mark.parametrize("path", ["/.well-known/x", "/a/.../b", "/a/..b", "/a/b.", "/v1.2/x"])
def test_dots_inside_a_segment_are_ordinary(path: str) -> None:
    assert parse_url(f"http://a.example{path}").path == path


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("/a/%2e%2e/admin", "encoded dot"),
        ("/%2E/admin", "encoded dot"),
        ("/a/.%2e/admin", "encoded dot"),
        ("/report%2epdf", "encoded dot"),
        ("/a%2fb", "encoded slash"),
        ("/a%2Fb", "encoded slash"),
        ("/admin%2F..%2Fusers", "encoded slash"),
        ("/a%5cb", "encoded backslash"),
        ("/a%5Cb", "encoded backslash"),
        ("/admin%3bx=1/users", "encoded semicolon"),
        ("/admin%3B/users", "encoded semicolon"),
        ("/a%00b", "encoded NUL"),
        ("/a%00", "encoded NUL"),
        ("/a%0d%0aSet-Cookie:x", "encoded control character"),
        ("/a%09b", "encoded control character"),
        ("/a%7fb", "encoded control character"),
    ],
)
def test_encoded_separators_dots_and_controls_are_refused(path: str, fragment: str) -> None:
    assert fragment in refused(f"http://a.example{path}")


@pytest.mark.parametrize("path", ["/a/%252e%252e/admin", "/a%252fb", "/%2500", "/%25%32%65", "/a%255C", "/x%2541"])
def test_double_encoding_is_refused(path: str) -> None:
    message = refused(f"http://a.example{path}")
    assert "double-encoded" in message or "encoded dot" in message


@pytest.mark.parametrize("path", ["/discount/50%25", "/a%25/b", "/%25zz", "/%25"])
def test_a_literal_percent_sign_stays_encoded(path: str) -> None:
    assert parse_url(f"http://a.example{path}").path == path


@pytest.mark.parametrize("path", ["/a%", "/a%2", "/a%zz", "/a%g0/b", "/%%41"])
def test_a_lone_percent_sign_is_refused(path: str) -> None:
    assert "%XX" in refused(f"http://a.example{path}")


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ("/%41dmin/users", "/Admin/users"),
        ("/%61dmin/users", "/admin/users"),
        ("/%61%64%6d%69%6e/users", "/admin/users"),
        ("/a%7eb", "/a~b"),
        ("/a%2Db%5fc", "/a-b_c"),
        ("/x%3fy", "/x%3Fy"),
        ("/x%3Fy", "/x%3Fy"),
        ("/x%23y", "/x%23y"),
        ("/a%20b", "/a%20b"),
        ("/a%2bb", "/a%2Bb"),
        ("/a%3ab", "/a%3Ab"),
    ],
)
def test_escapes_of_unreserved_characters_are_decoded_and_the_rest_upper_cased(path: str, canonical: str) -> None:
    assert parse_url(f"http://a.example{path}").path == canonical


def test_an_encoded_admin_path_is_the_admin_path() -> None:
    assert parse_url("http://127.0.0.1:8765/%61dmin/users").policy_object() == "http:127.0.0.1:8765/admin/users"


@pytest.mark.parametrize(
    ("path", "canonical"),
    [
        ('/a"b', "/a%22b"),
        ("/a<b>", "/a%3Cb%3E"),
        ("/{id}", "/%7Bid%7D"),
        ("/a|b", "/a%7Cb"),
        ("/a^b`c", "/a%5Eb%60c"),
        ("/a[0]", "/a%5B0%5D"),
        ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
    ],
)
def test_characters_that_must_be_escaped_are_escaped(path: str, canonical: str) -> None:
    assert parse_url(f"http://a.example{path}").path == canonical


@pytest.mark.parametrize(
    "path", ["/admin;x=1/users", "/admin;/users", "/admin;", "/;/admin", "/a/b;jsessionid=1", "/admin/users;.css"]
)
def test_path_parameters_are_refused(path: str) -> None:
    assert "';'" in refused(f"http://127.0.0.1:8765{path}")


@pytest.mark.parametrize(
    "path", ["/ａdmin/users", "/admin／users", "/café", "/%c3%a9", "/%EF%BC%8Fadmin", "/admin%E2%80%8B", "/\u202enimda"]
)
def test_non_ascii_paths_are_refused_raw_or_encoded(path: str) -> None:
    assert "ASCII" in refused(f"http://a.example{path}")


@pytest.mark.parametrize("path", ["/Admin/Users", "/ADMIN", "/v1/Orders"])
def test_paths_are_case_sensitive_by_default(path: str) -> None:
    assert parse_url(f"http://a.example{path}").path == path


@pytest.mark.parametrize(
    ("path", "lowered"),
    [("/ADMIN/users", "/admin/users"), ("/Admin/%7bX%7d", "/admin/%7Bx%7D"), ("/a%3fB", "/a%3Fb")],
)
def test_a_case_insensitive_backend_gets_the_lower_case_path_on_the_wire_and_in_the_object(
    path: str, lowered: str
) -> None:
    url = parse_url(f"http://iis.example{path}").with_lowercase_path()
    assert url.path == lowered
    assert url.wire == f"http://iis.example{lowered}"
    assert url.policy_object() == f"http:iis.example{lowered}"


def test_canonical_path_alone() -> None:
    assert canonical_path("") == "/"
    assert canonical_path("/a/%7e") == "/a/~"
    with pytest.raises(URLRefused, match="start with /"):
        canonical_path("a/b")


# --- Query ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "canonical"),
    [
        ("a=1&b=2", "a=1&b=2"),
        ("a=%7e&b=%41", "a=~&b=A"),
        ("a=%2f&b=%2e%2e", "a=%2F&b=.."),
        ("a=%3b", "a=%3B"),
        ("next=/admin/users?x=1", "next=/admin/users?x=1"),
        ("a=;b", "a=;b"),
        ("q=é", "q=%C3%A9"),
        ('q="x"', "q=%22x%22"),
        ("q={x}", "q=%7Bx%7D"),
        ("q=a%0Ab", "q=a%0Ab"),
        ("q=%252e", "q=%252e"),
    ],
)
def test_the_query_is_kept_with_its_escapes_normalised(query: str, canonical: str) -> None:
    url = parse_url(f"http://a.example/x?{query}")
    assert url.query == canonical
    assert url.policy_object() == "http:a.example/x"


@pytest.mark.parametrize("query", ["q=%00", "q=%", "q=%zz", "q=%0"])
def test_nul_and_malformed_escapes_in_the_query_are_refused(query: str) -> None:
    with pytest.raises(URLRefused):
        parse_url(f"http://a.example/x?{query}")


# --- Authorities alone (policies/http.yaml keys, rule hosts) ------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("127.0.0.1:8765", "127.0.0.1:8765"),
        ("localhost:8765", "127.0.0.1:8765"),
        ("[::1]:8765", "127.0.0.1:8765"),
        ("API.internal", "api.internal"),
        ("api.internal:80", "api.internal"),
        ("[2001:db8::1]:9", "[2001:db8::1]:9"),
    ],
)
def test_canonical_authority(text: str, canonical: str) -> None:
    assert canonical_authority(text) == canonical


@pytest.mark.parametrize("text", ["a.example/x", "user@a.example", "a.example:99999", "127.1", "a.example?x"])
def test_canonical_authority_refuses_what_is_not_host_and_port(text: str) -> None:
    with pytest.raises(URLRefused):
        canonical_authority(text)
