"""One canonical form of an http(s) URL, used both for the policy object and on the wire.

A policy decision is only as good as its object: when the object says `/orders/1` and the
backend serves `/admin/users`, the deny on `/admin/**` was never asked. So every URL the outbox
sends (an `http.request`, a callback) is parsed here once, into exactly one form; the policy
object is computed from that form, and that form, byte for byte, is what goes on the wire.

The form is RFC 3986 §6 syntax-based normalisation, made strict where normalisation would have
to guess (an ambiguous URL is refused with a message saying what to write instead):

- scheme `http` or `https`, lower-case; `//` and a host are required;
- no user information (`user:pw@`), no `#fragment`, no whitespace, control characters or `\\`;
- host lower-cased and IDNA-encoded (UTS #46 mapping, then A-labels); one trailing dot dropped;
  IPv4 only as four decimal numbers (`127.1`, `0x7f.0.0.1`, `2130706433`, `0177.0.0.1` are
  refused: parsers disagree on what they mean); IPv6 in RFC 5952 form, an IPv4-mapped address as
  the IPv4 address it is; the unspecified addresses (`0.0.0.0`, `[::]`) are refused;
- every loopback *name* is the one loopback host `127.0.0.1`: `localhost`, `*.localhost`
  (RFC 6761 §6.3), `[::1]` in any spelling, `[::ffff:127.0.0.1]`. Other 127.x.y.z addresses are
  kept as written: they are different addresses, and a service may listen on one and not the
  other;
- the default port (80 for http, 443 for https) dropped, an empty port too;
- path: empty becomes `/`; percent-escapes of unreserved characters decoded (`%41` -> `A`), the
  others upper-cased (`%3f` -> `%3F`); characters that must be escaped are escaped. Refused:
  empty segments (`//admin`, `/a//b`), dot segments (`.`, `..`), `;` (path parameters:
  `/admin;x=1/users`), encoded `/`, `\\`, `.`, `;`, `%00` and other control characters, double
  encoding (`%252e`), and non-ASCII text, raw or encoded (backends map look-alikes such as the
  fullwidth solidus onto ASCII). Paths stay case-sensitive, as RFC 3986 says; see
  `CanonicalURL.with_lowercase_path` for case-insensitive backends;
- query: kept, with the same escape normalisation (no `%00`; non-ASCII text UTF-8 encoded); an
  empty query (`?` alone) is dropped.
"""

from __future__ import annotations

import ipaddress
import re
import string
from dataclasses import dataclass, replace

import idna

MAX_URL_LENGTH = 2048
# Every loopback name is written as this one host, in policy objects and on the wire.
LOOPBACK_HOST = "127.0.0.1"
DEFAULT_PORTS = {"http": 80, "https": 443}

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_HEX = frozenset(string.hexdigits)
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_SUB_DELIMS = frozenset("!$&'()*+,;=")
# Characters a path may carry unescaped: pchar and "/", less ";" (refused, see below).
_PATH_LITERAL = (_UNRESERVED | _SUB_DELIMS | frozenset(":@/")) - {";"}
_QUERY_LITERAL = _UNRESERVED | _SUB_DELIMS | frozenset(":@/?")
_HOST_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")
# A label a URL parser may read as (part of) a number: decimal, octal (leading 0), hex (0x).
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")
_DECIMAL_OCTET = re.compile(r"^(?:0|[1-9][0-9]{0,2})$")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
# `%25` followed by two hex digits: a double-encoded character (`%252e` is `%2e` once decoded).
_DOUBLE_ESCAPE = re.compile(r"%25[0-9A-Fa-f]{2}")

# What each refused escape is, in words an agent can act on.
_REFUSED_PATH_ESCAPES = {
    0x2F: "an encoded slash (%2F): write the path with plain / between segments",
    0x5C: "an encoded backslash (%5C)",
    0x2E: "an encoded dot (%2E): write . plainly; dot segments are refused either way",
    0x3B: "an encoded semicolon (%3B): path parameters are refused",
    0x00: "an encoded NUL (%00)",
}


class URLRefused(ValueError):
    """A URL the outbox will not send, with what is wrong and what to write instead."""


