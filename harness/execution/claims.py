"""Claims on the run queue: a worker takes WAITING trials of its process group, one at a time or a seed batch.

Each take is the queue's atomic WAITING → RUNNING transition (`RunQueue.take`, Optuna's own, the one `Study.ask`
uses), so two workers never take the same trial, on one machine or many; this module decides which to try.
"""

from __future__ import annotations

import os
from typing import Any

from harness.execution.run_queue import BATCH_KEY, RunQueue


def claim(queue: RunQueue, process_key: list[Any]) -> Any | None:
    """Take one WAITING trial of this process group, atomically; None when there is none."""
    return Claimer(queue, process_key).claim()


STALE_MISSES = 3  # each miss reads the whole trial back; 100 workers on stale copies of 2,000 stalled a study


class Claimer:
    """A worker's claims: WAITING trials of one process group, taken atomically, listed only when its copy runs out.

    Listing the waiting trials loads every one of them (about 1 s for 2,000 on SQLite, measured by
    benchmarks/sim_queue.py); listing once per claim made every claim O(trials). A worker keeps its copy of the
    list, tries the entries in its own random order (so N workers do not all race for the first one), and lists
    again when the copy is used up or has gone stale. An entry another worker took meanwhile just fails the atomic
    WAITING → RUNNING transition (Optuna's own, the one `Study.ask` uses).
    """

    def __init__(self, queue: RunQueue, process_key: list[Any]) -> None:
        import random

        self.queue, self.process_key = queue, list(process_key)
        self.candidates: list[int] = []
        self._batch_keys: dict[int, str | None] = {}
        self.order = random.Random(os.getpid())

    def claim(self) -> Any | None:
        misses = 0
        while self.candidates or self._list_waiting():
            trial = self.queue.take(self.candidates.pop())
            if trial is not None:
                return trial
            misses += 1
            if misses == STALE_MISSES:  # the copy has gone stale (others took its entries): list again
                self.candidates, misses = [], 0
        return None

    def claim_companions(self, trial: Any, count: int) -> list[Any]:
        """Up to `count` more WAITING trials of the claimed trial's seed batch (its BATCH_KEY), each taken
        atomically: what a seed-batched worker trains together with `trial`."""
        key = trial.user_attrs.get(BATCH_KEY)
        if key is None or count < 1:
            return []
        same_batch = [trial_id for trial_id in self._waiting_ids() if self._batch_keys.get(trial_id) == key]
        taken = []
        for trial_id in same_batch:
            if len(taken) == count:
                break
            if (companion := self.queue.take(trial_id)) is not None:
                taken.append(companion)
        self.candidates = [trial_id for trial_id in self.candidates if trial_id not in same_batch]
        return taken

    def _list_waiting(self) -> bool:
        self.candidates = self._waiting_ids()
        self.order.shuffle(self.candidates)
        return bool(self.candidates)

    def _waiting_ids(self) -> list[int]:
        """This group's WAITING trials (storage ids), remembering each one's seed-batch key."""
        self._batch_keys = self.queue.waiting(self.process_key)
        return list(self._batch_keys)
