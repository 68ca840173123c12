"""A local ``redis-server`` process: what the tests, the benchmarks and a developer's machine run
when no Redis deployment is at hand (Debian's ``redis-server``; ``make test`` installs it).

On loopback, in its own folder, with an append-only file; restartable on the same port after a
kill -9 (it reloads its append-only file first), as the fault tests and benchmarks need.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Literal

import redis


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRedis:
    """``redis-server`` started at once in ``folder`` on a free loopback port (or ``port``).
    ``fsync``: the append-only file's policy (``always``: no acknowledged write is lost to a crash;
    ``everysec``: Redis's production default, up to a second lost). ``start_timeout_s`` bounds the
    wait for its first answer (reloading a large append-only file takes a while)."""

    def __init__(
        self,
        folder: Path,
        *,
        port: int | None = None,
        appendonly: bool = True,
        fsync: Literal["always", "everysec"] = "always",
        start_timeout_s: float = 10.0,
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: `make test` installs it (Debian's redis-server)")
        self.binary, self.folder, self.appendonly, self.fsync = binary, Path(folder), appendonly, fsync
        self.start_timeout_s = start_timeout_s
        self.port = port or _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.folder.mkdir(parents=True, exist_ok=True)
        self.start()

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]
        args += ["--save", "", "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.fsync]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """kill -9: what a crash does (the append-only file keeps what was fsync'ed)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
