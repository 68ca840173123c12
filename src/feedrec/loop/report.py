"""The live loop's HTML report: online CTR, expected CTR and the oracle's over simulated time, per
version, and the ``by_version`` table. One self-contained file (matplotlib PNGs as data URIs)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

_COLUMNS = (
    "feeds",
    "impressions",
    "ctr",
    "expected_ctr",
    "oracle_ctr",
    "regret",
    "likes_per_impression",
    "hides_per_impression",
    "dwell_per_session",
    "coverage",
    "top1pct_share",
)


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _over_time(hourly: dict[str, list[dict[str, float]]], metrics: tuple[str, ...], title: str) -> str:
    fig, ax = plt.subplots(figsize=(9, 3.4))
    for version, rows in hourly.items():
        when = np.asarray([r["hour"] for r in rows], np.int64).astype("datetime64[s]")
        for metric, style in zip(metrics, ("-", "--", ":"), strict=False):
            ax.plot(when, [r[metric] for r in rows], style, label=f"{version} {metric}")
    ax.set_title(title)
    ax.set_xlabel("simulated time (UTC)")
    ax.legend(fontsize=7, ncol=2)
    fig.autofmt_xdate()
    return _png(fig)


def render_loop_report(summary: dict[str, Any], hourly: dict[str, list[dict[str, float]]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("version", *_COLUMNS))
    rows = "".join(
        "<tr><td>" + html.escape(version) + "</td>" + "".join(f"<td>{row.get(c)}</td>" for c in _COLUMNS) + "</tr>"
        for version, row in summary["by_version"].items()
    )
    plots = [
        _over_time(
            hourly, ("ctr", "expected_ctr", "oracle_ctr"), "CTR (observed, expected) and the oracle's, per hour"
        ),
        _over_time(hourly, ("regret",), "Regret per impression (oracle minus expected CTR), per hour"),
    ]
    images = "".join(f'<p><img src="{src}" alt="plot"></p>' for src in plots)
    latency = summary["latency_ms"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>feedrec live loop</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;text-align:right}}</style></head>
<body><h1>Live loop: {html.escape(summary["sim_start"])} to {html.escape(summary["sim_end"])}</h1>
<p>{summary["requests"]} requests, {summary["errors"]} errors, {summary["events_posted"]} events posted;
latency p50 {latency["p50"]} ms, p99 {latency["p99"]} ms.</p>
<table><tr>{head}</tr>{rows}</table>{images}</body></html>"""