@dataclass(frozen=True, slots=True)
class CanonicalURL:
    """A URL in its one canonical form. `wire` is sent exactly; `policy_object` is decided."""

    scheme: str
    host: str  # lower-case ASCII name (A-labels), dotted-quad IPv4, or IPv6 without brackets
    port: int | None  # None when it is the scheme's default
    path: str  # starts with "/"
    query: str | None  # without the "?"; None when absent or empty

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[self.scheme]

    @property
    def target(self) -> str:
        """The request target (origin form) as sent on the request line: path and query."""
        return self.path if self.query is None else f"{self.path}?{self.query}"

    @property
    def wire(self) -> str:
        return f"{self.scheme}://{self.authority}{self.target}"

    def policy_object(self, prefix: str = "http") -> str:
        """`http:<authority><path>`: the scheme is not part of it (http and https of one host and
        path are one object), nor is the query."""
        return f"{prefix}:{self.authority}{self.path}"

    def with_lowercase_path(self) -> CanonicalURL:
        """The same URL with its path lower-cased (escapes keep upper-case hex), for a backend
        that treats paths case-insensitively (IIS, some frameworks): on such a backend `/ADMIN`
        is `/admin`, so both the object and the wire must say `/admin`."""
        return replace(self, path=lowercase_path(self.path))

    def __str__(self) -> str:
        return self.wire


def parse_url(text: str) -> CanonicalURL:
    """Parse an absolute http(s) URL into its canonical form, or raise `URLRefused`."""
    if len(text) > MAX_URL_LENGTH:
        raise URLRefused(f"the URL is longer than {MAX_URL_LENGTH} characters")
    _refuse_unsafe_characters(text, "the URL")
    found = _SCHEME.match(text)
    if found is None:
        raise URLRefused("the URL must be absolute, starting with http:// or https://")
    scheme = found.group(1).lower()
    if scheme not in DEFAULT_PORTS:
        raise URLRefused(f"only http and https URLs are allowed, not {scheme}:")
    rest = text[found.end() :]
    if not rest.startswith("//"):
        raise URLRefused(f"write {scheme}://host/path: the // before the host is required")
    if "#" in rest:
        raise URLRefused("the URL must not have a #fragment (it is never sent to the server)")
    rest = rest[2:]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, rest = rest[:cut], rest[cut:]
    host, port = _split_authority(authority, scheme)
    path, mark, query = rest.partition("?")
    canonical = CanonicalURL(
        scheme=scheme,
        host=host,
        port=port,
        path=canonical_path(path),
        query=_canonical_query(query) if mark and query else None,
    )
    if len(canonical.wire) > MAX_URL_LENGTH:
        raise URLRefused(f"the URL is longer than {MAX_URL_LENGTH} characters once normalised")
    return canonical


def canonical_authority(text: str, scheme: str = "http") -> str:
    """`host[:port]` in canonical form (the port only when not the scheme's default), as in policy
    objects and the keys of `policies/http.yaml`."""
    _refuse_unsafe_characters(text, "the host")
    if any(c in text for c in "/?#"):
        raise URLRefused(f"{text!r} is not host[:port]")
    host, port = _split_authority(text, scheme)
    return CanonicalURL(scheme, host, port, "/", None).authority


def canonical_host(text: str) -> str:
    """A host name or address in canonical form (IPv6 without brackets), or `URLRefused`."""
    _refuse_unsafe_characters(text, "the host")
    if text.startswith("["):
        if not text.endswith("]"):
            raise URLRefused("an IPv6 address is written in brackets: [2001:db8::1]")
        return _canonical_ipv6(text[1:-1])
    return _canonical_name_or_ipv4(text)


def is_loopback_name(host: str) -> bool:
    """A name that always means this machine's loopback (RFC 6761 §6.3), before canonicalisation."""
    return host == "localhost" or host.endswith(".localhost")


def _refuse_unsafe_characters(text: str, what: str) -> None:
    for ch in text:
        if ch.isspace():
            raise URLRefused(f"{what} contains whitespace ({ch!r}); encode a space as %20")
        if ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F:
            raise URLRefused(f"{what} contains a control character ({ch!r})")
        if ch == "\\":
            raise URLRefused(f"{what} contains a backslash, which URL parsers read differently; use /")


