"""The dashboard's pages and actions through the app in process (the browser tests drive a live
server): each page answers from the same services the API uses; previews log nothing; the
experiment actions are admin routes behind the token."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from feedrec.experiments.store import ExperimentStore
from feedrec.online.api import create_app
from feedrec.online.settings import ServeSettings
from tests.integration.servers import TOKEN, build_workspace

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    ws = build_workspace(tmp_path_factory.mktemp("dashboard-pages"))
    store = ExperimentStore(ws / "experiments")
    store.create(
        {"name": "ab", "arms": [{"name": "control", "version": "v0001"}, {"name": "treatment", "version": "v0002"}]}
    )
    app = create_app(ServeSettings(workspace=ws, admin_token=TOKEN, watch_interval_s=0, feature_log_rate=0.0))
    with TestClient(app) as c:
        c.ws = ws  # type: ignore[attr-defined]
        yield c


@pytest.mark.parametrize(
    ("path", "needles"),
    [
        ("/dashboard", ["v0001", "popularity", "Online CTR per hour", "The monitor has not run"]),
        ("/dashboard/models", ['data-version="v0001"', 'data-version="v0002"', "covisit", "History of production"]),
        ("/dashboard/models/v0002", ["Manifest", "ndcg@10", "Promote v0002"]),
        ("/dashboard/experiments", ['data-experiment="ab"', "draft", "Start"]),
        ("/dashboard/monitoring", ["The monitor has not run on this workspace"]),
        ("/dashboard/explorer", ["Feed explorer", '<option value="v0002"']),
    ],
)
def test_each_page_renders_what_the_services_hold(client: TestClient, path: str, needles: list[str]):
    page = client.get(path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["server-timing"].startswith("render;dur=")
    for needle in needles:
        assert needle in page.text, (path, needle)
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched from elsewhere


def test_unknown_things_get_a_404_that_says_what_exists(client: TestClient):
    page = client.get("/dashboard/models/v9999")
    assert page.status_code == 404 and "v0001, v0002" in page.text
    page = client.get("/dashboard/experiments/nope")
    assert page.status_code == 404 and "experiments: ab" in page.text
    report = client.get("/dashboard/models/v0001/report")
    assert report.status_code == 404 and "no evaluation report" in report.json()["detail"]


def test_a_malformed_name_is_a_4xx_and_an_empty_form_field_is_none(client: TestClient):
    assert client.get("/dashboard/models/..v0001").status_code == 422
    assert client.get("/dashboard/models/.hidden").status_code == 422
    assert client.get("/dashboard/explorer", params={"compare": "../x"}).status_code == 422
    page = client.get("/dashboard/explorer", params={"user_id": "u1", "compare": "", "k": 5})
    assert page.status_code == 200 and page.text.count('class="feed"') == 1
    unloadable = client.get("/dashboard/explorer", params={"user_id": "u1", "compare": "v0404"})
    assert unloadable.status_code == 200 and "no bundle" in unloadable.text  # the served feed still shows
    assert unloadable.text.count('class="feed"') == 1


def test_the_static_files_are_the_packaged_ones(client: TestClient):
    chart = client.get("/dashboard/static/vendor/chart.umd.min.js")
    assert chart.status_code == 200 and b"Chart.js v4" in chart.content[:200]
    assert client.get("/dashboard/static/dashboard.js").status_code == 200
    assert client.get("/dashboard/static/../../api.py").status_code == 404


def test_the_overview_json_is_what_its_refresh_draws(client: TestClient):
    client.get("/v1/feed", params={"user_id": "u1"})
    o = client.get("/dashboard/api/overview").json()
    assert o["production"]["version"] == "v0001" and o["production"]["promoted_at"]
    assert o["live"]["feeds_per_s"] > 0 and {s["stage"] for s in o["live"]["stages"]} >= {"feed"}
    assert o["ctr_chart"]["type"] == "line" and len(o["ctr"]) == 12


def _served_lines(ws: Path) -> int:
    return len((ws / "serving" / "impressions.jsonl").read_text().splitlines())


def test_the_explorer_previews_the_served_feed_and_logs_nothing(client: TestClient):
    ws = client.ws  # type: ignore[attr-defined]
    feed = client.get("/v1/feed", params={"user_id": "u7", "k": 8}).json()
    before = _served_lines(ws)
    page = client.get("/dashboard/explorer", params={"user_id": "u7", "k": 8, "compare": "v0002"})
    assert page.status_code == 200
    assert _served_lines(ws) == before  # a preview is not an impression
    for item in feed["items"]:
        assert f'data-item="{item["item_id"]}"' in page.text
    assert page.text.count('class="feed"') == 2 and "Compared: v0002" in page.text
    assert "Recent history" in page.text and "Stage timings" in page.text


def test_experiment_actions_are_admin_routes_behind_the_token(client: TestClient):
    assert client.post("/admin/experiments/ab/start").status_code == 401
    assert client.post("/admin/experiments/ab/start", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/admin/experiments/nope/start", headers=AUTH).status_code == 404
    started = client.post("/admin/experiments/ab/start", headers=AUTH)
    assert started.status_code == 200 and started.json() == {"experiment": "ab", "status": "running"}
    again = client.post("/admin/experiments/ab/start", headers=AUTH)
    assert again.status_code == 409 and "only a draft can start" in again.json()["detail"]
    arms = {client.get("/v1/feed", params={"user_id": f"u{n}"}).json()["arm"] for n in range(40)}
    assert arms == {"control", "treatment"}  # routed at once, no restart
    assert client.post("/admin/experiments/ab/stop", headers=AUTH).json()["status"] == "stopped"
    assert {client.get("/v1/feed", params={"user_id": f"u{n}"}).json()["arm"] for n in range(40)} == {None}
