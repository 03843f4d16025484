"""The embedded synthetic data set: a stand-in for the 2020 Dacon contest images, deterministic by seed.

The real images (a digit visible only where it overlaps a mid-gray letter) cannot ship with the package, so
`synthesize` imitates their construction (see ../shared/data/README.md); `harness data synth` writes it as
contest CSVs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.errors import DataError
from harness.training.data import LETTERS, SIDE, Dataset, write_contest_csv

# ---------------------------------------------------------------- synthesis
# Glyphs are stroke skeletons in a unit box (x right, y down), rasterized by distance-to-segment in numpy,
# so the synthetic set depends on no font renderer (OpenCV 5 changed putText) and is identical everywhere.


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, steps: int = 10) -> list:
    angles = np.deg2rad(np.linspace(start, end, steps + 1))
    return list(zip((cx + rx * np.cos(angles)).tolist(), (cy + ry * np.sin(angles)).tolist(), strict=True))


_O = _arc(0.5, 0.5, 0.5, 0.5, 0, 360, 16)
_P = [(0, 1), (0, 0), (0.6, 0), *_arc(0.6, 0.27, 0.4, 0.27, -90, 90), (0, 0.54)]
_GLYPHS: dict[str, list[list]] = {
    "A": [[(0, 1), (0.5, 0), (1, 1)], [(0.22, 0.6), (0.78, 0.6)]],
    "B": [
        [(0, 1), (0, 0), (0.6, 0), *_arc(0.6, 0.25, 0.35, 0.25, -90, 90), (0, 0.5)],
        [(0.6, 0.5), *_arc(0.65, 0.75, 0.35, 0.25, -90, 90), (0, 1)],
    ],
    "C": [_arc(0.55, 0.5, 0.5, 0.5, 45, 315, 14)],
    "D": [[(0, 1), (0, 0), (0.4, 0), *_arc(0.4, 0.5, 0.6, 0.5, -90, 90), (0, 1)]],
    "E": [[(1, 0), (0, 0), (0, 1), (1, 1)], [(0, 0.5), (0.75, 0.5)]],
    "F": [[(1, 0), (0, 0), (0, 1)], [(0, 0.5), (0.75, 0.5)]],
    "G": [[*_arc(0.55, 0.5, 0.5, 0.5, -50, -315, 14), (1, 0.55), (0.6, 0.55)]],
    "H": [[(0, 0), (0, 1)], [(1, 0), (1, 1)], [(0, 0.5), (1, 0.5)]],
    "I": [[(0.5, 0), (0.5, 1)], [(0.2, 0), (0.8, 0)], [(0.2, 1), (0.8, 1)]],
    "J": [[(0.3, 0), (1, 0)], [(0.8, 0), (0.8, 0.7), *_arc(0.5, 0.7, 0.3, 0.3, 0, 180)]],
    "K": [[(0, 0), (0, 1)], [(1, 0), (0, 0.6)], [(0.3, 0.42), (1, 1)]],
    "L": [[(0, 0), (0, 1), (0.9, 1)]],
    "M": [[(0, 1), (0, 0), (0.5, 0.6), (1, 0), (1, 1)]],
    "N": [[(0, 1), (0, 0), (1, 1), (1, 0)]],
    "O": [_O],
    "P": [_P],
    "Q": [_O, [(0.6, 0.7), (1, 1.05)]],
    "R": [_P, [(0.45, 0.54), (1, 1)]],
    "S": [[*_arc(0.5, 0.25, 0.45, 0.25, -20, -270), *_arc(0.5, 0.75, 0.45, 0.25, -90, 160)]],
    "T": [[(0, 0), (1, 0)], [(0.5, 0), (0.5, 1)]],
    "U": [[(0, 0), (0, 0.6), *_arc(0.5, 0.6, 0.5, 0.4, 180, 0), (1, 0)]],
    "V": [[(0, 0), (0.5, 1), (1, 0)]],
    "W": [[(0, 0), (0.25, 1), (0.5, 0.4), (0.75, 1), (1, 0)]],
    "X": [[(0, 0), (1, 1)], [(1, 0), (0, 1)]],
    "Y": [[(0, 0), (0.5, 0.5), (1, 0)], [(0.5, 0.5), (0.5, 1)]],
    "Z": [[(0, 0), (1, 0), (0, 1), (1, 1)]],
    "0": [_arc(0.5, 0.5, 0.42, 0.5, 0, 360, 16)],
    "1": [[(0.25, 0.2), (0.55, 0), (0.55, 1)]],
    "2": [[*_arc(0.5, 0.3, 0.42, 0.3, -170, 20), (0, 1), (1, 1)]],
    "3": [[*_arc(0.5, 0.27, 0.4, 0.27, -160, 90), *_arc(0.5, 0.73, 0.45, 0.27, -90, 160)]],
    "4": [[(0.7, 1), (0.7, 0), (0, 0.7), (1, 0.7)]],
    "5": [[(0.9, 0), (0.2, 0), (0.1, 0.45), *_arc(0.5, 0.68, 0.42, 0.32, -120, 150)]],
    "6": [[(0.75, 0), (0.3, 0.35), *_arc(0.5, 0.7, 0.4, 0.3, 180, 540, 14)]],
    "7": [[(0, 0), (1, 0), (0.35, 1)]],
    "8": [_arc(0.5, 0.25, 0.35, 0.25, 90, 450, 14), _arc(0.5, 0.73, 0.42, 0.27, -90, 270, 14)],
    "9": [[*_arc(0.5, 0.3, 0.4, 0.3, 0, 360, 14), (0.75, 1)]],
}


def _segments(character: str) -> np.ndarray:
    """(S, 2, 2) segment endpoints of one glyph in the unit box."""
    lines = _GLYPHS[character]
    return np.array([(a, b) for line in lines for a, b in zip(line[:-1], line[1:], strict=True)], dtype=np.float64)


_SEGMENTS = {character: _segments(character) for character in _GLYPHS}
_CENTRES = np.arange(SIDE, dtype=np.float32) + 0.5
_PIXEL_X, _PIXEL_Y = (axis.reshape(1, 1, -1) for axis in np.meshgrid(_CENTRES, _CENTRES))


def _poses(rng: np.random.Generator, count: int, height: tuple[float, float], width: tuple[float, float]) -> np.ndarray:
    """Per-glyph handwriting-like pose, one vectorized draw per parameter (columns documented in `_place`)."""
    return np.column_stack(
        [
            rng.uniform(*height, count) * SIDE,  # 0 size in pixels
            rng.uniform(0.75, 1.25, count),  # 1 aspect jitter
            np.deg2rad(rng.uniform(-15.0, 15.0, count)),  # 2 rotation
            rng.uniform(-0.25, 0.25, count),  # 3 shear
            rng.uniform(-2.0, 2.0, (count, 2)),  # 4-5 shift in pixels
            rng.uniform(0.0, 0.06, (count, 2)),  # 6-7 wobble amplitude, fraction of size
            rng.uniform(0.5, 1.5, (count, 2)),  # 8-9 wobble frequency
            rng.uniform(0.0, 2 * np.pi, (count, 2)),  # 10-11 wobble phase
            rng.uniform(*width, count),  # 12 stroke width in pixels
        ]
    )


def _place(unit: np.ndarray, pose: np.ndarray, width_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Segment endpoints x, y in pixels, shape (n, S, 2), for one glyph drawn in n poses."""
    column = [pose[:, index, None, None] for index in range(pose.shape[1])]
    size, aspect, angle, shear, shift_x, shift_y = column[:6]
    x, y = unit[None, ..., 0] - 0.5, unit[None, ..., 1] - 0.5
    x = x + column[6] * np.sin(2 * np.pi * column[8] * y + column[10])
    y = y + column[7] * np.sin(2 * np.pi * column[9] * x + column[11])
    x, y = (x + shear * y) * size * aspect * width_ratio, y * size
    cos, sin = np.cos(angle), np.sin(angle)
    placed_x, placed_y = cos * x - sin * y + SIDE / 2 + shift_x, sin * x + cos * y + SIDE / 2 + shift_y
    return placed_x.astype(np.float32), placed_y.astype(np.float32)  # float32 halves the raster's cost


