"""Optuna's RDB storage with each call retried when the database cut its connection mid-call, where that is safe.

`pool_pre_ping` and the connect backoff (storage.py) cover connections that are idle when a server restarts; a
call in flight at that moment (a claim, a heartbeat, a tell, the parent's status poll) fails with a disconnect
instead, and whether its transaction committed before the cut is unknown. So a call is retried only where
running it again cannot do it twice:

- reads, and writes that set a value (attributes, intermediate values, heartbeats: upserts; a param: an insert
  whose duplicate Optuna ignores), are retried as they are;
- a trial's creation (enqueue, a retry's copy, a search's ask) carries a fresh token, and a repeat first looks
  for the trial with that token in the same transaction: a run enqueued twice would be trained twice. This also
  covers Optuna's own retry of a creation whose commit failed (`RDBStorage._create_new_trial`);
- a state change checks first: a repeated tell finds the trial already in the finished state it was told and is
  done (Optuna would refuse it as an update of a finished trial); a repeated claim finds the trial RUNNING and
  reads as lost, and the trial, carrying the heartbeat its claimer sent before claiming, goes stale and is retried;
- a study's creation is repeated: a repeat of one that committed raises DuplicatedStudyError, which every caller
  here answers by loading the study (`load_if_exists`).

Everything else (deleting a study, schema upgrades) is not retried. Optuna's study object reaches this class
through `_CachedStorage`, which calls some private methods (`_create_new_trial`, `_set_trial_param`,
`_get_trials`); those are the ones wrapped, and tests/execution/test_optuna_pins.py checks that they still exist.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from harness.files import answer_lost

RECONNECT_S = 120  # a database that restarts (failover, upgrade, operator) is waited for this long
CREATION_TOKEN = "harness:creation"  # trial system attr: which creation call made the trial

# reads and writes that set a value: running one again after its commit changes nothing
RETRIED_AS_THEY_ARE = (
    "get_all_studies", "get_all_versions", "get_best_trial", "get_current_version", "get_head_version",
    "get_n_trials", "get_study_directions", "get_study_id_from_name", "get_study_name_from_id",
    "get_study_system_attrs", "get_study_user_attrs", "get_trial", "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id", "get_trial_param", "get_trial_params", "get_trial_system_attrs",
    "get_trial_user_attrs", "_get_trials", "_get_best_trial_id", "_get_stale_trial_ids",
    "set_study_user_attr", "set_study_system_attr", "set_trial_user_attr", "set_trial_system_attr",
    "set_trial_intermediate_value", "_set_trial_param", "record_heartbeat", "create_new_study",
)

Result = TypeVar("Result")


@functools.cache
def storage_class() -> type:
    """`optuna.storages.RDBStorage` with the retries above (a class made once, Optuna imported only here)."""
    import optuna
    from optuna.storages._rdb import models

    base = optuna.storages.RDBStorage

    class ReconnectingRDBStorage(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._creating: set[str] = set()  # tokens whose creation has been tried once in this process

        def _create_new_trial(self, study_id: int, template_trial: Any = None) -> Any:
            token = uuid.uuid4().hex
            template = with_token(template_trial, token)
            try:
                return retried("_create_new_trial", lambda _repeat: base._create_new_trial(self, study_id, template))
            finally:
                self._creating.discard(token)

        def _get_prepared_new_trial(self, study_id: int, template_trial: Any, session: Any) -> Any:
            """The trial a repeat of this creation already made (its commit's answer was lost), else a new one."""
            token = template_trial.system_attrs.get(CREATION_TOKEN) if template_trial is not None else None
            if token in self._creating:
                made = (session.query(models.TrialModel).join(models.TrialSystemAttributeModel)
                        .filter(models.TrialModel.study_id == study_id,
                                models.TrialSystemAttributeModel.key == CREATION_TOKEN,
                                models.TrialSystemAttributeModel.value_json == json.dumps(token))
                        .one_or_none())
                if made is not None:
                    return made
            elif token is not None:
                self._creating.add(token)  # the first try: nothing to look for (the lookup scans every trial)
            return base._get_prepared_new_trial(self, study_id, template_trial, session)

        def set_trial_state_values(self, trial_id: int, state: Any, values: Any = None) -> bool:
            return retried("set_trial_state_values", lambda repeat: set_state(self, trial_id, state, values, repeat))

    def set_state(storage: Any, trial_id: int, state: Any, values: Any, repeat: bool) -> bool:
        if repeat and state.is_finished() and base.get_trial(storage, trial_id).state == state:
            return True  # the first try committed: this is the state it was told
        return base.set_trial_state_values(storage, trial_id, state, values)

    for name in RETRIED_AS_THEY_ARE:
        setattr(ReconnectingRDBStorage, name, as_they_are(name, getattr(base, name)))
    return ReconnectingRDBStorage


def with_token(template: Any, token: str) -> Any:
    """The creation's template with a fresh token (a trial created without one is Optuna's new RUNNING trial, as
    `Study.ask` makes it). A retry's copy inherits its original's attrs, token included: it gets its own."""
    import copy

    import optuna
    from optuna.trial import TrialState

    template = optuna.trial.create_trial(state=TrialState.RUNNING) if template is None else copy.copy(template)
    template.system_attrs = {**template.system_attrs, CREATION_TOKEN: token}
    return template


def as_they_are(name: str, method: Callable[..., Result]) -> Callable[..., Result]:
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Result:
        return retried(name, lambda _repeat: method(self, *args, **kwargs))

    return call


def retried(name: str, call: Callable[[bool], Result]) -> Result:
    """`call(repeat)`, again while the database cuts its connection (for up to RECONNECT_S); `repeat` says whether
    an earlier try may have committed, so a call that is not safe to repeat can check what that try did."""
    import tenacity

    for attempt in tenacity.Retrying(retry=tenacity.retry_if_exception(is_disconnect), reraise=True,
                                     wait=tenacity.wait_exponential(multiplier=0.25, max=5),
                                     stop=tenacity.stop_after_delay(RECONNECT_S)):
        with attempt:
            result = call(attempt.retry_state.attempt_number > 1)
            if answer_lost(name):  # fault tests: the call committed and the connection dropped before its answer
                raise injected_disconnect(name)
    return result


def injected_disconnect(name: str) -> Exception:
    """What SQLAlchemy raises when the server cuts a connection (for the fault hook)."""
    from sqlalchemy.exc import OperationalError

    return OperationalError(f"-- {name}: injected by HARNESS_LOST_ANSWER_AT", None,
                            ConnectionResetError("server closed the connection unexpectedly"),
                            connection_invalidated=True)


def is_disconnect(err: BaseException | None) -> bool:
    """Whether SQLAlchemy saw the database drop the connection (Optuna wraps its errors, so follow the causes).
    Only disconnects are retried, never a bad statement or a conflict."""
    from sqlalchemy.exc import DBAPIError

    while err is not None:
        if isinstance(err, DBAPIError) and err.connection_invalidated:
            return True
        err = err.__cause__ or err.__context__
    return False
