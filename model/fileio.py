"""The one file policy of the project: where things live, and how a file is written.

- ``home()``: the folder for caches, stores and runs, ``$VMMOE_HOME`` (``~`` expanded; empty counts as
  unset) or ``~/.cache/vmmoe``.
- ``atomic_write(path, data)``: a crash, a kill or a full disk leaves the old file or the new one,
  never a mix: the bytes go to a temp file in the same folder, are fsynced, renamed over the target,
  and the folder is fsynced so the rename itself survives a power loss.
- ``atomic_write_json``: the same for a JSON document.
- ``sha256_file``: the checksum that manifests and checkpoints record.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

HOME_ENV = "VMMOE_HOME"


def home() -> Path:
    """``$VMMOE_HOME`` (``~`` expanded; an empty value counts as unset), else ``~/.cache/vmmoe``."""
    value = os.environ.get(HOME_ENV, "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "vmmoe"


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside ``path`` durable (a no-op where the OS cannot open folders)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace(tmp: str, path: Path) -> None:
    """The rename step, separate so that tests can stop a save between write and rename."""
    os.replace(tmp, path)


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` whole or not at all (temp file, fsync, rename, folder fsync)."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)


def atomic_write_json(path: str | Path, obj, indent: int | None = 2) -> None:
    """``atomic_write`` of ``obj`` as JSON (non-JSON values written with ``str``), newline-terminated."""
    atomic_write(path, json.dumps(obj, indent=indent, default=str) + "\n")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
