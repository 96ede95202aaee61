"""Refiner registry: a name → a shared :class:`~rvos_core.refiners.base.Refiner`, plus prompt validation.

Names:

- ``"grabcut"``: :class:`~rvos_core.refiners.grabcut.GrabCutRefiner`, offline, no weights.
- ``"hq_sam:vit_tiny"``, ``"hq_sam:vit_b"``, ``"hq_sam:vit_l"``, ``"hq_sam:vit_h"``:
  :class:`~rvos_core.refiners.hq_sam.HQSamRefiner` (weights from :mod:`rvos_core.weights`).
- ``"auto"``: the biggest HQ-SAM whose checkpoint is in the weights cache (h > l > b > tiny), else GrabCut.

Refiners are built once per ``(name, checkpoint, device)`` and shared; HQ-SAM refiners guard their
predictor with a lock, GrabCut keeps no state, so shared instances are safe across threads.
Nothing is built at import time.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np

from rvos_core import weights
from rvos_core.refiners.base import Refiner

#: HQ-SAM variants, biggest first (the order "auto" prefers).
HQ_SAM_MODEL_TYPES: tuple[str, ...] = ("vit_h", "vit_l", "vit_b", "vit_tiny")
REFINER_NAMES: tuple[str, ...] = ("auto", "grabcut") + tuple(f"hq_sam:{m}" for m in ("vit_tiny", "vit_b", "vit_l", "vit_h"))

_CACHE: dict[tuple[str, str | None, str], Refiner] = {}
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Prompts:
    """Validated prompts for one frame (see :func:`validate_prompts`).

    Attributes:
        points: ``(N, 2)`` float32 (x, y) pixels with N ≥ 1, or None.
        labels: ``(N,)`` int64, 1 positive / 0 negative, or None (exactly when ``points`` is None).
        box: ``(4,)`` float32 XYXY pixels, or None.
        mask_prior: ``(H, W)`` bool with at least one True pixel, or None.
    """

    points: np.ndarray | None
    labels: np.ndarray | None
    box: np.ndarray | None
    mask_prior: np.ndarray | None

    @property
    def positive(self) -> np.ndarray:
        """``(P, 2)`` float32: the positive clicks (empty when none)."""
        if self.points is None or self.labels is None:
            return np.zeros((0, 2), np.float32)
        return self.points[self.labels == 1]

    @property
    def negative(self) -> np.ndarray:
        """``(Q, 2)`` float32: the negative clicks (empty when none)."""
        if self.points is None or self.labels is None:
            return np.zeros((0, 2), np.float32)
        return self.points[self.labels == 0]


def validate_frame(frame: np.ndarray) -> np.ndarray:
    """Check a frame: ``(H, W, 3)`` uint8 RGB with H, W ≥ 1. Returns it unchanged.

    Raises:
        ValueError: wrong type, shape or dtype (the message gives what was received).
    """
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy array (H, W, 3) uint8 RGB, got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"frame must have shape (H, W, 3), got {frame.shape}")
    if frame.dtype != np.uint8:
        raise ValueError(f"frame must be uint8 in [0, 255], got dtype {frame.dtype}")
    return frame


def _validate_points(points, labels, height: int, width: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    if points is None:
        if labels is not None and np.asarray(labels).size > 0:
            raise ValueError("labels were given without points")
        return None, None
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        if labels is not None and np.asarray(labels).size > 0:
            raise ValueError(f"{np.asarray(labels).size} labels were given for 0 points")
        return None, None
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape (N, 2) as (x, y) pixels, got {pts.shape}")
    if labels is None:
        raise ValueError(f"points ({len(pts)}) were given without labels (1 positive / 0 negative)")
    lab = np.asarray(labels)
    if lab.shape != (len(pts),):
        raise ValueError(f"labels must have shape ({len(pts)},) to match points, got {lab.shape}")
    if not np.all(np.isin(lab, (0, 1))):
        raise ValueError(f"labels must be 1 (positive) or 0 (negative), got values {np.unique(lab).tolist()}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("points contain NaN or infinity")
    outside = (pts[:, 0] < 0) | (pts[:, 0] >= width) | (pts[:, 1] < 0) | (pts[:, 1] >= height)
    if outside.any():
        bad = pts[outside][0].tolist()
        raise ValueError(
            f"point (x, y) = {tuple(bad)} is outside the frame; expected 0 <= x < {width} and 0 <= y < {height}"
        )
    return pts.astype(np.float32), lab.astype(np.int64)


def _validate_box(box, height: int, width: int) -> np.ndarray | None:
    if box is None:
        return None
    b = np.asarray(box, dtype=np.float64)
    if b.shape != (4,):
        raise ValueError(f"box must have shape (4,) as XYXY pixels, got {b.shape}")
    if not np.all(np.isfinite(b)):
        raise ValueError(f"box contains NaN or infinity: {b.tolist()}")
    x0, y0, x1, y1 = b.tolist()
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"box must be XYXY with x0 < x1 and y0 < y1, got {b.tolist()}")
    if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
        raise ValueError(f"box {b.tolist()} is outside the frame; expected 0 <= x <= {width} and 0 <= y <= {height}")
    return b.astype(np.float32)


def _validate_prior(mask_prior, height: int, width: int) -> np.ndarray | None:
    if mask_prior is None:
        return None
    prior = np.asarray(mask_prior)
    if prior.shape != (height, width):
        raise ValueError(f"mask_prior must have the frame's shape ({height}, {width}), got {prior.shape}")
    if prior.dtype != bool:
        if not (np.issubdtype(prior.dtype, np.integer) or np.issubdtype(prior.dtype, np.floating)):
            raise ValueError(f"mask_prior must be bool (or 0/non-zero numbers), got dtype {prior.dtype}")
        prior = prior > 0
    return prior if prior.any() else None


def validate_prompts(
    frame: np.ndarray,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    box: np.ndarray | None = None,
    mask_prior: np.ndarray | None = None,
) -> Prompts:
    """Check and normalise the prompts of :meth:`Refiner.refine` (shared by every refiner).

    Args:
        frame: ``(H, W, 3)`` uint8 RGB.
        points: ``(N, 2)`` (x, y) pixels with ``0 <= x < W``, ``0 <= y < H``; None or empty means no clicks.
        labels: ``(N,)`` 1 positive / 0 negative; required with points.
        box: ``(4,)`` XYXY pixels inside ``[0, W] × [0, H]`` with ``x0 < x1`` and ``y0 < y1``, or None.
        mask_prior: ``(H, W)`` bool (or 0/non-zero numbers), or None; an all-False prior counts as none.

    Returns:
        :class:`Prompts` with normalised dtypes.

    Raises:
        ValueError: bad frame; mismatched points/labels; a point outside the frame; a bad box or prior;
            or no prompt that says where the object is (needs a positive click, a box or a non-empty prior).
    """
    validate_frame(frame)
    height, width = frame.shape[:2]
    pts, lab = _validate_points(points, labels, height, width)
    prompts = Prompts(pts, lab, _validate_box(box, height, width), _validate_prior(mask_prior, height, width))
    if len(prompts.positive) == 0 and prompts.box is None and prompts.mask_prior is None:
        raise ValueError(
            "no prompt that locates the object: give at least one positive click, a box or a non-empty mask_prior"
        )
    return prompts


# ---------------------------------------------------------------------------------------------- registry


def _validate_name(name: str) -> str:
    if name not in REFINER_NAMES:
        raise ValueError(f"unknown refiner {name!r}; valid names: {', '.join(REFINER_NAMES)}")
    return name


def available_hq_sam() -> str | None:
    """The biggest HQ-SAM model type whose checkpoint is in the weights cache, or None (local lookup only)."""
    for model_type in HQ_SAM_MODEL_TYPES:
        if weights.local_path(f"hq_sam_{model_type}") is not None:
            return model_type
    return None


def resolve_refiner_name(name: str = "auto") -> str:
    """The concrete refiner name that ``name`` stands for (``"auto"`` → ``"hq_sam:<biggest found>"`` or ``"grabcut"``).

    Raises:
        ValueError: unknown name; the message lists the valid names.
    """
    _validate_name(name)
    if name != "auto":
        return name
    model_type = available_hq_sam()
    return f"hq_sam:{model_type}" if model_type else "grabcut"


def _build(name: str, checkpoint: str | None, device: str) -> Refiner:
    if name == "grabcut":
        from rvos_core.refiners.grabcut import GrabCutRefiner

        return GrabCutRefiner()
    from rvos_core.refiners.hq_sam import HQSamRefiner

    return HQSamRefiner(model_type=name.split(":", 1)[1], checkpoint=checkpoint, device=device)


def load_refiner(name: str = "auto", checkpoint: str | os.PathLike[str] | None = None, device: str = "cpu") -> Refiner:
    """Build (once) and return a shared refiner.

    Args:
        name: one of :data:`REFINER_NAMES`.
        checkpoint: HQ-SAM only: a checkpoint path or a weights-registry name; None → the registry weight
            ``hq_sam_<model_type>`` from the weights cache. Ignored by GrabCut.
        device: torch device string for HQ-SAM (``"cpu"``, ``"cuda"``, ``"cuda:1"``…).

    Returns:
        The refiner; the same object for the same ``(resolved name, checkpoint, device)``.

    Raises:
        ValueError: unknown name (lists the valid ones) or a bad checkpoint / device for HQ-SAM.
        rvos_core.weights.WeightsNotAvailable: an HQ-SAM checkpoint is not downloaded (the message gives the
            download command).
    """
    resolved = resolve_refiner_name(name)
    ckpt = None if resolved == "grabcut" or checkpoint is None else os.fspath(checkpoint)
    dev = "cpu" if resolved == "grabcut" else str(device)
    key = (resolved, ckpt, dev)
    with _CACHE_LOCK:
        refiner = _CACHE.get(key)
        if refiner is None:
            refiner = _build(resolved, ckpt, dev)
            _CACHE[key] = refiner
    return refiner


def clear_refiner_cache() -> None:
    """Forget the shared refiners (frees their models once no caller holds them)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def refiner_status(refiner: Refiner | str | None = None) -> str:
    """One sentence for the UI: which refiner is active and how to get the other one.

    Args:
        refiner: an active refiner, a refiner name, or None for what ``"auto"`` picks now (local lookup only).

    Raises:
        ValueError: an unknown refiner name.
    """
    if refiner is None:
        name = resolve_refiner_name("auto")
    elif isinstance(refiner, str):
        name = resolve_refiner_name(refiner)
    else:
        name = refiner.name
    if name == "grabcut":
        return (
            "Offline GrabCut refiner active. For HQ-SAM run: "
            f"{weights.download_command('hq_sam_vit_b')} (or hq_sam_vit_tiny for a faster, smaller model)."
        )
    return f"HQ-SAM refiner active ({name}). The offline GrabCut refiner is always available as 'grabcut' (no download)."
