"""How `monitor.psi` (the PSI floor) trades false alarms for feature alerts over the runs that
`bench_monitor.py` kept (docs/BENCHMARKS.md, "How the floor was chosen").

    python benchmarks/monitor_floor_grid.py --out /tmp/feedrec-bench-monitor-fresh3

Each kept run's windows [start, start + h), h = 1..6, are judged once with the floor at 0.001, so
each feature's reported threshold is ``monitor.null_factor`` (1.5) x its null; a floor F then
alerts where PSI >= max(F, that threshold), the monitor's own rule. Prints, per floor, the unshifted runs with a feature alert
(false alarms) and the shifted runs with one, with the features named. About 6 minutes for 10
seeds on 2 cores.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench_monitor import hourly, kept
from feedrec.config import MonitorConfig

FLOORS = (0.05, 0.1, 0.15, 0.2, 0.25)


def alerts(verdicts: dict[int, dict], floor: float, ignore: set[str]) -> set[str]:
    """The features whose PSI reached max(floor, null_factor x null) in any window."""
    return {
        name
        for verdict in verdicts.values()
        for name, stats in verdict["features"].items()
        if name not in ignore and stats["psi"] >= max(floor, stats["threshold"])
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="a bench_monitor.py --out with its runs kept")
    parser.add_argument("--hours", type=int, default=6)
    args = parser.parse_args()
    ignore = set(MonitorConfig().ignore)
    runs: dict[str, dict[int, dict]] = {}
    for run in sorted((args.out / "runs").glob("*-*shift")):
        _, t0 = kept(run)
        runs[run.name] = hourly(run / "ws", t0, args.hours, "monitor.psi=0.001")
        print(run.name, flush=True)
    for floor in FLOORS:
        row: dict[str, dict[str, list[str]]] = {"no_shift": {}, "shift": {}}
        for name, verdicts in runs.items():
            found = alerts(verdicts, floor, ignore)
            if found:
                row[name.split("-", 1)[1]][name] = sorted(found)
        print(json.dumps({"floor": floor, "false_alarms": len(row["no_shift"]), "shift_alerts": len(row["shift"])}))
        print(json.dumps(row))


if __name__ == "__main__":
    main()
