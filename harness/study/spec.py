"""Study spec: YAML on disk → a validated, frozen `StudySpec`.

Validation happens once, here, at the edge. Everything downstream receives typed objects, never raw dicts.
An unknown key or value is refused with the key's path and what is allowed (a `SpecError`, one line).
YAML is read with `yaml.safe_load`; nothing in a spec is evaluated as code.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from harness.errors import SpecError
from harness.study.sections import MAX_SEED, DataConfig, DeterminismConfig, ExecutionConfig, ModelConfig, Strict

SeedSource = Literal["init", "order", "augment", "dropout", "split"]
SEED_SOURCES: tuple[str, ...] = typing.get_args(SeedSource)
class AugmentationConfig(Strict):
    enabled: bool = False
    rotation: float = Field(0.05, ge=0.0, le=0.5)
    translation: float = Field(0.08, ge=0.0, le=0.5)
    zoom: float = Field(0.08, ge=0.0, le=0.5)


class TrainingConfig(Strict):
    batch_size: int = Field(64, ge=1, le=4096)
    learning_rate: float = Field(1e-3, gt=0.0)
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    # cosine: the learning rate decays from `learning_rate` to 0 over all stages' epochs (one schedule per run; a
    # stage that stops on a plateau counts its `max`, so stopping early leaves the rate above 0)
    schedule: Literal["constant", "cosine"] = "constant"
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    # mixed precision only speeds up GPUs with tensor cores; on a CPU it is recorded but slower
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"


class SeedsConfig(Strict):
    """One seed per source of randomness. Sources listed in `fresh` get a new seed for every replicate,
    derived from their value and the replicate index; the others keep their value across replicates."""

    init: int = Field(0, ge=0, le=MAX_SEED)
    order: int = Field(0, ge=0, le=MAX_SEED)
    augment: int = Field(0, ge=0, le=MAX_SEED)
    dropout: int = Field(0, ge=0, le=MAX_SEED)
    split: int = Field(0, ge=0, le=MAX_SEED)
    fresh: list[SeedSource] = Field(default_factory=lambda: ["init", "order", "augment", "dropout"])


class EvaluationConfig(Strict):
    """How a run measures itself. `all` trains on every row and measures nothing: what `predict` fits (a study's
    runs are refused with it, since they exist to measure)."""

    method: Literal["holdout", "kfold", "all"] = "holdout"
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    k: int = Field(5, ge=2, le=50)
    fold: int = Field(0, ge=0)
    # score (and predict) by the mean softmax over the image shifted by up to N whole pixels in x and y
    # ((2N+1)² views; harness.training.test_shifts); 0: the image alone
    test_shifts: int = Field(0, ge=0, le=3)

    @model_validator(mode="after")
    def _fold_in_range(self) -> EvaluationConfig:
        if self.method == "kfold" and self.fold >= self.k:
            raise ValueError(f"fold must be in 0..{self.k - 1} for k={self.k}")
        return self


class Plateau(Strict):
    """A stage that ends when a training metric stops improving: `patience` epochs in a row without a gain larger
    than `min_delta`, or at `max` epochs (`keras.callbacks.EarlyStopping`, harness.training.train).

    The criterion reads the training loss or accuracy (Keras's mean over the epoch's training batches) and never
    the images the run is scored on: a stop chosen where the scored fold looks best is chosen by the score itself
    and biases it upward (docs/methods.md). Training loss is also all that `predict`'s fit on every row has, so a
    stage ends by one rule in a study's folds and in the final model. The same config stops at the same epoch.
    """

    until: Literal["plateau"]
    max: int = Field(ge=2, le=1000)  # what a cosine schedule spans, whether or not the stage stops before
    patience: int = Field(ge=1, le=999)
    monitor: Literal["loss", "accuracy"] = "loss"  # the training metric; no `val_*`: that is the scored fold
    min_delta: float = Field(0.0, ge=0.0, le=1.0)  # a smaller change does not count as an improvement

    @model_validator(mode="after")
    def _can_stop_before_max(self) -> Plateau:
        if self.patience >= self.max:
            raise ValueError(f"patience ({self.patience}) must be below max ({self.max}), or the stage could never "
                             "stop on a plateau; for a fixed count write `epochs: N`")
        return self


def _epochs_kind(value: Any) -> str:
    return "criterion" if isinstance(value, dict | Plateau) else "count"


# a stage's epochs: a fixed count, or {until: plateau, max, patience, ...}
Epochs = Annotated[Annotated[Annotated[int, Field(ge=1, le=1000)], Tag("count")]
                   | Annotated[Plateau, Tag("criterion")], Discriminator(_epochs_kind)]


class StageDef(Strict):
    pipeline: str | list[Any] = Field(default_factory=list)
    epochs: Epochs = 3

    @field_validator("epochs", mode="before")
    @classmethod
    def _count_or_criterion(cls, value: Any) -> Any:
        if isinstance(value, str):  # `epochs: plateau` would otherwise read "not a valid integer"
            raise ValueError("a number of epochs, or a criterion like {until: plateau, max: 300, patience: 15}")
        return value


class RunConfig(Strict):
    """One training's configuration before references (pipeline and stage names) are resolved."""

    backend: Literal["tensorflow", "jax", "torch"] = "tensorflow"
    model: ModelConfig = ModelConfig()
    augmentation: AugmentationConfig = AugmentationConfig()
    training: TrainingConfig = TrainingConfig()
    seeds: SeedsConfig = SeedsConfig()
    determinism: DeterminismConfig = DeterminismConfig()
    execution: ExecutionConfig = ExecutionConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    pipelines: dict[str, list[Any]] = Field(default_factory=dict)
    stages: dict[str, StageDef] = Field(default_factory=lambda: {"train": StageDef()})
    stage_order: list[str] = Field(default_factory=lambda: ["train"], min_length=1)

    @model_validator(mode="after")
    def _augmentation_is_built_in(self) -> RunConfig:
        if self.model.builder and self.augmentation.enabled:
            raise ValueError("augmentation belongs to the built-in CNN; a builder adds its own augmentation layers "
                             "(seeded with seeds.augment())")
        return self

    @model_validator(mode="after")
    def _seed_batches_on_jax(self) -> RunConfig:
        if self.execution.batch_seeds > 1 and self.backend != "jax":
            raise ValueError(f"execution.batch_seeds > 1 trains on the jax backend; allowed with backend "
                             f"'{self.backend}': 1")
        if self.execution.batch_seeds > 1 and self.training.precision != "float32":
            raise ValueError("execution.batch_seeds > 1 trains in float32; allowed with mixed precision: 1")
        plateaus = [name for name in self.stage_order
                    if name in self.stages and isinstance(self.stages[name].epochs, Plateau)]
        if self.execution.batch_seeds > 1 and plateaus:
            raise ValueError(f"execution.batch_seeds > 1 trains a batch's seeds for the same epochs; allowed with a "
                             f"stage that stops on a plateau (stages.{plateaus[0]}.epochs): 1")
        if self.execution.batch_seeds > 1 and self.evaluation.test_shifts:
            raise ValueError("execution.batch_seeds > 1 scores each lane's images unshifted; allowed with "
                             "evaluation.test_shifts > 0: 1")
        return self


