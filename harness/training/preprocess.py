"""Image preprocessing: run a parsed pipeline (`harness.study.pipeline`) with OpenCV, cache its output on disk.

Steps take uint8 (N, H, W) batches; `apply_pipeline` always returns float32
in [0, 1]. Per-image cv2 calls are exact and take ~10 ms per 2,000 images, so no multi-channel batching tricks
(OpenCV 5 allows only 128 channels and its cubic resize differs by 1 between channel counts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from harness.files import atomic_output
from harness.study.pipeline import Step, output_size, pipeline_key

# ---------------------------------------------------------------- step implementations (uint8 batch in and out)


def _each(images: np.ndarray, function: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply a per-image cv2 call to every image of the batch."""
    if len(images) == 0:
        return images
    first = function(images[0])
    out = np.empty((len(images), *first.shape), first.dtype)
    out[0] = first
    for index in range(1, len(images)):
        out[index] = function(images[index])
    return out


_INTERPOLATIONS = {
    "linear": cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}
_MORPH_OPS = {"open": cv2.MORPH_OPEN, "close": cv2.MORPH_CLOSE}


def _upscale(images: np.ndarray, factor: int, interpolation: str) -> np.ndarray:
    side = (images.shape[2] * factor, images.shape[1] * factor)
    return _each(images, lambda image: cv2.resize(image, side, interpolation=_INTERPOLATIONS[interpolation]))


def _clahe(images: np.ndarray, clip_limit: float, tile: int) -> np.ndarray:
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tile, tile))
    return _each(images, clahe.apply)


def _stretch(images: np.ndarray, low_percentile: float, high_percentile: float) -> np.ndarray:
    """Map each image's [low, high] percentile range linearly onto 0..255 (flat images stay as they are).

    The float64 formula is evaluated once per (image, grey level) into a 256-entry table that cv2.LUT applies:
    the same output as evaluating it per pixel, without 8-byte copies of the whole batch (4.8x faster measured).
    """
    if len(images) == 0:
        return images.copy()
    flat = images.reshape(len(images), -1)
    if low_percentile == 0.0 and high_percentile == 100.0:  # min/max: same numbers, no sort
        low, high = flat.min(axis=1).astype(np.float64), flat.max(axis=1).astype(np.float64)
    else:
        low, high = np.percentile(flat, [low_percentile, high_percentile], axis=1)
    span = high - low
    flat_image = span <= 0
    levels = np.arange(256, dtype=np.float64)[None, :]
    tables = (levels - low[:, None]) * (255.0 / np.where(flat_image, 1.0, span))[:, None]
    tables = np.clip(np.rint(tables), 0, 255).astype(np.uint8)
    tables[flat_image] = np.arange(256, dtype=np.uint8)
    out = np.empty_like(images)
    for index in range(len(images)):  # one cv2 call per image, as `_each` does for the other steps
        out[index] = cv2.LUT(images[index], tables[index])
    return out


def _binarize(images: np.ndarray, method: str, threshold: int, block_size: int, c: float) -> np.ndarray:
    """0/255 output; 'fixed' keeps pixels strictly above the threshold, like cv2.THRESH_BINARY."""
    if method == "fixed":
        return np.where(images > threshold, np.uint8(255), np.uint8(0))
    if method == "otsu":
        return _each(images, lambda image: cv2.threshold(image, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[1])
    return _each(
        images,
        lambda image: cv2.adaptiveThreshold(
            image, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, block_size, c
        ),
    )


def _morphology(name: str) -> Callable[..., np.ndarray]:
    def run(images: np.ndarray, kernel: int, iterations: int) -> np.ndarray:
        structure = np.ones((kernel, kernel), np.uint8)
        if name == "erode":
            return _each(images, lambda image: cv2.erode(image, structure, iterations=iterations))
        if name == "dilate":
            return _each(images, lambda image: cv2.dilate(image, structure, iterations=iterations))
        return _each(images, lambda image: cv2.morphologyEx(image, _MORPH_OPS[name], structure, iterations=iterations))

    return run


_IMPLEMENTATIONS: dict[str, Callable[..., np.ndarray]] = {
    "upscale": _upscale,
    "equalize": lambda images: _each(images, cv2.equalizeHist),
    "clahe": _clahe,
    "stretch": _stretch,
    "binarize": _binarize,
    "erode": _morphology("erode"),
    "dilate": _morphology("dilate"),
    "open": _morphology("open"),
    "close": _morphology("close"),
}


def apply_step(images: np.ndarray, step: Step) -> np.ndarray:
    """One step on a uint8 (N, H, W) batch, or (N, H, W, C) channel by channel; 'normalize' returns float32."""
    if images.ndim == 4 and step.name != "normalize":
        channels = [apply_step(np.ascontiguousarray(images[..., c]), step) for c in range(images.shape[3])]
        return np.stack(channels, axis=-1)
    if step.name == "normalize":
        return images.astype(np.float32) / np.float32(255.0)
    return _IMPLEMENTATIONS[step.name](images, **dict(step.params))


CHUNK = 256  # images per pass through all steps: a chunk's intermediates stay in CPU cache


def apply_pipeline(images: np.ndarray, steps: Sequence[Step]) -> np.ndarray:
    """Run the steps on uint8 (N, H, W) or (N, H, W, C) images and return float32 (N, H', W'[, C]) in [0, 1].

    Every step works image by image, so running the whole pipeline chunk by chunk gives the same result while
    never materialising a whole-batch intermediate (22,528 images at 84 px are 159 MB per uint8 copy).
    """
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"images must be uint8 (N, H, W) or (N, H, W, C), got {images.dtype} {images.shape}")
    first = _apply_chunk(np.ascontiguousarray(images[:CHUNK]), steps)
    out = np.empty((len(images), *first.shape[1:]), np.float32)
    out[: len(first)] = first
    for start in range(CHUNK, len(images), CHUNK):
        out[start : start + CHUNK] = _apply_chunk(np.ascontiguousarray(images[start : start + CHUNK]), steps)
    return out


