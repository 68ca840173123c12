"""The served-feed log (``serving/impressions.jsonl``): one JSON line per feed, rotated by size.

Several worker processes append to the same file (``O_APPEND``: each line lands whole). When it
passes ``max_bytes``, the first writer to notice takes a file lock, renames it to ``.1`` (``.1`` to
``.2``, ..., the oldest beyond ``keep`` is removed) and starts a new one; the others notice the
rename (the path no longer names the file they hold) and reopen. A line written to the old file in
that moment ends up in ``.1``: rotated, never lost.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path


class RotatingLog:
    def __init__(self, path: Path, *, max_bytes: int = 64 * 2**20, keep: int = 5) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fh = path.open("a", buffering=1)

    def write(self, line: str) -> None:
        with self._lock:
            self._fh.write(line)
            if self._fh.tell() >= self.max_bytes or self._moved():
                self._rotate()

    def _moved(self) -> bool:
        try:
            return os.stat(self.path).st_ino != os.fstat(self._fh.fileno()).st_ino
        except FileNotFoundError:
            return True

    def _rotate(self) -> None:
        with (self.path.parent / f".{self.path.name}.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not self._moved() and self.path.stat().st_size >= self.max_bytes:
                    for n in range(self.keep, 0, -1):
                        older = self.path.with_name(f"{self.path.name}.{n}")
                        if n == self.keep:
                            older.unlink(missing_ok=True)
                        newer = self.path.with_name(f"{self.path.name}.{n - 1}") if n > 1 else self.path
                        if newer.exists():
                            os.replace(newer, older)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self._fh.close()
        self._fh = self.path.open("a", buffering=1)

    def files(self) -> list[Path]:
        """The current file and the rotated ones, newest first."""
        rotated = [self.path.with_name(f"{self.path.name}.{n}") for n in range(1, self.keep + 1)]
        return [p for p in [self.path, *rotated] if p.exists()]

    def close(self) -> None:
        with self._lock:
            self._fh.close()
