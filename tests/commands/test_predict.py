"""`harness predict` as a new user meets it: a study never run, found in studies/ by name, trained on every
labelled row, registered in MLflow's Model Registry and answered by `mlflow models serve`."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import mlflow
import pandas as pd
import pytest

from tests.test_ui import free_port

pytestmark = pytest.mark.slow

TINY = """name: tiny
data: {source: synthetic, n: 200, seed: 0}
base:
  model: {filters: 4, depth: 1, dense_units: 8}
  evaluation: {method: kfold, k: 5, fold: 2}
  stages: {train: {pipeline: [stretch], epochs: 1}}
"""


def test_predict_without_a_run_trains_on_all_rows_registers_and_serves(tmp_path, cli):
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies/tiny.yaml").write_text(TINY)
    assert cli("data", "synth", "--out", "synth", "--n", "60", "--n-test", "40").returncode == 0

    first = cli("predict", "--study", "tiny", "--data", "synth/test.csv", "--out", "sub.csv", "--ensemble", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "trained on all 200 labelled rows" in first.stdout and "studies/tiny.yaml" in first.stdout
    submission = pd.read_csv(tmp_path / "sub.csv")
    test = pd.read_csv(tmp_path / "synth/test.csv")
    assert list(submission.columns) == ["id", "digit"] and submission["id"].tolist() == test["id"].tolist()
    assert submission["digit"].between(0, 9).all()

    again = cli("predict", "tiny", "--data", "synth/train.csv", "--out", "sub2.csv", "--ensemble", "2")
    assert again.returncode == 0 and "loaded from MLflow" in again.stdout and "accuracy on" in again.stdout

    store = f"sqlite:///{tmp_path / 'mlruns/mlflow.db'}"
    mlflow.set_tracking_uri(store)
    versions = mlflow.MlflowClient().search_model_versions("name = 'tiny'")
    assert [int(v.version) for v in versions] == [1]  # the second call reused the first's model
    predict_run = mlflow.get_run(versions[0].run_id)
    assert predict_run.data.params["trained_on_rows"] == "200" and predict_run.data.params["ensemble"] == "2"
    served = mlflow.pyfunc.load_model("models:/tiny/latest").predict(test.head(7))
    assert served.to_dict("list") == submission.head(7).to_dict("list")

    answer = _serve_and_ask(tmp_path, store, test.head(5))
    assert answer == submission.head(5).to_dict("records")

    bad = tmp_path / "bad.csv"
    test.drop(columns=["letter"]).to_csv(bad, index=False)
    refused = cli("predict", "tiny", "--data", "bad.csv", "--out", "sub3.csv")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "letter" in refused.stderr
    assert not (tmp_path / "sub3.csv").exists()
    unknown = cli("predict", "--study", "nope", "--data", "synth/test.csv", "--out", "sub4.csv")
    assert unknown.returncode == 2 and "no study named 'nope'" in unknown.stderr
    assert "studies/nope.yaml" in unknown.stderr


def _serve_and_ask(workdir, store: str, rows: pd.DataFrame) -> list[dict]:
    """`mlflow models serve -m models:/tiny/latest` in this environment; its answer to `rows` as records."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/tiny/latest", "--env-manager",
               "local", "-h", "127.0.0.1", "-p", str(port)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    log = (workdir / "serve.log").open("w")
    server = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    body = json.dumps({"dataframe_split": rows.to_dict(orient="split")}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body,
                                     {"Content-Type": "application/json"})
    try:
        deadline = time.monotonic() + 240  # 2 loaded cores: the server imports MLflow, Keras and TensorFlow
        while True:
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return json.load(response)["predictions"]
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow models serve did not answer: {(workdir / 'serve.log').read_text()[-3000:]}")
                time.sleep(1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        log.close()
