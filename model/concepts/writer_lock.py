"""One writer per store: an exclusive ``flock`` on ``store/writer.lock``, released by the kernel when the
holder exits or dies (SIGKILL, OOM, power cut), so a dead writer never blocks the next one.

- A writer holds it for its whole change: the database transaction *and* the index save, and for
  ``encode_pending`` the read-encode-write span. A second writer waits for it (bounded by
  ``timeout``, ``$VMMOE_STORE_WAIT`` seconds, default 600), telling the user whom it waits for, then
  carries on from the store's *current* state (the store re-reads the index after acquiring).
  A wait that runs out is a ``StoreBusyError`` naming the holder's pid.
- Readers never take it: search, stats and the workbench read the database and the saved index.
- The holder writes its pid into the file (only when it differs from what is there), for the
  waiting message; the lock itself is the ``flock``, never the file's content or existence.

Why ``fcntl.flock`` rather than the ``filelock`` package: it is the standard library (the default
store's build lock already uses it), ``filelock`` is the same ``flock`` call underneath, and neither
tells a waiter *who* holds the lock, which is what the message needs. A lock belongs to the open file
description, so two ``ConceptStore`` objects on one store exclude each other even inside one process.
"""
from __future__ import annotations

import errno
import fcntl
import os
import sys
import time
from pathlib import Path
from typing import Callable

from model.concepts.errors import ConceptStoreError

LOCK_FILE = "writer.lock"
WAIT_ENV = "VMMOE_STORE_WAIT"
DEFAULT_WAIT = 600.0
_POLL = 0.05          # seconds between attempts while waiting (the lock is the sync, not this sleep)
_REMIND_EVERY = 15.0  # seconds between "still waiting" notices


class StoreBusyError(ConceptStoreError):
    """Another process kept the store's writer lock for longer than this one would wait."""


def default_wait() -> float:
    value = os.environ.get(WAIT_ENV, "").strip()
    try:
        return float(value) if value else DEFAULT_WAIT
    except ValueError:
        raise ConceptStoreError(f"${WAIT_ENV} must be a number of seconds, not {value!r}") from None


def stderr_notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _describe(pid: int | None) -> str:
    if pid is None:
        return "another process"
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\x00", b" ").decode(errors="replace").strip()
    except OSError:
        cmd = ""
    return f"pid {pid}" + (f" ({cmd[:120]})" if cmd else "")


class WriterLock:
    """The writer lock of the store in ``folder``; ``acquire`` / ``release``, or ``with lock:``."""

    def __init__(self, folder: Path, timeout: float | None = None, notice: Callable[[str], None] | None = None):
        self.folder = Path(folder)
        self.file = self.folder / LOCK_FILE
        self.timeout = timeout
        self.notice = notice or stderr_notice
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder(self) -> int | None:
        """The pid the last holder wrote (the current one, while the lock is held by someone)."""
        try:
            return int(self.file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def acquire(self, blocking: bool = True, create: bool = True) -> bool:
        """Take the lock; waits up to ``timeout`` (``$VMMOE_STORE_WAIT``) with notices if ``blocking``.
        ``create=False``: a store without a lock file is not locked here (returns False)."""
        if self._fd is not None:
            raise RuntimeError(f"{self.file} is already held by this object")
        try:
            fd = os.open(self.file, os.O_RDWR | (os.O_CREAT if create else 0) | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            if create:
                raise ConceptStoreError(f"{self.folder} is not a concept store (the folder is gone)") from None
            return False
        try:
            if not self._wait(fd, blocking):
                os.close(fd)
                return False
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._write_pid(fd)
        return True

    def _wait(self, fd: int, blocking: bool) -> bool:
        start = last_notice = None
        timeout = default_wait() if self.timeout is None else float(self.timeout)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if start is not None:
                    self.notice(f"store {self.folder}: writer lock acquired after {time.monotonic() - start:.1f} s; "
                                f"continuing from its current state")
                return True
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
            if not blocking:
                return False
            now = time.monotonic()
            if start is None:
                start = last_notice = now
                self.notice(f"store {self.folder} is being written by {_describe(self.holder())}; "
                            f"waiting up to {timeout:.0f} s (${WAIT_ENV})…")
            elif now - start >= timeout:
                raise StoreBusyError(
                    f"store {self.folder} is still being written by {_describe(self.holder())} after "
                    f"{timeout:.0f} s; nothing was changed. Try again when it has finished, or wait longer "
                    f"with ${WAIT_ENV}=SECONDS")
            elif now - last_notice >= _REMIND_EVERY:
                last_notice = now
                self.notice(f"still waiting for {_describe(self.holder())} ({now - start:.0f} s)…")
            time.sleep(_POLL)

    def _write_pid(self, fd: int) -> None:
        mine = f"{os.getpid()}\n".encode()
        try:
            if os.pread(fd, 64, 0) != mine:  # unchanged bytes when this process held it last
                os.ftruncate(fd, 0)
                os.pwrite(fd, mine, 0)
        except OSError:
            pass  # the pid is a courtesy for the waiting message; the flock is the lock

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> "WriterLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
