"""`harness predict` as a new user meets it: a study never run, found in studies/ by name, trained on every
labelled row, registered in MLflow's Model Registry and answered by `mlflow models serve`; then every kind of
study (the README's quick and digits studies, a user model with a side input) predicting its own kind of data,
and incompatible files refused in-process before anything trains."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import mlflow
import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from tests.conftest import REPO, run_cli
from tests.test_ui import free_port

pytestmark = pytest.mark.xdist_group("predict")  # one worker: one `studies` fixture, one TensorFlow import

TINY = """name: tiny
data: {source: synthetic, n: 200, seed: 0}
base:
  model: {filters: 4, depth: 1, dense_units: 8}
  evaluation: {method: kfold, k: 5, fold: 2, test_shifts: 1}
  stages: {train: {pipeline: [stretch], epochs: 1}}
"""


@pytest.mark.slow
def test_predict_without_a_run_trains_on_all_rows_registers_and_serves(tmp_path, cli, in_process):
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
    served_model = mlflow.pyfunc.load_model("models:/tiny/latest")
    assert served_model.unwrap_python_model().test_shifts == 1  # served answers as the study scored: 9 views
    assert served_model.predict(test.head(7)).to_dict("list") == submission.head(7).to_dict("list")

    answer = _serve_and_ask(tmp_path, store, test.head(5))
    assert answer == submission.head(5).to_dict("records")

    bad = tmp_path / "bad.csv"
    test.drop(columns=["letter"]).to_csv(bad, index=False)
    code, _, err = in_process("predict", "tiny", "--data", "bad.csv", "--out", "sub3.csv")
    assert code == 2 and err.count("\n") == 1 and "letter" in err
    assert not (tmp_path / "sub3.csv").exists()
    code, _, err = in_process("predict", "--study", "nope", "--data", "synth/test.csv", "--out", "sub4.csv")
    assert code == 2 and "no study named 'nope'" in err and "studies/nope.yaml" in err


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


# ---------------------------------------------------------------- every kind of study

ONE_THREAD = "base:\n  determinism: {intra_op_threads: 1, inter_op_threads: 1}\n"
SIDE_NET = '''
import keras
from keras import layers


def build(input_shape, n_classes, args, seeds):
    image = keras.Input(shape=input_shape, name="image")
    parity = keras.Input(shape=(1,), name="parity", dtype="int32")
    x = layers.Flatten()(layers.Conv2D(8, 3, activation="relu", kernel_initializer=seeds.initializer())(image))
    code = layers.Flatten()(layers.Embedding(2, 4, embeddings_initializer=seeds.initializer("uniform"))(parity))
    x = layers.Concatenate()([x, code])
    return keras.Model([image, parity], layers.Dense(n_classes, kernel_initializer=seeds.initializer())(x))
'''
SIDED = """name: sided
data: {source: csv, path: ../digits.csv, label: digit, side_inputs: [parity]}
base:
  determinism: {intra_op_threads: 1, inter_op_threads: 1}
  model: {builder: models/side_net.py:build}
  training: {batch_size: 64, learning_rate: 0.005}
  stages: {train: {pipeline: [], epochs: 2}}
"""


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    """The README's quick and digits studies (1 epoch, 1 thread), a user model that also sees each digit's parity
    (`sided`, a csv of the same digits), and files to predict: the digits folder `harness data digits` writes,
    an npz and a labelled csv of 40 digits."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("predict-studies")
    assert main(["data", "digits", "--out", str(root / "data/digits")]) == 0
    shutil.copytree(REPO / "studies/models", root / "studies/models")
    (root / "studies/models/side_net.py").write_text(SIDE_NET)
    for name in ("quick", "digits"):
        text = (REPO / f"studies/{name}.yaml").read_text().replace("epochs: 3}", "epochs: 1}")
        (root / f"studies/{name}.yaml").write_text(text.replace("base:\n", ONE_THREAD))
    (root / "studies/sided.yaml").write_text(SIDED)
    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    pixels = pd.DataFrame(images.reshape(len(images), -1), columns=[str(i) for i in range(64)])
    parity = np.where(bunch.target % 2, "odd", "even")
    frame = pd.concat([pd.DataFrame({"digit": bunch.target, "parity": parity}), pixels], axis=1)
    frame.to_csv(root / "digits.csv", index=False)
    ask = frame.iloc[-40:].assign(id=[f"q{i}" for i in range(40)])
    ask[["id", "parity", *pixels.columns, "digit"]].to_csv(root / "ask.csv", index=False)
    np.savez(root / "ask.npz", images=images[-40:], labels=bunch.target[-40:])
    return root


