"""How the CLI shows results: Rich tables for people, plain dicts for ``--json``. Pure functions of
the results the entry functions return, so that ``cli.py`` only parses, calls and prints."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from feedrec.registry import Manifest


def metrics_table(report: dict[str, Any]) -> Table:
    """``feedrec eval``'s report: one row per model, the best value of each column in green."""
    models: dict[str, dict[str, float]] = report["models"]
    columns = list(next(iter(models.values())).keys()) if models else []
    table = Table(
        title=f"{report['dataset']} · protocol={report['protocol']} · "
        f"{report['n_test_users']} test users · {report['n_items']} items"
    )
    table.add_column("model", style="bold")
    for col in columns:
        table.add_column(col, justify="right")
    best = {c: max(m[c] for m in models.values()) for c in columns if c != "fit_seconds"}
    for name, metrics in models.items():
        cells = []
        for col in columns:
            text = f"{metrics[col]:.4f}" if col != "fit_seconds" else f"{metrics[col]:.2f}s"
            cells.append(f"[green]{text}[/]" if col in best and metrics[col] == best[col] else text)
        table.add_row(name, *cells)
    return table


def ingest_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"ingest {report['kind']}", caption=f"{report['source']} ({report['dialect']})", min_width=50)
    table.add_column("rows")
    table.add_column("count", justify="right")
    for key in ("read", "stored", "already_stored", "quarantined"):
        table.add_row(key.replace("_", " "), f"{report[key]:,}")
    for reason, count in report["reasons"].items():
        table.add_row(f"  quarantined: {reason}", f"{count:,}", style="yellow")
    return table


