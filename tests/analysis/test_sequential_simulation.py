"""Issue 30's Done-when, 200 simulated studies each (no TensorFlow): sequential decisions keep their error rates
under looking after every seed, where the fixed-n test does not; power and trainings for a planted 2 pp effect;
equivalence for a planted 0.2 pp. The long version: benchmarks/sequential_replication.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import sequential_simulation as sim

STUDIES = 200


@pytest.mark.parametrize("paired", [False, True])
def test_decide_stops_where_the_simulation_stops(paired: bool) -> None:
    rng = np.random.default_rng(30)
    for shift, sd in ((0.0, 0.01), (0.02, 0.01), (0.002, 0.005)):
        a, b = sim.draw(rng, 3, shift, sd, 30)
        r = sim.sequential(a, b, 0.01, 3, paired)
        for i in range(3):
            assert sim.decide_stop(a[i], b[i], 0.01, 3, paired) == (r["state"][i], r["n"][i])


def test_null_with_peeking_after_every_seed() -> None:
    a, b = sim.draw(np.random.default_rng(31), STUDIES, 0.0, 0.01, 30)
    r = sim.sequential(a, b, 0.01, 3)
    assert (r["state"] == "effect").mean() <= 0.05
    assert sim.fixed_peeking(a, b, 3).mean() > 0.10  # 0.26 at 10,000 studies: the fixed-n test, peeked at


def test_planted_two_pp_power_and_trainings() -> None:
    a, b = sim.draw(np.random.default_rng(32), STUDIES, 0.02, 0.01, 30)
    r = sim.sequential(a, b, 0.01, 3)
    power = ((r["state"] == "effect") & (r["sign"] > 0)).mean()
    assert power >= 0.8
    same_power = sim.fixed_n_for_power(0.02, 0.01, min(power, 0.999))
    assert 2 * r["n"].mean() <= 0.8 * 2 * same_power


def test_planted_small_difference_is_no_effect_beyond_the_resolution() -> None:
    a, b = sim.draw(np.random.default_rng(33), STUDIES, 0.002, 0.005, 60)
    r = sim.sequential(a, b, 0.01, 3)
    assert (r["state"] == "no_effect").mean() >= 0.9
    assert ((r["state"] == "effect") & (r["sign"] < 0)).mean() <= 0.05  # the wrong sign: the error
    assert (r["state"] == "effect").mean() <= 0.1  # the right sign: the planted 0.2 pp found, not an error
