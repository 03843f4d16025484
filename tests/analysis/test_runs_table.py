"""Runs table loading: labels stay text, status defaults, one-line errors naming file, row and column."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from harness.analysis.runs_table import RESERVED_COLUMNS, factor_columns, finished_runs, load_runs_table
from harness.errors import HarnessError


def _write(tmp: Path, text: str) -> Path:
    path = tmp / "runs.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_valid_table(tmp_path: Path) -> None:
    path = _write(tmp_path, "run_key,config_key,status,accuracy,replicate,seeds.init,preprocess.pipeline,metric.x\n"
                            "r1,c1,FINISHED,0.98,0,03,stretch→binarize,1\n"
                            "r2,c1,failed,,1,03,stretch→binarize,\n")
    df = load_runs_table(path)
    assert df["status"].tolist() == ["FINISHED", "FAILED"]
    assert df["seeds.init"].tolist() == ["03", "03"]  # labels are never re-typed
    assert factor_columns(df) == ["seeds.init", "preprocess.pipeline"]
    assert len(finished_runs(df)) == 1 and str(df["replicate"].dtype) == "Int64"
    assert "accuracy" in RESERVED_COLUMNS and "weights_hash" in RESERVED_COLUMNS


def test_status_defaults_to_finished(tmp_path: Path) -> None:
    df = load_runs_table(_write(tmp_path, "accuracy,opt\n0.5,a\n0.6,b\n"))
    assert (df["status"] == "FINISHED").all() and factor_columns(df) == ["opt"]


@pytest.mark.parametrize("text, needle", [
    ("status,accuracy\nFINISHED,1.2\n", "row 1, column 'accuracy'"),
    ("status,accuracy\nFINISHED,0.5\nFINISHED,\n", "row 2, column 'accuracy'"),
    ("status,accuracy\nFINISHED,abc\n", "row 1, column 'accuracy'"),
    ("status,accuracy\nDONE,0.5\n", "row 1, column 'status'"),
    ("loss\n0.5\n", "missing required column 'accuracy'"),
    ("run_key,accuracy\nr,0.5\nr,0.6\n", "rows 1 and 2, column 'run_key'"),
    ("accuracy,replicate\n0.5,1.5\n", "row 1, column 'replicate'"),
])
def test_errors_are_one_line_and_name_the_cell(tmp_path: Path, text: str, needle: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(HarnessError) as err:
        load_runs_table(path)
    msg = str(err.value)
    assert needle in msg and str(path) in msg and "\n" not in msg


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match="not found"):
        load_runs_table(tmp_path / "nope.csv")


def test_in_memory_frame_with_non_string_factors() -> None:
    from harness.analysis.runs_table import validate_runs_table

    df = validate_runs_table(pd.DataFrame({"accuracy": [0.5, 0.6], "seeds.init": [1, 2], "flag": [True, None]}))
    assert df["seeds.init"].tolist() == ["1", "2"] and df["flag"].tolist() == ["True", ""]
