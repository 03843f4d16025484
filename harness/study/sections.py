"""Spec sections for what a study trains on and how: the model (built-in CNN or the user's builder), the data, and
the per-process and execution settings that change a run's kernels.

Kept apart from `spec` so each module stays short; `spec` re-exports them. Options that belong to another data
source are refused with the key path (a `folder` study with `labels:` is a mistake, not a no-op).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_SEED = 2**31 - 1  # numpy and TensorFlow take 32-bit seeds
BUILDER_PATTERN = r"^[^:]+:[A-Za-z_][A-Za-z0-9_]*$"  # file.py:function or package.module:function


class Strict(BaseModel):
    """Base for every spec section: unknown keys are errors and objects are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(Strict):
    """The built-in CNN's settings, or `builder` (the user's Keras model) with its `args`."""

    filters: int = Field(16, ge=1, le=512)
    depth: int = Field(2, ge=1, le=5)
    kernel_size: int = Field(3, ge=1, le=7)
    dense_units: int = Field(64, ge=1, le=4096)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    batch_norm: bool = False  # measured: with batch 32-64 on ~2k images it learns slower and noisier
    head: Literal["flatten", "global_pool"] = "flatten"
    # `models.py:resnet_small` (a file, relative to the spec) or `package.module:function`; called as
    # builder(input_shape, n_classes, args, seeds) and returning a Keras 3 model
    builder: str | None = Field(None, pattern=BUILDER_PATTERN)
    args: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _args_need_builder(self) -> ModelConfig:
        if self.args and self.builder is None:
            raise ValueError("'args' are passed to a 'builder'; the built-in CNN takes filters, depth, ... instead")
        return self


SOURCE_OPTIONS = {
    "synthetic": {"n", "seed"},
    "digits": {"resize", "interpolation"},  # scikit-learn's bundled 8x8 digits: real handwriting, no file, no download
    "csv": {"path", "label", "image_column", "side_inputs", "color", "resize", "interpolation"},
    "folder": {"path", "color", "resize", "interpolation"},
    "npz": {"path", "images", "labels", "resize", "interpolation"},
}


class DataConfig(Strict):
    """Where the images come from. csv without `label` is the contest format (id, digit, letter, 784 pixels)."""

    source: Literal["synthetic", "digits", "csv", "folder", "npz"] = "synthetic"
    n: int = Field(2000, ge=50, le=200_000)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    path: Path | None = None
    color: Literal["grayscale", "rgb"] = "grayscale"  # folder and csv image paths: how images are read
    resize: int | None = Field(None, ge=4, le=224)  # every image to resize×resize px (needed for mixed sizes)
    interpolation: Literal["area", "linear", "cubic", "nearest"] = "area"  # the named resize's OpenCV method
    images: str | None = None  # npz: name of the image array (N, H, W) or (N, H, W, 1|3)
    labels: str | None = None  # npz: name of the label array (N,)
    label: str | None = None  # csv: the label column (makes a csv generic instead of the contest format)
    image_column: str | None = None  # csv: a column of image paths (relative to the csv) instead of pixel columns
    side_inputs: list[str] = Field(default_factory=list)  # csv: columns fed to the model as named extra inputs

    @model_validator(mode="after")
    def _options_fit_source(self) -> DataConfig:
        allowed = SOURCE_OPTIONS[self.source]
        # options that differ from their defaults (a dumped and re-read spec sets every key, to its default)
        given = {key for key, field in type(self).model_fields.items()
                 if getattr(self, key) != field.get_default(call_default_factory=True)}
        for key in sorted(given - allowed - {"source"}):
            raise ValueError(f"'{key}' is not used by source '{self.source}'; allowed: {', '.join(sorted(allowed))}")
        if self.source not in ("synthetic", "digits") and self.path is None:
            raise ValueError(f"source '{self.source}' needs 'path' ({PATH_HELP[self.source]})")
        if self.source == "npz" and (self.images is None or self.labels is None):
            raise ValueError("source 'npz' needs 'images' and 'labels' (the names of its arrays)")
        if self.source == "csv" and self.label is None:
            for key in ("image_column", "side_inputs", "color", "resize", "interpolation"):
                if key in given:
                    raise ValueError(f"'{key}' needs 'label' (a generic csv); the contest csv has fixed columns")
        if self.image_column is None and self.color == "rgb" and self.source == "csv":
            raise ValueError("pixel columns are grayscale; 'color: rgb' needs 'image_column'")
        return self


PATH_HELP = {
    "csv": "a contest train.csv(.gz), or a csv with 'label' and pixel or image-path columns",
    "folder": "a folder with one subfolder of PNG/JPG images per class",
    "npz": "an .npz archive",
}


class DeterminismConfig(Strict):
    """Switches a backend fixes per process (all but `xla`): a change here starts a separate training process.

    op_determinism: TF `enable_op_determinism`; jax `--xla_gpu_deterministic_ops`; torch
    `use_deterministic_algorithms` + cudnn.deterministic. env_flags: TF_DETERMINISTIC_OPS/TF_CUDNN_DETERMINISTIC
    (TF), CUBLAS_WORKSPACE_CONFIG (torch). tf32: TensorFloat-32 matmuls on Ampere+ GPUs (no effect on CPUs).
    """

    op_determinism: bool = True
    env_flags: bool = True
    intra_op_threads: int = Field(0, ge=0, le=256)
    inter_op_threads: int = Field(0, ge=0, le=256)
    xla: bool = False
    tf32: bool = False


class ExecutionConfig(Strict):
    """How a run's steps are executed, where that changes its kernels and so its weights.

    batch_seeds: K > 1 trains K replicates of one configuration (runs that differ only in their seeds) in one
    compiled step on the jax backend (harness.training.seed_batch). Its own determinism setting: reproducible,
    but not bit-identical to the same run trained alone.
    """

    batch_seeds: int = Field(1, ge=1, le=256)
