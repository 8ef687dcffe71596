"""The sandbox, run for real under bubblewrap: what a command can reach, and what stops it."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from outbox.commands import (
    SandboxConfigurationError,
    SandboxResult,
    SandboxSettings,
    SandboxUnavailable,
    SecretBinding,
    builtin_profiles,
    run_command,
)
from tests.commands.conftest import profile_with

PYTHON = "/usr/bin/python3"


def python(code: str, settings: SandboxSettings, **options: object) -> SandboxResult:
    """Run Python source in the sandbox (the system interpreter: /usr is what the sandbox sees)."""
    arguments: dict[str, object] = {"profile": "default", "timeout_seconds": 10, "output_cap_bytes": 65536}
    arguments |= options
    return run_command([PYTHON, "-c", code], settings=settings, **arguments)  # type: ignore[arg-type]


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A TCP port on the host's 127.0.0.1 that accepts connections."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


CONNECT = """
import socket, sys
try:
    socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
    print("connected")
except OSError as error:
    print("blocked", type(error).__name__)
try:
    socket.create_connection(("1.1.1.1", 53), timeout=2).close()
    print("internet")
except OSError as error:
    print("blocked", type(error).__name__)
"""


def test_the_network_is_unreachable_by_default(settings: SandboxSettings, host_listener: int) -> None:
    result = python(CONNECT.format(port=host_listener), settings)

    # Not even a socket: without the network, seccomp refuses AF_INET (EAFNOSUPPORT, an OSError).
    assert result.stdout.splitlines() == ["blocked OSError", "blocked OSError"]
    assert "network-namespace" in result.isolation


def test_an_egress_profile_has_a_network_namespace_of_its_own_too(
    settings: SandboxSettings, host_listener: int
) -> None:
    result = python(CONNECT.format(port=host_listener), settings, profile="network")

    # Its own loopback (nothing listens there) and no route anywhere else: only the proxy leads out.
    assert result.stdout.splitlines() == ["blocked ConnectionRefusedError", "blocked OSError"]
    assert {"network-namespace", "egress:proxy"} <= set(result.isolation)


WRITES = """
import os
for path in ["/usr/evil", "/etc/evil", "/evil", "/repo/evil", "/proc/sys/kernel/hostname", "/scratch/ok", "/tmp/ok"]:
    try:
        with open(path, "w") as handle:
            handle.write("x")
        print(path, "written")
    except OSError as error:
        print(path, "refused", error.strerror)
for path in ["/root", "/work", "/home", "/var", "/etc/shadow", "/run/secrets"]:
    print(path, "visible" if os.path.exists(path) else "absent")
print("cwd", os.getcwd())
"""


def test_only_scratch_and_tmp_are_writable_and_the_host_is_not_visible(shared_dir: Path, require_sandbox: None) -> None:
    (shared_dir / "README").write_text("repository content\n")
    (shared_dir / "README").chmod(0o644)
    settings = SandboxSettings(mounts={"repo": shared_dir})

    result = python(WRITES, settings, profile="readonly-repo")

    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    for path in ["/usr/evil", "/etc/evil", "/evil", "/repo/evil"]:
        assert lines[path] == "refused Read-only file system", path
    assert lines["/proc/sys/kernel/hostname"].startswith("refused")
    assert lines["/scratch/ok"] == "written"
    assert lines["/tmp/ok"] == "written"
    assert {lines[path] for path in ["/root", "/work", "/home", "/var", "/etc/shadow", "/run/secrets"]} == {"absent"}
    assert lines["cwd"] == "/scratch"
    assert sorted(path.name for path in shared_dir.iterdir()) == ["README"]


def test_the_scratch_directory_is_fresh_and_removed_afterwards(shared_dir: Path, require_sandbox: None) -> None:
    settings = SandboxSettings(scratch_root=shared_dir)
    code = "import os; print(os.listdir('.')); open('left-behind', 'w').write('x'); os.mkdir('locked', 0)"

    first = python(code, settings)
    second = python(code, settings)

    assert first.stdout == second.stdout == "[]\n"
    assert list(shared_dir.iterdir()) == []


def test_the_environment_is_scrubbed(settings: SandboxSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-secret-value")

    result = python("import os, json; print(json.dumps(dict(os.environ)))", settings)

    environment = json.loads(result.stdout)
    assert "host-secret-value" not in result.stdout
    assert set(environment) <= {*builtin_profiles()["default"].env, "PWD"}
    assert environment["HOME"] == "/scratch"


def test_the_command_runs_unprivileged_without_capabilities(settings: SandboxSettings) -> None:
    code = """
