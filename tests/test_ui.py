"""The MLflow UI on a real study: a real `mlflow server` over the store, its REST API, and headless Chromium.

A tiny study (4 trainings, 1 epoch) runs through the CLI into a temporary store; `mlflow server` serves that
store on a free loopback port. The REST checks need only MLflow; the browser checks skip without Chromium
(Debian: `apt-get install chromium`).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ui")]  # one server for both tests, side by side or not

CHROMIUM = shutil.which("chromium")
TINY = """
name: ui
data: {source: synthetic, n: 200, seed: 0}
repeats: 2
base:
  model: {filters: 4, depth: 1, dense_units: 8}
  determinism: {intra_op_threads: 1, inter_op_threads: 1}
  stages: {train: {pipeline: [], epochs: 1}}
factors:
  augmentation.enabled: [false, true]
"""
ON_FILTER = "tags.`factor.augmentation.enabled` = 'on'"  # the form README documents


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """REST calls against the served store."""

    def __init__(self, url: str, experiment_id: str, workdir: Path):
        self.url, self.experiment_id, self.workdir = url, experiment_id, workdir

    def get(self, endpoint: str, **query: str) -> dict:
        return json.loads(self.raw(endpoint, **query))

    def raw(self, endpoint: str, **query: str) -> bytes:
        with urllib.request.urlopen(f"{self.url}{endpoint}?{urllib.parse.urlencode(query)}", timeout=30) as resp:
            return resp.read()

    def search(self, filter_string: str = "") -> list[dict]:
        body = json.dumps({"experiment_ids": [self.experiment_id], "filter": filter_string, "max_results": 100})
        request = urllib.request.Request(
            f"{self.url}/api/2.0/mlflow/runs/search", body.encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as resp:
            return json.load(resp).get("runs", [])

    def artifacts(self, run_id: str, path: str = "") -> dict[str, dict]:
        listing = self.get("/api/2.0/mlflow/artifacts/list", run_id=run_id, path=path)
        return {f["path"]: f for f in listing.get("files", [])}


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Server:
    """The tiny study run and reported through the CLI, then served by `mlflow server` on 127.0.0.1."""
    workdir = tmp_path_factory.mktemp("ui")
    (workdir / "ui.yaml").write_text(TINY)
    done = run_cli("run", "ui.yaml", "--no-progress", cwd=workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    reported = run_cli("report", "ui.yaml", cwd=workdir)
    assert reported.returncode == 0, reported.stderr[-3000:]

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (workdir / "server.log").open("w")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    store = f"sqlite:///{workdir / 'mlruns' / 'mlflow.db'}"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(command, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up: {(workdir / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        by_name = Server(url, "", workdir).get("/api/2.0/mlflow/experiments/get-by-name", experiment_name="ui")
        yield Server(url, by_name["experiment"]["experiment_id"], workdir)
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen) -> None:
    """The server and the workers it spawned share its process group."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _values(items: list[dict]) -> dict[str, str]:
    return {item["key"]: item["value"] for item in items}


