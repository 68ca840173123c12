"""An experiment on a live server: started and stopped from the CLI while it serves (no restart),
the world's traffic routed by arm, every exposure logged, and the analysis agreeing with what the
traffic harness saw."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import polars as pl
import pytest

from feedrec.data.interactions import Interactions
from feedrec.experiments.exposures import read_exposures
from feedrec.loop.traffic import TrafficConfig, run_traffic
from feedrec.models.retrieval.covisit import CovisitRecommender
from feedrec.models.retrieval.popularity import PopularityRecommender
from feedrec.registry import LocalRegistry
from tests.integration.servers import _manifest, live_workspace, serving

pytestmark = pytest.mark.integration
PROBES = [f"probe-{n}" for n in range(40)]  # not the world's users: their feeds are not the traffic's


def feedrec(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "feedrec.cli", *args], capture_output=True, text=True, timeout=120)


def _until(condition, what: str, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    ws, world_dir, feed = live_workspace(tmp_path_factory.mktemp("exp"), seed=5)
    clicks = Interactions.from_frame(pl.DataFrame(pl.from_arrow(feed.events)).filter(pl.col("type") == "click"))
    registry = LocalRegistry(ws / "registry")
    registry.register(PopularityRecommender().fit(clicks), _manifest("v0001", "popularity"))
    registry.register(CovisitRecommender().fit(clicks), _manifest("v0002", "covisit"))
    registry.promote("v0001")
    return ws, world_dir


def test_an_ab_test_on_a_live_server_from_start_to_analysis(world: tuple[Path, Path]):
    ws, world_dir = world
    w = ["-w", str(ws)]
    with serving(ws, FEEDREC_WATCH_INTERVAL_S="0.2") as url:
        bad = feedrec("experiment", "create", "ab", "--arm", "control=v0001", "--arm", "treatment=v0009", *w)
        assert bad.returncode == 2 and "no bundle 'v0009'" in bad.stderr
        made = feedrec("experiment", "create", "ab", "--arm", "control=v0001", "--arm", "treatment=v0002",
                       "--guardrail", "hides_per_impression,latency_p99", *w)  # fmt: skip
        assert made.returncode == 0, made.stderr
        assert feedrec("experiment", "start", "ab", *w).returncode == 0

        def routed() -> bool:
            body = httpx.get(f"{url}/v1/feed", params={"user_id": PROBES[0], "k": 5}).json()
            return body["experiment"] == "ab"

        _until(routed, "the server to pick up the experiment")  # no restart
        cfg = TrafficConfig(url=url, seconds=4, rps=30, speed=3.0, seed=2)
        summary = run_traffic(world_dir, cfg, save=True).summary
        assert summary["errors"] == 0
        by_arm = summary["by_arm"]["ab"]
        assert set(by_arm) == {"control", "treatment"}
        assert by_arm["control"]["feeds"] + by_arm["treatment"]["feeds"] == summary["requests"]
        assert feedrec("experiment", "stop", "ab", *w).returncode == 0

        def released() -> bool:
            return all(httpx.get(f"{url}/v1/feed", params={"user_id": u, "k": 5}).json()["experiment"] is None
                       for u in PROBES)  # fmt: skip

        _until(released, "the server to pick up the stop")
    exposures = read_exposures(ws / "experiments" / "exposures", "ab")
    traffic = exposures.filter(~pl.col("user_id").str.starts_with("probe-"))
    assert traffic.height == summary["requests"]  # every feed the traffic got, and only those
    done = feedrec("experiment", "analyze", "ab", "--json", "--report", str(ws / "ab.html"), *w)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    for arm in ("control", "treatment"):
        seen, analyzed = by_arm[arm], result["arms"][arm]
        # What the users did (the harness's count) is what the analysis attributes to the arm.
        assert analyzed["clicks"] == seen["clicks"] and analyzed["impressions"] == seen["impressions"]
    assert result["metrics"]["ctr"]["ci_low"] <= result["metrics"]["ctr"]["lift"] <= result["metrics"]["ctr"]["ci_high"]
    assert {"lift", "ci_low", "ci_high", "p_value", "variance_reduction"} <= set(result["metrics"]["ctr"]["cuped"])
    assert result["metrics"]["ctr"]["sequential"]["decision"] in ("continue", "ship", "stop")
    assert "p_value" in result["srm"] and set(result["guardrails"]) == {"hides_per_impression", "latency_p99"}
    assert (ws / "ab.html").read_text().count("data:image/png") >= 1
    shown = feedrec("experiment", "show", "ab", *w)
    assert [e["action"] for e in json.loads(shown.stdout)["history"]] == ["create", "start", "stop"]


def test_an_interleaving_credits_clicks_to_the_team_that_placed_them(world: tuple[Path, Path]):
    ws, world_dir = world
    w = ["-w", str(ws)]
    assert feedrec("experiment", "create", "il", "--arm", "mix=v0001+v0002", *w).returncode == 0
    assert feedrec("experiment", "start", "il", *w).returncode == 0
    with serving(ws, FEEDREC_WATCH_INTERVAL_S="0") as url:  # started after the start: read at startup
        summary = run_traffic(
            world_dir, TrafficConfig(url=url, seconds=3, rps=30, speed=3.0, seed=9), save=True
        ).summary
    assert summary["by_version"].keys() == {"v0001+v0002"} and summary["by_arm"]["il"].keys() == {"mix"}
    result = json.loads(feedrec("experiment", "analyze", "il", "--json", *w).stdout)
    il = result["interleaving"]
    assert il["clicks_a"] + il["clicks_b"] == summary["by_arm"]["il"]["mix"]["clicks"]
    assert il["wins_a"] + il["wins_b"] + il["ties"] == il["users"] == result["arms"]["mix"]["users"]
    assert 0 <= il["p_value"] <= 1
    assert feedrec("experiment", "stop", "il", *w).returncode == 0


def test_an_exploring_arm_logs_propensities_and_shadow_slates_for_ope(world: tuple[Path, Path]):
    ws, world_dir = world
    w = ["-w", str(ws)]
    made = feedrec("experiment", "create", "ope", "--arm", "log=v0001", "--arm", "live=v0002",
                   "--explore", "log=1.0:12", "--shadow", "log=v0002", *w)  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert feedrec("experiment", "start", "ope", *w).returncode == 0
    with serving(ws, FEEDREC_WATCH_INTERVAL_S="0") as url:
        summary = run_traffic(
            world_dir, TrafficConfig(url=url, seconds=3, rps=30, speed=3.0, seed=4), save=True
        ).summary
    assert summary["errors"] == 0
    from feedrec.experiments.explore import marginals
    from feedrec.experiments.exposures import read_records

    logged = [r for r in read_records(ws / "experiments" / "exposures", "ope") if r["arm"] == "log"]
    assert logged and all(set(r["shadow"]) == {"v0002"} for r in logged)
    r = logged[0]
    table = marginals(len(r["explore"]["candidates"]), len(r["items"]), 1.0)
    assert r["items"] == [r["explore"]["candidates"][rank] for rank in r["explore"]["ranks"]]
    assert r["explore"]["propensities"] == [
        pytest.approx(table[rank, j]) for j, rank in enumerate(r["explore"]["ranks"])
    ]
    done = feedrec("ope", "--policy", "v0002", "--experiment", "ope", "--json", "--boot", "200", *w)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result["estimators"]) == {"ips", "snips", "dr", "pbm"}
    assert result["diagnostics"]["requests"] == len(logged)
    for e in result["estimators"].values():
        assert e["ci_low"] <= e["ctr"] <= e["ci_high"]
    missing = feedrec("ope", "--policy", "v0009", *w)
    assert missing.returncode == 2 and "no exploring exposures" in missing.stderr