def _apply_chunk(images: np.ndarray, steps: Sequence[Step]) -> np.ndarray:
    current = images
    for step in steps:
        current = apply_step(current, step)
    if current.dtype == np.uint8:
        current = current.astype(np.float32) / np.float32(255.0)
    return current


# ---------------------------------------------------------------- disk cache


def cache_path(data_fingerprint: str, steps: Sequence[Step], cache_dir: Path) -> Path:
    """Where the preprocessed array for this data and pipeline lives (OpenCV's version is part of the key)."""
    key = hashlib.sha256(f"{data_fingerprint}|{pipeline_key(steps)}|cv2={cv2.__version__}".encode()).hexdigest()
    return Path(cache_dir) / f"{key[:32]}.npy"


def _load(path: Path, count: int, side: int, channels: tuple[int, ...] = ()) -> np.ndarray | None:
    """The cached array if it is there and has the expected shape; anything unreadable counts as a miss.

    Memory-mapped read-only: a hit costs a header read, and workers on one machine share the pages.
    """
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    if array.dtype != np.float32 or array.shape != (count, side, side, *channels):
        return None
    return array


def is_cached(images: np.ndarray, data_fingerprint: str, steps: Sequence[Step], cache_dir: Path) -> bool:
    """Whether `cached_pipeline` would be a hit, without computing anything."""
    side = output_size(steps, images.shape[1])
    path = cache_path(data_fingerprint, steps, cache_dir)
    return _load(path, len(images), side, images.shape[3:]) is not None


def cached_pipeline(
    images: np.ndarray, data_fingerprint: str, steps: Sequence[Step], cache_dir: Path
) -> tuple[np.ndarray, bool]:
    """`apply_pipeline` memoized on disk by (data fingerprint, pipeline); returns (array, was_hit)."""
    path = cache_path(data_fingerprint, steps, cache_dir)
    cached = _load(path, len(images), output_size(steps, images.shape[1]), images.shape[3:])
    if cached is not None:
        return cached, True
    result = apply_pipeline(images, steps)
    with atomic_output(path) as stream:
        np.save(stream, result, allow_pickle=False)
    return result, False


# ---------------------------------------------------------------- preview


def preview_grid(
    images: np.ndarray,
    steps: Sequence[Step],
    out_png: Path,
    n_samples: int = 8,
    labels: Sequence[str] | None = None,
) -> Path:
    """PNG grid: one row per sample (the first n), column 0 raw, then after each successive step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(n_samples, len(images))
    stages = [("raw", images[:count])]
    for index, step in enumerate(steps):
        stages.append((f"{index + 1}. {step.label}", apply_step(stages[-1][1], step)))
    figure, axes = plt.subplots(
        count, len(stages), figsize=(1.6 * len(stages), 1.6 * count), squeeze=False, constrained_layout=True
    )
    for column, (title, batch) in enumerate(stages):
        top = 1.0 if batch.dtype != np.uint8 else 255.0
        for row in range(count):
            axis = axes[row][column]
            axis.imshow(batch[row], cmap="gray", vmin=0.0, vmax=top, interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(title, fontsize=7)
            if column == 0 and labels is not None:
                axis.set_ylabel(str(labels[row]), fontsize=7)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_png, dpi=100)
    plt.close(figure)
    return out_png