def test_rest_api_shows_factors_curves_and_report(server):
    runs = server.search()
    parents = [r for r in runs if _values(r["data"]["tags"]).get("harness.role") == "study"]
    children = [r for r in runs if _values(r["data"]["tags"]).get("harness.role") == "training"]
    assert len(parents) == 1 and len(children) == 4
    parent_id = parents[0]["info"]["run_id"]

    names = sorted(r["info"]["run_name"] for r in children)
    assert names == ["enabled=off · rep=0", "enabled=off · rep=1", "enabled=on · rep=0", "enabled=on · rep=1"]
    for child in children:
        tags, params = _values(child["data"]["tags"]), _values(child["data"]["params"])
        metrics = {m["key"]: m["value"] for m in child["data"]["metrics"]}
        assert tags["mlflow.parentRunId"] == parent_id
        level = tags["factor.augmentation.enabled"]
        assert params["factor.augmentation.enabled"] == level and level in child["info"]["run_name"]
        assert params["augmentation.enabled"] == ("true" if level == "on" else "false")  # config param untouched
        assert params["model.filters"] == "4"
        assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["wall_time_s"] > 0
        assert child["info"]["status"] == "FINISHED"
    curve = server.get(
        "/api/2.0/mlflow/metrics/get-history", run_id=children[0]["info"]["run_id"], metric_key="epoch_val_accuracy"
    )["metrics"]
    assert [m["step"] for m in curve] == [1]

    # the documented filter, its params twin, and the plain form MLflow's parser also accepts
    for filter_string in (ON_FILTER, "params.`factor.augmentation.enabled` = 'on'", ON_FILTER.replace("`", "")):
        found = server.search(filter_string)
        assert sorted(r["info"]["run_name"] for r in found) == ["enabled=on · rep=0", "enabled=on · rep=1"]

    assert {"config.json", "predictions.csv"} <= set(server.artifacts(children[0]["info"]["run_id"]))
    assert "study.yaml" in server.artifacts(parent_id)
    report = server.artifacts(parent_id, "report")
    expected = {"report.md", "report.json", "runs.csv", "accuracy_hist.png", "factor_augmentation.enabled.png"}
    assert {f"report/{name}" for name in expected} <= set(report)
    # served the way the UI's artifact viewer fetches it: no --artifacts-destination needed
    runs_csv = server.raw("/get-artifact", path="report/runs.csv", run_uuid=parent_id).decode()
    header, *rows = runs_csv.strip().splitlines()
    assert "augmentation.enabled" in header.split(",") and "accuracy" in header.split(",") and len(rows) == 4


def _browse(url: str, png: Path, *wait_for: str) -> str:
    """Open `url` in headless Chromium (Playwright drives Debian's binary), wait until each `wait_for` text shows,
    then take a screenshot to `png` and return the page's visible words, one space apart.

    Waiting for the content itself, in real time: Chromium's own `--virtual-time-budget` waited on the MLflow
    compare page for over 300 s on 2 loaded cores, twice in CI, with every request already served.
    """
    from playwright.sync_api import sync_playwright

    # as the env notes say: without these flags Chromium calls Google's hosts, refused one by one on a closed net
    flags = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-quic",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=CHROMIUM, args=flags, timeout=120_000)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(url, timeout=120_000)
            for text in wait_for:  # the page polls the server for good: no network-idle moment to wait for
                page.get_by_text(text).first.wait_for(timeout=180_000)  # 2 loaded cores: slow, not hung
            page.screenshot(path=str(png))
            return " ".join(page.inner_text("body").split())
        finally:
            browser.close()


def _assert_real_picture(png: Path) -> None:
    assert png.exists() and png.stat().st_size > 20_000, f"{png} missing or tiny"
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    assert pixels.shape == (1000, 1600, 3)
    assert pixels.std() > 10 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50, "a flat, empty page"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (Debian: apt-get install chromium)")
@pytest.mark.skipif(find_spec("playwright") is None, reason="playwright not installed (pip install -e '.[dev]')")
def test_browser_renders_filtered_runs_and_compare_view(server, tmp_path):
    children = server.search("tags.`harness.role` = 'training'")
    base = f"{server.url}/#"
    query = urllib.parse.urlencode({"workflowType": "machine_learning", "searchFilter": ON_FILTER})
    runs_url = f"{base}/experiments/{server.experiment_id}/runs?{query}"
    runs_page = _browse(runs_url, tmp_path / "runs.png", "matching runs", "study:ui")
    _assert_real_picture(tmp_path / "runs.png")
    # the UI applied the filter: the two 'on' children plus the study run that holds them
    assert "3 matching runs" in runs_page and "study:ui" in runs_page

    ids = json.dumps([r["info"]["run_id"] for r in children])
    compare = urllib.parse.urlencode({"runs": ids, "experiments": json.dumps([server.experiment_id])})
    compare_page = _browse(f"{base}/compare-runs?{compare}", tmp_path / "compare.png", "Comparing 4 Runs",
                           "factor.augmentation.enabled")
    _assert_real_picture(tmp_path / "compare.png")
    assert "Comparing 4 Runs" in compare_page
    assert "factor.augmentation.enabled" in compare_page and "enabled=on · rep=0" in compare_page
