"""The HTML report of ``feedrec experiment analyze --report``: the decision metric over time
(each arm's value, and the lift with its 95 % band and the sequential p-value at each look),
and the tables. One self-contained file (matplotlib PNGs as data URIs)."""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plots(metric: str, looks: list[dict[str, Any]]) -> str:
    when = np.asarray([np.datetime64(lk["time"][:19]) for lk in looks])
    fig, (top, mid, low) = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    top.plot(when, [lk["control"] for lk in looks], label="control")
    top.plot(when, [lk["treatment"] for lk in looks], label="treatment")
    top.set_title(f"{metric} per arm (cumulative)")
    top.legend(fontsize=8)
    lift = np.asarray([lk["lift"] for lk in looks], np.float64)
    mid.plot(when, lift, color="k", label="lift")
    mid.fill_between(when, [lk["ci_low"] for lk in looks], [lk["ci_high"] for lk in looks], alpha=0.3, label="95 % CI")
    mid.axhline(0, color="grey", lw=0.8)
    mid.set_title("treatment - control, with its 95 % confidence band")
    mid.legend(fontsize=8)
    low.semilogy(when, [max(lk["p_value"], 1e-12) for lk in looks], label="fixed-horizon p (invalid when peeking)")
    if all("always_valid_p" in lk for lk in looks):  # the primary metric's sequential test
        low.semilogy(when, [max(lk["always_valid_p"], 1e-12) for lk in looks], label="always-valid p (mSPRT)")
    low.axhline(0.05, color="r", lw=0.8, ls="--", label="alpha 0.05")
    low.set_title("p-value at each look")
    low.legend(fontsize=8)
    low.set_xlabel("exposure time (UTC)")
    fig.autofmt_xdate()
    return _png(fig)


def render_experiment_report(result: dict[str, Any]) -> str:
    parts = [f"<h1>Experiment {html.escape(result['experiment'])}</h1>"]
    for name, m in result.get("metrics", {}).items():
        if m.get("looks"):
            parts.append(f"<h2>{html.escape(name)} over time</h2><img src='{_plots(name, m['looks'])}'>")
    shown = {k: v for k, v in result.items() if k != "metrics"} | {
        "metrics": {n: {k: v for k, v in m.items() if k != "looks"} for n, m in result.get("metrics", {}).items()}
    }
    parts.append(f"<h2>Analysis</h2><pre>{html.escape(json.dumps(shown, indent=2, default=str))}</pre>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>experiment "
        + html.escape(result["experiment"])
        + "</title><style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}</style></head><body>"
        + "".join(parts)
        + "</body></html>"
    )
