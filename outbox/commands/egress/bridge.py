"""Inside the sandbox: the proxy's Unix socket, bridged to a loopback TCP port for the tool.

Most clients (kubectl, terraform, curl, Python) speak to a proxy over TCP, named by
HTTPS_PROXY/ALL_PROXY; none speaks to a Unix socket. So, as Anthropic's sandbox-runtime does,
a `socat` inside the sandbox listens on 127.0.0.1:3128 of the sandbox's own loopback and
forwards each connection to the proxy's socket, bound read-only at /run/outbox-egress. The
tool is started only once the bridge listens (seen in /proc/net/tcp, so no client tool is
needed), and everything runs under the same resource limits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from outbox.commands.profiles import SandboxProfile

PROXY_HOST = "127.0.0.1"
PROXY_PORT = 3128
PROXY_SOCKET_DIR_INSIDE = "/run/outbox-egress"
PROXY_SOCKET_NAME = "proxy.sock"
PROXY_SOCKET_INSIDE = f"{PROXY_SOCKET_DIR_INSIDE}/{PROXY_SOCKET_NAME}"
SHELL = "/usr/bin/sh"
# How long the tool waits for the bridge to listen: 500 polls of 10 ms.
_BRIDGE_POLLS = 500

# "$0" is socat's path, "$@" the tool's argv: nothing of either is parsed by the shell. The
# helpers are named by absolute path, so a profile's PATH cannot swap them.
_LISTEN = f"TCP-LISTEN:{PROXY_PORT},bind={PROXY_HOST},fork,reuseaddr"
_BRIDGE_SCRIPT = f"""\
"$0" {_LISTEN} UNIX-CONNECT:{PROXY_SOCKET_INSIDE} </dev/null >/dev/null 2>&1 &
n=0
until /usr/bin/grep -q ' 0100007F:{PROXY_PORT:04X} 00000000:0000 0A ' /proc/net/tcp; do
  n=$((n+1))
  if [ "$n" -gt {_BRIDGE_POLLS} ]; then echo 'outbox: the egress bridge (socat) did not start' >&2; exit 125; fi
  /usr/bin/sleep 0.01
done
exec "$@"
"""


def proxy_env() -> dict[str, str]:
    """The proxy variables of an egress profile: every client sends every connection through it."""
    http = f"http://{PROXY_HOST}:{PROXY_PORT}"
    # socks5h: the client hands the proxy the name, never resolves it (there is no DNS inside).
    socks = f"socks5h://{PROXY_HOST}:{PROXY_PORT}"
    env = {"HTTPS_PROXY": http, "HTTP_PROXY": http, "ALL_PROXY": socks, "NO_PROXY": ""}
    return env | {name.lower(): value for name, value in env.items()}


def proxy_endpoint(profile: SandboxProfile) -> tuple[str, int] | None:
    """Where a tool of `profile` finds the proxy inside its sandbox; None without egress."""
    return (PROXY_HOST, PROXY_PORT) if profile.egress else None


def bridged_command(socat: Path, command: Sequence[str]) -> list[str]:
    """`command`, started after the bridge listens."""
    return [SHELL, "-c", _BRIDGE_SCRIPT, str(socat), *command]
