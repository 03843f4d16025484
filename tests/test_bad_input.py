"""Bad input answered in one line, exit 2, no traceback: cases found by the 213-case corpus, run in-process
through the CLI's `main` (no process start-up, no training)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.cli import main
from harness.execution.storage import probe_storage


def one_line_exit_2(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_truncated_npz(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", images=rng.integers(0, 255, (200, 8, 8), dtype=np.uint8), labels=np.arange(200) % 2)
    data = (tmp_path / "d.npz").read_bytes()
    (tmp_path / "d.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "s.yaml").write_text("name: s\ndata: {source: npz, path: d.npz, images: images, labels: labels}\n")
    err = one_line_exit_2(["preview", "s.yaml"], capsys)
    assert "d.npz" in err and "npz" in err


def test_preview_needs_samples(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text("name: s\n")
    assert "--samples: got 0" in one_line_exit_2(["preview", "s.yaml", "--samples", "0"], capsys)


def test_explain_needs_a_step_to_trace(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert "--steps: got 0" in one_line_exit_2(["explain", "0" * 32, "1" * 32, "--trace", "--steps", "0"], capsys)
    assert list(tmp_path.iterdir()) == []


def test_digits_out_is_a_file(tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    assert "is a file" in one_line_exit_2(["data", "digits", "--out", str(tmp_path / "taken")], capsys)


def test_negative_delta_pp_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["report", "--runs", "runs.csv", "--delta-pp", "-1"])
    assert stop.value.code == 2 and "allowed: a number of percentage points" in capsys.readouterr().err


def test_unreachable_storage_hides_its_password(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = one_line_exit_2(["status", "s", "--storage", "postgresql://user:hunter2@127.0.0.1:1/db"], capsys)
    assert "unreachable" in err and "hunter2" not in err and "user:***@" in err


@pytest.mark.parametrize("argv", [["status", "ghost"], ["report", "ghost"], ["export", "ghost", "--out", "r.csv"],
                                  ["explain", "0" * 32, "1" * 32]])
def test_reading_an_unknown_study_creates_no_store(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    err = one_line_exit_2(argv, capsys)
    assert "nothing has run here yet" in err
    assert list(tmp_path.iterdir()) == []  # no mlruns/, no mlflow.db, no optuna.db


def _no_training_setup(monkeypatch) -> None:
    """Starting the backend server or loading the data is what a refused storage must come before."""
    from harness.execution import fork_server, prepared

    def too_late(*_args, **_kwargs):
        raise AssertionError("the run storage was probed after the training setup began")

    monkeypatch.setattr(fork_server, "start_process_server", too_late)
    monkeypatch.setattr(prepared, "prepare", too_late)


@pytest.mark.parametrize("command", ["run", "tune"])
def test_unreachable_storage_answers_before_the_data_loads(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _no_training_setup(monkeypatch)
    search = "search: {space: {model.filters: {type: int, low: 4, high: 8}}}\n" if command == "tune" else ""
    (tmp_path / "s.yaml").write_text("name: s\n" + search)
    err = one_line_exit_2([command, "s.yaml", "--storage", "postgresql://user:hunter2@127.0.0.1:1/db"], capsys)
    assert "run storage" in err and "unreachable" in err and "hunter2" not in err and "user:***@" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["s.yaml"]


def test_storage_in_a_missing_folder_is_refused_not_created(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _no_training_setup(monkeypatch)
    (tmp_path / "s.yaml").write_text("name: s\n")
    missing = tmp_path / "nonexistent" / "dir"
    err = one_line_exit_2(["run", "s.yaml", "--storage", f"sqlite:///{missing}/q.db"], capsys)
    assert f"no folder {missing}" in err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["s.yaml"]
    probe_storage(f"sqlite:///{tmp_path}/mlruns/q.db")  # the default store's folder is made when missing
    assert sorted(path.name for path in tmp_path.iterdir()) == ["s.yaml"]  # by the training, not the probe
# ---------------------------------------------------------------- user models: refused before anything trains

BUILDER_SPEC = ("name: u\nrepeats: 1\nbase:\n  model: {{builder: {ref}}}\n"
                "  stages: {{train: {{pipeline: [], epochs: 1}}}}\n")


def builder_study(tmp_path, monkeypatch, source: str, function: str = "build") -> None:
    """A study whose builder file is `source` (the keras-free ones build in a child without the 10-s Keras import)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.py").write_text(source)
    (tmp_path / "s.yaml").write_text(BUILDER_SPEC.format(ref=f"net.py:{function}"))


