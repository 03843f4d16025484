"""The real contest data, when ../shared/data/dacon2020 is present (skipped cleanly otherwise)."""

import pytest

from harness.execution.prepared import prepare
from harness.study.spec import load_spec
from tests.conftest import REPO


def test_dacon_study_plans_on_the_real_file(real_train_csv):
    study = prepare(load_spec(REPO / "studies" / "dacon.yaml"))
    assert study.spec.data.path.resolve() == real_train_csv.resolve()
    assert study.data.images.shape == (1537, 28, 28)
    assert len(study.runs) == 30  # 5 folds x 2 lengths x 3 seeds


@pytest.mark.slow
def test_one_training_on_the_real_file(real_train_csv, tmp_path, cli):
    (tmp_path / "real.yaml").write_text(
        f"name: real\nrepeats: 1\ndata: {{source: csv, path: {real_train_csv}}}\n"
        "base: {model: {filters: 8, depth: 1, dense_units: 16}, stages: {train: {pipeline: [], epochs: 1}}}\n"
    )
    done = cli("run", "real.yaml", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1/1 runs finished" in done.stdout
