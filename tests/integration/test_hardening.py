"""The defects a hostile tester found (issue 10), each against the real server over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from feedrec.data.store import LocalEventStore
from tests.integration.servers import TOKEN, _start_server, build_workspace, serving

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _event(event_id: str, **fields: object) -> dict[str, object]:
    return {"event_id": event_id, "user_id": "u1", "item_id": "i1", "timestamp": "2024-01-05T12:00:00Z"} | fields


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_workspace(tmp_path_factory.mktemp("hard"))


@pytest.fixture(scope="module")
def server(ws: Path) -> Iterator[str]:
    env = {"FEEDREC_WATCH_INTERVAL_S": "0", "FEEDREC_BODY_TIMEOUT_S": "1", "FEEDREC_HEADER_TIMEOUT_S": "1"}
    with serving(ws, FEEDREC_ADMIN_TOKEN=TOKEN, **env) as url:
        yield url


@pytest.mark.parametrize(
    ("fields", "field", "needle"),
    [
        ({"position": 3_000_000_000}, "position", "less than or equal"),
        ({"position": 1e19}, "position", "integer"),
        ({"position": False}, "position", "integer"),
        ({"value": False}, "value", "not true or false"),
        ({"timestamp": "0001-01-01T00:00:00+01:00"}, "timestamp", "before 1990-01-01"),
        ({"timestamp": "9999-12-31T23:59:59-01:00"}, "timestamp", "in the future"),
        ({"timestamp": "0001-01-01T00:00:00"}, "timestamp", "before 1990-01-01"),
        ({"timestamp": 1_700_000_000}, "timestamp", "ISO-8601"),
        ({"user_id": "\ud800"}, "user_id", "unicode string"),
        ({"type": "dwell"}, "value", "needs a value"),
        ({"type": "dwell", "value": -3}, "value", "< 0"),
    ],
)
def test_bad_events_are_a_422_naming_the_field_never_a_500(server: str, ws: Path, fields, field, needle):
    before = LocalEventStore(ws).count()
    body = json.dumps({"events": [_event("bad-1", **fields)]})  # json.dumps keeps a lone surrogate escaped
    r = httpx.post(f"{server}/v1/events", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(d["loc"][-1] == field and needle in d["msg"] for d in detail), detail
    assert LocalEventStore(ws).count() == before


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_values_are_refused(server: str, literal: str):
    body = json.dumps({"events": [_event("nan-1")]}).replace('"timestamp"', f'"value": {literal}, "timestamp"')
    r = httpx.post(f"{server}/v1/events", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "value"


def test_an_event_from_the_far_future_cannot_prune_the_online_store(server: str, ws: Path):
    r = httpx.post(f"{server}/v1/events", json={"events": [_event("future-1", timestamp="9999-01-01T00:00:00Z")]})
    assert r.status_code == 422
    feed = httpx.get(f"{server}/v1/feed", params={"user_id": "u1", "k": 5})
    assert feed.status_code == 200 and len(feed.json()["items"]) == 5


def test_a_repeated_event_id_in_one_batch_is_stored_once(server: str, ws: Path):
    r = httpx.post(f"{server}/v1/events", json={"events": [_event("twice-1"), _event("twice-1"), _event("once-1")]})
    assert r.json() == {"stored": 2, "duplicates": 1}
    ids = LocalEventStore(ws).scan(columns=["event_id"]).column("event_id").to_pylist()
    assert ids.count("twice-1") == 1 and ids.count("once-1") == 1


def test_a_chunked_body_over_the_limit_is_refused(server: str):
    def chunks() -> Iterator[bytes]:
        yield b'{"events": ['
        for i in range(200_000):  # ~20 MB
            yield (json.dumps(_event(f"big-{i}")) + ",").encode()

    r = httpx.post(f"{server}/v1/events", content=chunks(), headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 413 and "over the limit" in r.text


def _raw(url: str, data: bytes, wait: float) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        time.sleep(wait)
        s.settimeout(5)
        received = b""
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                return received + b"<still open>"
            if not chunk:
                return received
            received += chunk


def test_a_half_sent_body_is_answered_408(server: str):
    head = b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
    answer = _raw(server, head + b'{"events": [', wait=1.5)
    assert answer.startswith(b"HTTP/1.1 408")


def test_half_sent_headers_are_timed_out(server: str):
    answer = _raw(server, b"GET /v1/feed?user_id=u1 HTTP/1.1\r\nHost: x\r\n", wait=2.0)
    assert answer == b""  # closed by the server, nothing answered


@pytest.mark.parametrize(
    "header",
    [TOKEN, f"bearer{TOKEN}", f"Basic {TOKEN}", f"Bearer  {TOKEN}", f"Bearer {TOKEN}x", "Bearer"],
)
def test_only_an_exact_bearer_token_opens_admin(server: str, header: str):
    assert httpx.post(f"{server}/admin/reload", headers={"Authorization": header}).status_code == 401
    assert httpx.post(f"{server}/admin/reload", headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200


def test_a_bundle_that_cannot_load_is_a_409_without_paths(server: str, ws: Path):
    from feedrec.registry import LocalRegistry
    from tests.integration.servers import _manifest

    registry = LocalRegistry(ws / "registry")
    registry.register(registry.load_model("v0001"), _manifest("v0007", "popularity"))
    (ws / "registry" / "bundles" / "v0007" / "model" / "state.npz").unlink()
    r = httpx.post(f"{server}/admin/promote/v0007", headers=AUTH)
    assert r.status_code == 409 and "v0007 could not be loaded" in r.text and str(ws) not in r.text


def test_docs_load_nothing_from_the_internet(server: str):
    page = httpx.get(f"{server}/docs").text
    assert "http://" not in page and "https://" not in page
    scripts = [line.split('src="')[1].split('"')[0] for line in page.splitlines() if 'src="' in line]
    assert scripts and all(httpx.get(f"{server}{s}").status_code == 200 for s in scripts)


def test_the_spec_documents_errors_limits_and_metrics(server: str):
    spec = httpx.get(f"{server}/openapi.json").json()
    paths = spec["paths"]
    assert {"400", "408", "413", "422", "503"} <= set(paths["/v1/events"]["post"]["responses"])
    assert {"401", "403", "404", "409", "503"} <= set(paths["/admin/promote/{version}"]["post"]["responses"])
    k = next(p for p in paths["/v1/feed"]["get"]["parameters"] if p["name"] == "k")
    assert k["schema"]["anyOf"][0]["maximum"] == 200
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
    position = spec["components"]["schemas"]["Event"]["properties"]["position"]["anyOf"][0]
    assert position["type"] == "integer" and position["maximum"] == 2**31 - 1


def test_served_log_rotates(tmp_path: Path):
    ws = build_workspace(tmp_path / "ws")
    with serving(ws, FEEDREC_SERVED_LOG_MAX_BYTES="2048", FEEDREC_SERVED_LOG_KEEP="2") as url:
        ids = [httpx.get(f"{url}/v1/feed", params={"user_id": f"u{i}", "k": 5}).json()["request_id"] for i in range(60)]
    files = sorted((ws / "serving").glob("impressions.jsonl*"))
    assert [f.name for f in files] == ["impressions.jsonl", "impressions.jsonl.1", "impressions.jsonl.2"]
    assert all(f.stat().st_size < 2048 + 1024 for f in files)
    logged = [json.loads(line)["request_id"] for f in files for line in f.read_text().splitlines()]
    assert ids[-1] in logged and len(set(logged)) == len(logged)


def test_metrics_count_every_workers_requests(tmp_path: Path):
    ws = build_workspace(tmp_path / "ws")
    with serving(ws, FEEDREC_WORKERS="2") as url:
        # Both workers up (each reports its bundle once loaded): the first one ready is not enough
        # on a busy machine, where the second can still be loading while all 103 requests go by.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if httpx.get(f"{url}/metrics").text.count('feedrec_model_info{pid="') == 2:
                break
            time.sleep(0.2)
        for i in range(103):  # a new connection each: the kernel spreads them over both workers
            assert httpx.get(f"{url}/v1/feed", params={"user_id": f"u{i % 50}", "k": 3}).status_code == 200
        texts = [httpx.get(f"{url}/metrics").text for _ in range(4)]
    for text in texts:
        line = next(
            x for x in text.splitlines() if x.startswith('feedrec_requests_total{route="/v1/feed",status="200"}')
        )
        assert float(line.split()[-1]) == 103.0
        assert text.count('feedrec_model_info{pid="') == 2  # one line per live worker


def _post_forever(url: str, prefix: str, acked: list[str], stop: threading.Event) -> None:
    n = 0
    with httpx.Client(timeout=10) as http:
        while not stop.is_set():
            batch = [_event(f"{prefix}-{n}-{i}", user_id=f"u{i}", type="click") for i in range(10)]
            n += 1
            try:
                r = http.post(f"{url}/v1/events", json={"events": batch})
            except httpx.TransportError:
                return  # the server is gone: this batch was never acknowledged
            if r.status_code == 200:
                acked.extend(e["event_id"] for e in batch)  # type: ignore[misc]


@pytest.mark.parametrize("round_", range(3))
def test_kill_9_under_mixed_load_and_compaction_loses_nothing(tmp_path: Path, round_: int):
    """Four clients post batches of 10 (a compaction every few dozen batches) while others read
    feeds; the whole server (2 workers) is killed with SIGKILL at a random moment. Every
    acknowledged event is in the store afterwards, none twice, and the store reads."""
    ws = build_workspace(tmp_path / "ws")
    proc, url = _start_server(ws, FEEDREC_WORKERS="2")
    acked: list[str] = []
    stop = threading.Event()
    posters = [threading.Thread(target=_post_forever, args=(url, f"k{round_}{c}", acked, stop)) for c in range(4)]

    def feeds() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                try:
                    http.get(f"{url}/v1/feed", params={"user_id": "u3", "k": 5})
                except httpx.TransportError:
                    return

    readers = [threading.Thread(target=feeds) for _ in range(2)]
    for t in posters + readers:
        t.start()
    deadline = time.time() + 60
    while len(acked) < 100 and time.time() < deadline:  # past startup, into steady load and compaction
        time.sleep(0.05)
    time.sleep(random.Random(round_).uniform(0.0, 2.0))
    _kill_tree(proc)
    stop.set()
    for t in posters + readers:
        t.join(timeout=20)
    store = LocalEventStore(ws)
    ids = store.scan(columns=["event_id"]).column("event_id").to_pylist()
    assert len(acked) >= 100
    assert set(acked) <= set(ids)
    assert len(ids) == len(set(ids))
    assert store.count() == len(ids)


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the server and its worker processes at once (no shutdown hook runs in any)."""
    children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    for pid in [proc.pid, *map(int, children)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    proc.wait(timeout=10)


def test_promoting_a_bundle_built_for_other_features_is_a_409(server: str, ws: Path):
    from feedrec.registry import LocalRegistry
    from tests.integration.servers import _manifest

    registry = LocalRegistry(ws / "registry")
    old = _manifest("v0008", "popularity")
    old.feature_schema = "0123456789abcdef"
    registry.register(registry.load_model("v0001"), old)
    r = httpx.post(f"{server}/admin/promote/v0008", headers=AUTH)
    assert r.status_code == 409 and "feature schema 0123456789abcdef" in r.text
    assert registry.production().version != "v0008"  # type: ignore[union-attr]