@pytest.mark.parametrize("source, function, expected", [
    ("def build(:\n", "build", "cannot import: SyntaxError: invalid syntax (net.py, line 1)"),
    ("import os\nimport no_such_module_for_harness.layers\n", "build",
     "cannot import: ModuleNotFoundError: No module named 'no_such_module_for_harness' (net.py, line 2)"),
    ("import keras\n\ndef build(input_shape, n_classes, args, seeds):\n    pass\n", "biuld",
     "no function 'biuld' in"),
])
def test_a_builder_file_that_cannot_import_is_refused_without_building(source, function, expected, tmp_path,
                                                                       monkeypatch, capsys):
    """Read, not run: no build process starts (it imports Keras first, 14-32 s for a typo)."""
    import concurrent.futures

    builder_study(tmp_path, monkeypatch, source, function)
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", lambda *a, **k: pytest.fail("a build started"))
    err = one_line_exit_2(["preview", "s.yaml"], capsys)
    assert expected in err and f"{tmp_path / 'net.py'}:{function}" in err
    assert not (tmp_path / "reports").exists() and not (tmp_path / "mlruns").exists()


@pytest.mark.parametrize("body, expected", [
    ("    raise SystemExit(3)\n", "calls exit(3) instead of returning a model"),
    ("    os._exit(1)\n", "its build ended the process (os._exit, a signal or a crash)"),
])
def test_a_builder_that_exits_is_one_line_exit_2(body, expected, tmp_path, monkeypatch, capsys):
    """SystemExit ended the command with the builder's status and no message; os._exit broke the process pool
    with a 26-line traceback."""
    builder_study(tmp_path, monkeypatch, "import os\n\n\ndef build(input_shape, n_classes, args, seeds):\n" + body)
    err = one_line_exit_2(["preview", "s.yaml"], capsys)
    assert f"model.builder {tmp_path / 'net.py'}:build: {expected}" in err
    assert not (tmp_path / "reports").exists()


def test_a_corrupt_png_is_our_line_only(tmp_path, monkeypatch, capfd):
    """OpenCV and libpng printed their own warning lines (native stderr) before ours; the path was said twice."""
    monkeypatch.chdir(tmp_path)
    pixels = np.zeros((8, 8), np.uint8)
    for label in ("a", "b"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for index in range(3):
            cv2_write(tmp_path / "images" / label / f"{index}.png", pixels + 40 * index)
    broken = tmp_path / "images/a/0.png"
    broken.write_bytes(broken.read_bytes()[:20])
    (tmp_path / "s.yaml").write_text("name: s\ndata: {source: folder, path: images}\n")
    assert main(["preview", "s.yaml"]) == 2
    err = capfd.readouterr().err.strip()
    assert err == f"error: {broken}: not a readable image; allowed: PNG or JPG files"


def cv2_write(path, image) -> None:
    import cv2

    assert cv2.imwrite(str(path), image)


def test_one_label_is_printed_plainly(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "d.npz", images=np.zeros((30, 8, 8), np.uint8), labels=np.array(["0"] * 30))
    (tmp_path / "s.yaml").write_text("name: s\ndata: {source: npz, path: d.npz, images: images, labels: labels}\n")
    err = one_line_exit_2(["preview", "s.yaml"], capsys)
    assert "every image has label '0'; allowed: at least 2 classes" in err and "np.str_" not in err


@pytest.mark.parametrize("command, section, expected", [
    ("preview", "base: {stages: {train: {pipeline: nope}}}", "stages.train.pipeline: unknown pipeline 'nope'"),
    ("preview", "base: {stage_order: [c]}", "stage_order: unknown stage 'c'"),
    ("tune", "search: {space: {stages.train.pipeline: {type: categorical, choices: [[], nope]}}}",
     "stages.train.pipeline: unknown pipeline 'nope'"),
])
def test_a_stage_or_pipeline_reference_names_the_spec_file(command, section, expected, tmp_path, monkeypatch,
                                                           capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(f"name: s\ndata: {{n: 60}}\n{section}\n")  # 60 images: a fast load
    assert one_line_exit_2([command, "s.yaml"], capsys).startswith(f"error: s.yaml: {expected}")


def test_the_builder_check_builds_at_the_size_training_feeds(tmp_path, monkeypatch, capsys):
    """The check passed the data's size; training passes the first stage's (after upscale): a builder that reads
    `input_shape` was checked at a size it never trains at, and the new input-shape check would refuse wrongly."""
    builder_study(tmp_path, monkeypatch, "def build(input_shape, n_classes, args, seeds):\n"
                                         "    raise ValueError(f'built at {input_shape}')\n")
    spec = (tmp_path / "s.yaml").read_text().replace("pipeline: []", "pipeline: [{upscale: {factor: 2}}]")
    (tmp_path / "s.yaml").write_text(spec.replace("repeats: 1\n", "repeats: 1\ndata: {n: 200}\n"))
    assert "failed: ValueError: built at (56, 56, 1)" in one_line_exit_2(["preview", "s.yaml"], capsys)