def _split_authority(authority: str, scheme: str) -> tuple[str, int | None]:
    if not authority:
        raise URLRefused("the URL has no host")
    if "@" in authority:
        raise URLRefused("credentials in the URL (user@, user:password@) are not allowed")
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            raise URLRefused("an IPv6 address is written in brackets: [2001:db8::1]")
        host_text, after = authority[: end + 1], authority[end + 1 :]
        if after and not after.startswith(":"):
            raise URLRefused(f"unexpected text after the IPv6 address: {after!r}")
        port_text = after[1:] if after else None
    else:
        if authority.count(":") > 1:
            raise URLRefused("an IPv6 address is written in brackets: http://[2001:db8::1]:8080/")
        host_text, colon, port_text_raw = authority.partition(":")
        port_text = port_text_raw if colon else None
    host = canonical_host(host_text)
    port: int | None = None
    if port_text:
        if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
            raise URLRefused(f"the port {port_text!r} is not a number")
        port = int(port_text)
        if not 1 <= port <= 65535:
            raise URLRefused(f"the port {port} is out of range (1-65535)")
    if port == DEFAULT_PORTS[scheme]:
        port = None
    return host, port


def _canonical_ipv6(text: str) -> str:
    if "%" in text:
        raise URLRefused("IPv6 zone identifiers (%25eth0) are not allowed")
    try:
        address = ipaddress.IPv6Address(text)
    except ValueError as exc:
        raise URLRefused(f"[{text}] is not an IPv6 address") from exc
    if address.ipv4_mapped is not None:
        # ::ffff:a.b.c.d is the IPv4 address a.b.c.d; one address, one name.
        return _canonical_ipv4(address.ipv4_mapped)
    if address.is_loopback:
        return LOOPBACK_HOST
    if address.is_unspecified:
        raise URLRefused("[::] (the unspecified address) is not a destination; name the host")
    if address.packed[:12] == bytes(12):
        raise URLRefused(f"[{text}] is a deprecated IPv4-compatible address (RFC 4291); write the IPv4 address itself")
    return address.compressed


def _canonical_ipv4(address: ipaddress.IPv4Address) -> str:
    if address in ipaddress.IPv4Network("0.0.0.0/8"):
        raise URLRefused(f"{address} is not a destination (0.0.0.0/8 means 'this host'); name the host")
    return str(address)


def _canonical_name_or_ipv4(text: str) -> str:
    if not text:
        raise URLRefused("the URL has no host")
    if "%" in text:
        raise URLRefused("percent-encoding is not allowed in the host name")
    if "[" in text or "]" in text:
        raise URLRefused("an IPv6 address is written in brackets: [2001:db8::1]")
    try:
        # UTS #46: case folding and width mapping (ＬＯＣＡＬＨＯＳＴ, １２７．０．０．１, 。as a dot).
        mapped = idna.uts46_remap(text, std3_rules=False, transitional=False)
    except idna.IDNAError as exc:
        raise URLRefused(f"the host {text!r} is not a valid host name: {exc}") from exc
    if mapped.endswith("."):
        mapped = mapped[:-1]  # the root label: `localhost.` is `localhost`
    labels = mapped.split(".")
    if any(label == "" for label in labels):
        raise URLRefused(f"the host {text!r} has an empty label")
    if all(label.isascii() for label in labels) and _NUMERIC_LABEL.match(labels[-1]):
        return _canonical_dotted_quad(labels, text)
    encoded = [_canonical_label(label, text) for label in labels]
    host = ".".join(encoded)
    if len(host) > 253:
        raise URLRefused("the host name is longer than 253 characters")
    return LOOPBACK_HOST if is_loopback_name(host) else host


def _canonical_dotted_quad(labels: list[str], original: str) -> str:
    """WHATWG and inet_aton read a host ending in a number as an IPv4 address, in many spellings
    that disagree between parsers; only the one spelling everybody reads alike is accepted."""
    if len(labels) != 4 or not all(_DECIMAL_OCTET.match(label) and int(label) <= 255 for label in labels):
        raise URLRefused(
            f"{original!r} reads as an IPv4 address in a non-standard form (short, octal, hex or one "
            "number); write it as four decimal numbers without leading zeros, such as 127.0.0.1"
        )
    return _canonical_ipv4(ipaddress.IPv4Address(".".join(labels)))


