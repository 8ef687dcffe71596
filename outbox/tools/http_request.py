"""`http.request`: agents calling internal HTTP APIs through the outbox.

This is the tool where parallel agents break contracts written for one human: per-host request
rates and concurrency are enforced across all workers (over the limit the action is deferred,
not failed), credentials come from server configuration (agents never send Authorization or
Cookie), and the action's idempotency key travels downstream so that a retried POST is not a
second write.

The URL is parsed once into its canonical form (`outbox/urls.py`): the policy object is computed
from that form and exactly that form is sent, so the object decided is the request made.
"""

from __future__ import annotations

import base64
import os
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from outbox.budgets.service import Cap, acquire_slot, release_slot, reserve
from outbox.canonical import canonical_json, storable_text
from outbox.http_clients import SHARED_CLIENTS, ClientSettings, PooledClients
from outbox.retry_after import parse_retry_after
from outbox.sqltypes import utcnow
from outbox.toolkit.base import (
    Deferred,
    ExecutionContext,
    Failed,
    Succeeded,
    Target,
    ToolOutcome,
)
from outbox.toolkit.registry import ToolServices
from outbox.urls import CanonicalURL, URLRefused, canonical_authority, parse_url
from outbox.yamlfiles import load_yaml_file

# Headers an agent may never set: credentials come from server config; framing and identity
# headers are the transport's and the outbox's to set; and the headers proxies and frameworks
# read as the request's real target, host, client or method (a backend that honours
# `X-Original-URL: /admin/users` serves the admin API to a request policy saw as `/orders`).
FORBIDDEN_HEADERS = frozenset(
    {
        # credentials
        "authorization",
        "proxy-authorization",
        "cookie",
        # framing and hop-by-hop
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "idempotency-key",
        # the target, its host, the client, as proxies and frameworks rewrite them
        "forwarded",
        "x-original-url",
        "x-original-uri",
        "x-rewrite-url",
        "x-envoy-original-path",
        "x-original-host",
        "x-host",
        "x-real-ip",
        "x-client-ip",
        "true-client-ip",
        "x-cluster-client-ip",
        # the method (policy decided the method in the request line)
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-method",
    }
)
# Every header starting with these: X-Forwarded-For/Host/Proto/Port/Prefix/Server/Uri/…, and
# Proxy-* (Proxy-Connection, …).
FORBIDDEN_HEADER_PREFIXES = ("x-forwarded-", "proxy-")
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}$")
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]{0,4096}$")
# A 429's Retry-After defers the action; a peer asking for longer gets an hour, then a retry.
_MAX_RETRY_AFTER_SECONDS = 3600.0


class HostCredential(BaseModel):
    model_config = ConfigDict(extra="forbid")

    header: str = "Authorization"
    scheme: str | None = "Bearer"
    env: str

    def header_value(self) -> str | None:
        secret = os.environ.get(self.env)
        if not secret:
            return None
        return f"{self.scheme} {secret}" if self.scheme else secret


def header_key(name: str) -> str:
    """The name as backends compare it: case-insensitively, and with `_` read as `-` (CGI and
    WSGI turn both `X-Forwarded-For` and `X_Forwarded_For` into `HTTP_X_FORWARDED_FOR`)."""
    return name.lower().replace("_", "-")


def is_forbidden_header(name: str) -> bool:
    key = header_key(name)
    return key in FORBIDDEN_HEADERS or key.startswith(FORBIDDEN_HEADER_PREFIXES)


class HostLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int = Field(default=60, ge=1)
    max_concurrent: int = Field(default=4, ge=1, le=1000)
    credential: HostCredential | None = None
    # The backend treats paths case-insensitively (IIS, some frameworks): `/ADMIN/users` is
    # `/admin/users` there, so the path is lower-cased in the policy object and on the wire.
    case_insensitive_paths: bool = False


class HttpToolConfig(BaseModel):
    """`policies/http.yaml`."""

    model_config = ConfigDict(extra="forbid")

    defaults: HostLimits = HostLimits()
    hosts: dict[str, HostLimits] = {}

    @field_validator("hosts")
    @classmethod
    def _canonical_hosts(cls, value: dict[str, HostLimits]) -> dict[str, HostLimits]:
        """Keys in the canonical authority form policy objects use (`localhost:9000` is
        `127.0.0.1:9000`), so that a host's limits apply under every name it is called by."""
        canonical: dict[str, HostLimits] = {}
        for key, limits in value.items():
            try:
                authority = canonical_authority(key)
            except URLRefused as exc:
                raise ValueError(f"hosts: {key!r}: {exc}") from exc
            if authority in canonical:
                raise ValueError(f"hosts: {key!r} is the same host as another key ({authority})")
            canonical[authority] = limits
        return canonical

    def limits_for(self, authority: str) -> HostLimits:
        return self.hosts.get(authority, self.defaults)

    @classmethod
    def load(cls, path: Path) -> HttpToolConfig:
        if not path.is_file():
            return cls()
        data = load_yaml_file(path) or {}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ValueError(f"{path.name}: {exc}") from exc


