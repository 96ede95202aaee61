"""Robot-user benchmark: a simulated annotator clicks on a clip with ground-truth masks.

The click rule and the per-frame metrics follow the evaluation protocol of interactive segmentation
(RITM: Sofiiuk, Petrov & Konushin, "Reviving Iterative Training with Mask Guidance for Interactive
Segmentation", ICIP 2022; SimpleClick: Liu, Xu, Niethammer & Bertasius, ICCV 2023, which reuses RITM's
evaluation):

- **Click rule** (:func:`next_click`). The errors of the current mask ``P`` against the ground truth ``G``
  are the missed pixels ``G & ~P`` (false negatives) and the false alarms ``P & ~G`` (false positives), each
  split into 8-connected regions (``cv2.connectedComponentsWithStats``). The robot picks one region and
  clicks the pixel of that region farthest from its boundary: the argmax of the exact Euclidean distance
  transform (``cv2.distanceTransform``, ``DIST_L2``, ``DIST_MASK_PRECISE``) of the region mask padded with
  one row/column of zeros on every side, so the frame border counts as boundary (RITM's ``padding=True``).
  The click is positive on a miss, negative on a false alarm. Which region:

  * ``"largest"`` (default, this project's rule): the region with the most pixels;
  * ``"deepest"``: RITM's own rule: the error pixel farthest from the boundary over *all* errors, i.e. the
    region holding the deepest point (RITM compares the deepest false negative with the deepest false
    positive and clicks positive only when it is strictly deeper).

  Ties are broken deterministically: among regions of equal size, misses before false alarms, then the
  region whose first pixel comes first in raster order (row by row, top to bottom); among pixels at equal
  distance, the first in raster order (as ``np.argmax`` and RITM's ``np.where(...)[0]``).
- **Per frame** (:func:`simulate_frame`): start from an empty mask; each click is added to all earlier
  clicks of that frame and the refiner is called with every click and the previous mask as ``mask_prior``
  (RITM feeds its previous prediction back the same way; ``prior="start"`` keeps the frame's mask from
  before its first click instead, as :class:`rvos_core.session.AnnotationSession` does); J is measured
  after every click. NoC@X (number of clicks) is the first k with J ≥ X, or ``max_clicks`` if J never
  reaches X (RITM's convention; 20 clicks). A frame whose mask already equals the ground truth leaves
  nothing to click: the robot stops and J is carried forward to ``max_clicks`` (and NoC is 0 if no click
  was ever needed).
- **Whole clip** (:func:`simulate_clip`): annotating a video with propagation
  (:func:`rvos_core.propagation.propagate`). Start from an empty session; click on frame 0 until J ≥ the
  threshold (0.85); propagate forward to the clip's end; then repeatedly take the worst frame (lowest J,
  earliest on a tie), click there with its current mask as the prior until J ≥ the threshold, and
  propagate from it forward and backward up to the nearest hand-edited frame on each side (the edited
  frames are passed as ``keep``, so they are never overwritten). Stop when every frame has J ≥ the
  threshold or the click budget (100) is spent; a frame that received ``max_clicks`` clicks without reaching
  the threshold is not visited again.

J is :func:`rvos_core.metrics.region_similarity` (|G∩P| / |G∪P|, 1 when both are empty). Click latency is
the wall time of one ``refiner.refine`` call answering a robot click (click → mask), in milliseconds.

Points are ``(x, y)`` pixels of the original frame (x = column, y = row), labels 1 positive / 0 negative,
as everywhere in ``rvos_core``. Bad input raises :class:`RobotUserError`, a ``ValueError``. Nothing happens
at import time.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from rvos_core.fileio import atomic_output_path
from rvos_core.masks import as_bool_mask, read_mask_png
from rvos_core.metrics import region_similarity
from rvos_core.propagation import PropagationConfig, propagate
from rvos_core.refiners.base import Refiner

ClickRule = Literal["largest", "deepest"]
PriorMode = Literal["previous", "start"]
#: Valid ``prior`` values of :func:`simulate_frame`.
PRIOR_MODES: tuple[str, ...] = ("previous", "start")
#: Valid ``rule`` values of :func:`next_click`.
CLICK_RULES: tuple[str, ...] = ("largest", "deepest")
#: J thresholds of the per-frame NoC figures and of the whole-clip protocol.
NOC_THRESHOLDS: tuple[float, float] = (0.85, 0.90)
CLIP_THRESHOLD = 0.85

Progress = Callable[[int, int, str], None]


class RobotUserError(ValueError):
    """Bad benchmark input: a missing or mismatched ground-truth mask, a bad setting."""


# ---------------------------------------------------------------------------------------------- click rule


@dataclass(frozen=True)
class Click:
    """One simulated click.

    Attributes:
        x, y: pixel (column, row) in the original frame.
        positive: True on a missed region (label 1), False on a false alarm (label 0).
        depth: the click's distance (px, exact Euclidean) to the nearest pixel outside its error region,
            the frame border counting as outside.
    """

    x: int
    y: int
    positive: bool
    depth: float

    @property
    def label(self) -> int:
        """1 for a positive click, 0 for a negative one (the refiner protocol's labels)."""
        return int(self.positive)


@dataclass(frozen=True)
class _Region:
    """One connected error region: its bounding box, size, kind and the order it was found in."""

    positive: bool
    label: int
    area: int
    x: int
    y: int
    w: int
    h: int


def _regions(error: np.ndarray, positive: bool) -> tuple[np.ndarray, list[_Region]]:
    """8-connected regions of ``error`` (``(H, W)`` bool): the label image and one :class:`_Region` each."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(error.view(np.uint8), connectivity=8)
    regions = [
        _Region(positive, i, int(stats[i, cv2.CC_STAT_AREA]), int(stats[i, cv2.CC_STAT_LEFT]),
                int(stats[i, cv2.CC_STAT_TOP]), int(stats[i, cv2.CC_STAT_WIDTH]), int(stats[i, cv2.CC_STAT_HEIGHT]))
        for i in range(1, count)
    ]
    return labels, regions


def _deepest_point(region_mask: np.ndarray) -> tuple[int, int, float]:
    """``(x, y, depth)`` of the first (raster order) pixel of ``region_mask`` farthest from its boundary.

    The mask is padded with zeros so that the image border counts as boundary (RITM's convention).
    """
    padded = np.pad(region_mask.view(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    flat = int(np.argmax(dist))
    y, x = divmod(flat, dist.shape[1])
    return x, y, float(dist[y, x])


def _click_in(labels: np.ndarray, region: _Region) -> Click:
    """The click at ``region``'s deepest pixel (computed on its bounding box, which gives the same distances)."""
    window = labels[region.y : region.y + region.h, region.x : region.x + region.w] == region.label
    x, y, depth = _deepest_point(window)
    return Click(region.x + x, region.y + y, region.positive, depth)


def next_click(gt: np.ndarray, pred: np.ndarray, rule: ClickRule = "largest") -> Click | None:
    """Where the robot user clicks next (see the module docstring for the rule and its sources).

    Args:
        gt: ``(H, W)`` ground-truth mask, bool or 0/non-zero.
        pred: ``(H, W)`` current mask, bool or 0/non-zero (all False before the first click).
        rule: ``"largest"`` (the largest error region, by pixel count) or ``"deepest"`` (RITM: the region
            holding the error pixel farthest from any boundary).

    Returns:
        The :class:`Click`, or None when ``pred`` equals ``gt`` (nothing to correct).

    Raises:
        ValueError: masks not 2-D or of different shapes; an unknown rule.
    """
    if rule not in CLICK_RULES:
        raise RobotUserError(f"rule must be one of {CLICK_RULES}, got {rule!r}")
    g, p = as_bool_mask(gt, "gt"), as_bool_mask(pred, "pred")
    if g.shape != p.shape:
        raise RobotUserError(f"gt {g.shape} and pred {p.shape} must have the same (H, W)")
    found = [_regions(g & ~p, True), _regions(p & ~g, False)]
    candidates = [(labels, r) for labels, regions in found for r in regions]
    if not candidates:
        return None
    if rule == "largest":
        # min() keeps the first of equal areas: misses before false alarms, then the regions' label order
        # (connectedComponents numbers regions in raster order of their first pixel)
        labels, region = min(candidates, key=lambda c: -c[1].area)
        return _click_in(labels, region)
    clicks = [_click_in(labels, region) for labels, region in candidates]
    best = max(c.depth for c in clicks)
    # RITM clicks positive only when the deepest miss is strictly deeper than the deepest false alarm
    deepest = [c for c in clicks if c.depth == best]
    negatives = [c for c in deepest if not c.positive]
    pool = negatives or deepest
    return min(pool, key=lambda c: (c.y, c.x))


# ---------------------------------------------------------------------------------------------- NoC


def noc(j_after_click: Sequence[float], threshold: float, max_clicks: int = 20) -> int:
    """Number of clicks (NoC) until J ≥ ``threshold``: the first k (1-based) with ``j[k-1] >= threshold``.

    Args:
        j_after_click: J after click 1, 2, … (fractions in [0, 1]); may be shorter than ``max_clicks``
            when the robot stopped early.
        threshold: J threshold in (0, 1], e.g. 0.85 or 0.90.
        max_clicks: the value returned when J never reaches ``threshold`` (RITM's convention).

    Returns:
        An int in ``[1, max_clicks]``, or ``max_clicks`` if the threshold is never reached.

    Raises:
        ValueError: ``threshold`` outside (0, 1] or ``max_clicks < 1``.
    """
    if not 0.0 < threshold <= 1.0:
        raise RobotUserError(f"threshold must be in (0, 1], got {threshold}")
    if max_clicks < 1:
        raise RobotUserError(f"max_clicks must be >= 1, got {max_clicks}")
    for k, j in enumerate(j_after_click[:max_clicks], start=1):
        if j >= threshold:
            return k
    return max_clicks


# ---------------------------------------------------------------------------------------------- one frame


@dataclass
class FrameRun:
    """The robot user's clicks on one frame and what they gave.

    Attributes:
        clicks: the clicks in order.
        j: J after each click (same length as ``clicks``), fractions in [0, 1].
        j_start: J of the starting mask (before any click).
        latency_ms: wall-clock ms of each ``refine`` call (same length as ``clicks``).
        cpu_ms: this process's CPU ms of each ``refine`` call (all threads; less sensitive to other load).
        mask: ``(H, W)`` bool, the final mask.
    """

    clicks: list[Click]
    j: list[float]
    j_start: float
    latency_ms: list[float]
    cpu_ms: list[float]
    mask: np.ndarray

    def j_at(self, max_clicks: int) -> list[float]:
        """J after clicks 1 … ``max_clicks``; after the robot stopped, the last J is carried forward."""
        last = self.j[-1] if self.j else self.j_start
        return (self.j + [last] * max_clicks)[:max_clicks]

    def noc(self, threshold: float, max_clicks: int) -> int:
        """NoC@threshold (see :func:`noc`); 0 when the starting mask already reached it."""
        if self.j_start >= threshold:
            return 0
        return noc(self.j_at(max_clicks), threshold, max_clicks)


def _refine_click(refiner: Refiner, frame: np.ndarray, clicks: list[Click], prior: np.ndarray,
                  frame_key: str | None) -> tuple[np.ndarray, float, float]:
    """Call the refiner with every click so far and ``prior`` (None when empty); ``(mask, wall ms, CPU ms)``."""
    points = np.array([[c.x, c.y] for c in clicks], np.float32)
    labels = np.array([c.label for c in clicks], np.int64)
    t0, c0 = time.perf_counter(), time.process_time()
    result = refiner.refine(frame, points, labels, mask_prior=prior if prior.any() else None, frame_key=frame_key)
    wall, cpu = (time.perf_counter() - t0) * 1000.0, (time.process_time() - c0) * 1000.0
    return np.asarray(result.mask, dtype=bool), wall, cpu


def simulate_frame(
    refiner: Refiner,
    frame: np.ndarray,
    gt: np.ndarray,
    max_clicks: int = 20,
    start_mask: np.ndarray | None = None,
    stop_at: float | None = None,
    rule: ClickRule = "largest",
    frame_key: str | None = None,
    clicks: Sequence[Click] = (),
    prior: PriorMode = "previous",
) -> FrameRun:
    """Click on one frame with the robot user (module docstring: rule, prior, stopping).

    Args:
        refiner: any :class:`~rvos_core.refiners.base.Refiner`.
        frame: ``(H, W, 3)`` uint8 RGB.
        gt: ``(H, W)`` ground-truth mask (bool or 0/non-zero).
        max_clicks: clicks at most (≥ 1), counting ``clicks`` already made.
        start_mask: ``(H, W)`` bool mask before the first click (e.g. a propagated mask); None = empty.
        stop_at: stop as soon as J ≥ this (e.g. 0.85); None = click ``max_clicks`` times (the curve of
            mean J after k clicks needs every click).
        rule: see :func:`next_click`.
        frame_key: passed to the refiner (per-frame cache key, e.g. ``"<clip>:<index>"``).
        clicks: earlier clicks on this frame (a revisit); the new clicks are added to them.
        prior: the ``mask_prior`` of each call: ``"previous"`` (the mask the last click gave, RITM) or
            ``"start"`` (always ``start_mask``, as the annotation session does); an empty mask is passed
            as None.

    Returns:
        :class:`FrameRun` with the new clicks only.

    Raises:
        ValueError: shapes that do not match, ``max_clicks < 1``, an unknown rule, or the refiner's own
            prompt errors.
    """
    if max_clicks < 1:
        raise RobotUserError(f"max_clicks must be >= 1, got {max_clicks}")
    g = as_bool_mask(gt, "gt")
    if frame.shape[:2] != g.shape:
        raise RobotUserError(f"frame {frame.shape[:2]} and gt {g.shape} must have the same (H, W)")
    mask = np.zeros_like(g) if start_mask is None else as_bool_mask(start_mask, "start_mask").copy()
    if mask.shape != g.shape:
        raise RobotUserError(f"start_mask {mask.shape} must have the gt's shape {g.shape}")
    if prior not in PRIOR_MODES:
        raise RobotUserError(f"prior must be one of {PRIOR_MODES}, got {prior!r}")
    if rule not in CLICK_RULES:
        raise RobotUserError(f"rule must be one of {CLICK_RULES}, got {rule!r}")
    base = mask
    all_clicks = list(clicks)
    run = FrameRun([], [], float(region_similarity(g, mask)), [], [], mask)
    while len(all_clicks) < max_clicks:
        if stop_at is not None and (run.j[-1] if run.j else run.j_start) >= stop_at:
            break
        click = next_click(g, mask, rule)
        if click is None:
            break
        all_clicks.append(click)
        mask, wall, cpu = _refine_click(refiner, frame, all_clicks, mask if prior == "previous" else base, frame_key)
        run.clicks.append(click)
        run.j.append(float(region_similarity(g, mask)))
        run.latency_ms.append(wall)
        run.cpu_ms.append(cpu)
    run.mask = mask
    return run


# ---------------------------------------------------------------------------------------------- whole clip


@dataclass
class ClipRun:
    """The whole-clip protocol's outcome (see :func:`simulate_clip`).

    Attributes:
        clicks: clicks spent in all (≤ the budget).
        reached: True when every frame ended with J ≥ the threshold.
        budget: the click budget of the run.
        j: ``(T,)`` float64 final J per frame.
        visits: ``(frame, clicks on that visit)`` in order, frame 0 first.
        latency_ms: wall-clock ms of each click's ``refine`` call.
        cpu_ms: this process's CPU ms of each click's ``refine`` call.
        propagation_s: wall-clock seconds spent propagating.
    """

    clicks: int
    reached: bool
    budget: int
    j: np.ndarray
    visits: list[tuple[int, int]]
    latency_ms: list[float]
    cpu_ms: list[float]
    propagation_s: float

    @property
    def clicks_to_threshold(self) -> int:
        """The clicks spent when every frame reached the threshold, else the budget (see ``reached``)."""
        return self.clicks if self.reached else self.budget


def _segment_bounds(start: int, edited: set[int], num_frames: int) -> tuple[int | None, int | None]:
    """Forward / backward windows from ``start`` that end on the nearest edited frame (or the clip's end)."""
    after = [i for i in edited if i > start]
    before = [i for i in edited if i < start]
    fwd = (min(after) - start) if after else num_frames - 1 - start
    bwd = (start - max(before)) if before else start
    return (fwd or None), (bwd or None)


@dataclass
class _ClipState:
    """Masks, clicks and counters of one whole-clip run."""

    masks: list[np.ndarray]
    clicks: dict[int, list[Click]] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    visits: list[tuple[int, int]] = field(default_factory=list)
    propagation_s: float = 0.0

    @property
    def spent(self) -> int:
        return sum(len(c) for c in self.clicks.values())


def _annotate(state: _ClipState, refiner: Refiner, frame: np.ndarray, gt: np.ndarray, index: int, limit: int,
              threshold: float, rule: ClickRule, key_prefix: str | None) -> None:
    """Click on frame ``index`` (its current mask as the prior) until J ≥ ``threshold`` or ``limit`` clicks."""
    earlier = state.clicks.get(index, [])
    key = None if key_prefix is None else f"{key_prefix}:{index}"
    run = simulate_frame(refiner, frame, gt, max_clicks=limit, start_mask=state.masks[index], stop_at=threshold,
                         rule=rule, frame_key=key, clicks=earlier)
    state.clicks[index] = earlier + run.clicks
    state.masks[index] = run.mask
    state.latency_ms += run.latency_ms
    state.cpu_ms += run.cpu_ms
    state.visits.append((index, len(run.clicks)))


def _repropagate(state: _ClipState, get_frame: Callable[[int], np.ndarray], start: int, refiner: Refiner,
                 config: PropagationConfig | None, key_prefix: str | None) -> None:
    """Propagate ``start``'s mask both ways up to the nearest hand-edited frames (kept, never overwritten)."""
    edited = {i for i, c in state.clicks.items() if c}
    num_frames = len(state.masks)
    t0 = time.perf_counter()
    for direction, window in zip(("forward", "backward"), _segment_bounds(start, edited, num_frames)):
        if window is None:
            continue
        steps = propagate(get_frame, num_frames, start, state.masks[start], direction=direction, window=window,
                          refiner=refiner, keep=edited, existing_mask=state.masks.__getitem__, config=config,
                          frame_key_prefix=key_prefix)
        for step in steps:
            if step.source != "kept":
                state.masks[step.frame] = step.mask
    state.propagation_s += time.perf_counter() - t0


def simulate_clip(
    refiner: Refiner,
    get_frame: Callable[[int], np.ndarray],
    gt: np.ndarray,
    threshold: float = CLIP_THRESHOLD,
    budget: int = 100,
    max_clicks: int = 20,
    rule: ClickRule = "largest",
    config: PropagationConfig | None = None,
    frame_key_prefix: str | None = None,
    progress: Progress | None = None,
) -> ClipRun:
    """Annotate a whole clip with the robot user and mask propagation (protocol: module docstring).

    Args:
        refiner: the refiner that answers clicks and re-fits propagated masks.
        get_frame: ``get_frame(i) -> (H, W, 3) uint8 RGB`` for ``0 <= i < T``.
        gt: ``(T, H, W)`` ground-truth masks (bool or 0/non-zero).
        threshold: the J every frame must reach, in (0, 1] (0.85).
        budget: clicks at most for the whole clip (≥ 1).
        max_clicks: clicks at most on one frame over all its visits (≥ 1).
        rule: see :func:`next_click`.
        config: propagation settings; None → :class:`~rvos_core.propagation.PropagationConfig` defaults.
        frame_key_prefix: refiner cache keys become ``f"{prefix}:{i}"``; None disables caching.
        progress: ``progress(frames_ok, T, message)`` after each visit.

    Returns:
        :class:`ClipRun`. When the threshold is not met everywhere, ``reached`` is False; that happens when
        the budget is spent or when every frame still below the threshold has had ``max_clicks`` clicks.

    Raises:
        ValueError: ``gt`` not ``(T, H, W)``, bad threshold / budget / max_clicks, frames of another size.
    """
    g = np.asarray(gt)
    if g.ndim != 3 or 0 in g.shape:
        raise RobotUserError(f"gt must be a (T, H, W) stack of masks, got shape {g.shape}")
    g = g if g.dtype == bool else g != 0
    if not 0.0 < threshold <= 1.0:
        raise RobotUserError(f"threshold must be in (0, 1], got {threshold}")
    if budget < 1 or max_clicks < 1:
        raise RobotUserError(f"budget and max_clicks must be >= 1, got {budget} and {max_clicks}")
    state = _ClipState(masks=[np.zeros(g.shape[1:], bool) for _ in range(len(g))])
    index = 0
    while True:
        limit = min(max_clicks, len(state.clicks.get(index, [])) + budget - state.spent)
        _annotate(state, refiner, get_frame(index), g[index], index, limit, threshold, rule, frame_key_prefix)
        if state.masks[index].any():
            _repropagate(state, get_frame, index, refiner, config, frame_key_prefix)
        j = region_similarity(g, np.stack(state.masks))
        if progress is not None:
            progress(int((j >= threshold).sum()), len(g), f"{state.spent} clicks")
        open_frames = [i for i in np.flatnonzero(j < threshold) if len(state.clicks.get(int(i), [])) < max_clicks]
        if not open_frames or state.spent >= budget:
            break
        index = int(min(open_frames, key=lambda i: (j[i], i)))
    return ClipRun(state.spent, bool((j >= threshold).all()), budget, j, state.visits, state.latency_ms,
                   state.cpu_ms, state.propagation_s)


# ---------------------------------------------------------------------------------------------- benchmark


@dataclass
class ClickBenchmark:
    """Robot-user figures for one clip (the ``bench-clicks`` contract, see :meth:`to_json`).

    Attributes:
        refiner: the refiner's name (``"grabcut"``, ``"hq_sam:vit_b"``, …).
        max_clicks: clicks per frame in the per-frame protocol (20).
        frames: per-frame runs, one per frame of the clip.
        clip: the whole-clip run.
    """

    refiner: str
    max_clicks: int
    frames: list[FrameRun]
    clip: ClipRun

    def mean_noc(self, threshold: float) -> float:
        """Mean over frames of NoC@``threshold`` (clicks; ``max_clicks`` for a frame that never reached it)."""
        return float(np.mean([f.noc(threshold, self.max_clicks) for f in self.frames]))

    def mean_j_at_k(self) -> list[float]:
        """Mean over frames of J after k = 1 … ``max_clicks`` clicks (fractions in [0, 1])."""
        return np.mean([f.j_at(self.max_clicks) for f in self.frames], axis=0).tolist()

    def latency_ms(self, clock: Literal["wall", "cpu"] = "wall") -> dict[str, float]:
        """p50 / p95 (ms) of every click's ``refine`` call, per-frame and whole-clip protocols together.

        Args:
            clock: ``"wall"`` (what the user waits) or ``"cpu"`` (this process's CPU time, all threads).
        """
        if clock == "wall":
            ms = [v for f in self.frames for v in f.latency_ms] + self.clip.latency_ms
        else:
            ms = [v for f in self.frames for v in f.cpu_ms] + self.clip.cpu_ms
        if not ms:
            return {"p50": 0.0, "p95": 0.0}
        p50, p95 = np.percentile(ms, [50, 95])
        return {"p50": float(p50), "p95": float(p95)}

    def to_json(self) -> dict[str, Any]:
        """The ``bench-clicks`` JSON: the contract's keys plus ``clip_reached_085`` (False: the clicks are the budget),
        ``clip_final_j_min`` (the lowest final J over the clip's frames), ``cpu_ms`` (p50 / p95 of the clicks'
        CPU time), ``frames`` and ``max_clicks``."""
        return {
            "noc85": self.mean_noc(NOC_THRESHOLDS[0]),
            "noc90": self.mean_noc(NOC_THRESHOLDS[1]),
            "mean_j_at_k": self.mean_j_at_k(),
            "clip_clicks_to_085": int(self.clip.clicks_to_threshold),
            "latency_ms": self.latency_ms(),
            "refiner": self.refiner,
            "clip_reached_085": self.clip.reached,
            "clip_final_j_min": float(self.clip.j.min()),
            "cpu_ms": self.latency_ms("cpu"),
            "frames": len(self.frames),
            "max_clicks": self.max_clicks,
        }

    def summary(self) -> str:
        """One line for the console: NoC@85/90, mean J after 1 … 5 clicks, clip clicks, latency, refiner."""
        data = self.to_json()
        j = " ".join(f"{v:.3f}" for v in data["mean_j_at_k"][:5])
        reached = "reached" if data["clip_reached_085"] else "NOT reached: budget"
        lat = data["latency_ms"]
        return (f"{data['frames']} frames, refiner {data['refiner']}: NoC@85 {data['noc85']:.2f}  "
                f"NoC@90 {data['noc90']:.2f}  mean J after 1..5 clicks {j}  clip clicks to J>=0.85 "
                f"{data['clip_clicks_to_085']} ({reached})  click latency p50 {lat['p50']:.0f} ms  p95 {lat['p95']:.0f} ms")

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` to ``path`` atomically (parent folders are created); returns the path."""
        with atomic_output_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=2))
        return Path(path)


def load_gt_masks(masks_dir: str | os.PathLike[str], frame_names: Sequence[str], size_hw: tuple[int, int]) -> np.ndarray:
    """Ground-truth masks ``<masks_dir>/<frame name>.png`` for every frame, as ``(T, H, W)`` bool.

    Args:
        masks_dir: folder of binary mask PNGs (0 background / non-zero object, e.g. DAVIS-2016
            ``Annotations``; a palette PNG counts every non-zero id as the object).
        frame_names: the frames' names without extension, in order (e.g. ``VideoMeta.frame_names``).
        size_hw: ``(H, W)`` of the frames.

    Raises:
        FileNotFoundError: ``masks_dir`` or a frame's mask is missing (the message names the file).
        RobotUserError: a mask of another size than the frames.
    """
    folder = Path(masks_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such masks folder; expected one <frame name>.png per frame")
    out = np.zeros((len(frame_names), *size_hw), bool)
    for i, name in enumerate(frame_names):
        path = folder / f"{name}.png"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no ground-truth mask for frame {name!r} (frame {i})")
        mask = read_mask_png(path)
        if mask.shape != tuple(size_hw):
            raise RobotUserError(f"{path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from the frames' "
                                 f"{size_hw[1]}x{size_hw[0]}")
        out[i] = mask
    return out


def run_click_benchmark(
    frames: str | os.PathLike[str],
    masks: str | os.PathLike[str],
    refiner: Refiner | str = "grabcut",
    max_clicks: int = 20,
    clip_budget: int = 100,
    rule: ClickRule = "largest",
    stop_at: float | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    config: PropagationConfig | None = None,
    progress: Progress | None = None,
) -> ClickBenchmark:
    """Run the robot-user benchmark on a clip with ground-truth masks (protocols: module docstring).

    Args:
        frames: a frame folder (or video file) readable by :class:`rvos_core.video.VideoSource`.
        masks: folder with ``<frame name>.png`` per frame (0 background / non-zero object).
        refiner: a :class:`~rvos_core.refiners.base.Refiner` or a registry name
            (:func:`rvos_core.refiners.registry.load_refiner`: ``"grabcut"``, ``"hq_sam:vit_b"``, ``"auto"`` …).
        max_clicks: clicks per frame (per-frame protocol; also the cap per frame in the whole-clip one).
        clip_budget: click budget of the whole-clip protocol.
        rule: see :func:`next_click`.
        stop_at: per-frame protocol: stop a frame once J ≥ this (faster; later J values are carried
            forward); None = always ``max_clicks`` clicks.
        checkpoint, device: HQ-SAM only, see :func:`~rvos_core.refiners.registry.load_refiner`.
        config: propagation settings for the whole-clip protocol.
        progress: ``progress(done, total, message)``; total = 2 T (T frames, then T frames at J ≥ 0.85).

    Returns:
        :class:`ClickBenchmark` (``.to_json()`` / ``.write_json(path)`` give the contract's JSON).

    Raises:
        FileNotFoundError: missing frames, masks folder or a frame's mask.
        ValueError: unreadable frames (:class:`rvos_core.video.VideoError`), masks of another size,
            bad settings, unknown refiner name.
        rvos_core.weights.WeightsNotAvailable: an HQ-SAM checkpoint that is not downloaded.
    """
    from rvos_core.refiners.registry import load_refiner
    from rvos_core.video import VideoSource

    if max_clicks < 1 or clip_budget < 1:
        raise RobotUserError(f"max_clicks and clip_budget must be >= 1, got {max_clicks} and {clip_budget}")
    if rule not in CLICK_RULES:
        raise RobotUserError(f"rule must be one of {CLICK_RULES}, got {rule!r}")
    ref = load_refiner(refiner, checkpoint=checkpoint, device=device) if isinstance(refiner, str) else refiner
    with VideoSource(frames, cache_size=0) as video:
        num_frames = len(video)
        gt = load_gt_masks(masks, video.meta.frame_names, (video.meta.height, video.meta.width))
        rgb = [video.get_frame(i) for i in range(num_frames)]
        key = video.video_id
    runs = []
    for i in range(num_frames):
        runs.append(simulate_frame(ref, rgb[i], gt[i], max_clicks, stop_at=stop_at, rule=rule, frame_key=f"{key}:{i}"))
        if progress is not None:
            progress(i + 1, 2 * num_frames, f"frame {i}")

    def clip_progress(done: int, total: int, message: str) -> None:
        if progress is not None:
            progress(total + done, 2 * total, message)

    clip = simulate_clip(ref, rgb.__getitem__, gt, CLIP_THRESHOLD, clip_budget, max_clicks, rule, config,
                         frame_key_prefix=key, progress=clip_progress)
    return ClickBenchmark(ref.name, max_clicks, runs, clip)
