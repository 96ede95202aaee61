"""Tests for the robot-user benchmark: click rule, NoC, per-frame and whole-clip protocols, JSON contract."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from rvos_core.refiners.base import RefineResult
from rvos_core.refiners.grabcut import GrabCutRefiner
from rvos_core.robot_user import (
    Click,
    RobotUserError,
    _segment_bounds,
    load_gt_masks,
    next_click,
    noc,
    run_click_benchmark,
    simulate_clip,
    simulate_frame,
)

from _paths import SHARED_DATA

CONTRACT_KEYS = {"noc85", "noc90", "mean_j_at_k", "clip_clicks_to_085", "latency_ms", "refiner"}


def box_mask(shape: tuple[int, int], x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """``(H, W)`` bool, True on columns ``x0..x1-1`` and rows ``y0..y1-1``."""
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


# ---------------------------------------------------------------------------------------------- click rule


def test_first_click_is_the_centre_of_an_odd_square():
    gt = box_mask((50, 60), 10, 12, 31, 33)  # 21 × 21, centre (20, 22)
    click = next_click(gt, np.zeros_like(gt))
    assert click == Click(x=20, y=22, positive=True, depth=11.0)
    assert click.label == 1


def test_equal_depths_give_the_first_pixel_in_raster_order():
    gt = box_mask((40, 80), 20, 10, 60, 30)  # 40 wide × 20 high: rows 19 and 20 tie, columns 29..50 tie
    click = next_click(gt, np.zeros_like(gt))
    assert (click.x, click.y, click.depth) == (29, 19, 10.0)
    assert next_click(gt, np.zeros_like(gt)) == click  # deterministic


def test_frame_border_counts_as_boundary():
    gt = box_mask((21, 60), 0, 0, 30, 21)  # touches the top, bottom and left frame edges
    click = next_click(gt, np.zeros_like(gt))
    # unpadded, the deepest pixel would sit on the left edge (30 px from the only inner edge)
    assert (click.x, click.y, click.depth) == (10, 10, 11.0)


def test_positive_on_a_miss_negative_on_a_false_alarm():
    gt = box_mask((80, 100), 10, 10, 40, 40)
    false_alarm = gt | box_mask((80, 100), 50, 20, 90, 70)  # 40 × 50 blob outside the object
    click = next_click(gt, false_alarm)
    assert not click.positive and click.label == 0
    assert 50 <= click.x < 90 and 20 <= click.y < 70
    missed = box_mask((80, 100), 10, 10, 40, 20)  # only the top third of the object found
    click = next_click(gt, missed)
    assert click.positive and 20 <= click.y < 40
    assert next_click(gt, gt) is None


def test_largest_region_versus_deepest_point():
    gt = box_mask((100, 220), 5, 5, 205, 10)  # a 200 × 5 strip (1000 px, depth 3) …
    pred = box_mask((100, 220), 100, 50, 120, 70)  # … and a 20 × 20 false alarm (400 px, depth 10)
    largest = next_click(gt, pred, rule="largest")
    deepest = next_click(gt, pred, rule="deepest")
    assert largest.positive and 5 <= largest.y < 10
    assert not deepest.positive and (deepest.x, deepest.y) == (109, 59)
    with pytest.raises(ValueError, match="rule"):
        next_click(gt, pred, rule="random")


def test_ties_between_regions_are_deterministic():
    shape = (60, 100)
    gt = box_mask(shape, 10, 10, 20, 20) | box_mask(shape, 60, 5, 70, 15)  # two missed 10 × 10 squares
    click = next_click(gt, np.zeros(shape, bool))
    assert click.positive and (click.x, click.y) == (64, 9)  # the square whose first pixel comes first
    fp = box_mask(shape, 70, 40, 80, 50)  # a false alarm of the same size as a miss
    click = next_click(box_mask(shape, 10, 10, 20, 20), fp)
    assert click.positive  # misses first among equal sizes
    click = next_click(box_mask(shape, 10, 10, 20, 20), fp, rule="deepest")
    assert not click.positive  # RITM: positive only when strictly deeper


def test_click_rule_rejects_mismatched_masks():
    with pytest.raises(ValueError, match="same"):
        next_click(np.zeros((10, 10), bool), np.zeros((10, 11), bool))


# ---------------------------------------------------------------------------------------------- NoC


def test_noc_convention():
    j = [0.4, 0.7, 0.85, 0.95]
    assert noc(j, 0.85) == 3  # reaching the threshold exactly counts
    assert noc(j, 0.90) == 4
    assert noc([0.5, 0.6], 0.85, max_clicks=20) == 20  # never reached → max_clicks
    assert noc([0.5, 0.6, 0.9], 0.85, max_clicks=2) == 2  # clicks beyond max_clicks do not count
    with pytest.raises(ValueError, match="threshold"):
        noc(j, 0.0)
    with pytest.raises(ValueError, match="max_clicks"):
        noc(j, 0.85, max_clicks=0)


class ScriptedRefiner:
    """Returns the ground-truth square minus its first ``rows[k]`` rows on its k-th call; logs every call."""

    name = "scripted"

    def __init__(self, gt: np.ndarray, rows: list[int]) -> None:
        self.gt, self.rows, self.calls = gt, rows, []

    def refine(self, frame, points=None, labels=None, box=None, mask_prior=None, frame_key=None) -> RefineResult:
        self.calls.append((np.array(points), np.array(labels), None if mask_prior is None else mask_prior.copy()))
        n = self.rows[min(len(self.calls), len(self.rows)) - 1]
        ys = np.flatnonzero(self.gt.any(axis=1))
        mask = self.gt.copy()
        mask[ys[:n]] = False
        return RefineResult(mask=mask, score=1.0)


def test_simulate_frame_noc_and_j_curve_on_scripted_outcomes():
    gt = box_mask((60, 60), 20, 20, 40, 40)  # 20 × 20 px: removing n rows gives J = (20 - n) / 20
    frame = np.zeros((60, 60, 3), np.uint8)
    refiner = ScriptedRefiner(gt, rows=[12, 6, 3, 1, 0])
    run = simulate_frame(refiner, frame, gt, max_clicks=8)
    np.testing.assert_allclose(run.j, [0.4, 0.7, 0.85, 0.95, 1.0])
    assert len(run.clicks) == 5  # J = 1: nothing left to click, the robot stops
    assert run.noc(0.85, 8) == 3 and run.noc(0.90, 8) == 4
    np.testing.assert_allclose(run.j_at(8), [0.4, 0.7, 0.85, 0.95, 1.0, 1.0, 1.0, 1.0])
    assert len(run.latency_ms) == 5 and all(ms >= 0 for ms in run.latency_ms)
    # every call gets all clicks so far (all positive here: the errors are misses) and the previous mask
    points, labels, prior = refiner.calls[2]
    assert points.shape == (3, 2) and labels.tolist() == [1, 1, 1]
    assert (points[0] == [29, 29]).all()  # first click: the square's deepest pixel (first in raster order)
    assert refiner.calls[0][2] is None  # empty start: no prior
    np.testing.assert_array_equal(prior, run_prior(gt, 6))

    never = simulate_frame(ScriptedRefiner(gt, rows=[10]), frame, gt, max_clicks=4)
    assert never.j == [0.5] * 4 and never.noc(0.85, 4) == 4

    stopped = simulate_frame(ScriptedRefiner(gt, rows=[12, 6, 3, 1, 0]), frame, gt, max_clicks=8, stop_at=0.85)
    assert len(stopped.clicks) == 3 and stopped.j_at(5) == [0.4, 0.7, 0.85, 0.85, 0.85]


def run_prior(gt: np.ndarray, rows: int) -> np.ndarray:
    ys = np.flatnonzero(gt.any(axis=1))
    out = gt.copy()
    out[ys[:rows]] = False
    return out


def test_start_prior_mode_keeps_the_first_mask():
    gt = box_mask((60, 60), 20, 20, 40, 40)
    start = box_mask((60, 60), 20, 30, 40, 40)
    refiner = ScriptedRefiner(gt, rows=[8, 4, 2])
    simulate_frame(refiner, np.zeros((60, 60, 3), np.uint8), gt, max_clicks=3, start_mask=start, prior="start")
    for _, _, prior in refiner.calls:
        np.testing.assert_array_equal(prior, start)
    with pytest.raises(ValueError, match="prior"):
        simulate_frame(refiner, np.zeros((60, 60, 3), np.uint8), gt, prior="latest")


# ---------------------------------------------------------------------------------------------- whole clip


def moving_square_clip(num_frames: int = 6) -> tuple[list[np.ndarray], np.ndarray]:
    """Textured frames with a bright square moving 3 px right per frame, and its masks ``(T, 64, 80)``."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 120, (64, 80, 3), dtype=np.uint8)
    frames, masks = [], []
    for t in range(num_frames):
        m = box_mask((64, 80), 10 + 3 * t, 20, 34 + 3 * t, 44)
        f = background.copy()
        f[m] = (230, 200, 40)
        frames.append(f)
        masks.append(m)
    return frames, np.stack(masks)


