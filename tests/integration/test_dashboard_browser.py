"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright, against a
live `feedrec serve` while the world's users use it. Every page loads without a console error and
draws its charts; the feed explorer shows the feed `GET /v1/feed` serves; a promote through the UI
changes the served version with the admin token and is refused without it. Screenshots of each
page go to build/dashboard-screenshots/ (FEEDREC_SCREENSHOTS overrides)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from feedrec.config import load_config
from feedrec.experiments.store import ExperimentStore
from feedrec.loop.traffic import TrafficConfig, run_traffic
from feedrec.offline.train import train
from feedrec.registry import LocalRegistry
from tests.integration.servers import TOKEN, live_workspace, serving

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FAST = ["train.tune=[]", "train.evaluate_rankers=false", "models.two_tower.epochs=2"]
ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("FEEDREC_SCREENSHOTS", ROOT / "build" / "dashboard-screenshots"))


def chromium() -> str:
    """Debian's Chromium (installed by `make test`); FEEDREC_CHROMIUM names another binary."""
    path = os.environ.get("FEEDREC_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("no Chromium: `make test` installs Debian's package (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("dashboard")
    ws, world, _ = live_workspace(root, seed=5, n_users=200, n_items=500)
    cfg = load_config(overrides=FAST)
    cfg.workspace = ws
    assert train(cfg).promoted  # v0001, production
    train(cfg)  # v0002: a second bundle, to promote through the UI
    registry = LocalRegistry(ws / "registry")
    assert [m.version for m in registry.list()] == ["v0001", "v0002"]
    if registry.production().version != "v0001":  # the gate may have promoted the second one
        registry.promote("v0001", reason="test setup")
    experiments = ExperimentStore(ws / "experiments")
    experiments.create(
        {"name": "ab", "arms": [{"name": "control", "version": "v0001"}, {"name": "treatment", "version": "v0002"}],
         "traffic": 0.5, "guardrails": ["hides_per_user"]}
    )  # fmt: skip
    experiments.start("ab")
    experiments.create({"name": "draft-test", "arms": [{"name": "a", "version": "v0001"}, {"name": "b", "version": "v0002"}], "layer": "other"})  # fmt: skip
    env = {
        "FEEDREC_ADMIN_TOKEN": TOKEN,
        "FEEDREC_WATCH_INTERVAL_S": "0.3",
        "FEEDREC_FEATURE_LOG_RATE": "1.0",
    }
    with serving(ws, **env) as url:
        stop = threading.Event()
        outcome: dict[str, Any] = {}

        def drive() -> None:
            try:
                cfg_t = TrafficConfig(url=url, seconds=600, rps=15, speed=0.5, seed=3, concurrency=4)
                outcome["run"] = run_traffic(world, cfg_t, save=True, stop=stop.is_set)
            except Exception as exc:  # reported by the test that stops the traffic
                outcome["error"] = exc

        traffic = threading.Thread(target=drive)
        traffic.start()
        _wait_for_feeds(url, 400)
        monitored = subprocess.run(
            [sys.executable, "-m", "feedrec.cli", "monitor", "-w", str(ws), "--json",
             "--set", "monitor.min_rows=20", "--set", "monitor.reference=training"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert monitored.returncode == 0, monitored.stderr[-2000:]
        try:
            yield {"url": url, "ws": ws, "stop": stop, "traffic": traffic, "outcome": outcome, "registry": registry}
        finally:
            stop.set()
            traffic.join(timeout=60)


def _wait_for_feeds(url: str, n: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{url}/metrics").text
        served = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith('feedrec_requests_total{route="/v1/feed",status="200"}')
        )
        if served >= n:
            return
        time.sleep(1)
    raise AssertionError(f"fewer than {n} feeds served in {timeout_s} s")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium(), headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


class Page:
    """A browser tab that records console errors and uncaught exceptions."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1440, "height": 1000})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("dialog", lambda d: d.accept())

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: Any) -> Iterator[Page]:
    page = Page(browser)
    try:
        yield page
    finally:
        page.close()


INK = """() => [...document.querySelectorAll('canvas[data-chart]')].map((c) => {
  const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let inked = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) inked++;
  return {id: c.dataset.chart, width: c.width, height: c.height, inked};
})"""


def _load(tab: Page, url: str, name: str, *, wait_for: str | None = None) -> list[dict[str, Any]]:
    answer = tab.page.goto(url, wait_until="networkidle")
    assert answer is not None and answer.status == 200, (url, answer and answer.status)
    if wait_for:
        tab.page.wait_for_selector(wait_for, timeout=60_000)
        tab.page.wait_for_load_state("networkidle")
    SHOTS.mkdir(parents=True, exist_ok=True)
    tab.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    return tab.page.evaluate(INK)


PAGES = [
    ("overview", "/dashboard", ["ctr-chart", "latency-chart"]),
    ("models", "/dashboard/models", ["versions-chart"]),
    ("model", "/dashboard/models/v0002", []),
    ("experiments", "/dashboard/experiments", []),
    ("monitoring", "/dashboard/monitoring", ["calibration-chart", "ece-chart", "online-chart", "drift-1"]),
]


@pytest.mark.parametrize(("name", "path", "charts"), PAGES, ids=[p[0] for p in PAGES])
def test_every_page_loads_without_console_errors_and_draws_its_charts(live, tab, name, path, charts):
    drawn = {c["id"]: c for c in _load(tab, live["url"] + path, name)}
    assert tab.errors == [], tab.errors
    for chart in charts:
        assert chart in drawn, (chart, sorted(drawn))
        assert drawn[chart]["width"] > 0 and drawn[chart]["inked"] > 500, drawn[chart]  # drawn, not a blank canvas


def test_the_experiment_page_shows_its_analysis_with_a_chart_per_metric(live, tab):
    # The first look starts the analysis in the background; the page reloads itself until it is there.
    drawn = _load(tab, live["url"] + "/dashboard/experiments/ab", "experiment", wait_for="#metrics")
    assert tab.errors == [], tab.errors
    assert len(drawn) >= 2 and all(c["inked"] > 500 for c in drawn), drawn
    text = tab.page.inner_text("main")
    assert "sample ratio" in text and "sequential test" in text
    assert tab.page.locator("#metrics tbody tr").count() >= 5  # ctr and the per-user metrics
    assert int(tab.page.locator("#arms tbody tr").first.locator("td").nth(4).inner_text().replace(",", "")) > 0


def test_the_overview_refreshes_by_itself(live, tab):
    _load(tab, live["url"] + "/dashboard", "overview-refresh")
    before = tab.page.inner_text("#stages tbody")
    with tab.page.expect_response(lambda r: r.url.endswith("/dashboard/api/overview"), timeout=15_000) as refresh:
        pass
    assert refresh.value.status == 200
    tab.page.wait_for_timeout(300)
    assert tab.page.inner_text("#stages tbody") != before  # the counts moved with the traffic
    assert tab.errors == [], tab.errors


def _stop_traffic(live: dict[str, Any]) -> None:
    live["stop"].set()
    live["traffic"].join(timeout=60)
    assert "error" not in live["outcome"], live["outcome"].get("error")
    run = live["outcome"]["run"]
    assert run.summary["errors"] == 0, run.summary


def test_the_feed_explorer_shows_the_feed_the_api_serves(live, tab):
    _stop_traffic(live)  # a still world: the same request gets the same feed
    time.sleep(1.5)  # the server folds in the last events
    url = live["url"]
    for user in ("u3", "u10", "u42"):
        api = httpx.get(f"{url}/v1/feed", params={"user_id": user, "k": 10}).json()
        _load(tab, f"{url}/dashboard/explorer?user_id={user}&k=10&compare=v0002", f"explorer-{user}")
        assert tab.errors == [], tab.errors
        served = tab.page.locator(".feed").first
        assert served.get_attribute("data-version") == api["model_version"]
        rows = served.locator("tbody tr")
        shown = [(rows.nth(i).get_attribute("data-item"), rows.nth(i).locator("td").nth(2).inner_text())
                 for i in range(rows.count())]  # fmt: skip
        assert shown == [(i["item_id"], f"{i['score']:.5f}") for i in api["items"]], (user, api)
        sources = {rows.nth(i).locator("td").nth(3).inner_text() for i in range(rows.count())}
        assert sources == {i["source"] for i in api["items"]}
        assert tab.page.locator(".feed").count() == (1 if api["model_version"] == "v0002" else 2)
        assert tab.page.evaluate(INK)[0]["inked"] > 200  # the stage timings chart


def _production_served(url: str) -> str:
    """The version a user outside the experiment is served."""
    for n in range(200):
        feed = httpx.get(f"{url}/v1/feed", params={"user_id": f"someone-new-{n}", "k": 5}).json()
        if feed["experiment"] is None:
            return feed["model_version"]
    raise AssertionError("every user is in the experiment")


def _promote_in_ui(tab: Page, url: str, version: str, token: str) -> str:
    _load(tab, url + "/dashboard/models", f"models-before-promote-{version}")
    tab.page.fill("#admin-token", token)
    tab.page.dispatch_event("#admin-token", "change")
    tab.page.locator(f'tr[data-version="{version}"] button.action').click()
    tab.page.wait_for_selector("#flash:not([hidden])")
    return tab.page.inner_text("#flash")


def test_a_promote_without_the_token_is_refused(live, tab):
    url = live["url"]
    assert _production_served(url) == "v0001"
    message = _promote_in_ui(tab, url, "v0002", "")
    assert message.startswith("Refused (401)"), message
    message = _promote_in_ui(tab, url, "v0002", "not-the-token")
    assert message.startswith("Refused (401)"), message
    assert live["registry"].production().version == "v0001"
    assert _production_served(url) == "v0001"
    # The browser reports the refused request itself as a failed resource; nothing else went wrong.
    assert all("401" in e for e in tab.errors), tab.errors


def test_a_promote_through_the_ui_with_the_token_changes_the_served_version(live, tab):
    url = live["url"]
    message = _promote_in_ui(tab, url, "v0002", TOKEN)
    assert message.startswith("Done"), message
    assert live["registry"].production().version == "v0002"
    assert _production_served(url) == "v0002"
    tab.page.wait_for_load_state("networkidle")  # the page reloads itself after an action
    tab.page.wait_for_selector('tr.production[data-version="v0002"]')
    tab.page.screenshot(path=str(SHOTS / "models-after-promote.png"), full_page=True)
    assert tab.errors == [], tab.errors
