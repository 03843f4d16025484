"""`harness report --runs T --resolution-pp R [--max-repeats M]`: report.json["sequential"] is decide()'s answer,
and the verdict says how many seeds each level used and why it stopped. In-process through the CLI's `main`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.analysis.sequential import decide
from harness.cli import main


def _table(path: Path) -> pd.DataFrame:
    rng = np.random.default_rng(8)
    rows = []
    for r in range(4):
        noise = rng.normal(0, 0.004, 3)
        rows += [{"run_key": f"{r}a", "replicate": r, "seed_block": f"s{r}", "lr": "slow", "accuracy": 0.30 + noise[0]},
                 {"run_key": f"{r}b", "replicate": r, "seed_block": f"s{r}", "lr": "fast", "accuracy": 0.90 + noise[1]},
                 {"run_key": f"{r}c", "replicate": r, "seed_block": f"s{r}", "lr": "fastest",
                  "accuracy": 0.90 + noise[2]}]
    table = pd.DataFrame(rows)
    table.to_csv(path, index=False)
    return table


def test_report_runs_with_a_resolution(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = _table(tmp_path / "runs.csv")
    assert main(["report", "--runs", str(tmp_path / "runs.csv"), "--resolution-pp", "5", "--max-repeats", "4",
                 "--out", str(tmp_path / "r")]) == 0
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    expected = decide(table.astype({"replicate": "Int64"}), 5.0, max_repeats=4)
    assert [c["state"] for c in rep["sequential"]["comparisons"]] == [c["state"] for c in expected["comparisons"]]
    states = {(c["a"], c["b"]): c["state"] for c in rep["sequential"]["comparisons"]}
    assert states[("slow", "fast")] == "effect" and states[("fast", "fastest")] == "no_effect"
    text = capsys.readouterr().out
    assert "Sequential replication at resolution 5 pp" in text and "every comparison is settled (3 of 3)" in text
    assert "Seeds per level: lr: slow 4, fast 4, fastest 4" in text
    assert "lr slow vs fast: an effect" in text and "its interval excludes 0" in text
    assert "## Sequential decision" in (tmp_path / "r" / "report.md").read_text()


def test_report_without_a_resolution_has_no_sequential_key(tmp_path: Path) -> None:
    _table(tmp_path / "runs.csv")
    assert main(["report", "--runs", str(tmp_path / "runs.csv"), "--out", str(tmp_path / "r")]) == 0
    assert "sequential" not in json.loads((tmp_path / "r" / "report.json").read_text())


@pytest.mark.parametrize(("option", "value"), [("--max-repeats", "1"), ("--resolution-pp", "0")])
def test_bad_sequential_options(tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str) -> None:
    _table(tmp_path / "runs.csv")
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--runs", str(tmp_path / "runs.csv"), option, value, "--out", str(tmp_path / "r")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert option in err[-1] and "allowed" in err[-1]
    assert not (tmp_path / "r").exists()
