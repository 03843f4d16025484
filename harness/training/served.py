"""The model `predict` registers: a seed ensemble behind MLflow's pyfunc interface, raw rows in, class names out.

A served model gets raw rows, not the preprocessed arrays its members trained on, so the pipeline's steps and
the rows' format travel with it and run on every request: a contest study's `id,letter,0..783` rows answered
with `id,digit`; an image study's `id`, side inputs and one column per pixel value answered with `id,label`
(targets.py). The K members' softmax outputs are averaged, each over the config's test-time shifts
(`evaluation.test_shifts`): one model to serve, whatever K is.
`mlflow models serve -m models:/STUDY/latest` answers a `dataframe_split` of such rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from harness.study.pipeline import Step
from harness.training import preprocess
from harness.training.data import SIDE
from harness.training.sources import DIGIT_CLASSES
from harness.training.targets import RowFormat, Target, answer, request_target

MEMBER = "member-{}.keras"  # artifact names, one per ensemble member
# what a model registered before the row format travelled with it reads: contest rows
CONTEST_ROWS = RowFormat(contest=True, classes=DIGIT_CLASSES, image_shape=(SIDE, SIDE), side={})


class Ensemble(mlflow.pyfunc.PythonModel):
    """Members are Keras models; only their files are logged, the instance holds the steps, the member count and
    the row format."""

    def __init__(self, steps: Sequence[Step], n_members: int, form: RowFormat, members: Sequence[Any] = (),
                 test_shifts: int = 0):
        self.steps, self.n_members, self.form = tuple(steps), n_members, form
        self.members, self.test_shifts = list(members), test_shifts

    def __getstate__(self) -> dict[str, Any]:  # members travel as artifacts, not in the pickle
        return {"steps": self.steps, "n_members": self.n_members, "form": self.form, "test_shifts": self.test_shifts}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.steps, self.n_members, self.members = state["steps"], state["n_members"], []
        self.form = state.get("form", CONTEST_ROWS)
        self.test_shifts = state.get("test_shifts", 0)  # registered before test-time shifts: none

    def load_context(self, context: Any) -> None:
        import keras

        self.members = [keras.saving.load_model(context.artifacts[MEMBER.format(i)], compile=False)
                        for i in range(self.n_members)]

    def probabilities(self, target: Target) -> np.ndarray:
        """Mean softmax of the members (each over its test-time shifts) on the target's images (N × classes)."""
        from harness.training.test_shifts import mean_probabilities
        from harness.training.user_model import model_inputs

        images = preprocess.apply_pipeline(target.images, self.steps)
        x = model_inputs(self.members[0], images, target.side)  # a user model may take side inputs
        return np.mean([mean_probabilities(lambda v, m=member: m.predict(v, batch_size=512, verbose=0), x,
                                           self.test_shifts) for member in self.members], axis=0)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        target = request_target(model_input, self.form)
        return answer(target, self.probabilities(target), self.form)


DigitEnsemble = Ensemble  # the name models registered before image studies could predict were pickled under
