"""Directories a sandboxed command can read: the sandbox runs as an unprivileged host uid, and
pytest's tmp_path is 0700, so a mount or repository there fails the profile's isolation probe."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def sandbox_readable_dir(prefix: str, *subdirectories: str, readme: bool = True) -> Iterator[Path]:
    """A fresh directory under the system's temp directory, mode 0755, holding a `README.md`
    (unless `readme` is false) and the named subdirectories; removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        if readme:
            (path / "README.md").write_text("hello\n")
            (path / "README.md").chmod(0o644)
        for name in subdirectories:
            (path / name).mkdir()
            (path / name).chmod(0o755)
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path)