class TrackingConfig(Strict):
    uri: str | None = None


class ParamSpace(Strict):
    """One searched setting: a float or int range (optionally log-scaled) or a list of choices."""

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = Field(None, gt=0)
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _complete(self) -> ParamSpace:
        if self.type == "categorical":
            if not self.choices or len({repr(c) for c in self.choices}) < 2:
                raise ValueError("categorical needs 'choices' with at least 2 distinct values")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"{self.type} needs 'low' < 'high'")
        elif self.log and self.low <= 0:
            raise ValueError("log scale needs 'low' > 0")
        return self


class SequentialRepeats(Strict):
    """Seeds in rounds until every comparison is settled (harness.analysis.sequential.decide): `min` seeds per design
    point first, then more only for the levels of comparisons still open, up to `max`. A comparison is settled as an
    effect (its anytime-valid interval excludes 0) or as no effect larger than `resolution_pp`."""

    min: int = Field(3, ge=2, le=1000)  # 2 is the fewest with a spread; 3 lets the report test a level
    max: int = Field(30, ge=2, le=1000)
    resolution_pp: float = Field(gt=0.0, le=100.0)
    alpha: float = Field(0.05, gt=0.0, lt=0.5)

    @model_validator(mode="after")
    def _min_below_max(self) -> SequentialRepeats:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be at most max ({self.max})")
        return self


