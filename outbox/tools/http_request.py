"""`http.request`: agents calling internal HTTP APIs through the outbox.

This is the tool where parallel agents break contracts written for one human: per-host request
rates and concurrency are enforced across all workers (over the limit the action is deferred,
not failed), credentials come from server configuration (agents never send Authorization or
Cookie), and the action's idempotency key travels downstream so that a retried POST is not a
second write.
"""

from __future__ import annotations

import base64
import os
import re
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args
from urllib.parse import urlsplit

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from outbox.budgets.service import Cap, acquire_slot, release_slot, reserve
from outbox.canonical import canonical_json
from outbox.sqltypes import utcnow
from outbox.tools.base import (
    Deferred,
    ExecutionContext,
    Failed,
    Succeeded,
    Target,
    ToolOutcome,
)
from outbox.tools.registry import ToolServices

# Headers an agent may never set: credentials come from server config; framing and identity
# headers are the transport's and the outbox's to set.
FORBIDDEN_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "idempotency-key",
        "te",
        "upgrade",
        "expect",
    }
)
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}$")
_HEADER_VALUE = re.compile(r"^[\t\x20-\x7e]{0,4096}$")


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


class HostLimits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int = Field(default=60, ge=1)
    max_concurrent: int = Field(default=4, ge=1, le=1000)
    credential: HostCredential | None = None


class HttpToolConfig(BaseModel):
    """`policies/http.yaml`."""

    model_config = ConfigDict(extra="forbid")

    defaults: HostLimits = HostLimits()
    hosts: dict[str, HostLimits] = {}

    def limits_for(self, authority: str) -> HostLimits:
        return self.hosts.get(authority, self.defaults)

    @classmethod
    def load(cls, path: Path) -> HttpToolConfig:
        if not path.is_file():
            return cls()
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
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
        description="Absolute http(s) URL. Redirects are returned, not followed.",
    )
    json_body: Any = Field(
        default=None,
        alias="json",
        description="JSON request body (sent with Content-Type: application/json).",
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Extra request headers. Authorization and Cookie come from server configuration.",
    )

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        try:
            url = httpx.URL(value)
        except (httpx.InvalidURL, ValueError) as exc:
            raise ValueError(f"not a valid URL: {exc}") from exc
        if url.scheme not in ("http", "https"):
            raise ValueError("only http and https URLs are allowed")
        if not url.host:
            raise ValueError("the URL has no host")
        if url.userinfo:
            raise ValueError("credentials in the URL are not allowed; they come from server configuration")
        if url.fragment:
            raise ValueError("the URL must not have a #fragment")
        # Check the path as the agent wrote it: httpx would quietly resolve dot segments.
        raw_path = urlsplit(value).path
        lowered = raw_path.lower()
        if "%2f" in lowered or "%5c" in lowered or "\\" in raw_path:
            raise ValueError("encoded slashes are not allowed in the path")
        segments = [s.replace("%2e", ".") for s in lowered.split("/")]
        if any(s in (".", "..") for s in segments):
            raise ValueError("dot segments (. and ..) are not allowed in the path")
        return str(url)

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 50:
            raise ValueError("at most 50 headers")
        for name, header_value in value.items():
            if not _TOKEN.match(name):
                raise ValueError(f"header name {name!r} is not a valid HTTP token")
            if name.lower() in FORBIDDEN_HEADERS:
                raise ValueError(
                    f"header {name!r} may not be set by agents (credentials and framing are set by the outbox)"
                )
            if not _HEADER_VALUE.match(header_value):
                raise ValueError(f"header {name!r} has control characters (CR, LF, NUL) or non-ASCII text")
        return value


def authority_of(url: httpx.URL) -> str:
    default_port = {"http": 80, "https": 443}[url.scheme]
    port = url.port or default_port
    return url.host if port == default_port else f"{url.host}:{port}"


class HttpRequestTool:
    name: ClassVar[str] = "http.request"
    description: ClassVar[str] = (
        "Call an internal HTTP API. Policy decides per host, path and method "
        "(object `http:<host><path>`, act = the method in lower case). The response status, "
        "headers and body are recorded exactly. Calls over a host's rate or concurrency limit "
        "are deferred and run when the limit allows; your Idempotency-Key is passed downstream."
    )

    def __init__(self, config: HttpToolConfig, services: ToolServices) -> None:
        self.config = config
        self.services = services

    def args_schema(self) -> dict[str, Any]:
        return HttpRequestArgs.model_json_schema(by_alias=True)

    def parse_args(self, raw: dict[str, Any]) -> HttpRequestArgs:
        return HttpRequestArgs.model_validate(raw)

    def targets(self, args: BaseModel) -> list[Target]:
        assert isinstance(args, HttpRequestArgs)
        url = httpx.URL(args.url)
        return [Target(f"http:{authority_of(url)}{url.path or '/'}", args.method.lower())]

    def target_patterns(self) -> list[Target]:
        """Every object shape `targets` can produce, for static policy analysis (any host, and
        each configured host by name); see `outbox.policy.targets`."""
        methods = [str(m).lower() for m in get_args(HttpRequestArgs.model_fields["method"].annotation)]
        hosts = ["{authority}", *self.config.hosts]
        return [Target(f"http:{host}/**", method) for host in hosts for method in methods]

    def preview(self, args: BaseModel) -> dict[str, Any]:
        assert isinstance(args, HttpRequestArgs)
        return {"method": args.method, "url": args.url, "json": args.json_body}

    def execute(self, ctx: ExecutionContext, args: BaseModel) -> ToolOutcome:
        assert isinstance(args, HttpRequestArgs)
        settings = self.services.settings
        url = httpx.URL(args.url)
        authority = authority_of(url)
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

    def _send(self, ctx: ExecutionContext, args: HttpRequestArgs, url: httpx.URL, limits: HostLimits) -> ToolOutcome:
        settings = self.services.settings
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
            "url": str(url),
            "headers": shown_headers,
            "body": content.decode("utf-8") if content is not None else None,
        }
        started = time.monotonic()
        try:
            with (
                httpx.Client(timeout=settings.http_timeout_seconds, follow_redirects=False, trust_env=False) as client,
                client.stream(args.method, url, headers=headers, content=content) as reply,
            ):
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
        status = reply.status_code
        if status == 429 or status >= 500:
            retry_after = _retry_after_seconds(reply.headers.get("retry-after"))
            if status == 429 and retry_after is not None:
                return Deferred(utcnow() + timedelta(seconds=retry_after), f"{url.host} answered 429")
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
    try:
        return {"body": body.decode("utf-8")}
    except UnicodeDecodeError:
        return {"body_base64": base64.b64encode(body).decode("ascii")}


def _retry_after_seconds(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return min(int(value.strip()), 3600)


def provide_http_tools(policy_dir: Path, services: ToolServices) -> list[HttpRequestTool]:
    return [HttpRequestTool(HttpToolConfig.load(policy_dir / "http.yaml"), services)]


__all__ = ["HttpRequestArgs", "HttpRequestTool", "HttpToolConfig", "provide_http_tools"]
