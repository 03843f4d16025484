"""Test-time shifts: a model's answer averaged over its image moved by whole pixels.

A digit drawn a pixel off is the same digit. A network trained with shift augmentation still answers each
position a little differently, and averaging its softmax over the image and its shifts by up to `n` px in x
and in y ((2n+1)² views, the uncovered edge filled with 0, as the shift augmentation fills it) steadies the
answer. `evaluation.test_shifts` sets `n` for a run: its validation images are scored this way, and `predict`
answers the same way, so a study's cross-validated accuracy measures what predict serves. Whole pixels, not
sub-pixel warps: interpolation blurs the digit's bright strokes into the letter's gray (docs/findings.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import softmax

from harness.training.user_model import IMAGE_INPUT


def offsets(n: int) -> list[tuple[int, int]]:
    """The (dy, dx) of every view, the unshifted image first."""
    return [(0, 0)] + [(dy, dx) for dy in range(-n, n + 1) for dx in range(-n, n + 1) if (dy, dx) != (0, 0)]


def shifted(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """N×H×W(×C) images moved down by dy and right by dx pixels (negative: up, left), zero-filled."""
    out = np.zeros_like(images)
    height, width = images.shape[1:3]
    rows_to, rows_from = slice(max(dy, 0), height + min(dy, 0)), slice(max(-dy, 0), height + min(-dy, 0))
    cols_to, cols_from = slice(max(dx, 0), width + min(dx, 0)), slice(max(-dx, 0), width + min(-dx, 0))
    out[:, rows_to, cols_to] = images[:, rows_from, cols_from]
    return out


def _with_images(x: Any, images: np.ndarray) -> Any:
    return {**x, IMAGE_INPUT: images} if isinstance(x, dict) else images


def mean_probabilities(logits_of: Callable[[Any], np.ndarray], x: Any, n: int) -> np.ndarray:
    """Mean softmax (N × classes, float64) of `logits_of` over the `(2n+1)²` shifted views of x's images.
    x is what the model takes: the image array, or a dict of inputs whose `image` entry is shifted."""
    images = x[IMAGE_INPUT] if isinstance(x, dict) else x
    views = [logits_of(_with_images(x, shifted(images, dy, dx))) for dy, dx in offsets(n)]
    return np.mean([softmax(np.asarray(v, dtype=np.float64), axis=1) for v in views], axis=0)


def averaged_logits(logits_of: Callable[[Any], np.ndarray], x: Any, n: int) -> np.ndarray:
    """Logits whose softmax is the shifted views' mean softmax (n = 0: the model's own logits), so the argmax,
    accuracy and loss of a run read them as they read plain logits."""
    if n == 0:
        return logits_of(x)
    return np.log(np.maximum(mean_probabilities(logits_of, x, n), 1e-300)).astype(np.float32)  # log p: softmax → p