class OracleRefiner:
    """Answers every click with the ground truth; a propagation re-fit (a box is given) too, except on ``bad``."""

    name = "oracle"

    def __init__(self, gt: np.ndarray, bad: set[int]) -> None:
        self.gt, self.bad = gt, bad

    def refine(self, frame, points=None, labels=None, box=None, mask_prior=None, frame_key=None) -> RefineResult:
        index = int(frame_key.rsplit(":", 1)[1])
        if box is not None and index in self.bad:
            return RefineResult(mask=np.roll(self.gt[index], 12, axis=0), score=1.0)  # same area, J < 0.85
        return RefineResult(mask=self.gt[index].copy(), score=1.0)


def test_clip_protocol_clicks_the_worst_frame_and_keeps_edits():
    frames, gt = moving_square_clip()
    run = simulate_clip(OracleRefiner(gt, bad={3}), frames.__getitem__, gt, frame_key_prefix="clip")
    assert run.reached and run.clicks == 2 and run.clicks_to_threshold == 2
    assert run.visits == [(0, 1), (3, 1)]  # frame 0, then the only frame below 0.85
    assert (run.j >= 0.85).all()
    assert len(run.latency_ms) == 2


class DiskRefiner:
    """Always a small disk in the frame's top-left corner: J stays far below 0.85."""

    name = "disk"

    def refine(self, frame, points=None, labels=None, box=None, mask_prior=None, frame_key=None) -> RefineResult:
        mask = np.zeros(frame.shape[:2], bool)
        cv2.circle(mask.view(np.uint8), (6, 6), 4, 1, thickness=-1)
        return RefineResult(mask=mask, score=1.0)


