"""Mask propagation between frames: optical-flow warp + refiner re-fit, as a cancellable generator.

From an edited frame (``start``, with its ``(H, W)`` bool mask) the mask is carried frame by frame
``"forward"``, ``"backward"`` or ``"both"`` ways, over ``window`` frames per direction or to the clip's end.
UI-free and session-agnostic: it sees frames only through a getter (e.g.
:meth:`rvos_core.video.VideoSource.get_frame`) and masks of hand-edited frames only through ``existing_mask``.

One step, from frame ``p`` (mask ``M_p``) to its neighbour ``n``:

1. **Flow.** DIS optical flow (Kroeger, Timofte, Dai & Van Gool, "Fast Optical Flow using Dense Inverse
   Search", ECCV 2016; OpenCV's ``cv2.DISOpticalFlow``) on greyscale frames, downscaled so the longer side
   is at most ``flow_max_side`` (the flow is then upsampled and its vectors rescaled). The flow is computed
   *from n to p* (backward flow), so every pixel ``x`` of frame ``n`` knows where it came from:
   ``n(x) ≈ p(x + f(x))``.
2. **Warp.** ``W_n(x) = M_p(x + f(x))``: ``cv2.remap`` of the mask (bilinear on {0, 1}, kept where ≥ 0.5;
   pixels that map outside the frame are background). With ``fb_check`` (default) pixels of ``n`` that fail
   the forward-backward consistency test (Sundaram, Brox & Keutzer, ECCV 2010; see :class:`FlowWarper`),
   i.e. background uncovered behind the moving object, are set to background. Flow alone still drifts at
   motion boundaries, which the re-fit of step 4 bounds. Measured on DAVIS-2016 blackswan from frame 0's
   ground truth, mean J over the 49 following frames: warped only 0.84 (``"medium"`` flow) / 0.92
   (``"fine"``); with the GrabCut re-fit 0.88 (``"medium"``) / 0.88 (``"fine"``) — GrabCut itself caps J near
   0.88–0.90 on that clip.
3. **Prompts** from ``W_n`` by seed 003's recipe (2nd place, MeViS track, CVPR 2024 PVUW, §2.4, see
   :func:`rvos_core.masks.sample_prompt_points`): the box spanning the mask's extreme coordinates, 10
   positive points uniformly inside the mask, 5 negative points inside the box and outside the mask. The
   draw is seeded by ``(config.seed, n)``, so a frame gets the same prompts whatever the order of work.
   The box is passed as pixel edges (``x_max + 1``, ``y_max + 1``), so a one-pixel-wide mask still gives a
   valid XYXY box and GrabCut's half-open box keeps the last row/column.
4. **Re-fit.** ``refiner.refine(frame_n, points, labels, box, mask_prior=W_n)``: HQ-SAM (prompted by the
   previous frame's warped mask, as the issue asks) or the offline GrabCut refiner. With ``refiner=None``
   the warped mask is used as it is.

Rules (what each :class:`PropagationStep` ``source`` means):

- ``"refined"``: the refiner's mask, accepted. ``score`` = the refiner's own estimate (HQ-SAM: predicted
  IoU; GrabCut: 1.0).
- ``"warped"``: the flow-warped mask, used because there is no refiner, or because the refined mask
  *collapsed*: empty, or its area below ``min_area_ratio`` (0.2) or above ``max_area_ratio`` (5.0) times the
  warped mask's area. ``score`` = 0.0 (unverified).
- ``"lost"``: the warped mask is empty (the object left the frame or shrank to nothing): the object is
  considered gone, and this and every later frame in that direction get an empty mask without any flow or
  refiner work (``score`` 0.0) — until a kept frame with a non-empty mask re-anchors the propagation.
- ``"kept"``: a frame edited by hand (``keep``) and ``overwrite=False``: its existing mask is yielded
  unchanged (``score`` 1.0) and becomes the anchor the propagation continues from (an empty kept mask
  means "the object is absent here", so the frames after it are ``"lost"``). If ``existing_mask`` returns
  None for a kept frame there is nothing to keep and the frame is propagated like any other.

The start frame itself is never yielded (its mask is the caller's input). For ``"both"``, all forward
steps come first (``start + 1, start + 2, …``), then all backward steps (``start - 1, start - 2, …``); each
direction starts again from ``start_mask``. Cancellation is checked before each frame and again before
yielding it: once the token is set, nothing more is yielded (a frame being computed when the cancel
arrives is dropped).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import cv2
import numpy as np

from rvos_core.masks import sample_prompt_points
from rvos_core.refiners.base import Refiner
from rvos_core.refiners.registry import validate_frame

Direction = Literal["forward", "backward", "both"]
StepSource = Literal["refined", "warped", "kept", "lost"]

#: Valid ``direction`` values.
DIRECTIONS: tuple[str, ...] = ("forward", "backward", "both")
#: DIS settings by name: (OpenCV preset, finest pyramid scale or None for the preset's own). OpenCV's FAST
#: and MEDIUM stop at pyramid scale 2 and 1 (flow at 1/4 and 1/2 of the input size); "fine" is MEDIUM run
#: down to scale 0 (full input size): ~4× MEDIUM's time, sharper at motion boundaries. ULTRAFAST is too
#: coarse for masks.
DIS_PRESETS: dict[str, tuple[int, int | None]] = {
    "fast": (cv2.DISOPTICAL_FLOW_PRESET_FAST, None),
    "medium": (cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, None),
    "fine": (cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, 0),
}

FrameGetter = Callable[[int], np.ndarray]
MaskGetter = Callable[[int], "np.ndarray | None"]


class CancelFlag(Protocol):
    """What :func:`propagate` accepts as ``cancel``: anything with ``is_set() -> bool`` (e.g. ``threading.Event``)."""

    def is_set(self) -> bool: ...


class CancelToken:
    """A cancel flag shared between the thread that propagates and the one that stops it.

    Any object with ``is_set() -> bool`` works as a token for :func:`propagate` (e.g. a ``threading.Event``);
    this class adds the spelling ``cancel()`` / ``cancelled``.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        """Ask the propagation to stop before its next frame."""
        self._event.set()

    def is_set(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self._event.is_set()

    @property
    def cancelled(self) -> bool:
        """Same as :meth:`is_set`."""
        return self._event.is_set()


@dataclass(frozen=True)
class PropagationStep:
    """The result for one frame, yielded by :func:`propagate`.

    Attributes:
        frame: the frame index (0-based).
        mask: ``(H, W)`` bool, the object's mask on that frame.
        source: ``"refined"``, ``"warped"``, ``"kept"`` or ``"lost"`` (see the module docstring's rules).
        score: confidence in [0, 1]: the refiner's score for ``"refined"``, 1.0 for ``"kept"``, 0.0 otherwise.
        ms: wall-clock milliseconds spent on this frame (frame read, flow, warp, refiner).
    """

    frame: int
    mask: np.ndarray
    source: StepSource
    score: float
    ms: float


@dataclass(frozen=True)
class PropagationConfig:
    """Tuning of :func:`propagate`.

    Attributes:
        flow_preset: DIS setting, ``"fast"``, ``"medium"`` or ``"fine"`` (see :data:`DIS_PRESETS`).
        flow_max_side: the flow is computed on frames downscaled so the longer side is at most this many
            pixels (≥ 32); larger = slower and finer.
        fb_check: drop disoccluded pixels from the warped mask (forward-backward check, see :class:`FlowWarper`).
        min_area_ratio, max_area_ratio: a refined mask whose area is outside
            ``[min_area_ratio, max_area_ratio] × area(warped)`` has collapsed; the warped mask is used instead.
        n_pos, n_neg: prompt points per frame (seed 003: 10 positive, 5 negative).
        seed: seed of the prompt-point draw (combined with the frame index).

    Raises:
        ValueError: an unknown preset, a side < 32, ratios not ``0 <= min < 1 < max``, negative counts.
    """

    flow_preset: str = "medium"
    flow_max_side: int = 480
    fb_check: bool = True
    min_area_ratio: float = 0.2
    max_area_ratio: float = 5.0
    n_pos: int = 10
    n_neg: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.flow_preset not in DIS_PRESETS:
            raise ValueError(f"flow_preset must be one of {sorted(DIS_PRESETS)}, got {self.flow_preset!r}")
        if not isinstance(self.flow_max_side, int) or self.flow_max_side < 32:
            raise ValueError(f"flow_max_side must be an int >= 32 px, got {self.flow_max_side!r}")
        if not 0 <= self.min_area_ratio < 1 < self.max_area_ratio:
            raise ValueError(
                f"area ratios must satisfy 0 <= min_area_ratio < 1 < max_area_ratio, "
                f"got {self.min_area_ratio!r} and {self.max_area_ratio!r}"
            )
        for field, value in (("n_pos", self.n_pos), ("n_neg", self.n_neg)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{field} must be an int >= 0, got {value!r}")


# ---------------------------------------------------------------------------------------------- flow


class FlowWarper:
    """Warps a mask from one frame to a neighbour with DIS optical flow (Kroeger et al., ECCV 2016).

    The mask is sampled along the backward flow (next → previous frame). Where the next frame shows
    something the previous frame did not (disocclusion, e.g. the background uncovered behind a moving
    object), the backward flow has no true match; with ``fb_check`` those pixels are found by the
    forward-backward consistency test of Sundaram, Brox & Keutzer ("Dense point trajectories by
    GPU-accelerated large displacement optical flow", ECCV 2010): ``x`` is inconsistent when
    ``|b(x) + f(x + b(x))|² > 0.01 (|b(x)|² + |f(x + b(x))|²) + 0.5`` (b backward, f forward flow, in
    working-size pixels), and they are set to background. This costs a second flow computation.

    Holds one ``cv2.DISOpticalFlow`` instance, which is not thread-safe: use one warper per thread.

    Args:
        preset: ``"fast"``, ``"medium"`` or ``"fine"`` (see :data:`DIS_PRESETS`).
        max_side: longest side (px) of the greyscale frames the flow is computed on (≥ 32).
        fb_check: drop disoccluded pixels from the warped mask (see above).

    Raises:
        ValueError: unknown preset or ``max_side < 32``.
    """

    def __init__(self, preset: str = "medium", max_side: int = 480, fb_check: bool = True) -> None:
        PropagationConfig(flow_preset=preset, flow_max_side=max_side)  # validates both
        opencv_preset, finest_scale = DIS_PRESETS[preset]
        self._dis = cv2.DISOpticalFlow_create(opencv_preset)
        if finest_scale is not None:
            self._dis.setFinestScale(finest_scale)
        self.max_side = int(max_side)
        self.fb_check = bool(fb_check)

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB → ``(h, w)`` uint8 greyscale at the flow's working size (area-downscaled)."""
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        scale = self.max_side / max(grey.shape)
        if scale >= 1.0:
            return grey
        size = (max(1, round(grey.shape[1] * scale)), max(1, round(grey.shape[0] * scale)))
        return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)

    @staticmethod
    def _to_full(small: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
        """A working-size flow ``(h, w, 2)`` resized to ``size_hw`` with its vectors rescaled to full-size pixels."""
        h, w = size_hw
        if small.shape[:2] == (h, w):
            return small
        flow = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        flow[..., 0] *= w / small.shape[1]
        flow[..., 1] *= h / small.shape[0]
        return flow

    def backward_flow(self, prev_grey: np.ndarray, next_grey: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
        """Flow from the next frame to the previous one at full size.

        Args:
            prev_grey, next_grey: outputs of :meth:`prepare` (same shape).
            size_hw: ``(H, W)`` of the original frames.

        Returns:
            ``(H, W, 2)`` float32 ``(dx, dy)`` in full-size pixels with ``next(x) ≈ prev(x + flow(x))``.
        """
        return self._to_full(self._dis.calc(next_grey, prev_grey, None), size_hw)

    @staticmethod
    def _sample(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """``image(x + flow(x))``, bilinear, 0 outside; ``image`` float32 ``(H, W)`` or ``(H, W, C)``."""
        h, w = flow.shape[:2]
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        return cv2.remap(image, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)

    @classmethod
    def disoccluded(cls, backward: np.ndarray, forward: np.ndarray) -> np.ndarray:
        """Pixels of the next frame failing Sundaram et al.'s forward-backward check; ``(h, w)`` bool.

        Args:
            backward: ``(h, w, 2)`` flow next → previous; forward: ``(h, w, 2)`` flow previous → next
                (same pixel units).
        """
        ahead = cls._sample(forward, backward)
        mismatch = np.square(backward + ahead).sum(axis=2)
        return mismatch > 0.01 * (np.square(backward).sum(axis=2) + np.square(ahead).sum(axis=2)) + 0.5

    @classmethod
    def warp(cls, mask: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """Sample ``mask`` (``(H, W)`` bool, previous frame) along a backward ``flow`` (``(H, W, 2)``).

        Returns:
            ``(H, W)`` bool: ``mask(x + flow(x))`` with bilinear sampling, foreground where ≥ 0.5;
            locations outside the frame count as background.
        """
        return cls._sample(mask.astype(np.float32), flow) >= 0.5

    def warp_mask(self, prev_grey: np.ndarray, next_grey: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """``mask`` (``(H, W)`` bool on the previous frame) carried onto the next frame; ``(H, W)`` bool.

        Args:
            prev_grey, next_grey: outputs of :meth:`prepare` for the previous and the next frame.
        """
        backward = self._dis.calc(next_grey, prev_grey, None)
        warped = self.warp(mask, self._to_full(backward, mask.shape))
        if self.fb_check:
            forward = self._dis.calc(prev_grey, next_grey, None)
            bad = self.disoccluded(backward, forward).astype(np.uint8)
            warped &= cv2.resize(bad, mask.shape[::-1], interpolation=cv2.INTER_NEAREST) == 0
        return warped


# ---------------------------------------------------------------------------------------------- validation


def _check_index(name: str, value: object, num_frames: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < num_frames:
        raise ValueError(f"{name} must be a frame index in [0, {num_frames - 1}], got {value!r}")
    return int(value)


def _check_window(window: object) -> int | None:
    if window is None:
        return None
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be an int >= 1 (frames per direction) or None (to the clip's end), got {window!r}")
    return int(window)


def _check_mask(mask: object, size_hw: tuple[int, int], what: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != size_hw:
        raise ValueError(f"{what} must have the frame's shape {size_hw}, got {m.shape}")
    if m.dtype != bool and not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
        raise ValueError(f"{what} must be bool (or 0/non-zero numbers), got dtype {m.dtype}")
    return m > 0 if m.dtype != bool else m.copy()


def _read_frame(get_frame: FrameGetter, index: int, size_hw: tuple[int, int] | None) -> np.ndarray:
    frame = get_frame(index)
    try:
        validate_frame(frame)
    except ValueError as exc:
        raise ValueError(f"get_frame({index}): {exc}") from exc
    if size_hw is not None and frame.shape[:2] != size_hw:
        raise ValueError(f"get_frame({index}) returned a frame of size {frame.shape[:2]}, expected {size_hw} like the start frame")
    return frame


def _keep_predicate(keep: Collection[int] | Callable[[int], bool] | None) -> Callable[[int], bool]:
    if keep is None:
        return lambda i: False
    if callable(keep):
        return lambda i: bool(keep(i))
    kept = {int(i) for i in keep}
    return kept.__contains__


def frames_to_visit(num_frames: int, start: int, direction: str = "forward", window: int | None = None) -> list[list[int]]:
    """The frames :func:`propagate` visits, one list per pass in processing order.

    Args:
        num_frames: frames in the clip (≥ 1).
        start: the edited frame (not included).
        direction: ``"forward"`` (one pass up), ``"backward"`` (one pass down) or ``"both"`` (up, then down).
        window: at most this many frames per direction, or None for the clip's end.

    Returns:
        e.g. ``[[6, 7, 8], [4, 3, 2]]`` for ``(10, 5, "both", 3)``; passes may be empty.

    Raises:
        ValueError: ``num_frames < 1``, ``start`` out of range, unknown direction, ``window < 1``.
    """
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    start = _check_index("start", start, num_frames)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    span = _check_window(window) or num_frames
    passes = []
    if direction in ("forward", "both"):
        passes.append(list(range(start + 1, min(num_frames, start + span + 1))))
    if direction in ("backward", "both"):
        passes.append(list(range(start - 1, max(-1, start - span - 1), -1)))
    return passes


# ---------------------------------------------------------------------------------------------- one step


def _refit(refiner: Refiner, frame: np.ndarray, warped: np.ndarray, index: int, config: PropagationConfig,
           frame_key: str | None) -> tuple[np.ndarray, StepSource, float]:
    """Seed 003's prompts from the warped mask → the refiner; falls back to ``warped`` when the result collapsed."""
    rng = np.random.default_rng([config.seed, index])
    points, labels, box = sample_prompt_points(warped, n_pos=config.n_pos, n_neg=config.n_neg, rng=rng)
    h, w = warped.shape
    edges = np.array([box[0], box[1], min(box[2] + 1, w), min(box[3] + 1, h)], np.float32)
    result = refiner.refine(frame, points, labels, box=edges, mask_prior=warped, frame_key=frame_key)
    refined = np.asarray(result.mask, dtype=bool)
    area, warped_area = int(refined.sum()), int(warped.sum())
    if area == 0 or not config.min_area_ratio * warped_area <= area <= config.max_area_ratio * warped_area:
        return warped, "warped", 0.0
    return refined, "refined", float(result.score)


@dataclass
class _Context:
    """Everything a step needs besides the anchor (fixed for one :func:`propagate` call)."""

    get_frame: FrameGetter
    size_hw: tuple[int, int]
    warper: FlowWarper
    refiner: Refiner | None
    config: PropagationConfig
    is_kept: Callable[[int], bool]
    existing_mask: MaskGetter | None
    key_prefix: str | None

    def kept_mask(self, index: int) -> np.ndarray | None:
        """The hand-edited mask to keep on ``index`` (bool copy), or None when the frame is to be propagated."""
        if self.existing_mask is None or not self.is_kept(index):
            return None
        mask = self.existing_mask(index)
        return None if mask is None else _check_mask(mask, self.size_hw, f"existing_mask({index})")


@dataclass
class _Anchor:
    """Where a pass stands: the last frame's greyscale (flow size) and mask (empty = the object is lost)."""

    grey: np.ndarray | None
    mask: np.ndarray


def _step(index: int, anchor: _Anchor, ctx: _Context) -> tuple[np.ndarray, StepSource, float]:
    """Compute frame ``index`` from ``anchor`` and move the anchor onto it."""
    kept = ctx.kept_mask(index)
    if kept is None and not anchor.mask.any():
        anchor.grey = None  # lost: no frame read, no flow, until a kept frame re-anchors
        return np.zeros(ctx.size_hw, bool), "lost", 0.0
    frame = _read_frame(ctx.get_frame, index, ctx.size_hw)
    grey = ctx.warper.prepare(frame)
    if kept is not None:
        mask, source, score = kept, "kept", 1.0
    else:
        warped = ctx.warper.warp_mask(anchor.grey, grey, anchor.mask)
        if not warped.any():
            mask, source, score = warped, "lost", 0.0
        elif ctx.refiner is None:
            mask, source, score = warped, "warped", 0.0
        else:
            key = None if ctx.key_prefix is None else f"{ctx.key_prefix}:{index}"
            mask, source, score = _refit(ctx.refiner, frame, warped, index, ctx.config, key)
    anchor.grey, anchor.mask = grey, mask
    return mask.copy(), source, score


# ---------------------------------------------------------------------------------------------- API


def propagate(
    get_frame: FrameGetter,
    num_frames: int,
    start: int,
    start_mask: np.ndarray,
    direction: Direction = "forward",
    window: int | None = None,
    refiner: Refiner | None = None,
    keep: Collection[int] | Callable[[int], bool] | None = None,
    existing_mask: MaskGetter | None = None,
    overwrite: bool = False,
    cancel: CancelFlag | None = None,
    config: PropagationConfig | None = None,
    frame_key_prefix: str | None = None,
) -> Iterator[PropagationStep]:
    """Propagate an object's mask from an edited frame; yields one :class:`PropagationStep` per frame.

    Method and rules: see the module docstring (DIS flow, Kroeger et al. ECCV 2016; prompts by seed 003's
    recipe; collapse / lost / kept rules). Arguments are checked when this is called, frames are read
    lazily as the generator advances.

    Args:
        get_frame: ``get_frame(i) -> (H, W, 3) uint8 RGB`` for ``0 <= i < num_frames``.
        num_frames: frames in the clip (≥ 1).
        start: index of the edited frame (not yielded).
        start_mask: ``(H, W)`` bool (or 0/non-zero numbers), the object's mask on ``start``.
        direction: ``"forward"``, ``"backward"`` or ``"both"`` (forward pass first, then backward).
        window: frames per direction (≥ 1), or None for the clip's end.
        refiner: a :class:`rvos_core.refiners.base.Refiner` (HQ-SAM or GrabCut), or None for flow only.
        keep: frames edited by hand: a collection of indices or a predicate ``keep(i) -> bool``.
        existing_mask: ``existing_mask(i) -> (H, W) bool | None``, the current mask of a kept frame;
            required when ``keep`` is given and ``overwrite`` is False.
        overwrite: True → kept frames are propagated over like any other frame.
        cancel: a :class:`CancelToken` or ``threading.Event`` (anything with ``is_set()``); checked
            between frames.
        config: flow and collapse settings (:class:`PropagationConfig`); None → defaults.
        frame_key_prefix: e.g. the video id; the refiner gets ``frame_key=f"{prefix}:{i}"`` for its
            per-frame cache (HQ-SAM embeddings). None disables caching.

    Returns:
        A generator of :class:`PropagationStep` in processing order (see :func:`frames_to_visit`).

    Raises:
        ValueError: ``start`` out of range, unknown ``direction``, ``window < 1``, ``num_frames < 1``,
            ``start_mask`` not of the start frame's ``(H, W)``, ``keep`` without ``existing_mask``, a
            ``refiner`` without ``refine`` or a ``cancel`` without ``is_set``; while
            iterating, a frame of another size / type or an existing mask of the wrong shape (the message
            names the frame index).
    """
    passes = frames_to_visit(num_frames, start, direction, window)
    if refiner is not None and not isinstance(refiner, Refiner):
        raise ValueError(f"refiner must follow the Refiner protocol (name, refine(...)) or be None, got {type(refiner).__name__}")
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise ValueError(f"cancel must have an is_set() method (CancelToken, threading.Event) or be None, got {type(cancel).__name__}")
    if keep is not None and not overwrite and existing_mask is None:
        raise ValueError("keep was given without existing_mask: the masks of kept frames are needed (or pass overwrite=True)")
    first = _read_frame(get_frame, start, None)
    size_hw = first.shape[:2]
    mask0 = _check_mask(start_mask, size_hw, "start_mask")
    cfg = config if config is not None else PropagationConfig()
    warper = FlowWarper(cfg.flow_preset, cfg.flow_max_side, cfg.fb_check)
    is_kept = (lambda i: False) if overwrite else _keep_predicate(keep)
    ctx = _Context(get_frame, size_hw, warper, refiner, cfg, is_kept, existing_mask, frame_key_prefix)
    return _run(passes, warper.prepare(first), mask0, ctx, cancel)


def _run(passes: list[list[int]], start_grey: np.ndarray, start_mask: np.ndarray, ctx: _Context,
         cancel: CancelFlag | None) -> Iterator[PropagationStep]:
    cancelled = (lambda: False) if cancel is None else cancel.is_set
    for frames in passes:
        anchor = _Anchor(start_grey, start_mask)
        for index in frames:
            if cancelled():
                return
            t0 = time.perf_counter()
            mask, source, score = _step(index, anchor, ctx)
            ms = (time.perf_counter() - t0) * 1000.0
            if cancelled():
                return
            yield PropagationStep(frame=index, mask=mask, source=source, score=score, ms=ms)


def propagate_all(*args: Any, **kwargs: Any) -> dict[int, np.ndarray]:
    """Run :func:`propagate` to the end and collect ``{frame: (H, W) bool mask}``.

    Takes exactly :func:`propagate`'s arguments. The start frame is not included; kept frames are (with
    their unchanged masks). If ``cancel`` is set on the way, the frames done so far are returned.

    Raises:
        ValueError: as :func:`propagate`.
    """
    return {step.frame: step.mask for step in propagate(*args, **kwargs)}