def _repeats_kind(value: Any) -> str:
    return "sequential" if isinstance(value, dict | SequentialRepeats) else "count"


# tags of the `repeats` and `epochs` unions: not keys a user writes, left out of error paths
UNION_TAGS = ("count", "sequential", "criterion")
Repeats = Annotated[Annotated[Annotated[int, Field(ge=1, le=1000)], Tag("count")]
                    | Annotated[SequentialRepeats, Tag("sequential")], Discriminator(_repeats_kind)]
ReevalRepeats = Annotated[Annotated[Annotated[int, Field(ge=2, le=200)], Tag("count")]
                          | Annotated[SequentialRepeats, Tag("sequential")], Discriminator(_repeats_kind)]


class SearchConfig(Strict):
    """`harness tune`: what to search, how, and how to re-check the winners against seed noise."""

    space: dict[str, ParamSpace] = Field(min_length=1)
    n_trials: int = Field(30, ge=1, le=10_000)
    timeout_s: float | None = Field(None, gt=0)
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    # no trial is pruned before this many epochs (default: a third of the planned epochs): early accuracies,
    # at the start of a schedule, rank configurations by how fast they start, not where they end
    warmup_epochs: int | None = Field(None, ge=1, le=1000)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    top_k: int = Field(3, ge=2, le=20)  # configurations re-run with fresh seeds after the search
    # fresh seeds per re-run configuration; {min, max, resolution_pp}: in rounds until the top-k comparisons settle
    reeval_repeats: ReevalRepeats = 5