import os
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(os.getuid(), os.getgid(), status["CapEff"].strip(), status["CapBnd"].strip(), status["NoNewPrivs"].strip())
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000) == 0:  # CLONE_NEWUSER
    print("nested user namespace created")
else:
    print("nested user namespace refused", ctypes.get_errno())
"""
    result = python(code, settings)

    assert result.stdout.splitlines() == [
        "65534 65534 0000000000000000 0000000000000000 1",
        # EPERM from seccomp, before the kernel's own ENOSPC (bwrap's --disable-userns) is reached.
        "nested user namespace refused 1",
    ]
    assert {"user-namespace", "pid-namespace", "mount-namespace", "cap-drop:ALL"} <= set(result.isolation)
    if os.geteuid() == 0:
        assert "host-uid:65534" in result.isolation


FORK_BOMB = """
import os, time
root = os.getpid()
try:
    while True:
        os.fork()
except OSError:
    pass
if os.getpid() == root:
    print(sum(name.isdigit() for name in os.listdir("/proc")), flush=True)
time.sleep(60)  # {marker}
"""


def test_a_fork_bomb_is_contained_and_killed(require_sandbox: None) -> None:
    marker = f"fork-bomb-{uuid.uuid4()}"
    settings = SandboxSettings(profiles=builtin_profiles() | {"default": profile_with("default", processes=32)})
    neighbour: list[SandboxResult] = []

    def fork_in_another_sandbox() -> None:
        time.sleep(1)
        code = "import subprocess; print(subprocess.run(['true']).returncode)"
        neighbour.append(python(code, SandboxSettings()))

    thread = threading.Thread(target=fork_in_another_sandbox)
    thread.start()
    started = time.monotonic()
    result = python(FORK_BOMB.format(marker=marker), settings, timeout_seconds=3)
    thread.join()

    assert result.timed_out
    assert time.monotonic() - started < 8
    assert 0 < int(result.stdout) <= 32  # tasks in the sandbox's pid namespace, never more
    assert processes_with(marker) == []
    # The limit is per sandbox: a neighbour running meanwhile could still start processes.
    assert neighbour[0].stdout == "0\n"


def test_an_infinite_loop_is_killed_by_the_cpu_limit(require_sandbox: None) -> None:
    settings = SandboxSettings(profiles=builtin_profiles() | {"default": profile_with("default", cpu_seconds=1)})

    result = python("while True: pass", settings, timeout_seconds=20)

    assert not result.timed_out
    assert result.exit_code == 128 + 9  # SIGKILL at the hard CPU limit
    assert result.duration_seconds < 10


def test_a_command_past_its_deadline_is_killed(settings: SandboxSettings) -> None:
    started = time.monotonic()

    result = python("import time; print('started', flush=True); time.sleep(60)", settings, timeout_seconds=1)

    assert result.timed_out
    assert result.stdout == "started\n"
    assert result.exit_code == 128 + 9
    assert 1 <= result.duration_seconds < 3
    assert time.monotonic() - started < 5


GRANDCHILD = """
import os, socket, sys, time

def report(message):
    with socket.socket(socket.AF_UNIX) as channel:
        channel.connect("/canary/socket")
        channel.sendall(message)

if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        report(b"started")
        time.sleep(2)
        report(b"still alive")  # {marker}
        os._exit(0)
    os._exit(0)
