"""The HTML report of ``feedrec monitor --report``: each drift statistic over time against its
threshold (the features that moved most, and the prediction), ECE per bucket, online CTR per
bucket, the reliability curve, and the tables. One self-contained file (matplotlib PNGs)."""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

import matplotlib
import numpy as np

from feedrec.config import MonitorConfig

matplotlib.use("Agg")
import matplotlib.pyplot as plt

SHOWN = 8  # the features drawn: the ones whose PSI peaked highest


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _when(points: list[dict[str, Any]]) -> np.ndarray:
    return np.asarray([np.datetime64(p["end"][:19]) for p in points])


def _drift_plot(result: dict[str, Any], cfg: MonitorConfig) -> str | None:
    timeline = result["timeline"]
    if not timeline:
        return None
    names = [n for n in result["features"] if n not in cfg.ignore]
    peak = {n: max(p[n]["psi"] for p in timeline) for n in names}
    shown = sorted(names, key=lambda n: -peak[n])[:SHOWN]
    when = _when(timeline)
    fig, (psi_ax, w_ax, m_ax, js_ax, ece_ax) = plt.subplots(5, 1, figsize=(9, 15), sharex=True)
    for name in [*shown, "prediction"]:
        style = {"color": "k", "lw": 2} if name == "prediction" else {}
        (line,) = psi_ax.plot(when, [p[name]["psi"] for p in timeline], label=name, **style)
        stats = result["prediction"] if name == "prediction" else result["features"][name]
        if stats["threshold"] > cfg.psi:  # a feature whose own windows stray further alerts later
            psi_ax.axhline(stats["threshold"], color=line.get_color(), ls=":", lw=1)
        if "wasserstein" in stats:
            style = {"lw": 2} if name == "prediction" else {}
            w_ax.plot(when, [p[name]["wasserstein"] for p in timeline], color=line.get_color(), label=name, **style)
            if cfg.wasserstein is not None and stats["wasserstein_threshold"] > cfg.wasserstein:
                w_ax.axhline(stats["wasserstein_threshold"], color=line.get_color(), ls=":", lw=1)
            shifts = [
                (t, p[name]["mean_shift"]) for t, p in zip(when, timeline, strict=True) if "mean_shift" in p[name]
            ]
            if shifts:
                m_ax.plot(*zip(*shifts, strict=True), color=line.get_color(), label=name, **style)
        if name != "prediction":
            js_ax.plot(when, [p[name]["js"] for p in timeline], label=name)
    psi_ax.axhline(cfg.psi, color="r", ls="--", lw=1, label=f"alert at PSI {cfg.psi} (dotted: a feature's own)")
    psi_ax.set_title(f"PSI per {cfg.bucket_hours:g} h bucket vs the {result['reference_kind']} reference")
    psi_ax.legend(fontsize=7, ncol=2)
    if cfg.wasserstein is not None:  # it alerts only when set (monitor.wasserstein)
        w_ax.axhline(
            cfg.wasserstein, color="r", ls="--", lw=1, label=f"alert at {cfg.wasserstein} (dotted: a feature's own)"
        )
    w_ax.set_title("normed Wasserstein distance per bucket (numeric features; units of the reference's sd)")
    w_ax.legend(fontsize=7, ncol=2)
    if cfg.mean_shift is not None:  # the window's alert is against the span as long as it just before it
        m_ax.axhline(cfg.mean_shift, color="r", ls="--", lw=1, label=f"the window's floor {cfg.mean_shift}")
    m_ax.set_title("mean shift per bucket from the bucket before (standardized mean difference)")
    m_ax.legend(fontsize=7, ncol=2)
    js_ax.set_title("Jensen-Shannon distance (base 2) per bucket")
    ece_ax.plot(when, [p["ece"] for p in timeline], color="k", label="ECE")
    # The alert is on the window's rise over the reference: past monitor.ece and past what
    # calibrated predictions reach by chance at the window's size (a bucket's own ECE is noisier).
    cal = result["calibration"]
    reference = cal.get("reference_ece") or 0.0
    needed = max(cfg.ece, cal.get("ece_by_chance") or 0.0)
    ece_ax.axhline(reference, color="0.5", ls=":", lw=1, label=f"reference ECE {reference:.3f}")
    ece_ax.axhline(
        reference + needed, color="r", ls="--", lw=1,
        label=f"alert: the window's ECE at reference + max(monitor.ece, chance) = {reference + needed:.3f}",
    )  # fmt: skip
    ece_ax.set_title("calibration: ECE of logged predictions vs the clicks that followed")
    ece_ax.legend(fontsize=7)
    ece_ax.set_xlabel("event time (UTC)")
    fig.autofmt_xdate()
    return _png(fig)


def _online_plot(result: dict[str, Any]) -> str | None:
    hourly = [p for p in result["online"]["hourly"] if p["ctr"] is not None]
    curve = result["calibration"]["curve"]
    if not hourly and not curve["predicted"]:
        return None
    fig, (ctr_ax, rel_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    if hourly:
        ctr_ax.plot(_when(hourly), [p["ctr"] for p in hourly], marker="o")
        ctr_ax.set_title("online CTR per bucket")
        ctr_ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    top = max([*curve["predicted"], *curve["observed"], 0.01])
    rel_ax.plot([0, top], [0, top], color="grey", ls="--", lw=1)
    rel_ax.plot(curve["predicted"], curve["observed"], marker="o")
    rel_ax.set_xlabel("mean prediction")
    rel_ax.set_ylabel("observed CTR")
    rel_ax.set_title("reliability (quantile bins)")
    return _png(fig)


def render_monitor_report(result: dict[str, Any], cfg: MonitorConfig) -> str:
    parts = [
        f"<h1>Monitoring: {html.escape(result['reference'])}</h1>",
        f"<p>{html.escape(result['window']['start'])} → {html.escape(result['window']['end'])} · "
        f"{result['rows']:,} logged rows · {len(result['alerts'])} alerts</p>",
    ]
    for title, image in (("Drift over time", _drift_plot(result, cfg)), ("Online", _online_plot(result))):
        if image is not None:
            parts.append(f"<h2>{title}</h2><img src='{image}'>")
    shown = {k: v for k, v in result.items() if k not in ("timeline",)}
    parts.append(f"<h2>Result</h2><pre>{html.escape(json.dumps(shown, indent=2, default=str))}</pre>")
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>feedrec monitor</title>"
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}pre{font-size:11px}</style>"
        "</head><body>" + "".join(parts) + "</body></html>"
    )
