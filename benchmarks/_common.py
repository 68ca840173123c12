"""Shared bits of the benchmark scripts: machine description and result files."""

from __future__ import annotations

import json
import os
import platform
import resource
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA_DIR = Path(os.environ.get("FEEDREC_DATA_DIR", ROOT.parent / "shared" / "data"))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, {mem_gib:.0f} GiB, Python {platform.python_version()}"


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def write_result(name: str, payload: dict[str, object]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload | {"machine": machine()}, indent=2) + "\n")
    return path


def tree_rss_bytes(pid: int) -> int:
    """The resident memory of a process and all its descendants (a Spark driver's JVM and Python
    workers are its children), from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            statm = (entry / "statm").read_text().split()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
        rss[int(entry.name)] = int(statm[1]) * page
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += rss.get(current, 0)
        todo.extend(children.get(current, []))
    return total


def run_measured(command: list[str], *, interval_s: float = 0.5) -> tuple[int, float, int]:
    """Run ``command``; returns (exit code, wall seconds, peak resident bytes of its process tree,
    sampled every ``interval_s``)."""

    start = time.perf_counter()
    proc = subprocess.Popen(command)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, tree_rss_bytes(proc.pid))
        time.sleep(interval_s)
    return proc.returncode, time.perf_counter() - start, peak


def simulated_store(workspace: Path, users: int, items: int, days: int, *, keep: bool) -> Path:
    """A simulated log ingested into ``workspace/store`` by `feedrec simulate` and `feedrec ingest`
    in their own processes (reused when ``keep`` and present); returns the store's folder."""
    import shutil
    import sys

    store = workspace / "store"
    if keep and (store / "events").exists():
        return store
    shutil.rmtree(workspace, ignore_errors=True)
    sim = workspace / "sim"
    feedrec = [sys.executable, "-m", "feedrec.cli"]
    args = ["--users", str(users), "--items", str(items), "--days", str(days), "--out", str(sim)]
    subprocess.run([*feedrec, "simulate", *args], check=True)
    for kind in ("events", "items", "users"):
        subprocess.run([*feedrec, "ingest", str(sim / f"{kind}.parquet"), "--kind", kind, "-w", str(store)], check=True)
    shutil.rmtree(sim)
    return store


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
