"""The ``feedrec`` command end to end, as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ML100K, needs_ml100k

pytestmark = pytest.mark.integration


def feedrec(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "feedrec.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_ingest_dirty_file_twice(tmp_path: Path):
    src = tmp_path / "log.csv"
    src.write_text("userId,movieId,ts\n1,10,1700000000\n2,20,yesterday\n3,30\n4,40,1700000003\n")
    args = ["ingest", str(src), "--map", "user_id=userId,item_id=movieId,timestamp=ts", "-w", "ws", "--json"]
    first = feedrec(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert (report["read"], report["stored"], report["quarantined"]) == (4, 2, 2)
    assert report["reasons"] == {"malformed_row": 1, "mistyped_field": 1}
    second = json.loads(feedrec(*args, cwd=tmp_path).stdout)
    assert (second["stored"], second["already_stored"]) == (0, 2)
    table = feedrec(
        "ingest", str(src), "--map", "user_id=userId,item_id=movieId,timestamp=ts", "-w", "ws", cwd=tmp_path
    )
    assert "quarantined: mistyped_field" in table.stdout
    stats = json.loads(feedrec("stats", "-w", "ws", "--json", cwd=tmp_path).stdout)
    assert stats["events"] == 2


def test_bad_input_is_a_clear_error(tmp_path: Path):
    missing = feedrec("ingest", "nope.csv", cwd=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    unmapped = feedrec("ingest", "x.csv", cwd=tmp_path)
    assert unmapped.returncode == 2 and "--map" in unmapped.stderr
    typo = feedrec("eval", "--events", "x.csv", "--set", "split.test_ration=0.2", cwd=tmp_path)
    assert typo.returncode == 2 and "split.test_ration" in typo.stderr
    model = feedrec("eval", "--events", "x.csv", "--models", "magic", cwd=tmp_path)
    assert model.returncode == 2 and "magic" in model.stderr


@needs_ml100k
def test_eval_json_on_ml100k(tmp_path: Path):
    result = feedrec(
        "eval",
        "--events",
        str(ML100K),
        "--format",
        "movielens",
        "--protocol",
        "user",
        "--k",
        "10",
        "--models",
        "popularity",
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["protocol"] == "user" and report["n_users"] == 943 and report["n_items"] == 1682
    pop = report["models"]["popularity"]
    assert set(pop) == {"recall@10", "ndcg@10", "hr@10", "mrr@10", "coverage@10", "fit_seconds"} | {
        f"recall@{n}" for n in (100, 200, 500)
    } | {"novelty@10", "diversity@10"}  # genres from u.item
    assert 0 < pop["diversity@10"] < 1 and pop["novelty@10"] > 0
    assert pop["recall@10"] <= pop["recall@100"] <= pop["recall@200"] <= pop["recall@500"]
    assert abs(pop["ndcg@10"] / 0.0828 - 1) < 0.03 and abs(pop["recall@10"] / 0.0933 - 1) < 0.03


def test_simulate_then_eval_from_the_store(tmp_path: Path):
    sim = feedrec(
        "simulate",
        "--users",
        "200",
        "--items",
        "300",
        "--days",
        "10",
        "--seed",
        "3",
        "--out",
        "sim",
        "--json",
        cwd=tmp_path,
    )
    assert sim.returncode == 0, sim.stderr
    assert json.loads(sim.stdout)["events"] > 1000
    assert feedrec("ingest", "sim/events.parquet", "-w", "ws", cwd=tmp_path).returncode == 0
    assert feedrec("ingest", "sim/items.parquet", "--kind", "items", "-w", "ws", cwd=tmp_path).returncode == 0
    result = feedrec("eval", "-w", "ws", "--models", "popularity,als", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["models"]) == {"popularity", "als"}


def test_demo_evaluates_then_serves_the_pipeline_it_trained(tmp_path: Path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    size = ["--users", "300", "--items", "500", "--days", "10"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedrec.cli", "demo", *size, "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        ready = httpx.get(f"{url}/readyz").json()
        feed = httpx.get(f"{url}/v1/feed", params={"user_id": "u1", "k": 5}).json()
        assert feed["model_version"] == ready["model_version"] == "v0001"
        assert len(feed["items"]) == 5 and not feed["fallback"]
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=30)
    for name in ("popularity", "covisit", "als", "feedrec", "ndcg@10", "recall@10", "stored"):
        assert name in stdout
    assert f"curl 'http://127.0.0.1:{port}/v1/feed?user_id=" in stdout and f"{url}/docs" in stdout
    # Again, live: one simulated day of the world's traffic at the server the demo starts.
    rerun = feedrec("demo", *size, "--no-serve", "--live", "--port", str(port), "--json", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    payload = json.loads(rerun.stdout)
    assert payload["ingest"]["stored"] == 0  # ingestion is idempotent
    live = payload["live"]
    assert live["errors"] == 0 and live["requests"] > 50 and live["events_posted"] > 0
    row = live["by_version"][payload["version"]]
    assert 0 < row["expected_ctr"] < row["oracle_ctr"] and row["regret"] > 0


def test_train_registers_gates_and_rolls_back(tmp_path: Path):
    assert (
        feedrec("simulate", "--users", "300", "--items", "600", "--days", "14", "--out", "sim", cwd=tmp_path).returncode
        == 0
    )
    for kind in ("events", "items", "users"):
        assert feedrec("ingest", f"sim/{kind}.parquet", "--kind", kind, "-w", "ws", cwd=tmp_path).returncode == 0
    # threads=1: identical runs must give identical scores for the gate assertion below.
    fast = [
        "--set",
        "threads=1",
        "--set",
        "models.two_tower.epochs=2",
        "--set",
        "models.two_tower.dim=16",
        "--set",
        "train.tune_trials=3",
        "-w",
        "ws",
        "--json",
    ]
    first = feedrec("train", *fast, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["version"] == "v0001" and result["promoted"]
    assert {"valid", "test", "ranker"} <= set(result["metrics"])
    stages = result["seconds"]  # wall time per stage, in the order they ran
    assert list(stages)[:2] == ["load events", "split"] and list(stages)[-1] == "register the bundle"
    assert all(seconds >= 0 for seconds in stages.values()) and sum(stages.values()) > 0
    bundle = tmp_path / "ws" / "registry" / "bundles" / "v0001"
    assert (bundle / "report.html").read_text().count(
        "data:image/png"
    ) >= 4  # metrics, beyond accuracy, calibration, scores
    manifest = json.loads(feedrec("models", "show", "v0001", "-w", "ws", cwd=tmp_path).stdout)
    assert (
        manifest["feature_schema"]
        and manifest["data_window"]["interactions"] > 0
        and "feedrec" in manifest["code_version"]
    )
    tuning = manifest["params"]["tuning"]["candidates"]
    assert tuning["trials"] == 3 and tuning["validation"] >= tuning["defaults"]  # tuned on validation first
    # The same data and settings cannot beat production on validation: the gate refuses.
    second = json.loads(feedrec("train", *fast, cwd=tmp_path).stdout)
    assert second["version"] == "v0002" and not second["promoted"]
    assert feedrec("models", "promote", "v0002", "-w", "ws", cwd=tmp_path).returncode == 0
    rolled = feedrec("models", "rollback", "-w", "ws", cwd=tmp_path)
    assert rolled.returncode == 0 and "v0001" in rolled.stdout
    listed = json.loads(feedrec("models", "list", "-w", "ws", "--json", cwd=tmp_path).stdout)
    assert [b["production"] for b in listed] == [True, False]
    missing = feedrec("models", "show", "v0042", "-w", "ws", cwd=tmp_path)
    assert missing.returncode == 2 and "no bundle" in missing.stderr
    # int8 twin: the gate refuses it when it must gain 50 %, registers it (unpromoted) at a 100 % allowance.
    refused = feedrec("models", "compress", "v0001", "--max-loss", "-0.5", "-w", "ws", cwd=tmp_path)
    assert refused.returncode == 1 and "refused" in refused.stderr and "ndcg@10" in refused.stderr
    accepted = feedrec("models", "compress", "v0001", "--max-loss", "1", "-w", "ws", cwd=tmp_path)
    assert accepted.returncode == 0, accepted.stderr
    assert "registered v0003 (int8 twin of v0001)" in accepted.stdout
    twin = json.loads(feedrec("models", "show", "v0003", "-w", "ws", cwd=tmp_path).stdout)
    assert twin["params"]["compressed_from"] == "v0001" and not twin["promoted"]
    tower = json.loads(
        (tmp_path / "ws/registry/bundles/v0003/model/candidates/sources/two_tower/model.json").read_text()
    )
    assert tower["params"]["ann"] == "hnsw_sq8"
