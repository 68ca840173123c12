"""How `monitor.psi` (the PSI floor) trades false alarms for feature alerts over the runs that
`bench_monitor.py` kept (docs/BENCHMARKS.md, "How the floor was chosen").

    python benchmarks/monitor_floor_grid.py --out /tmp/feedrec-bench-monitor-fresh3

Each kept run's windows [start, start + h), h = 1..6, are judged once with the floor at 0.001, so
each feature's reported threshold is 1.5 x its null (``monitor.null_factor``); a floor F then
alerts where PSI >= max(F, 1.5 x null). Prints, per floor, the unshifted runs with a feature alert
(false alarms) and the shifted runs with one, with the features named. About 6 minutes for 10
seeds on 2 cores.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta
from pathlib import Path

from bench_monitor import monitor
from feedrec.config import MonitorConfig

FLOORS = (0.05, 0.1, 0.15, 0.2, 0.25)


def alerts(verdicts: dict[int, dict], floor: float, factor: float, ignore: set[str]) -> set[str]:
    """The features whose PSI reached max(floor, factor x null) in any window."""
    out = set()
    for verdict in verdicts.values():
        for name, stats in verdict["features"].items():
            null = stats["threshold"] / MonitorConfig().null_factor
            if name not in ignore and stats["psi"] >= max(floor, factor * null):
                out.add(name)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="a bench_monitor.py --out with its runs kept")
    parser.add_argument("--hours", type=int, default=6)
    args = parser.parse_args()
    ignore = set(MonitorConfig().ignore)
    runs: dict[str, dict[int, dict]] = {}
    for run in sorted((args.out / "runs").glob("*-*shift")):
        summary = json.loads((run / "summary.json").read_text())
        t0 = datetime.fromisoformat(summary["sim_start"].replace("Z", "+00:00"))
        verdicts = {}
        for h in range(1, args.hours + 1):
            verdict = monitor(run / "ws", t0, t0 + timedelta(hours=h), "monitor.psi=0.001")
            if verdict is not None:
                verdicts[h] = verdict
        runs[run.name] = verdicts
        print(run.name, flush=True)
    factor = MonitorConfig().null_factor
    for floor in FLOORS:
        row: dict[str, dict[str, list[str]]] = {"no_shift": {}, "shift": {}}
        for name, verdicts in runs.items():
            found = alerts(verdicts, floor, factor, ignore)
            if found:
                row[name.split("-", 1)[1]][name] = sorted(found)
        print(json.dumps({"floor": floor, "false_alarms": len(row["no_shift"]), "shift_alerts": len(row["shift"])}))
        print(json.dumps(row))


if __name__ == "__main__":
    main()