@pytest.mark.slow
def test_the_readme_digits_study_predicts_a_folder_of_its_images(studies):
    done = run_cli("predict", "studies/digits.yaml", "--data", "data/digits/3", "--out", "p.csv", cwd=studies)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = pd.read_csv(studies / "p.csv", dtype=str)
    assert list(answer.columns) == ["id", "label"] and len(answer) == 183 and answer["id"][0] == "0003.png"
    assert (answer["label"] == "3").mean() > 0.8, answer["label"].value_counts()


@pytest.mark.slow
def test_quick_predicts_an_npz_with_its_accuracy(studies):
    done = run_cli("predict", "studies/quick.yaml", "--data", "ask.npz", "--out", "q.csv", cwd=studies)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = pd.read_csv(studies / "q.csv")
    assert answer["id"].tolist() == list(range(40)) and "accuracy on ask.npz" in done.stdout
    assert (answer["label"] == np.load(studies / "ask.npz")["labels"]).mean() > 0.8


@pytest.mark.slow
def test_a_user_model_with_a_side_input_predicts_and_serves_a_csv_like_its_own(studies):
    done = run_cli("predict", "studies/sided.yaml", "--data", "ask.csv", "--out", "s.csv", cwd=studies)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = pd.read_csv(studies / "s.csv", dtype={"id": str})
    ask = pd.read_csv(studies / "ask.csv", dtype={"id": str})
    assert answer["id"].tolist() == ask["id"].tolist() and "accuracy on ask.csv" in done.stdout
    assert (answer["label"] == ask["digit"]).mean() > 0.8
    mlflow.set_tracking_uri(f"sqlite:///{studies / 'mlruns/mlflow.db'}")
    served = mlflow.pyfunc.load_model("models:/sided/latest").predict(ask.drop(columns="digit").head(7))
    assert served["label"].astype(int).tolist() == answer["label"].head(7).tolist()


def one_line_exit_2(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("study, data, expected", [
    ("digits", "big", "images are 9x9 px grayscale, but the study's model takes 8x8 px grayscale"),
    ("digits", "ask.csv.txt", "a '.txt' file; allowed --data: a folder of PNG/JPG images"),
    ("quick", "nothing-here", "no such file or folder"),
    ("sided", "data/digits/3", "side inputs (parity), which only a csv gives"),
    ("sided", "odd.csv", "row 1, column 'parity': 'seven' is not a value the study trained on; allowed: even, odd"),
])
def test_an_incompatible_file_is_refused_before_training_and_storing(studies, study, data, expected, tmp_path,
                                                                      monkeypatch, capsys):
    import cv2

    monkeypatch.chdir(studies)
    (studies / "big").mkdir(exist_ok=True)
    cv2.imwrite(str(studies / "big/a.png"), np.zeros((9, 9), np.uint8))
    (studies / "ask.csv.txt").write_text("id\n")
    pd.read_csv(studies / "ask.csv").head(2).assign(parity="seven").to_csv(studies / "odd.csv", index=False)
    err = one_line_exit_2(["predict", f"studies/{study}.yaml", "--data", data, "--out", str(tmp_path / "p.csv"),
                           "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"], capsys)
    assert expected in err and str(data) in err
    assert list(tmp_path.iterdir()) == []  # no answer, no store


def test_predicting_an_unknown_study_creates_no_store(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = one_line_exit_2(["predict", "ghost", "--data", "test.csv", "--out", "p.csv"], capsys)
    assert "nothing has run here yet" in err
    assert list(tmp_path.iterdir()) == []
