"""Infrastructure every stage shares, written once: the ``HubError`` root and the atomic file write.

It lives in ``schemas`` because that is the package every stage already depends on, and stage packages
may not import ``hub`` (the composition root).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


class HubError(Exception):
    """Root of every error the hub raises on purpose; messages name the file, row or field, never a value."""


def fsync_dir(path: Path | str) -> None:
    """Make a folder's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_dir(path: Path | str) -> Path:
    """Create ``path`` (and parents) with mode 0700, and narrow an existing ``path`` to 0700; return it."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    if path.stat().st_mode & 0o077:
        os.chmod(path, PRIVATE_DIR)
    return path


def private_file(path: Path | str) -> Path:
    """Make sure ``path`` exists and only its owner can read it (e.g. a SQLite database before it is opened)."""
    path = Path(path)
    private_dir(path.parent)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
    os.chmod(path, PRIVATE_FILE)
    return path


def write_atomic(path: Path | str, data: bytes | str, mode: int = PRIVATE_FILE, *, exclusive: bool = False) -> Path:
    """Write ``data`` so that ``path`` holds either its old content or all of the new, never a part.

    A temp file in the same folder is written, fsynced and renamed over ``path``, then the folder is
    fsynced. The file is created with ``mode`` (0600 by default); with ``exclusive`` an existing file
    is an error (FileExistsError) instead of being replaced.
    """
    path = Path(path)
    private_dir(path.parent)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed or the caller may want wider than 0600
        if exclusive:
            os.link(tmp, path)  # fails with FileExistsError when the target exists, atomically
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path