def test_clip_protocol_stops_at_the_budget():
    frames, gt = moving_square_clip()
    run = simulate_clip(DiskRefiner(), frames.__getitem__, gt, budget=5, max_clicks=3)
    assert not run.reached
    assert run.clicks == 5 and run.clicks_to_threshold == 5
    assert run.visits[0] == (0, 3)  # frame 0 gets max_clicks, then the worst frame the rest
    assert sum(n for _, n in run.visits) == 5
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        simulate_clip(DiskRefiner(), frames.__getitem__, gt[0])


def test_segment_bounds_stop_on_the_nearest_edited_frames():
    assert _segment_bounds(5, {2, 5, 9}, 12) == (4, 3)
    assert _segment_bounds(0, {0}, 5) == (4, None)
    assert _segment_bounds(4, {4}, 5) == (None, 4)


# ---------------------------------------------------------------------------------------------- benchmark


def write_clip(folder, frames: list[np.ndarray], masks: np.ndarray) -> tuple:
    images, annotations = folder / "JPEGImages", folder / "Annotations"
    images.mkdir(parents=True)
    annotations.mkdir()
    for i, (f, m) in enumerate(zip(frames, masks)):
        cv2.imwrite(str(images / f"{i:05d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(annotations / f"{i:05d}.png"), m.astype(np.uint8) * 255)
    return images, annotations


def test_benchmark_json_contract(tmp_path):
    frames, gt = moving_square_clip(4)
    images, annotations = write_clip(tmp_path / "clip", frames, gt)
    result = run_click_benchmark(images, annotations, refiner=OracleByName(gt), max_clicks=5, clip_budget=10)
    data = result.to_json()
    assert CONTRACT_KEYS <= set(data)
    assert data["refiner"] == "oracle-by-name"
    assert data["noc85"] == 1.0 and data["noc90"] == 1.0
    assert data["mean_j_at_k"] == [1.0] * 5
    assert data["clip_clicks_to_085"] == 1 and data["clip_reached_085"] is True
    assert set(data["latency_ms"]) == {"p50", "p95"} and data["latency_ms"]["p50"] >= 0
    out = result.write_json(tmp_path / "out" / "clicks.json")
    assert json.loads(out.read_text()) == data
    assert [p.name for p in out.parent.iterdir()] == ["clicks.json"]  # no temp file left


class OracleByName:
    """Ground truth for the frame whose index ends the frame key."""

    name = "oracle-by-name"

    def __init__(self, gt: np.ndarray) -> None:
        self.gt = gt

    def refine(self, frame, points=None, labels=None, box=None, mask_prior=None, frame_key=None) -> RefineResult:
        return RefineResult(mask=self.gt[int(frame_key.rsplit(":", 1)[1])].copy(), score=1.0)


def test_missing_or_mismatched_masks(tmp_path):
    frames, gt = moving_square_clip(3)
    images, annotations = write_clip(tmp_path / "clip", frames, gt)
    (annotations / "00002.png").unlink()
    with pytest.raises(FileNotFoundError, match="00002.png"):
        load_gt_masks(annotations, ["00000", "00001", "00002"], (64, 80))
    with pytest.raises(RobotUserError, match="differs"):
        load_gt_masks(annotations, ["00000"], (64, 81))
    with pytest.raises(FileNotFoundError, match="masks folder"):
        run_click_benchmark(images, tmp_path / "nowhere", refiner=OracleByName(gt))


def test_grabcut_on_a_real_clip_crop(tmp_path):
    """Three DAVIS-2016 blackswan frames cropped to 560 × 400 around the swan, GrabCut, 8 clicks per frame."""
    clip = SHARED_DATA / "davis2016_blackswan"
    frames, masks = [], []
    for i in (0, 1, 2):
        bgr = cv2.imread(str(clip / "JPEGImages" / f"{i:05d}.jpg"))
        gt = cv2.imread(str(clip / "Annotations" / f"{i:05d}.png"), cv2.IMREAD_GRAYSCALE)
        if bgr is None or gt is None:
            raise FileNotFoundError(f"DAVIS blackswan frame {i} missing under {clip}")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)[40:440, 60:620])
        masks.append(gt[40:440, 60:620] > 127)
    images, annotations = write_clip(tmp_path / "swan", frames, np.stack(masks))
    result = run_click_benchmark(images, annotations, refiner=GrabCutRefiner(), max_clicks=8, clip_budget=20)
    data = result.to_json()
    assert data["refiner"] == "grabcut" and len(data["mean_j_at_k"]) == 8
    # measured (seeded first click, local corrections): mean J 0.64 after 1 click, 0.94 after 8; NoC@85 3.7
    # (before them: 0.50 → 0.90, NoC@85 6.3); every frame reaches 0.85
    assert data["mean_j_at_k"][-1] > 0.9 and data["mean_j_at_k"][-1] > data["mean_j_at_k"][0] + 0.2
    assert all(max(run.j) >= 0.85 for run in result.frames)
    assert data["noc85"] < 5 and data["noc85"] <= data["noc90"]
    # measured: 3 clicks on frame 0, then propagation carries J >= 0.85 to frames 1 and 2 (before: 7)
    assert data["clip_reached_085"] and data["clip_clicks_to_085"] <= 5
    assert result.clip.visits[0][0] == 0
    assert data["latency_ms"]["p95"] >= data["latency_ms"]["p50"] > 0
