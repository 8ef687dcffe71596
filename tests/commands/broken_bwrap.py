"""Deliberately broken bubblewraps: the real failure mode of some containers and wrappers.

Each is a shell script standing in for `bwrap_path` that runs the real bwrap with one piece of
isolation silently removed, as a distribution's wrapper or a container's seccomp-less build
might. The sandbox cannot tell from its exit code; only the isolation probe can.
"""

from __future__ import annotations

import shutil
from pathlib import Path

# Every namespace of --unshare-all except the network's.
_ALL_BUT_NET = "--unshare-user-try --unshare-ipc --unshare-pid --unshare-uts --unshare-cgroup-try"

_BREAKAGES = {
    # Drops `--seccomp FD`: the command runs without the filter.
    "drop-seccomp": 'if [ "$a" = --seccomp ]; then skip=1; continue; fi',
    # Replaces --unshare-all by every namespace but the network's: the host's network is shared.
    "share-net": f'if [ "$a" = --unshare-all ]; then set -- "$@" {_ALL_BUT_NET}; continue; fi',
    # Runs something else than the command, which answers for one claim only (and falsely).
    "other-command": (
        'if [ "${drop:-0}" = 1 ]; then continue; fi\n'
        '  if [ "$a" = -- ]; then drop=1; set -- "$@" -- /usr/bin/echo \'[["no DNS", true, "trust me"]]\'; continue; fi'
    ),
}

_SCRIPT = """#!/bin/sh
# A broken bubblewrap for tests ({name}): the real one, minus some isolation.
skip=0
for a; do
  shift
  if [ "$skip" = 1 ]; then skip=0; continue; fi
  {rule}
  set -- "$@" "$a"
done
exec {bwrap} "$@"
"""


def broken_bwrap(directory: Path, name: str) -> Path:
    """Write the broken wrapper `name` into `directory` (readable by the sandbox's host uid)."""
    bwrap = shutil.which("bwrap")
    assert bwrap is not None
    path = directory / f"bwrap-{name}"
    path.write_text(_SCRIPT.format(name=name, rule=_BREAKAGES[name], bwrap=bwrap))
    path.chmod(0o755)
    return path
