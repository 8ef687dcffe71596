"""`policies/mail.yaml`: the protected primary domains and the isolated subdomains agents send from.

The file lives in git and is reviewed like code, so it holds *references* to secrets (a key file
path, an environment variable name), never the secrets themselves. Loading never touches keys,
relays or DNS: a config that parses is a config whose shape is right, and each subdomain is checked
against the world separately (`dns_checks`, `dkim_signing.load_signing_key`).
"""

from __future__ import annotations

import os
import re
from datetime import date, time
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from outbox.yamlfiles import YAMLFileError, load_yaml_file

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})+$")
_SELECTOR_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Where a development subdomain delivers: the local Maildir sink. The port is OUTBOX_MAIL_SINK_PORT's
# default; each process puts its own sink port in (`environment.with_deployment_overrides`).
SINK_HOST = "127.0.0.1"
DEFAULT_SINK_PORT = 2525


class MailConfigError(ValueError):
    """The mail configuration cannot be used; the message names the file and the field."""


def _normalise_domain(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("a domain name must be a string")
    domain = value.strip().lower().removesuffix(".")
    if not _DOMAIN_RE.match(domain):
        raise ValueError(f"{value!r} is not a domain name (ASCII labels; write IDNs in their xn-- form)")
    return domain


def _env_name(value: object) -> object:
    if isinstance(value, str) and not _ENV_NAME_RE.match(value):
        raise ValueError(f"{value!r} is not an environment variable name (A-Z, 0-9, _)")
    return value


def _wall_clock(value: object) -> object:
    """Accept "HH:MM" (and "24:00" for the end of the day); refuse YAML's sexagesimal numbers."""
    if isinstance(value, int):
        # YAML 1.1 reads an unquoted 18:00 as the base-60 number 1080.
        raise ValueError("write times as quoted strings, e.g. '18:00'")
    if value == "24:00":
        return time.max
    return value


DomainName = Annotated[str, BeforeValidator(_normalise_domain)]
EnvVarName = Annotated[str, BeforeValidator(_env_name)]
WallClock = Annotated[time, BeforeValidator(_wall_clock)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DkimConfig(_Strict):
    """One DKIM selector and the reference to its private key (RFC 6376 §3.1)."""

    selector: str
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"
    key_file: Path | None = None
    key_env: EnvVarName | None = None

    @field_validator("selector")
    @classmethod
    def _selector_syntax(cls, value: str) -> str:
        selector = value.strip().lower()
        if not _SELECTOR_RE.match(selector):
            raise ValueError(f"{value!r} is not a DKIM selector (dot-separated DNS labels)")
        return selector

    @model_validator(mode="after")
    def _exactly_one_key_reference(self) -> DkimConfig:
        if (self.key_file is None) == (self.key_env is None):
            raise ValueError("give exactly one of key_file (a path) or key_env (a variable name)")
        return self


class RelayConfig(_Strict):
    """The SMTP relay a subdomain submits to.

    `starttls` upgrades when the relay offers it; `require_tls` refuses to send in clear text when
    it does not (a downgrade by an attacker stripping the STARTTLS capability looks just like a
    relay without TLS).
    """

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    starttls: bool = True
    require_tls: bool = False
    username_env: EnvVarName | None = None
    password_env: EnvVarName | None = None
    # A CA bundle to trust instead of the system's, for relays with a private CA.
    tls_ca_file: Path | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> RelayConfig:
        if self.require_tls and not self.starttls:
            raise ValueError("require_tls needs starttls: true")
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("give both username_env and password_env, or neither")
        return self

    def credentials(self) -> tuple[str, str] | None:
        """The relay login, read from the environment at the moment it is needed."""
        if self.username_env is None or self.password_env is None:
            return None
        missing = [n for n in (self.username_env, self.password_env) if n not in os.environ]
        if missing:
            raise MailConfigError(f"relay {self.host}: environment variable(s) {missing} unset")
        return os.environ[self.username_env], os.environ[self.password_env]


class Budgets(_Strict):
    per_hour: int = Field(ge=1)
    per_day: int = Field(ge=1)

    @model_validator(mode="after")
    def _hour_within_day(self) -> Budgets:
        if self.per_hour > self.per_day:
            raise ValueError("per_hour cannot exceed per_day")
        return self


class WarmUp(_Strict):
    """A new subdomain's daily cap starts low and grows, so receivers learn it gradually."""

    start_date: date
    initial_daily_cap: int = Field(ge=1)
    daily_growth_factor: float = Field(ge=1.0, le=10.0)


class SendWindow(_Strict):
    """Hours a subdomain may send, in the recipient's zone when known, else `timezone`."""

    days: list[Weekday] = Field(min_length=1)
    start: WallClock
    end: WallClock
    timezone: str

    @field_validator("days")
    @classmethod
    def _distinct_days(cls, value: list[Weekday]) -> list[Weekday]:
        if len(set(value)) != len(value):
            raise ValueError("a day is listed twice")
        return sorted(value, key=WEEKDAYS.index)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return validate_timezone(value)

    @model_validator(mode="after")
    def _start_before_end(self) -> SendWindow:
        if self.start >= self.end:
            raise ValueError(
                "start must be before end; windows across midnight are not supported "
                "(send windows are daytime hours; quiet hours are what lies outside them)"
            )
        return self

    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class BreakerThresholds(_Strict):
    """When to pause a subdomain automatically.

    The defaults sit well under what large mailbox providers tolerate (Google's bulk sender rules
    treat a 0.3 % spam rate as the limit), so the breaker trips before a provider acts.
    """

    bounce_rate: float = Field(default=0.04, gt=0, lt=1)
    complaint_rate: float = Field(default=0.001, gt=0, lt=1)
    window_hours: int = Field(default=24, ge=1, le=24 * 30)
    minimum_sample: int = Field(default=100, ge=1)


class SubdomainConfig(_Strict):
    """One isolated sending subdomain: its own key, relay, budgets and reputation.

    A `development` subdomain (the quickstart's) delivers to the local Maildir sink and nowhere
    else: it names no relay (127.0.0.1:OUTBOX_MAIL_SINK_PORT is put in), its DNS is never checked
    (no lookup leaves for it: example domains cannot pass, and the names would only leak to a
    resolver), and production sends nothing from it (docs/mail.md, Development subdomains).
    """

    domain: DomainName
    development: StrictBool = False
    dkim: DkimConfig
    relay: RelayConfig
    # The envelope sender (RFC 5321 MAIL FROM) that bounces go to; the From address when unset.
    bounce_address: EmailStr | None = None
    budgets: Budgets
    warm_up: WarmUp | None = None
    recipient_domain_hourly: dict[DomainName, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    default_recipient_domain_hourly: int | None = Field(default=None, ge=1)
    per_recipient_daily: int | None = Field(default=None, ge=1)
    per_agent_daily: int | None = Field(default=None, ge=1)
    send_window: SendWindow | None = None
    breaker: BreakerThresholds = Field(default_factory=BreakerThresholds)
    # A subdomain whose DNS report is not ok is blocked from sending, unless this is false (a
    # subdomain relaying to a test server; a `development` one is never checked at all).
    enforce_dns_checks: bool = True

    @model_validator(mode="before")
    @classmethod
    def _development_delivers_to_the_sink(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("development") is not True:
            return data
        relay = data.get("relay")
        if relay is not None and not _is_sink_relay(relay):
            raise ValueError(
                "a development subdomain delivers only to the local sink: remove its relay "
                "(the sink listens on 127.0.0.1:OUTBOX_MAIL_SINK_PORT), or remove development: true "
                "to send through a real relay"
            )
        if data.get("enforce_dns_checks") is True:
            raise ValueError(
                "a development subdomain's DNS is never checked: remove enforce_dns_checks, or remove development: true"
            )
        sink = {"host": SINK_HOST, "port": DEFAULT_SINK_PORT, "starttls": False}
        return {**data, "relay": relay if relay is not None else sink, "enforce_dns_checks": False}

    @field_validator("bounce_address")
    @classmethod
    def _lowercase_bounce_domain(cls, value: str | None) -> str | None:
        if value is None:
            return None
        local, _, domain = value.rpartition("@")
        return f"{local}@{domain.lower()}"

    def envelope_domain(self) -> str:
        """The RFC 5321 MAIL FROM domain, which SPF authenticates."""
        return self.domain if self.bounce_address is None else self.bounce_address.rpartition("@")[2]

    def recipient_domain_hourly_cap(self, recipient_domain: str) -> int | None:
        """The hourly cap for one recipient domain (a specific entry, else the default)."""
        return self.recipient_domain_hourly.get(recipient_domain.lower(), self.default_recipient_domain_hourly)


class Limits(_Strict):
    max_recipients: int = Field(default=50, ge=1, le=1000)
    max_body_bytes: int = Field(default=512 * 1024, ge=1024)


class UnsubscribeConfig(_Strict):
    """Where RFC 8058 one-click unsubscribe requests go.

    `base_url` is a prefix; a message links `<base_url>/<token>`. RFC 8058 §3.1 requires HTTPS;
    plain HTTP is accepted only for a loopback host, for the embedded quickstart.
    """

    base_url: str
    # Also offer `mailto:<mailto_local_part>@<subdomain>?subject=unsubscribe%20<token>`.
    mailto: bool = True
    mailto_local_part: str = Field(default="unsubscribe", pattern=r"^[a-z0-9][a-z0-9._-]*$")

    @field_validator("base_url")
    @classmethod
    def _https_or_loopback(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.query or parts.fragment or not parts.hostname:
            raise ValueError("give a URL prefix without query or fragment, e.g. https://host/u")
        if parts.scheme == "https":
            return value.rstrip("/")
        if parts.scheme == "http" and is_loopback_host(parts.hostname):
            return value.rstrip("/")
        raise ValueError("RFC 8058 requires an https URL (http only for localhost)")


class MailConfig(_Strict):
    version: Literal[1] = 1
    primary_domains: list[DomainName] = Field(min_length=1)
    subdomains: list[SubdomainConfig] = Field(min_length=1)
    limits: Limits = Field(default_factory=Limits)
    unsubscribe: UnsubscribeConfig

    @model_validator(mode="after")
    def _subdomains_are_isolated(self) -> MailConfig:
        seen: set[str] = set()
        for index, sub in enumerate(self.subdomains):
            where = f"subdomains[{index}] ({sub.domain})"
            if sub.domain in seen:
                raise ValueError(f"{where}: declared twice")
            seen.add(sub.domain)
            if sub.domain in self.primary_domains:
                raise ValueError(f"{where}: agent mail never uses the primary domain")
            if self.organizational_domain(sub.domain) is None:
                raise ValueError(
                    f"{where}: must be a subdomain of a primary domain "
                    f"({', '.join(self.primary_domains)}) so DMARC can align"
                )
        return self

    def subdomain(self, domain: str) -> SubdomainConfig | None:
        wanted = domain.lower().removesuffix(".")
        return next((s for s in self.subdomains if s.domain == wanted), None)

    def is_primary(self, domain: str) -> bool:
        return domain.lower().removesuffix(".") in self.primary_domains

    def organizational_domain(self, domain: str) -> str | None:
        """The primary domain `domain` sits under (DMARC's organizational domain, RFC 7489 §3.2).

        We take it from the config rather than the public suffix list: the operator declared
        which registered domains are theirs.
        """
        candidates = [p for p in self.primary_domains if domain.endswith("." + p)]
        return max(candidates, key=len, default=None)

    def allowed_sender_domains(self) -> list[str]:
        return [s.domain for s in self.subdomains]

    def development_subdomains(self) -> list[SubdomainConfig]:
        return [s for s in self.subdomains if s.development]


def validate_timezone(value: str) -> str:
    """An IANA zone name that this machine's tz database knows."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {value!r}") from None
    return value


def _is_sink_relay(relay: object) -> bool:
    """A relay a development subdomain may keep: the sink's shape (loopback, no TLS, no login).
    Accepting it lets a loaded config be dumped and read again; its port is the sink's anyway."""
    if isinstance(relay, RelayConfig):
        relay = relay.model_dump()
    if not isinstance(relay, dict) or not isinstance(relay.get("host"), str):
        return False
    plain = not relay.get("starttls", True) and not relay.get("require_tls", False)
    anonymous = relay.get("username_env") is None and relay.get("password_env") is None
    return is_loopback_host(relay["host"]) and plain and anonymous


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def _format_loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def parse_mail_config(data: Any, source: str = "<mail config>") -> MailConfig:
    """Validate already-parsed YAML; errors name the source and each offending field."""
    try:
        return MailConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: {_format_loc(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise MailConfigError("\n".join(lines)) from None


def load_mail_config(path: Path) -> MailConfig:
    """Read and validate `policies/mail.yaml`: strict YAML (a repeated key is refused, not
    silently overridden), then the model; every error names the file, and the line when known."""
    try:
        data = load_yaml_file(path)
    except YAMLFileError as exc:
        raise MailConfigError(str(exc)) from None
    return parse_mail_config(data, str(path))
