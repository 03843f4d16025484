"""`repeats: {min, max, resolution_pp}`: a sequential plan (an integer keeps its fixed meaning); bad values are one
line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import SpecError
from harness.study.design import plan_runs
from harness.study.spec import SequentialRepeats, parse_spec


def _spec(repeats: str):
    return parse_spec(f"name: s\nrepeats: {repeats}\nfactors: {{augmentation.enabled: [false, true]}}\n",
                      Path("s.yaml"))


def test_integer_repeats_keep_their_meaning() -> None:
    spec = _spec("4")
    assert spec.repeats == 4 and spec.sequential is None and spec.planned_repeats == 4
    assert len(plan_runs(spec, "fp", 28)) == 8


def test_sequential_repeats_plan_up_to_max() -> None:
    spec = _spec("{min: 3, max: 6, resolution_pp: 1.0}")
    assert spec.sequential == SequentialRepeats(min=3, max=6, resolution_pp=1.0)
    runs = plan_runs(spec, "fp", 28)
    assert len(runs) == 12 and {r.replicate for r in runs} == set(range(6))
    by_rep = {}
    for run in runs:  # replicate r shares its seeds across levels: rounds stay paired
        by_rep.setdefault(run.replicate, set()).add(run.seed_block)
    assert all(len(blocks) == 1 for blocks in by_rep.values())


@pytest.mark.parametrize(("repeats", "message"), [
    ("{min: 5, max: 3, resolution_pp: 1}", "repeats: min (5) must be at most max (3)"),
    ("{min: 3, max: 30}", "repeats.resolution_pp: required key is missing"),
    ("{min: 3, maxx: 30, resolution_pp: 1}", "repeats.maxx: unknown key; allowed: alpha, max, min, resolution_pp"),
    ("{min: 1, resolution_pp: 1}", "repeats.min: Input should be greater than or equal to 2"),
    ("{resolution_pp: 0}", "repeats.resolution_pp: Input should be greater than 0"),
    ("0", "repeats: Input should be greater than or equal to 1"),
])
def test_bad_sequential_repeats(repeats: str, message: str) -> None:
    with pytest.raises(SpecError) as err:
        _spec(repeats)
    assert message in str(err.value) and len(str(err.value).splitlines()) == 1
