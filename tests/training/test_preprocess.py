"""Preprocessing steps match per-image OpenCV, parsing is strict and canonical, the cache is safe."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from harness.errors import SpecError
from harness.study.pipeline import STEP_NAMES, Step, output_size, parse_pipeline, pipeline_key, pipeline_to_raw
from harness.training.preprocess import apply_pipeline, apply_step, cache_path, cached_pipeline, preview_grid
from harness.training.synthetic import synthesize


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.ascontiguousarray(synthesize(40, seed=5).images)


def _one(raw) -> Step:
    (step,) = parse_pipeline([raw], "study.preprocess")
    return step


def _per_image(images: np.ndarray, function) -> np.ndarray:
    return np.stack([function(np.ascontiguousarray(image)) for image in images])


ONES2 = np.ones((2, 2), np.uint8)
REFERENCES = [
    ({"upscale": {"factor": 3}}, lambda im: cv2.resize(im, (84, 84), interpolation=cv2.INTER_LINEAR)),
    ({"upscale": {"factor": 2, "interpolation": "cubic"}}, lambda im: cv2.resize(im, (56, 56), interpolation=2)),
    ({"upscale": {"factor": 4, "interpolation": "nearest"}}, lambda im: cv2.resize(im, (112, 112), interpolation=0)),
    ({"upscale": {"interpolation": "area"}}, lambda im: cv2.resize(im, (84, 84), interpolation=cv2.INTER_AREA)),
    ("equalize", cv2.equalizeHist),
    ({"clahe": {"clip_limit": 3.0, "tile": 4}}, lambda im: cv2.createCLAHE(3.0, (4, 4)).apply(im)),
    ("binarize", lambda im: cv2.threshold(im, 135, 255, cv2.THRESH_BINARY)[1]),
    ({"binarize": {"method": "otsu"}}, lambda im: cv2.threshold(im, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[1]),
    (
        {"binarize": {"method": "adaptive", "block_size": 7, "c": 3}},
        lambda im: cv2.adaptiveThreshold(im, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 7, 3),
    ),
    ({"erode": {"kernel": 2, "iterations": 3}}, lambda im: cv2.erode(im, ONES2, iterations=3)),
    ({"dilate": {"kernel": 3}}, lambda im: cv2.dilate(im, np.ones((3, 3), np.uint8))),
    ("open", lambda im: cv2.morphologyEx(im, cv2.MORPH_OPEN, ONES2)),
    ({"close": {"iterations": 2}}, lambda im: cv2.morphologyEx(im, cv2.MORPH_CLOSE, ONES2, iterations=2)),
]


@pytest.mark.parametrize(("raw", "reference"), REFERENCES,
                         ids=lambda value: "cv2" if callable(value) else str(value)[:40])  # same in every process
def test_batched_step_equals_per_image_cv2(images: np.ndarray, raw, reference) -> None:
    np.testing.assert_array_equal(apply_step(images, _one(raw)), _per_image(images, reference))


def test_stretch_maps_each_image_to_full_range(images: np.ndarray) -> None:
    dim = (images // 2).astype(np.uint8)
    stretched = apply_step(dim, _one("stretch"))
    assert (stretched.reshape(len(dim), -1).min(1) == 0).all() and (stretched.reshape(len(dim), -1).max(1) == 255).all()
    low, high = np.percentile(dim[0], [2, 98])
    expected = np.clip(np.rint((dim[0].astype(float) - low) * 255 / (high - low)), 0, 255)
    partial = apply_step(dim, _one({"stretch": {"low_percentile": 2, "high_percentile": 98}}))
    np.testing.assert_array_equal(partial[0], expected)
    flat = np.full((2, 28, 28), 7, np.uint8)
    np.testing.assert_array_equal(apply_step(flat, _one("stretch")), flat)


def test_apply_pipeline_returns_unit_float(images: np.ndarray) -> None:
    raw = apply_pipeline(images, ())
    assert raw.dtype == np.float32 and raw.shape == images.shape
    np.testing.assert_array_equal(raw, images.astype(np.float32) / 255)
    ended = apply_pipeline(images, parse_pipeline(["binarize", "normalize"], "p"))
    not_ended = apply_pipeline(images, parse_pipeline(["binarize"], "p"))
    np.testing.assert_array_equal(ended, not_ended)
    assert set(np.unique(ended).tolist()) <= {0.0, 1.0}


def test_output_size_matches_actual_shape(images: np.ndarray) -> None:
    for raw in (["stretch"], [{"upscale": {"factor": 2}}, "erode", {"upscale": {"factor": 3}}], []):
        steps = parse_pipeline(raw, "p")
        assert apply_pipeline(images[:3], steps).shape == (3, output_size(steps), output_size(steps))
    assert output_size(parse_pipeline([{"upscale": {"factor": 3}}], "p"), input_size=10) == 30


def test_defaults_make_pipelines_canonical() -> None:
    bare = parse_pipeline(["stretch", "erode"], "p")
    spelled = parse_pipeline([{"stretch": {}}, {"erode": {"kernel": 2, "iterations": 1}}], "p")
    none_params = parse_pipeline([{"stretch": None}, {"erode": {"iterations": 1}}], "p")
    assert bare == spelled == none_params and pipeline_key(bare) == pipeline_key(spelled)
    integer_clip = parse_pipeline([{"clahe": {"clip_limit": 2}}], "p")
    assert pipeline_key(integer_clip) == pipeline_key(parse_pipeline(["clahe"], "p"))
    assert pipeline_key(bare) != pipeline_key(parse_pipeline(["erode", "stretch"], "p"))
    assert hash(bare[0]) == hash(spelled[0])
    notebook = parse_pipeline([{"upscale": {"factor": 3}}, "stretch", "binarize", {"erode": {"iterations": 3}}], "p")
    assert [step.label for step in notebook] == ["upscale", "stretch", "binarize", "erode(iterations=3)"]
    assert parse_pipeline(pipeline_to_raw(notebook), "p") == notebook
    assert parse_pipeline(None, "p") == ()


@pytest.mark.parametrize(
    ("raw", "fragments"),
    [
        (["foo"], ["study.preprocess[0]", "unknown step 'foo'", "allowed: binarize, clahe"]),
        ([{"erode": {"size": 2}}], ["study.preprocess[0].erode", "unknown parameter 'size'", "kernel, iterations"]),
        (["stretch", {"equalize": {"x": 1}}], ["study.preprocess[1].equalize", "takes no parameters"]),
        ([{"upscale": {"factor": 2.5}}], ["study.preprocess[0].upscale.factor", "2.5", "integer", "1..8"]),
        ([{"upscale": {"factor": True}}], ["upscale.factor", "True"]),
        ([{"upscale": {"factor": 0}}], ["upscale.factor", "out of range", "1..8"]),
        ([{"upscale": {"interpolation": "bilinear"}}], ["'bilinear'", "linear, nearest, cubic, area"]),
        ([{"binarize": {"method": "adaptive", "block_size": 4}}], ["binarize.block_size", "odd"]),
        ([{"stretch": {"low_percentile": 50, "high_percentile": 10}}], ["[0].stretch", "below"]),
        (["normalize", "erode"], ["study.preprocess[0]", "'normalize' must be the last"]),
        ([{"erode": 2}], ["[0].erode", "mapping"]),
        ([{"erode": {}, "dilate": {}}], ["study.preprocess[0]", "one-key mapping"]),
        ("stretch", ["study.preprocess", "must be a list"]),
    ],
)
def test_parse_errors_name_path_and_allowed_values(raw, fragments) -> None:
    with pytest.raises(SpecError) as caught:
        parse_pipeline(raw, "study.preprocess")
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_step_names_constant() -> None:
    assert set(STEP_NAMES) == {
        "upscale", "equalize", "clahe", "stretch", "binarize", "erode", "dilate", "open", "close", "normalize",
    }


def test_cache_hits_second_time_and_ignores_temp_files(images: np.ndarray, tmp_path: Path) -> None:
    steps = parse_pipeline([{"upscale": {"factor": 2}}, "binarize"], "p")
    path = cache_path("abc123", steps, tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / f".{path.stem}.leftover.tmp").write_bytes(b"half-written")  # a killed writer's leftover
    assert not cache_path("abc123", steps, tmp_path).exists()
    first, hit = cached_pipeline(images, "abc123", steps, tmp_path)
    assert not hit and cache_path("abc123", steps, tmp_path).exists()
    second, hit = cached_pipeline(images, "abc123", steps, tmp_path)
    assert hit
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, apply_pipeline(images, steps))
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == [path.name]
    assert cache_path("other", steps, tmp_path) != path
    assert cache_path("abc123", parse_pipeline(["binarize"], "p"), tmp_path) != path


def test_corrupt_cache_entry_is_recomputed(images: np.ndarray, tmp_path: Path) -> None:
    steps = parse_pipeline(["equalize"], "p")
    path = cache_path("fp", steps, tmp_path)
    path.write_bytes(b"\x93NUMPY garbage")
    result, hit = cached_pipeline(images, "fp", steps, tmp_path)
    assert not hit
    np.testing.assert_array_equal(result, apply_pipeline(images, steps))
    assert cached_pipeline(images, "fp", steps, tmp_path)[1]


def test_preview_writes_png(images: np.ndarray, tmp_path: Path) -> None:
    steps = parse_pipeline([{"upscale": {"factor": 2}}, "stretch", "binarize", "normalize"], "p")
    out = preview_grid(images, steps, tmp_path / "sub" / "preview.png", n_samples=3, labels=["a", "b", "c"])
    assert out.stat().st_size > 1000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chunked_pipeline_equals_one_image_at_a_time() -> None:
    """apply_pipeline runs CHUNK images at a time; across chunk borders nothing may change."""
    from harness.training import preprocess

    many = synthesize(2 * preprocess.CHUNK + 37, seed=5).images
    steps = parse_pipeline([{"upscale": {"factor": 2}}, "stretch", {"binarize": {"method": "otsu"}}, "erode"], "t")
    batched = apply_pipeline(many, steps)
    single = np.concatenate([apply_pipeline(many[i : i + 1], steps) for i in range(len(many))])
    assert batched.dtype == np.float32 and np.array_equal(batched, single)