class HttpRequestArgs(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] = Field(
        description="HTTP method. GET and HEAD read; the others change state."
    )
    url: str = Field(
        max_length=2048,
        description=(
            "Absolute http(s) URL, decided and sent in one canonical form (localhost and [::1] are "
            "127.0.0.1). Ambiguous forms are refused: empty or dot segments, ';', encoded '/', '\\' "
            "or '.', userinfo, fragments, IPv4 other than four decimal numbers. Redirects are "
            "returned, not followed."
        ),
    )
    json_body: Any = Field(
        default=None,
        alias="json",
        description="JSON request body (sent with Content-Type: application/json).",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Extra request headers. Authorization and Cookie come from server configuration; headers "
            "proxies read as the target, host or method (X-Original-URL, X-Forwarded-*, Forwarded, "
            "X-HTTP-Method-Override, …) are refused."
        ),
    )

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        # Stored and sent in canonical form; an ambiguous URL is refused (URLRefused is a
        # ValueError, so it becomes a 422 naming args.url).
        return parse_url(value).wire

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 50:
            raise ValueError("at most 50 headers")
        seen: set[str] = set()
        for name, header_value in value.items():
            if not _TOKEN.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP token")
            if is_forbidden_header(name):
                raise ValueError(
                    f"header {name!r} may not be set by agents: credentials, framing, and the headers "
                    "proxies read as the request's target, host, client or method are set by the outbox"
                )
            if header_key(name) in seen:
                raise ValueError(f"header {name!r} is given twice (names are case-insensitive)")
            seen.add(header_key(name))
            if not _HEADER_VALUE.match(header_value):
                raise ValueError(f"header {name!r} has control characters (CR, LF, NUL) or non-ASCII text")
        return value