class StudySpec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)
    description: str = ""
    data: DataConfig = DataConfig()
    design: Literal["factorial", "one_at_a_time", "listed"] = "factorial"
    # design `listed`: named configurations, each a mapping of dotted keys to values (e.g. tune's top-k)
    points: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # replicates per design point; 3 is the fewest that lets the report test a level (and judge seed noise);
    # {min, max, resolution_pp}: seeds in rounds until the answer is known (SequentialRepeats)
    repeats: Repeats = 3
    factors: dict[str, list[Any]] = Field(default_factory=dict)
    base: RunConfig = RunConfig()
    tracking: TrackingConfig = TrackingConfig()
    # gpu: refuse to start where the study's backends see no GPU; cpu: hide GPUs from its training processes
    device: Literal["any", "cpu", "gpu"] = "any"
    search: SearchConfig | None = None
    _source_path: Path | None = PrivateAttr(None)
    _source_text: str = PrivateAttr("")

    @property
    def sequential(self) -> SequentialRepeats | None:
        """The sequential plan when `repeats` is one, else None (a fixed number of replicates)."""
        return self.repeats if isinstance(self.repeats, SequentialRepeats) else None

    @property
    def planned_repeats(self) -> int:
        """Replicates per design point the plan holds: `repeats`, or a sequential plan's `max` (the runner trains
        `min` of them first and more only where a comparison is open)."""
        return self.repeats.max if isinstance(self.repeats, SequentialRepeats) else self.repeats

    @property
    def source_path(self) -> Path | None:
        """The file this spec came from (relative paths in it resolve against its folder)."""
        return self._source_path

    @property
    def source_text(self) -> str:
        """The spec's exact YAML text, stored with every run."""
        return self._source_text

    @field_validator("factors")
    @classmethod
    def _factors_have_values(cls, factors: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in factors.items():
            if not values:
                raise ValueError(f"factor '{key}' needs at least one value")
            if len({repr(value) for value in values}) < len(values):
                raise ValueError(f"factor '{key}' lists a value twice; use 'repeats' for replicates")
        return factors


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study file; relative data paths resolve against the file's folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: cannot read: {err}") from None
    return parse_spec(text, path)


def parse_spec(text: str, path: Path) -> StudySpec:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(f"{path}:{where}: invalid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a study must be a YAML mapping with at least 'name'")
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as err:
        raise SpecError(f"{path}: {describe_validation_error(err, StudySpec)}") from None
    data = spec.data
    if data.path is not None and not data.path.is_absolute():
        data = data.model_copy(update={"path": (path.parent / data.path).resolve()})
    spec = resolve_builders(spec.model_copy(update={"data": data}), path.parent)
    spec._source_path, spec._source_text = path, text
    return spec


def resolve_builders(spec: StudySpec, folder: Path) -> StudySpec:
    """Builder files named relative to the spec (base, factors, points) → absolute paths; modules stay as given."""

    def absolute(ref: Any) -> Any:
        if not isinstance(ref, str) or ".py:" not in ref:
            return ref
        file, function = ref.rsplit(":", 1)
        return ref if Path(file).is_absolute() else f"{(folder / file).resolve()}:{function}"

    model = spec.base.model.model_copy(update={"builder": absolute(spec.base.model.builder)})
    factors = {key: [absolute(v) for v in values] if key == "model.builder" else values
               for key, values in spec.factors.items()}
    points = {name: {key: absolute(v) if key == "model.builder" else v for key, v in point.items()}
              for name, point in spec.points.items()}
    return spec.model_copy(update={"base": spec.base.model_copy(update={"model": model}), "factors": factors,
                                   "points": points})


def describe_validation_error(err: ValidationError, model: type[BaseModel], prefix: str = "") -> str:
    """Pydantic's first error as one line: the dotted key path, the problem and what is allowed. An unknown key
    goes first: a misspelt required key (`paitence`) is also reported missing, and the typo is the news."""
    errors = err.errors()
    first = next((error for error in errors if error["type"] == "extra_forbidden"), errors[0])
    loc = [str(part) for part in first["loc"] if part not in UNION_TAGS]
    key = ".".join([prefix, *loc] if prefix else loc) or "(top level)"
    if first["type"] == "extra_forbidden":
        allowed = ", ".join(allowed_keys(model, loc[:-1])) or "none"
        return f"{key}: unknown key; allowed: {allowed}"
    if first["type"] == "missing":
        return f"{key}: required key is missing"
    message = first["msg"].removeprefix("Value error, ")
    return f"{key}: {message} (got {first.get('input')!r})"


def allowed_keys(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The field names valid at a key path, found by walking the models' annotations."""
    current: Any = model
    for part in loc:
        current = _field_model(current, part)
        if current is None:
            return []
    return sorted(current.model_fields) if _is_model(current) else []


def _field_model(current: Any, part: str) -> Any:
    if _is_model(current):
        field = current.model_fields.get(part)
        return _unwrap(field.annotation) if field else None
    origin = typing.get_origin(current)
    if origin in (dict, list):
        return _unwrap(typing.get_args(current)[-1])
    return None


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Union down to the one model or container inside, if any."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            while typing.get_origin(arg) is typing.Annotated:
                arg = typing.get_args(arg)[0]
            if _is_model(arg) or typing.get_origin(arg) in (dict, list):
                return arg
    return annotation


def _is_model(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseModel)
