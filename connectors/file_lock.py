"""An exclusive OS lock on a file (flock), for the engines that keep an index in a directory: the memory
engine's one writer, and the alias file's read-modify-write. Released when the block ends or the process dies."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from pathlib import Path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def exclusive(path: Path, busy: str):
    """Hold the lock on `path` (created if missing; its folder must exist) for the block; `busy` is said once
    when another process holds it and this one waits."""
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("%s", busy)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
