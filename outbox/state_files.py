"""The outbox's own state on disk: created private, tightened when found open, never shown to tools.

The data directory (`.outbox/` by default) holds the SQLite database with every action and the
hashes of every API key, the development DKIM keys, the unsubscribe secret, the Maildir of the
local sink and the audit signing material. Nobody but the outbox's own uid has any business in
it, so directories are 0700 and files 0600 whatever the umask. An install made before this rule
(world-readable database) is tightened at start, and the change is logged.

`state_paths` lists what counts as state, for the sandbox's refusal to mount it (a command tool
must never read the outbox's data, however its mount is spelled).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import get_args

import structlog

from outbox.config import Settings

log = structlog.get_logger(__name__)

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
# The files SQLite keeps beside a database. SQLite creates them with the database file's own
# permission bits, so a 0600 database gets 0600 companions; they are tightened here as well in
# case an older install left them open.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")

# Path-valued settings that are not the outbox's state: programs, reviewed policy, the working
# directory DKIM key paths are relative to, and directories meant for tools. Every other
# path-valued setting (the data directory, secrets, audit keys and checkpoints, the Maildir, ...)
# is state: a setting added later is protected unless someone decides here that it is not.
_NOT_STATE = frozenset(
    {
        "policy_dir",
        "shadow_policy_dir",
        "mail_config",
        "dkim_key_dir",
        "sandbox_bwrap_path",
        "sandbox_prlimit_path",
        "sandbox_scratch_root",
        "sandbox_repo_dir",
    }
)


def private_directory(path: Path) -> Path:
    """Create `path` (and missing parents) 0700, or tighten it to 0700 if it exists open."""
    _create_missing(path)
    _tighten(path, PRIVATE_DIR_MODE)
    return path


def private_parents(path: Path) -> Path:
    """Create the missing parents of `path` 0700 (existing ones are left as they are)."""
    _create_missing(path.parent)
    return path


def _create_missing(path: Path) -> None:
    missing: list[Path] = []
    probe = path
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it first
            directory.mkdir(mode=PRIVATE_DIR_MODE)


def private_file(path: Path) -> Path:
    """Create an empty `path` 0600 if missing (its directory made private), else tighten it."""
    if not path.exists():
        private_directory(path.parent)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    _tighten(path, PRIVATE_FILE_MODE)
    return path


def sqlite_path(settings: Settings) -> Path | None:
    """The SQLite database file, or None for PostgreSQL and in-memory databases."""
    if not settings.is_sqlite:
        return None
    path = settings.database_url.split(":///", 1)[1] if ":///" in settings.database_url else ""
    path = path.split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


def secure_sqlite_database(path: Path) -> None:
    """Before SQLite opens `path`: the file exists 0600 in a private directory, companions 0600.

    Creating the file ourselves (SQLite accepts an empty file as a new database) is what makes
    SQLite's `-wal`, `-shm` and `-journal` files private too: it copies their mode from it.
    """
    if not path.parent.exists():
        private_directory(path.parent)
    private_file(path)
    for suffix in SQLITE_COMPANIONS:
        companion = path.with_name(path.name + suffix)
        try:
            _tighten(companion, PRIVATE_FILE_MODE)
        except FileNotFoundError:
            # None, or SQLite removed it meanwhile (another connection's rollback journal lives
            # only as long as its transaction): nothing to tighten.
            continue


def secure_state(settings: Settings) -> None:
    """At start: the data directory and the SQLite database are private, whatever made them."""
    database = sqlite_path(settings)
    if database is not None:
        secure_sqlite_database(database)
    if settings.data_dir.exists():
        private_directory(settings.data_dir)


def state_paths(settings: Settings) -> list[Path]:
    """Every path that is the outbox's own state, absolute and with symlinks resolved."""
    paths: list[Path] = [settings.data_dir]
    database = sqlite_path(settings)
    if database is not None:
        paths += [database, *(database.with_name(database.name + suffix) for suffix in SQLITE_COMPANIONS)]
    env_file = settings.model_config.get("env_file")
    if isinstance(env_file, str | Path):
        paths.append(Path(env_file))  # the settings file may hold every secret
    for name, field in type(settings).model_fields.items():
        if name in _NOT_STATE or not _is_path_field(field.annotation):
            continue
        value = getattr(settings, name)
        if isinstance(value, Path):
            paths.append(value)
    resolved: list[Path] = []
    for path in paths:
        real = Path(os.path.realpath(path))
        if real not in resolved:
            resolved.append(real)
    return resolved


def _is_path_field(annotation: object) -> bool:
    return annotation is Path or Path in get_args(annotation)


def _tighten(path: Path, mode: int) -> None:
    """Remove group and other permission bits; log when there were any."""
    current = stat.S_IMODE(path.stat().st_mode)
    if current & 0o077:
        path.chmod(mode)
        log.warning("state.permissions_tightened", path=str(path), was=oct(current), now=oct(mode))
