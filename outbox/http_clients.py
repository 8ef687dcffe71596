"""Pooled HTTP clients for the requests the outbox makes on agents' behalf.

A new `httpx.Client` per request cost ~20 ms (its TLS context loads the CA bundle) and a new TCP
connection every time: most of a worker's time for a fast backend. Instead each process keeps one
client per distinct `ClientSettings`, built on first use, shared by every thread and kept across
policy reloads, and closed at exit.

Sharing a client keeps every guarantee a fresh one gave:
- a connection is reused only for the origin it was opened to: httpx (httpcore) keys its pool
  by scheme, host and port exactly as written in the request URL (`Origin.__eq__`), and callers
  send the canonical URL policy decided, so a kept-alive connection never carries a request to
  another host (HTTP/2, whose connections could be coalesced, is off);
- nothing is kept between requests: the cookie jar refuses every cookie, so a `Set-Cookie` from
  one action's reply is never sent with another's request (agents may not send cookies at all);
- no redirects are followed and nothing comes from the environment (`trust_env=False`: no
  proxies, no netrc, no `SSL_CERT_FILE`);
- a reply not read to its end (a capped body, a timeout) closes its connection rather than
  returning it to the pool (httpcore reuses a connection only when both sides finished);
- no process-wide connection cap (httpx's default is 100): concurrency is bounded per host by the
  outbox's slots, as before.
"""

from __future__ import annotations

import atexit
import http.cookiejar
import os
import threading
import urllib.request
from dataclasses import dataclass

import httpx


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Everything that makes one client differ from another. Requests with equal settings share a
    client; a setting added later (a per-host CA bundle, say) belongs here, so that requests that
    differ in it never share one."""

    timeout_seconds: float


class _NoCookies(http.cookiejar.CookiePolicy):
    """Store no cookie and send none: the client is shared by every action and agent."""

    netscape = True
    rfc2965 = False
    hide_cookie2 = True

    def set_ok(self, cookie: http.cookiejar.Cookie, request: urllib.request.Request) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: urllib.request.Request) -> bool:
        return False

    def domain_return_ok(self, domain: str, request: urllib.request.Request) -> bool:
        return False

    def path_return_ok(self, path: str, request: urllib.request.Request) -> bool:
        return False


class PooledClients:
    """One `httpx.Client` per `ClientSettings`, created lazily; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[ClientSettings, httpx.Client] = {}
        self._pid = os.getpid()

    def client(self, settings: ClientSettings) -> httpx.Client:
        with self._lock:
            if self._pid != os.getpid():
                # A forked child (a prefork worker) must not write to its parent's sockets: it
                # starts with no client and leaves the parent's to the parent.
                self._clients, self._pid = {}, os.getpid()
            client = self._clients.get(settings)
            if client is None:
                client = self._clients[settings] = _new_client(settings)
            return client

    def close(self) -> None:
        """Close every client and its connections; the next request builds a new one."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


def _new_client(settings: ClientSettings) -> httpx.Client:
    return httpx.Client(
        timeout=settings.timeout_seconds,
        follow_redirects=False,
        trust_env=False,
        http2=False,
        cookies=http.cookiejar.CookieJar(policy=_NoCookies()),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=20),
    )


# The process's clients, shared by every tool instance (a policy reload builds new tools, not new
# connections).
SHARED_CLIENTS = PooledClients()
atexit.register(SHARED_CLIENTS.close)


__all__ = ["SHARED_CLIENTS", "ClientSettings", "PooledClients"]