class HttpRequestTool:
    name: ClassVar[str] = "http.request"
    description: ClassVar[str] = (
        "Call an internal HTTP API. Policy decides per host, path and method "
        "(object `http:<host><path>`, act = the method in lower case). The response status, "
        "headers and body are recorded exactly. Calls over a host's rate or concurrency limit "
        "are deferred and run when the limit allows; your Idempotency-Key is passed downstream."
    )

    def __init__(self, config: HttpToolConfig, services: ToolServices, clients: PooledClients = SHARED_CLIENTS) -> None:
        self.config = config
        self.services = services
        # Pooled per process, not per tool: a policy reload builds a new tool and keeps the
        # connections (see outbox/http_clients.py for why sharing is safe).
        self.clients = clients

    def args_schema(self) -> dict[str, Any]:
        return HttpRequestArgs.model_json_schema(by_alias=True)

    def parse_args(self, raw: dict[str, Any]) -> HttpRequestArgs:
        return HttpRequestArgs.model_validate(raw)

    def canonical_url(self, args: HttpRequestArgs) -> CanonicalURL:
        """The one form of the URL that is both decided and sent."""
        url = parse_url(args.url)
        if self.config.limits_for(url.authority).case_insensitive_paths:
            url = url.with_lowercase_path()
        return url

    def targets(self, args: BaseModel) -> list[Target]:
        assert isinstance(args, HttpRequestArgs)
        return [Target(self.canonical_url(args).policy_object("http"), args.method.lower())]

    def target_patterns(self) -> list[Target]:
        """Every object shape `targets` can produce, for static policy analysis (any host, and
        each configured host by name); see `outbox.policytools.targets`."""
        methods = [str(m).lower() for m in get_args(HttpRequestArgs.model_fields["method"].annotation)]
        hosts = ["{authority}", *self.config.hosts]
        return [Target(f"http:{host}/**", method) for host in hosts for method in methods]

    def preview(self, args: BaseModel) -> dict[str, Any]:
        assert isinstance(args, HttpRequestArgs)
        return {"method": args.method, "url": self.canonical_url(args).wire, "json": args.json_body}

    def execute(self, ctx: ExecutionContext, args: BaseModel) -> ToolOutcome:
        assert isinstance(args, HttpRequestArgs)
        settings = self.services.settings
        url = self.canonical_url(args)
        authority = url.authority
        limits = self.config.limits_for(authority)
        slot_key = f"http:concurrent:{authority}"
        holder = ctx.action_id
        with self.services.db.session() as session:
            if not acquire_slot(
                session,
                slot_key,
                limits.max_concurrent,
                holder,
                ttl=timedelta(seconds=settings.http_timeout_seconds * 2 + 30),
            ):
                return Deferred(
                    utcnow() + timedelta(seconds=1),
                    f"{authority} already has {limits.max_concurrent} request(s) in flight",
                )
            reservation = reserve(
                session,
                [Cap(f"http:rpm:{authority}", limits.requests_per_minute, timedelta(minutes=1), utcnow())],
            )
            if not reservation.granted:
                release_slot(session, slot_key, holder)
                assert reservation.retry_at is not None
                return Deferred(
                    reservation.retry_at,
                    f"{authority} allows {limits.requests_per_minute} request(s) per minute",
                )
        try:
            return self._send(ctx, args, url, limits)
        finally:
            with self.services.db.session() as session:
                release_slot(session, slot_key, holder)

    def _send(self, ctx: ExecutionContext, args: HttpRequestArgs, url: CanonicalURL, limits: HostLimits) -> ToolOutcome:
        settings = self.services.settings
        wire = httpx.URL(url.wire)
        if wire.raw_path != url.target.encode("ascii") or wire.raw_host != url.host.encode("ascii"):
            # httpx would send something other than what policy decided: send nothing.
            return Failed(
                f"refused to send {url.wire}: the HTTP client would send {wire.raw_path!r} to {wire.raw_host!r}",
                retryable=False,
            )
        headers = {**args.headers, "Idempotency-Key": f"{ctx.agent_name}:{ctx.idempotency_key}"}
        shown_headers = dict(headers)
        if limits.credential is not None:
            credential = limits.credential.header_value()
            if credential is None:
                return Failed(
                    f"the credential for this host (env {limits.credential.env}) is not configured",
                    retryable=False,
                )
            headers[limits.credential.header] = credential
            shown_headers[limits.credential.header] = "[server credential]"
        content: bytes | None = None
        if "json_body" in args.model_fields_set:
            content = canonical_json(args.json_body).encode("utf-8")
            headers.setdefault("Content-Type", "application/json")
            shown_headers.setdefault("Content-Type", "application/json")
        artifact: dict[str, Any] = {
            "method": args.method,
            "url": url.wire,
            "headers": shown_headers,
            "body": content.decode("utf-8") if content is not None else None,
        }
        started = time.monotonic()
        try:
            client = self.clients.client(ClientSettings(timeout_seconds=settings.http_timeout_seconds))
            with client.stream(args.method, wire, headers=headers, content=content) as reply:
                body, truncated = _read_capped(reply, settings.http_max_response_bytes)
        except httpx.TimeoutException as exc:
            return Failed(f"timed out: {type(exc).__name__}", retryable=True, artifact=artifact)
        except httpx.HTTPError as exc:
            return Failed(f"request failed: {type(exc).__name__}: {exc}", retryable=True, artifact=artifact)
        response = {
            "status": reply.status_code,
            "http_version": reply.http_version,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in reply.headers.raw],
            **_body_fields(body),
            "truncated": truncated,
            "elapsed_seconds": round(time.monotonic() - started, 6),
        }
        return _outcome_of(reply, url, artifact, response)


def _outcome_of(
    reply: httpx.Response, url: CanonicalURL, artifact: dict[str, Any], response: dict[str, Any]
) -> ToolOutcome:
    """What the reply's status means for the action: 429 with a Retry-After waits for it, 429
    without one and 5xx are retried, other 4xx fail for good, the rest succeed."""
    status = reply.status_code
    if status == 429 or status >= 500:
        now = utcnow()
        retry_after = parse_retry_after(reply.headers.get("retry-after"), now=now)
        if status == 429 and retry_after is not None:
            wait = timedelta(seconds=min(retry_after, _MAX_RETRY_AFTER_SECONDS))
            return Deferred(now + wait, f"{url.authority} answered 429")
        return Failed(f"HTTP {status}", retryable=True, artifact=artifact, response=response)
    if status >= 400:
        return Failed(f"HTTP {status}", retryable=False, artifact=artifact, response=response)
    return Succeeded(artifact=artifact, response=response, summary=f"HTTP {status}")


def _read_capped(reply: httpx.Response, cap: int) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    for chunk in reply.iter_raw():
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            return b"".join(chunks)[:cap], True
    return b"".join(chunks), False


def _body_fields(body: bytes) -> dict[str, Any]:
    """The body exactly: as text when a JSON column keeps it as is, else in base64."""
    text = storable_text(body)
    if text is not None:
        return {"body": text}
    return {"body_base64": base64.b64encode(body).decode("ascii")}


def provide_http_tools(policy_dir: Path, services: ToolServices) -> list[HttpRequestTool]:
    return [HttpRequestTool(HttpToolConfig.load(policy_dir / "http.yaml"), services)]


__all__ = ["HttpRequestArgs", "HttpRequestTool", "HttpToolConfig", "provide_http_tools"]
