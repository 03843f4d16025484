"""Bad input answered in one line, exit 2, no traceback: cases found by the 213-case corpus, run in-process
through the CLI's `main` (no process start-up, no training)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.cli import main


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