def _canonical_label(label: str, original: str) -> str:
    if not label.isascii():
        try:
            return idna.alabel(label).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise URLRefused(f"the host {original!r} is not a valid internationalised name: {exc}") from exc
    if label.startswith("xn--"):
        try:
            if idna.alabel(idna.ulabel(label)).decode("ascii") != label:
                raise URLRefused(f"the host {original!r} has a non-canonical A-label {label!r}")
        except (idna.IDNAError, UnicodeError) as exc:
            raise URLRefused(f"the host {original!r} has an invalid A-label {label!r}") from exc
    if not _HOST_LABEL.match(label):
        raise URLRefused(
            f"the host {original!r} has an invalid label {label!r} (letters, digits, '-' and '_', "
            "at most 63 characters, no '-' at either end)"
        )
    return label


def lowercase_path(path: str) -> str:
    """`path` lower-cased, its escapes keeping upper-case hex."""
    return _ESCAPE.sub(lambda m: m.group(0).upper(), path.lower())


def canonical_path(path: str) -> str:
    """A path in canonical form (see the module docstring), or `URLRefused`."""
    if path == "":
        return "/"
    if not path.startswith("/"):
        raise URLRefused("the path must start with /")
    result = normalise_path_text(path)
    segments = result.split("/")[1:]
    for n, segment in enumerate(segments):
        if segment in (".", ".."):
            raise URLRefused(f"the path contains a dot segment ({segment!r}); write the path it resolves to")
        if segment == "" and n < len(segments) - 1:
            raise URLRefused(
                "the path contains an empty segment (// ); servers disagree on what it means, "
                "so write the path with single slashes"
            )
    return result


def normalise_path_text(path: str) -> str:
    """The character-level part of `canonical_path` (escapes, refused characters), for any
    piece of a path; segments are not looked at."""
    out: list[str] = []
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == "%":
            byte = _escape_at(path, i)
            if byte in _REFUSED_PATH_ESCAPES:
                raise URLRefused(f"the path contains {_REFUSED_PATH_ESCAPES[byte]}")
            if byte < 0x20 or byte == 0x7F:
                raise URLRefused(f"the path contains an encoded control character (%{byte:02X})")
            if byte >= 0x80:
                raise URLRefused(
                    "the path contains encoded non-ASCII text; paths must be ASCII (backends map "
                    "look-alike characters onto ASCII differently)"
                )
            out.append(chr(byte) if chr(byte) in _UNRESERVED else f"%{byte:02X}")
            i += 3
            continue
        if not ch.isascii():
            raise URLRefused(
                f"the path contains non-ASCII text ({ch!r}); paths must be ASCII (backends map "
                "look-alike characters onto ASCII differently)"
            )
        if ch == ";":
            raise URLRefused(
                "the path contains ';': path parameters (/admin;x=1/users) are read differently by "
                "different servers and are not allowed; put parameters in the query string"
            )
        out.append(ch if ch in _PATH_LITERAL else f"%{ord(ch):02X}")
        i += 1
    result = "".join(out)
    # Checked on the result: `%25%32%65` decodes to `%252e` here.
    if _DOUBLE_ESCAPE.search(result):
        raise URLRefused(
            "the path contains a double-encoded character (%25 followed by hex digits, as in "
            "%252e); send the character once-encoded"
        )
    return result


def _canonical_query(query: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(query):
        ch = query[i]
        if ch == "%":
            byte = _escape_at(query, i)
            if byte == 0:
                raise URLRefused("the query contains an encoded NUL (%00)")
            out.append(chr(byte) if chr(byte) in _UNRESERVED else f"%{byte:02X}")
            i += 3
            continue
        if ch in _QUERY_LITERAL:
            out.append(ch)
        else:
            out.append("".join(f"%{b:02X}" for b in ch.encode("utf-8")))
        i += 1
    return "".join(out)


def _escape_at(text: str, i: int) -> int:
    """The byte of the `%XX` escape at `i`; a lone `%` is refused."""
    pair = text[i + 1 : i + 3]
    if len(pair) == 2 and all(c in _HEX for c in pair):
        return int(pair, 16)
    raise URLRefused("a % must start a %XX escape; write %25 for a literal percent sign")


__all__ = [
    "DEFAULT_PORTS",
    "LOOPBACK_HOST",
    "MAX_URL_LENGTH",
    "CanonicalURL",
    "URLRefused",
    "canonical_authority",
    "canonical_host",
    "canonical_path",
    "is_loopback_name",
    "lowercase_path",
    "normalise_path_text",
    "parse_url",
]