def stats_table(data: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    table.add_column("what")
    table.add_column("value", justify="right")
    for key in ("events", "users", "items", "first", "last"):
        table.add_row(key, f"{data[key]:,}" if isinstance(data[key], int) else str(data[key]))
    for event_type, n in data["by_type"].items():
        table.add_row(f"  {event_type}", f"{n:,}")
    return table


def train_json(result: Any) -> dict[str, Any]:
    m: Manifest = result.manifest
    return {
        "version": m.version,
        "promoted": result.promoted,
        "reason": result.reason,
        "bundle": result.bundle,
        "metrics": m.metrics,
        "seconds": result.seconds,
    } | ({"warm_start": m.params["warm_start"]} if m.params.get("warm_start") else {})


def train_lines(result: Any) -> list[Any]:
    """The bundle's metrics per split, the gate's verdict, where the report is, time per stage."""
    m: Manifest = result.manifest
    table = Table(title=f"bundle {m.version} · {m.model} · {result.bundle}")
    table.add_column("split", style="bold")
    columns = sorted({c for split in m.metrics.values() for c in split})
    for col in columns:
        table.add_column(col, justify="right")
    for split, metrics in m.metrics.items():
        table.add_row(split, *[f"{metrics[c]:.4f}" if c in metrics else "-" for c in columns])
    verdict = "[green]promoted to production[/]" if result.promoted else "[yellow]not promoted[/]"
    warm = m.params.get("warm_start")
    said = "yes" if warm and warm["used"] else "no"
    lines = [table, f"{verdict}: {result.reason}"]
    if warm:
        lines.append(f"real-time ranker warm start from {warm['from']}: {said} ({warm['reason']})")
    return [
        *lines,
        f"report: {result.bundle}/report.html",
        "time per stage: " + ", ".join(f"{stage} {sec:.0f} s" for stage, sec in result.seconds.items()),
    ]


def registry_json(bundles: list[Manifest]) -> list[dict[str, Any]]:
    return [
        {
            "version": b.version,
            "model": b.model,
            "created_at": b.created_at,
            "production": b.promoted,
            "valid": b.metrics.get("valid", {}),
            "test": b.metrics.get("test", {}),
        }
        for b in bundles
    ]


def registry_table(bundles: list[Manifest]) -> Table:
    table = Table(title="model registry")
    for col in ("version", "model", "created", "valid ndcg@10", "test ndcg@10", "production"):
        table.add_column(col)
    for b in bundles:
        table.add_row(
            b.version,
            b.model,
            b.created_at[:19],
            f"{b.metrics.get('valid', {}).get('ndcg@10', float('nan')):.4f}",
            f"{b.metrics.get('test', {}).get('ndcg@10', float('nan')):.4f}",
            "★" if b.promoted else "",
        )
    return table


def cold_start_table(report: Any) -> Table:
    table = Table(title="cold start · " + ", ".join(f"{s}: {n} users" for s, n in report.slices.items()))
    columns = sorted({c for m in report.models.values() for c in m})
    table.add_column("model", style="bold")
    for col in columns:
        table.add_column(col, justify="right")
    for name, metrics in report.models.items():
        table.add_row(name, *[f"{metrics[c]:.4f}" if c in metrics else "-" for c in columns])
    return table


def demo_json(result: Any) -> dict[str, Any]:
    return {
        "ingest": result.ingest.to_dict(),
        "split": result.split_sizes,
        "eval": result.report.to_dict(),
        "version": result.version,
    }


def demo_lines(result: Any, protocol: str) -> list[Any]:
    """What the demo did: ingestion, the split, every model's metrics, the impression rankers."""
    rankers = Table(
        title=f"impression ranker · point-in-time features · {result.rankers.rows['test']:,} test impressions, "
        f"click rate {result.rankers.click_rate:.3f}"
    )
    for col in ("model", "AUC", "log loss", "ECE"):
        rankers.add_column(col, justify="left" if col == "model" else "right")
    for name, m in result.rankers.models.items():
        rankers.add_row(name, f"{m['auc']:.4f}", f"{m['log_loss']:.4f}", f"{m['ece']:.4f}")
    return [
        ingest_table(result.ingest.to_dict()),
        f"split ({protocol}): "
        + ", ".join(f"{name} {size:,}" for name, size in result.split_sizes.items())
        + " positive interactions; no training row sees its user's future (checked)",
        metrics_table(result.report.to_dict()),
        rankers,
    ]


def compress_line(result: Any, version: str) -> str:
    size = f"index {result.bytes_before / 2**20:.2f} MiB -> {result.bytes_after / 2**20:.2f} MiB"
    if result.version is None:
        return f"[red]refused[/red]: {result.gate.reason}; {size}"
    return (
        f"registered {result.version} (int8 twin of {version}): {result.gate.reason}; {size}\n"
        f"serve it with: feedrec models promote {result.version}"
    )


_LOOP_COLUMNS = ("feeds", "impressions", "ctr", "expected_ctr", "oracle_ctr", "regret", "coverage", "top1pct_share")


def traffic_table(summary: dict[str, Any]) -> Table:
    """``feedrec traffic``: one row per version served, then one per experiment arm, against the oracle."""
    latency = summary["latency_ms"]
    table = Table(
        title=f"live traffic {summary['sim_start']} to {summary['sim_end']}: {summary['requests']} requests, "
        f"{summary['errors']} errors, {summary['events_posted']} events, p50 {latency['p50']} ms, p99 {latency['p99']} ms"
    )
    table.add_column("version")
    for column in _LOOP_COLUMNS:
        table.add_column(column, justify="right")
    rows = list(summary["by_version"].items())
    rows += [(f"{name}/{arm}", row) for name, arms in summary.get("by_arm", {}).items() for arm, row in arms.items()]
    for label, row in rows:
        table.add_row(label, *(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in _LOOP_COLUMNS))
    return table


def experiments_table(rows: list[dict[str, Any]], holdout: float) -> Table:
    table = Table(title=f"experiments · holdout {holdout:.1%}")
    for col in ("name", "status", "layer", "traffic", "arms", "metric", "started"):
        table.add_column(col)
    for e in rows:
        arms = ", ".join(
            f"{a['name']}={a['version'] or '+'.join(a['interleave'])} ({a['weight']:g})" for a in e["arms"]
        )
        table.add_row(
            e["name"], e["status"], e["layer"], f"{e['traffic']:.0%}", arms, e["metric"], str(e["started_at"] or "")
        )
    return table


def _num(value: Any, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def experiment_tables(result: dict[str, Any]) -> list[Table]:
    """``feedrec experiment analyze``: the arms, then each metric's comparison (or the interleaving)."""
    arms = Table(title=f"experiment {result['experiment']} ({result['status']})")
    columns = ("users", "exposures", "impressions", "clicks", "ctr", "clicks_per_user", "hides_per_user")
    arms.add_column("arm", style="bold")
    for col in columns:
        arms.add_column(col, justify="right")
    for name, row in result.get("arms", {}).items():
        arms.add_row(name, *(_num(row.get(c)) for c in columns))
    tables = [arms]
    if "interleaving" in result:
        il = result["interleaving"]
        t = Table(title=f"interleaving {il['a']} (A) vs {il['b']} (B)")
        compared = (
            "users",
            "clicks_a",
            "clicks_b",
            "credit_difference",
            "p_value",
            "preference_a",
            "sign_test_p_value",
            "winner",
        )
        for col in compared:
            t.add_column(col, justify="right")
        t.add_row(*(_num(il.get(c)) for c in compared))
        return [*tables, t]
    metrics = Table(
        title=f"treatment vs control · SRM p={_num(result['srm'].get('p_value'))}"
        + (" [red]MISMATCH[/]" if result["srm"].get("flagged") else "")
    )
    for col in (
        "metric",
        "control",
        "treatment",
        "lift",
        "95% CI",
        "p",
        "CUPED lift",
        "CUPED p",
        "var. cut",
        "sequential",
    ):
        metrics.add_column(col, justify="right")
    for name, m in result.get("metrics", {}).items():
        cuped = m.get("cuped", {})
        seq = m.get("sequential", {})
        metrics.add_row(
            name,
            _num(m["control"]),
            _num(m["treatment"]),
            f"{m['relative_lift']:+.2%}" if m.get("relative_lift") is not None else "-",
            f"[{_num(m['ci_low'])}, {_num(m['ci_high'])}]",
            _num(m["p_value"], 3),
            _num(cuped.get("lift")),
            _num(cuped.get("p_value"), 3),
            f"{cuped['variance_reduction']:.0%}" if "variance_reduction" in cuped else "-",
            f"{seq['decision']} (p={_num(seq['p_value'], 3)})" if seq else "",
        )
    tables.append(metrics)
    if result.get("guardrails"):
        guard = Table(title="guardrails")
        for col in ("guardrail", "control", "treatment", "lift", "flagged"):
            guard.add_column(col, justify="right")
        for name, g in result["guardrails"].items():
            guard.add_row(name, _num(g.get("control")), _num(g.get("treatment")), _num(g.get("lift")),
                          "[red]yes[/]" if g.get("flagged") else "no")  # fmt: skip
        tables.append(guard)
    return tables


def ope_table(policy: str, result: dict[str, Any]) -> Table:
    d = result["diagnostics"]
    table = Table(
        title=f"off-policy CTR of {policy} · {d['requests']:,} feeds, {d['users']:,} users · "
        f"support {d['support']:.0%}, matched {d['matched']:.0%} · logged CTR {result['logged_ctr']:.4f}"
    )
    for col in ("estimator", "ctr", "95% CI", "se"):
        table.add_column(col, justify="right")
    for name, e in result["estimators"].items():
        table.add_row(name, f"{e['ctr']:.4f}", f"[{e['ci_low']:.4f}, {e['ci_high']:.4f}]", f"{e['se']:.4f}")
    return table


def monitor_tables(result: dict[str, Any]) -> list[Table]:
    """``feedrec monitor``: the drift of each feature (drifted first, then by PSI), the
    prediction, calibration, skew, online engagement and the alerts."""
    window = result["window"]
    drift = Table(
        title=f"drift vs {result['reference']} · {window['start']} → {window['end']} · {result['rows']:,} rows"
    )
    for col in ("feature", "psi", "kl", "js", "wasserstein", "mean shift", "test", "p", "drifted"):
        drift.add_column(col, justify="left" if col in ("feature", "test") else "right")
    rows = sorted(result["features"].items(), key=lambda kv: (not kv[1]["drifted"], -kv[1]["psi"]))
    for name, s in [*rows, ("prediction", result["prediction"])]:
        mark = "[red]yes[/]" if s["drifted"] else "no"
        w = _num(s["wasserstein"]) if "wasserstein" in s else ""
        m = _num(s["mean_shift"]) if "mean_shift" in s else ""
        drift.add_row(name, _num(s["psi"]), _num(s["kl"]), _num(s["js"]), w, m, s["test"], _num(s["p_value"], 3), mark)
    health = Table(title="calibration · skew · online")
    health.add_column("check")
    health.add_column("value", justify="right")
    cal, skew, online = result["calibration"], result["skew"], result["online"]
    health.add_row("ECE (logged predictions vs clicks)", _num(cal["ece"]))
    health.add_row("mean prediction / observed CTR", f"{_num(cal['mean_prediction'])} / {_num(cal['ctr'])}")
    health.add_row(f"skew: features flagged ({skew['requests']} requests)", ", ".join(skew["flagged"]) or "none")
    health.add_row("online CTR", _num(online["ctr"]))
    alerts = Table(title=f"alerts ({len(result['alerts'])})")
    for col in ("kind", "feature", "statistic", "value", "threshold", "time"):
        alerts.add_column(col)
    for a in result["alerts"]:
        alerts.add_row(a["kind"], a["feature"] or "", a["statistic"], _num(a["value"]), _num(a["threshold"]), a["time"])
    return [drift, health, alerts]


def history_table(entries: list[dict[str, Any]]) -> Table:
    """``feedrec models history``: every transition, oldest first."""
    table = Table(title=f"registry history ({len(entries)} entries)")
    for col in ("seq", "time", "version", "action", "reason"):
        table.add_column(col, overflow="fold")
    for e in entries:
        action = e["action"]
        style = (
            "green"
            if action in ("promote", "canary_passed", "shadow_passed", "approve")
            else (
                "red"
                if action in ("rollback", "rolled_back", "rejected", "canary_failed", "shadow_failed", "reject")
                else ""
            )
        )
        table.add_row(str(e.get("seq", "")), str(e.get("time", ""))[:19], e["version"],
                      f"[{style}]{action}[/]" if style else action, str(e.get("reason", "")))  # fmt: skip
    return table
