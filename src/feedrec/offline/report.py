"""The HTML evaluation report of a bundle: metrics per split, the ranker's calibration, plots.

Plots are drawn with matplotlib (Agg, no screen) and embedded as PNG data URIs, so the report is
one self-contained file that opens anywhere.
"""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

if TYPE_CHECKING:
    from feedrec.offline.ranking_eval import RankerReport
    from feedrec.registry import Manifest


def _png(fig: plt.Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _metrics_plot(manifest: Manifest) -> str:
    splits = [s for s in ("valid", "test") if manifest.metrics.get(s)]
    names = [
        n for n in manifest.metrics.get("test", {}) if n.startswith(("recall@", "ndcg@", "hr@", "mrr@", "coverage@"))
    ]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.8 / max(len(splits), 1)
    for j, split in enumerate(splits):
        values = [manifest.metrics[split].get(n, 0.0) for n in names]
        ax.bar([i + j * width for i in range(len(names))], values, width=width, label=split)
    ax.set_xticks([i + width * (len(splits) - 1) / 2 for i in range(len(names))], names, rotation=30, ha="right")
    ax.set_title(f"{manifest.model} · accuracy and coverage by split")
    ax.legend()
    return _png(fig)


def _beyond_accuracy_plot(manifest: Manifest) -> str:
    """Coverage and diversity (shares) and novelty (bits: the popularity bias, lower = more popular)."""
    splits = [s for s in ("valid", "test") if manifest.metrics.get(s)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.0))
    shares = [n for n in manifest.metrics.get("test", {}) if n.startswith(("coverage@", "diversity@"))]
    width = 0.8 / max(len(splits), 1)
    for j, split in enumerate(splits):
        left.bar(
            [i + j * width for i in range(len(shares))],
            [manifest.metrics[split].get(n, 0.0) for n in shares],
            width=width,
            label=split,
        )
        novelty = [v for n, v in manifest.metrics[split].items() if n.startswith("novelty@")]
        right.bar([j], novelty or [0.0], width=0.6, label=split)
    left.set_xticks([i + width * (len(splits) - 1) / 2 for i in range(len(shares))], shares)
    left.set_title("catalogue coverage and intra-list diversity")
    left.legend()
    right.set_xticks(range(len(splits)), splits)
    right.set_title("novelty (bits; popularity bias)")
    return _png(fig)


def _calibration_plot(ranker: RankerReport) -> str:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    for name, curve in ranker.reliability.items():
        ax.plot(curve["mean_predicted"], curve["observed_rate"], marker="o", label=name)
    ax.set_xlabel("mean predicted click probability")
    ax.set_ylabel("observed click rate")
    ax.set_title("ranker calibration (test impressions)")
    ax.legend()
    return _png(fig)


def _scores_plot(ranker: RankerReport) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, hist in ranker.score_histograms.items():
        ax.stairs(hist["density"], hist["edges"], label=name)
    ax.set_xlabel("predicted click probability")
    ax.set_title("score distributions (test impressions)")
    ax.legend()
    return _png(fig)


def _table(rows: dict[str, dict[str, float]]) -> str:
    cols = sorted({c for r in rows.values() for c in r})
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{r.get(c, float('nan')):.4f}</td>" for c in cols) + "</tr>"
        for name, r in rows.items()
    )
    return f"<table><tr><th></th>{head}</tr>{body}</table>"


def render_report(manifest: Manifest, ranker: RankerReport | None) -> str:
    sections = [
        f"<h1>feedrec bundle {html.escape(manifest.version)} · {html.escape(manifest.model)}</h1>",
        f"<p>created {html.escape(manifest.created_at)} · {html.escape(manifest.code_version)} · feature schema "
        f"{html.escape(manifest.feature_schema)} · data {html.escape(str(manifest.data_window))}</p>",
        f"<p><b>promotion gate:</b> {'promoted' if manifest.gate.get('promote') else 'not promoted'} — "
        f"{html.escape(str(manifest.gate.get('reason', '')))}</p>",
        "<h2>Retrieval and ranking (benchmark protocol)</h2>",
        _table({split: m for split, m in manifest.metrics.items() if split in ("valid", "test") and m}),
        f'<img src="{_metrics_plot(manifest)}">',
        "<h2>Beyond accuracy</h2>",
        f'<img src="{_beyond_accuracy_plot(manifest)}">',
    ]
    if ranker is not None:
        sections += [
            "<h2>Impression ranker</h2>",
            _table(ranker.models),
            f'<img src="{_calibration_plot(ranker)}"> <img src="{_scores_plot(ranker)}">',
            "<p>top features (gain): " + ", ".join(html.escape(n) for n, _ in ranker.top_features) + "</p>",
        ]
    style = "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
    return f"<!doctype html><html><head><meta charset='utf-8'><title>feedrec {html.escape(manifest.version)}</title><style>{style}</style></head><body>{''.join(sections)}</body></html>"