def _rasterize(x: np.ndarray, y: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Anti-aliased strokes from distance to the nearest segment; the edge ramps over one pixel."""
    begin_x, begin_y = x[..., 0, None], y[..., 0, None]  # (n, S, 1)
    step_x, step_y = x[..., 1, None] - begin_x, y[..., 1, None] - begin_y
    inverse = 1.0 / np.maximum(step_x**2 + step_y**2, 1e-9)
    offset_x, offset_y = _PIXEL_X - begin_x, _PIXEL_Y - begin_y  # (n, S, P)
    along = np.clip((offset_x * step_x + offset_y * step_y) * inverse, 0.0, 1.0)
    distance = np.sqrt(((offset_x - along * step_x) ** 2 + (offset_y - along * step_y) ** 2).min(axis=1))
    return np.clip(widths[:, None] / 2 - distance + 0.5, 0.0, 1.0).reshape(-1, SIDE, SIDE)


def _draw(characters: np.ndarray, pose: np.ndarray, width_ratio: float) -> np.ndarray:
    """Rasterize each glyph class in one batch, so short glyphs do not pay for long ones."""
    out = np.empty((len(characters), SIDE, SIDE), np.float32)
    for character in np.unique(characters).tolist():
        chosen = np.flatnonzero(characters == character)
        for start in range(0, len(chosen), 256):  # bounds the (n, S, P) temporaries to a few MB
            part = chosen[start : start + 256]
            x, y = _place(_SEGMENTS[character], pose[part], width_ratio)
            out[part] = _rasterize(x, y, pose[part, 12].astype(np.float32))
    return out


def synthesize(
    n: int,
    seed: int,
    *,
    digit_visibility: float = 1.0,
    invisible_fraction: float = 0.005,
    first_id: int = 1,
    stream: int = 0,
) -> Dataset:
    """A labelled set built like the contest's: noise 0..4, a letter at ~127, a digit seen only through it.

    Same (n, seed, knobs) give byte-identical arrays in any process. `digit_visibility` scales how much the
    digit brightens the letter (1.0 reaches 255 where both cores overlap); `invisible_fraction` of images get
    a nearly invisible digit, as in the real data. `stream` gives independent sets (e.g. a test file) per seed.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"synthetic data: n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise DataError(f"synthetic data: seed must be a non-negative integer, got {seed!r}")
    if not 0.0 <= digit_visibility <= 1.0 or not 0.0 <= invisible_fraction <= 1.0:
        raise DataError("synthetic data: digit_visibility and invisible_fraction must be within 0..1")
    rng = np.random.default_rng([seed, stream])
    digits = rng.permutation(np.arange(n) % 10)
    letter_codes = rng.permutation(np.arange(n) % 26)
    letter_pose = _poses(rng, n, height=(0.55, 0.8), width=(3.0, 4.2))
    digit_pose = _poses(rng, n, height=(0.65, 0.9), width=(2.8, 3.8))
    letter = _draw(np.array(LETTERS)[letter_codes], letter_pose, 0.85)
    digit = _draw(digits.astype(str), digit_pose, 0.65)
    strength = rng.uniform(0.65, 1.0, n) * digit_visibility
    hidden = rng.random(n) < invisible_fraction
    strength[hidden] = rng.uniform(0.0, 0.08, int(hidden.sum()))
    noise = rng.integers(0, 5, (n, SIDE, SIDE), dtype=np.uint8)
    value = 127.0 * letter + 128.0 * strength[:, None, None] * digit * letter
    images = np.clip(np.rint(value) + noise, 0, 255).astype(np.uint8)
    return Dataset(
        ids=np.arange(first_id, first_id + n, dtype=np.int64),
        images=images,
        digits=digits.astype(np.int64),
        letters=np.array(LETTERS, dtype="<U1")[letter_codes],
        source=f"synthetic(n={n}, seed={seed}" + (f", stream={stream})" if stream else ")"),
    )


def export_synthetic(out_dir: Path, n_train: int, n_test: int, seed: int) -> list[Path]:
    """Write train.csv (and test.csv without digits when n_test > 0, ids continuing) for `harness data synth`."""
    out_dir = Path(out_dir)
    train = synthesize(n_train, seed)
    written = [write_contest_csv(train, out_dir / "train.csv")]
    if n_test > 0:
        test = synthesize(n_test, seed, first_id=n_train + 1, stream=1)
        test = Dataset(ids=test.ids, images=test.images, digits=None, letters=test.letters, source=test.source)
        written.append(write_contest_csv(test, out_dir / "test.csv"))
    return written
