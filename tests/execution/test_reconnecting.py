"""Run-storage calls whose connection drops after their commit (harness.files.LOST_ANSWER_AT_ENV): each is retried
only as far as doing it again is harmless; no trial is made twice, no tell fails on its own first try."""

import time

import pytest
from optuna.trial import TrialState

from harness.execution import claims, run_queue
from harness.files import LOST_ANSWER_AT_ENV
from tests.execution.queue_fakes import GROUP, fake_runs


@pytest.fixture
def lose_answer(tmp_path, monkeypatch):
    """`lose_answer(call)`: the next `call` of the run storage commits, then its connection drops (once)."""
    def lose(call: str) -> None:
        monkeypatch.setenv(LOST_ANSWER_AT_ENV, f"{call}:{tmp_path / f'{call}.fired'}")

    yield lose
    assert any(tmp_path.glob("*.fired")), "the fault never fired: the test exercised nothing"


def test_an_enqueue_whose_answer_was_lost_is_not_enqueued_twice(queue, lose_answer):
    lose_answer("_create_new_trial")
    assert queue.enqueue(fake_runs("a", "b", "c"), set()) == 3
    assert sorted(t.user_attrs["run_key"] for t in queue.trials()) == ["a", "b", "c"]  # a duplicate is trained twice


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_an_ask_whose_answer_was_lost_makes_one_trial(queue, lose_answer):
    lose_answer("_create_new_trial")
    trial = queue.study.ask()
    assert [(t.number, t.state) for t in queue.trials()] == [(trial.number, TrialState.RUNNING)]


def test_a_tell_whose_answer_was_lost_is_done_not_refused(queue, lose_answer):
    queue.enqueue(fake_runs("a"), set())
    trial = claims.claim(queue, GROUP)
    lose_answer("set_trial_state_values")
    queue.study.tell(trial, 0.9)  # its repeat finds the trial COMPLETE (Optuna refused that as a finished update)
    assert [(t.state, t.value) for t in queue.trials()] == [(TrialState.COMPLETE, 0.9)]


def test_a_claim_whose_answer_was_lost_goes_stale_and_is_claimed_again(queue, lose_answer):
    """The repeat cannot tell its own claim from another worker's: it reads as lost, and the trial, with the
    heartbeat its claimer recorded first, is retried like a dead worker's, never left RUNNING for ever."""
    queue.enqueue(fake_runs("a"), set())
    lose_answer("set_trial_state_values")
    assert claims.claim(queue, GROUP) is None
    time.sleep(run_queue.GRACE_S + 1)
    queue.fail_stale()
    again = claims.claim(queue, GROUP)
    assert again is not None and again.user_attrs["run_key"] == "a"
    assert [t.state for t in queue.trials()] == [TrialState.FAIL, TrialState.RUNNING]


@pytest.mark.parametrize("call", ["record_heartbeat", "set_trial_user_attr", "_set_trial_param"])
def test_writes_that_set_a_value_are_repeated_as_they_are(queue, lose_answer, call):
    queue.enqueue(fake_runs("a"), set())
    trial = claims.claim(queue, GROUP)
    lose_answer(call)
    queue.study._storage.record_heartbeat(trial._trial_id)
    trial.set_user_attr("note", "x")
    queue.record_levels(trial, {"seed": "s1"}, {"seed": ["s0", "s1"]})
    frozen = queue.trials()[0]
    assert frozen.user_attrs["note"] == "x" and frozen.params == {"seed": "s1"}