time.sleep(60)
"""


def test_grandchildren_are_killed_with_the_command_at_the_deadline(shared_dir: Path, require_sandbox: None) -> None:
    """A daemonised grandchild (own session, reparented) must not outlive the timeout.

    It reports over a Unix socket bound into the sandbox: once right away (proving the channel
    works) and once two seconds later, long after the deadline, which must never arrive.
    """
    canary = shared_dir / "canary"
    canary.mkdir(mode=0o755)
    canary.chmod(0o755)
    messages: list[bytes] = []
    marker = f"grandchild-{uuid.uuid4()}"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(canary / "socket"))
        (canary / "socket").chmod(0o777)
        listener.listen(4)
        listener.settimeout(0.2)

        def collect() -> None:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    continue
                with connection:
                    messages.append(connection.recv(100))

        collector = threading.Thread(target=collect)
        collector.start()
        settings = SandboxSettings(
            mounts={"canary": canary},
            profiles=builtin_profiles() | {"default": profile_with("default", mounts={"canary": "/canary"})},
        )
        result = python(GRANDCHILD.format(marker=marker), settings, timeout_seconds=1)
        assert processes_with(marker) == []
        collector.join()

    assert result.timed_out
    assert messages == [b"started"]


def test_output_is_capped_and_truncation_flagged(settings: SandboxSettings) -> None:
    code = "import sys; sys.stdout.write('x' * 100000); sys.stderr.write('short')"

    result = python(code, settings, output_cap_bytes=1024)

    assert result.stdout_bytes == b"x" * 1024
    assert result.stdout_truncated
    assert result.stderr == "short"
    assert not result.stderr_truncated
    assert result.exit_code == 0


def test_output_that_is_not_utf8_is_kept_exactly(settings: SandboxSettings) -> None:
    result = python("import sys; sys.stdout.buffer.write(b'caf\\xe9 \\xff')", settings)

    response = result.response()
    assert response["stdout"] == "caf\ufffd \ufffd"
    assert base64.b64decode(response["stdout_base64"]) == b"caf\xe9 \xff"
    assert "stderr_base64" not in response


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("open('big', 'wb').write(b'x' * 2 * 1024 * 1024)", "File too large"),
        ("bytearray(600 * 1024 * 1024)", "MemoryError"),
        ("[open('/dev/null') for _ in range(300)]", "Too many open files"),
    ],
    ids=["file-size", "address-space", "open-files"],
)
def test_resource_limits_apply(require_sandbox: None, code: str, expected: str) -> None:
    settings = SandboxSettings(
        profiles=builtin_profiles() | {"default": profile_with("default", file_size_bytes=1024 * 1024)}
    )

    result = python(code, settings)

    assert result.exit_code == 1
    assert expected in result.stderr


def test_exit_codes_follow_the_shell_convention(settings: SandboxSettings) -> None:
    assert python("raise SystemExit(3)", settings).exit_code == 3
    assert python("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", settings).exit_code == 128 + 15


SECRET_READER = """
import hashlib, os
print("file", hashlib.sha256(open("/run/secrets/token", "rb").read()).hexdigest())
print("env", hashlib.sha256(os.environ["API_TOKEN"].encode()).hexdigest())
print("mode", oct(os.stat("/run/secrets/token").st_mode & 0o777))
print("careless", open("/run/secrets/token").read())
"""


def test_secrets_reach_the_sandbox_only(require_sandbox: None, capfd: pytest.CaptureFixture[str]) -> None:
    token = f"tok-{uuid.uuid4()}"
    settings = SandboxSettings(secrets={"api-token": token})
    binding = SecretBinding(name="api-token", file="token", env="API_TOKEN")

    result = python(SECRET_READER, settings, secrets=[binding])

    digest = hashlib.sha256(token.encode()).hexdigest()
    assert result.stdout.splitlines() == [
        f"file {digest}",
        f"env {digest}",
        "mode 0o400",
        "careless [REDACTED:api-token]",
    ]
    assert result.secrets_redacted
    recorded = json.dumps([result.response(), result.artifact(), list(result.argv), repr(result), repr(settings)])
    assert token not in recorded
    out, err = capfd.readouterr()
    assert token not in out + err


def test_secrets_can_come_from_a_directory_of_files(shared_dir: Path, require_sandbox: None) -> None:
    (shared_dir / "api-token").write_bytes(b"from-a-file\n")
    settings = SandboxSettings(secrets_dir=shared_dir)
    code = "import os; print(open(os.environ['TOKEN_FILE']).read() == 'from-a-file\\n')"

    result = python(code, settings, secrets=[SecretBinding(name="api-token", file="token", path_env="TOKEN_FILE")])

    assert result.stdout == "True\n"


def test_a_secret_straddling_the_output_cap_leaves_no_prefix(require_sandbox: None) -> None:
    token = "abcdefghijklmnopqrstuvwxyz0123456789"
    settings = SandboxSettings(secrets={"api-token": token})
    code = "import os; print('x' * 1010 + os.environ['API_TOKEN'])"

    result = python(code, settings, output_cap_bytes=1024, secrets=[SecretBinding(name="api-token", env="API_TOKEN")])

    assert result.stdout_truncated
    assert b"abcdefghijklmn" not in result.stdout_bytes
    assert len(result.stdout_bytes) == 1024


def test_configuration_problems_are_refused_before_anything_runs(require_sandbox: None) -> None:
    settings = SandboxSettings()

    with pytest.raises(SandboxConfigurationError, match="unknown sandbox profile 'roomy'"):
        python("print(1)", settings, profile="roomy")
    with pytest.raises(SandboxConfigurationError, match="needs the host directory 'repo'"):
        python("print(1)", settings, profile="readonly-repo")
    with pytest.raises(SandboxConfigurationError, match="secret 'absent' is not configured"):
        python("print(1)", settings, secrets=[SecretBinding(name="absent", env="TOKEN")])


def test_a_sandbox_that_cannot_be_set_up_is_refused(shared_dir: Path, require_sandbox: None) -> None:
    private = shared_dir / "private"
    private.mkdir(mode=0o700)
    (private / "repo").mkdir()
    settings = SandboxSettings(mounts={"repo": private / "repo"})

    if os.geteuid() == 0:  # the sandbox's unprivileged host uid cannot enter a 0700 directory
        with pytest.raises(SandboxUnavailable, match="could not set up the sandbox"):
            python("print(1)", settings, profile="readonly-repo")


def test_without_bubblewrap_execution_fails_closed(shared_dir: Path) -> None:
    canary = shared_dir / "ran"
    settings = SandboxSettings(bwrap_path=Path("/nonexistent/bwrap"))

    with pytest.raises(SandboxUnavailable, match="refusing to run commands unsandboxed"):
        run_command(
            ["touch", str(canary)], settings=settings, profile="default", timeout_seconds=5, output_cap_bytes=1024
        )

    assert not canary.exists()


def test_unsandboxed_development_mode_is_recorded_and_still_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "host-secret-value")
    settings = SandboxSettings(
        bwrap_path=Path("/nonexistent/bwrap"), allow_unsandboxed=True, secrets={"api-token": "tok-unsandboxed"}
    )
    binding = SecretBinding(name="api-token", file="token", path_env="TOKEN_FILE")
    code = "import os; print(sorted(os.environ)); print(open(os.environ['TOKEN_FILE']).read() == 'tok-unsandboxed')"

    result = python(code, settings, secrets=[binding])
    slow = python("import time; time.sleep(30)", settings, timeout_seconds=1)

    assert result.unsandboxed
    assert result.isolation == ("none",)
    assert result.artifact()["unsandboxed"] is True
    assert "AWS_SECRET_ACCESS_KEY" not in result.stdout
    assert result.stdout.splitlines()[1] == "True"
    assert slow.timed_out
