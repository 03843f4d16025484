"""Bad input through the CLI: one line naming what is wrong, exit code 2, no traceback, nothing stored.

The bad-input cases call the CLI's `main` in-process (`python -m harness` only adds the interpreter's start-up, about
4 s a case); the console script, help and the tracking probes' timing keep a real process.
"""

import numpy as np
import pandas as pd
import pytest

from harness.cli import main
from harness.errors import HarnessError

GOOD_BASE = "base: {stages: {train: {pipeline: [], epochs: 1}}}\n"


def csv_spec(tmp_path, frame: pd.DataFrame) -> str:
    frame.to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "s.yaml").write_text("name: bad\ndata: {source: csv, path: train.csv}\n" + GOOD_BASE)
    return "s.yaml"


def contest_frame(rows: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    pixels = pd.DataFrame(rng.integers(0, 256, (rows, 784)), columns=[str(i) for i in range(784)])
    head = pd.DataFrame({"id": range(1, rows + 1), "digit": np.arange(rows) % 10, "letter": ["A"] * rows})
    return pd.concat([head, pixels], axis=1)


def spec_file(tmp_path, text: str) -> str:
    (tmp_path / "s.yaml").write_text(text)
    return "s.yaml"


def broken_pixel(tmp_path):
    frame = contest_frame()
    frame.loc[4, "17"] = 300
    return csv_spec(tmp_path, frame)


def broken_label(tmp_path):
    frame = contest_frame()
    frame.loc[2, "digit"] = 12
    return csv_spec(tmp_path, frame)


CASES = {
    "malformed yaml": (lambda t: spec_file(t, "name: x\n  oops: ["), "line 2"),
    "unknown key": (lambda t: spec_file(t, "name: x\nbase: {modle: {}}"), "base.modle: unknown key"),
    "unknown factor": (lambda t: spec_file(t, "name: x\nfactors: {model.widht: [1]}"), "factors.model.widht"),
    "bad factor value": (lambda t: spec_file(t, "name: x\nfactors: {training.optimizer: [nadamx]}"), "'adam'"),
    "unknown step": (lambda t: spec_file(t, "name: x\nbase: {stages: {train: {pipeline: [blur]}}}"), "blur"),
    "missing spec": (lambda t: "nope.yaml", "nope.yaml: file not found"),
    "missing csv": (lambda t: spec_file(t, "name: x\ndata: {source: csv, path: none.csv}"), "none.csv"),
    "missing column": (lambda t: csv_spec(t, contest_frame().drop(columns=["letter"])), "letter"),
    "pixel out of range": (broken_pixel, "row 5"),
    "split impossible": (
        lambda t: spec_file(t, "name: x\ndata: {n: 60}\nbase: {evaluation: {val_fraction: 0.1}}"),
        "cannot split 60 images",
    ),
    "split too small": (
        lambda t: spec_file(t, "name: x\ndata: {n: 100}\nbase: {evaluation: {val_fraction: 0.15}}"),
        "at least 20",
    ),
    "too deep for the image": (
        lambda t: spec_file(t, "name: x\ndata: {n: 100}\nbase: {model: {depth: 5}}"),
        "model.depth",
    ),
    "same training twice": (
        lambda t: spec_file(t, "name: x\ndata: {n: 100}\nfactors: {model.filters: [8, 8.0]}"),
        "same training",
    ),
    "seed too large": (lambda t: spec_file(t, "name: x\nbase: {seeds: {init: 5000000000}}"), "base.seeds.init"),
    "label out of range": (broken_label, "digit"),
    "unused pipeline, unknown step": (
        lambda t: spec_file(t, "name: x\nbase: {pipelines: {spare: [sharpen]}}"), "pipelines.spare[0]: unknown step"),
    "unused pipeline, bad value": (
        lambda t: spec_file(t, "name: x\nbase: {pipelines: {spare: [{upscale: {factor: -2}}]}}"),
        "pipelines.spare[0].upscale.factor: -2 is out of range"),
    "unknown key under a plateau": (
        lambda t: spec_file(t, "name: x\nbase: {stages: {train: {epochs: {until: plateau, max: 9, paitence: 2}}}}"),
        "base.stages.train.epochs.paitence: unknown key; allowed: max, min_delta, monitor, patience, until"),
    "plateau patience not below max": (
        lambda t: spec_file(t, "name: x\nbase: {stages: {train: {epochs: {until: plateau, max: 9, patience: 9}}}}"),
        "base.stages.train.epochs: patience (9) must be below max (9)"),
    "run on a search spec": (
        lambda t: spec_file(t, "name: x\nsearch: {space: {model.filters: {type: int, low: 4, high: 8}}}"),
        "has a 'search' section: train it with `harness tune"),
}


def run_in_process(argv: list[str], capsys) -> tuple[int, str]:
    """`harness ARGV` in this process: its exit code and stderr."""
    code = main(argv)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_stores_nothing(tmp_path, monkeypatch, capsys, case):
    monkeypatch.chdir(tmp_path)
    make, expected = CASES[case]
    code, err = run_in_process(["run", make(tmp_path), "--no-progress"], capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "mlruns").exists()


def test_sqlite_storage_refuses_more_workers_than_it_serves(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, err = run_in_process(["run", spec_file(tmp_path, "name: x\n" + GOOD_BASE), "--workers", "16",
                                "--no-progress"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert "--workers 16: a SQLite run storage serves at most 8 workers" in err
    assert not (tmp_path / "mlruns").exists()


def test_unreachable_tracking_server(tmp_path, cli):
    spec = spec_file(tmp_path, "name: x\ndata: {n: 100}\n" + GOOD_BASE)
    done = cli("run", spec, "--tracking-uri", "http://127.0.0.1:9", "--no-progress", timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert "http://127.0.0.1:9" in done.stderr and "unreachable" in done.stderr


def closed_port() -> int:
    import socket

    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_tracking_database_answers_in_seconds(tmp_path, cli):
    """MLflow's SQLAlchemy store retries a closed port for about 100 s; the TCP probe answers at once."""
    import time

    port = closed_port()
    uri = f"postgresql://user:secret@127.0.0.1:{port}/mlflow"
    spec = spec_file(tmp_path, f"name: x\ndata: {{n: 100}}\ntracking: {{uri: '{uri}'}}\n" + GOOD_BASE)
    started = time.monotonic()
    done = cli("run", spec, "--no-progress", timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert f"127.0.0.1:{port}/mlflow' is unreachable" in done.stderr and "secret" not in done.stderr
    assert elapsed < 10, f"{elapsed:.1f} s"  # probed before the data loads: about 3 s, mostly imports


@pytest.mark.parametrize("scheme", ["mysql+pymysql", "mssql+pyodbc", "postgresql+psycopg"])
def test_every_database_dialect_is_probed(scheme):
    import time

    from harness.tracking import probe

    port = closed_port()
    started = time.monotonic()
    with pytest.raises(HarnessError, match=f"127.0.0.1:{port}/db' is unreachable: Connection refused"):
        probe(f"{scheme}://u@127.0.0.1:{port}/db")
    assert time.monotonic() - started < 1


def test_help_lists_the_commands(cli):
    done = cli("--help")
    assert done.returncode == 0
    for command in ("run", "report", "export", "preview", "data"):
        assert command in done.stdout


def test_console_script_is_installed():
    import shutil
    import subprocess

    harness = shutil.which("harness")
    assert harness, "pip install -e . installs the `harness` command"
    done = subprocess.run([harness, "run", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--workers" in done.stdout


def test_synth_then_preview_on_the_written_csv(tmp_path, cli):
    assert cli("data", "synth", "--out", "synth", "--n", "120").returncode == 0
    spec = spec_file(
        tmp_path,
        "name: p\ndata: {source: csv, path: synth/train.csv}\n"
        "base: {stages: {train: {pipeline: [{upscale: {factor: 2}}, stretch, {binarize: {method: otsu}}]}}}\n",
    )
    done = cli("preview", spec, "--samples", "4")
    assert done.returncode == 0, done.stderr
    pngs = list((tmp_path / "reports/p/preview").glob("*.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 1000
