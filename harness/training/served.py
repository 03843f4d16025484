"""The model `predict` registers: a seed ensemble behind MLflow's pyfunc interface, contest rows in, digits out.

A served model gets raw rows (`id,letter,0..783`), not the preprocessed arrays its members trained on, so the
pipeline's steps travel with it and run on every request. The K members' softmax outputs are averaged: one model
to serve, whatever K is. `mlflow models serve -m models:/STUDY/latest` answers a `dataframe_split` of test rows
with `id,digit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from harness.study.pipeline import Step
from harness.training import preprocess
from harness.training.data import Dataset, contest_dataset, letter_input

MEMBER = "member-{}.keras"  # artifact names, one per ensemble member


class DigitEnsemble(mlflow.pyfunc.PythonModel):
    """Members are Keras models; only their files are logged, the instance holds the steps and the member count."""

    def __init__(self, steps: Sequence[Step], n_members: int, members: Sequence[Any] = ()):
        self.steps, self.n_members = tuple(steps), n_members
        self.members = list(members)

    def __getstate__(self) -> dict[str, Any]:
        return {"steps": self.steps, "n_members": self.n_members}  # members travel as artifacts, not in the pickle

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.steps, self.n_members, self.members = state["steps"], state["n_members"], []

    def load_context(self, context: Any) -> None:
        import keras

        self.members = [keras.saving.load_model(context.artifacts[MEMBER.format(i)], compile=False)
                        for i in range(self.n_members)]

    def probabilities(self, dataset: Dataset) -> np.ndarray:
        """Mean softmax of the members over the dataset's images (N × classes, float64)."""
        from scipy.special import softmax

        from harness.training.user_model import model_inputs

        images = preprocess.apply_pipeline(dataset.images, self.steps)
        x = model_inputs(self.members[0], images, {"letter": letter_input(dataset)})  # a user model may take the letter
        logits = [member.predict(x, batch_size=512, verbose=0).astype(np.float64) for member in self.members]
        return np.mean([softmax(z, axis=1) for z in logits], axis=0)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        dataset = contest_dataset(model_input, "request")
        return submission(dataset, self.probabilities(dataset))


def submission(dataset: Dataset, probabilities: np.ndarray) -> pd.DataFrame:
    """The contest's submission format: `id,digit`."""
    return pd.DataFrame({"id": dataset.ids, "digit": probabilities.argmax(axis=1).astype(np.int64)})
