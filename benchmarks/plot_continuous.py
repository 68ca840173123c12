"""The recovery plot of docs/BENCHMARKS.md from benchmarks/results/continuous.json: expected CTR
(the ground truth P(click) of the slates served) per simulated hour, 3-hour rolling mean, for the
frozen bundle and the loop, with the loop's promotions marked.

    python benchmarks/plot_continuous.py   # writes docs/images/continuous_recovery.png
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parents[1]


def hourly(by_version: dict[str, list[dict[str, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Feeds-weighted expected CTR per hour, over every version served that hour."""
    sums: dict[float, list[float]] = {}
    for rows in by_version.values():
        for r in rows:
            s = sums.setdefault(r["hour"], [0.0, 0.0])
            s[0] += r["expected_ctr"] * r["feeds"]
            s[1] += r["feeds"]
    hours = np.asarray(sorted(sums))
    ctr = np.asarray([sums[h][0] / sums[h][1] for h in hours])
    if ctr.size < 3:
        return hours, ctr
    return hours[1:-1], np.convolve(ctr, np.ones(3) / 3, mode="valid")  # no half-empty edge windows


def main() -> None:
    result = json.loads((ROOT / "benchmarks" / "results" / "continuous.json").read_text())
    rec = result["recovery"]
    fig, ax = plt.subplots(figsize=(10, 4))
    for name, color in (("frozen", "tab:red"), ("loop", "tab:blue")):
        for part, style in ((name, "-"), (f"{name}_after", "-")):
            h, ctr = hourly(rec["hourly"][part])
            ax.plot([datetime.fromtimestamp(t, UTC) for t in h], ctr, style, color=color,
                    label=name if part == name else None)  # fmt: skip
    h, ctr = hourly(rec["hourly"]["full_knowledge_after"])
    ax.plot([datetime.fromtimestamp(t, UTC) for t in h], ctr, color="tab:green", label="full knowledge (after)")
    for e in rec["retrainings"]:
        if e["action"] == "canary_passed" and e["events_time"]:
            ax.axvline(datetime.fromisoformat(e["events_time"]), color="tab:blue", ls=":", lw=1)
    ax.set_title("expected CTR per simulated hour after a taste shift (3 h mean); dotted: the loop promotes")
    ax.set_ylabel("expected CTR")
    ax.legend(fontsize=8)
    fig.autofmt_xdate()
    out = ROOT / "docs" / "images" / "continuous_recovery.png"
    fig.savefig(out, dpi=100, bbox_inches="tight")
    print(out)


if __name__ == "__main__":
    main()
