"""Region similarity J, contour accuracy F and J&F, as defined by the DAVIS / MeViS evaluation.

Definitions (Perazzi et al., "A Benchmark Dataset and Evaluation Methodology for Video Object
Segmentation", CVPR 2016; used unchanged by the MeViS evaluation, Ding et al., ICCV 2023), written
from the definition recorded in ``shared/ARCHITECTURE.md``:

* J on a frame: ``|G ∩ P| / |G ∪ P|``; 1 when both masks are empty.
* F on a frame: boundary maps of G and P (see :func:`boundary_map`), each dilated with the disk
  ``{x² + y² ≤ r²}`` where ``r = ceil(bound_th · hypot(H, W))`` if ``bound_th < 1`` else ``bound_th``
  pixels. Precision = fraction of P's boundary pixels inside dilated G's boundary; recall = the
  reverse; empty-boundary conventions in :func:`contour_accuracy`. ``F = 2PR / (P + R)`` (0 if P+R = 0).
* Per expression: mean over all frames (empty-GT frames included); dataset: mean over expressions;
  ``J&F = (J + F) / 2``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def _as_bool_stack(a: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
    arr = np.asarray(a)
    if arr.ndim == 2:
        return (arr != 0)[None], False
    if arr.ndim == 3:
        return arr != 0, True
    raise ValueError(f"{name}: expected an (H, W) or (T, H, W) mask array, got shape {arr.shape}")


def _check_pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    g, g_stack = _as_bool_stack(gt, "gt")
    p, p_stack = _as_bool_stack(pred, "pred")
    if g.shape != p.shape:
        raise ValueError(f"gt and pred shapes differ: gt {np.shape(gt)} vs pred {np.shape(pred)}")
    return g, p, g_stack


def region_similarity(gt: np.ndarray, pred: np.ndarray) -> float | np.ndarray:
    """Region similarity J (Jaccard index) per frame.

    Args:
        gt: ``(H, W)`` or ``(T, H, W)`` ground-truth mask, bool or 0/non-zero.
        pred: predicted mask of the same shape.

    Returns:
        A float in [0, 1] for 2-D input, else a ``(T,)`` float64 array. 1.0 when both are empty.

    Raises:
        ValueError: shapes differ or are not 2-D/3-D.
    """
    g, p, stacked = _check_pair(gt, pred)
    inter = np.logical_and(g, p).sum(axis=(1, 2), dtype=np.int64)
    union = np.logical_or(g, p).sum(axis=(1, 2), dtype=np.int64)
    j = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    return j.astype(np.float64) if stacked else float(j[0])


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary map of a binary mask, as the DAVIS evaluation defines it.

    ``b = (s ⊕ E) | (s ⊕ S) | (s ⊕ SE)`` where E, S, SE are the right, lower and lower-right
    neighbours (0 outside the image); then the last row is ``s ⊕ E``, the last column ``s ⊕ S``
    and the bottom-right pixel 0.

    Args:
        mask: ``(H, W)`` bool or 0/non-zero.

    Returns:
        ``(H, W)`` bool boundary map.
    """
    s = np.asarray(mask) != 0
    if s.ndim != 2:
        raise ValueError(f"boundary_map expects an (H, W) mask, got shape {s.shape}")
    e = np.zeros_like(s)
    so = np.zeros_like(s)
    se = np.zeros_like(s)
    e[:, :-1] = s[:, 1:]
    so[:-1, :] = s[1:, :]
    se[:-1, :-1] = s[1:, 1:]
    b = (s ^ e) | (s ^ so) | (s ^ se)
    b[-1, :] = s[-1, :] ^ e[-1, :]
    b[:, -1] = s[:, -1] ^ so[:, -1]
    b[-1, -1] = False
    return b


def tolerance_px(height: int, width: int, bound_th: float = 0.008) -> int:
    """Boundary tolerance radius in pixels: ``ceil(bound_th · hypot(H, W))`` if ``bound_th < 1`` else ``bound_th``.

    8 px at 480×854 with the default ``bound_th = 0.008``.
    """
    if bound_th <= 0:
        raise ValueError(f"bound_th must be > 0, got {bound_th}")
    if bound_th >= 1:
        return int(bound_th)
    return int(math.ceil(bound_th * math.hypot(height, width)))


def disk(radius: int) -> np.ndarray:
    """``(2r+1, 2r+1)`` uint8 structuring element ``{(x, y): x² + y² ≤ r²}``."""
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return ((xx * xx + yy * yy) <= radius * radius).astype(np.uint8)


def _dilate(b: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    out = cv2.dilate(b.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return out.astype(bool)


def _f_frame(g: np.ndarray, p: np.ndarray, bound_th: float) -> float:
    r = tolerance_px(g.shape[0], g.shape[1], bound_th)
    bg = boundary_map(g)
    bp = boundary_map(p)
    n_g = int(bg.sum())
    n_p = int(bp.sum())
    if n_p == 0 and n_g > 0:
        precision, recall = 1.0, 0.0
    elif n_p > 0 and n_g == 0:
        precision, recall = 0.0, 1.0
    elif n_p == 0 and n_g == 0:
        precision, recall = 1.0, 1.0
    else:
        k = disk(r)
        precision = float(np.logical_and(bp, _dilate(bg, k)).sum()) / n_p
        recall = float(np.logical_and(bg, _dilate(bp, k)).sum()) / n_g
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def contour_accuracy(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> float | np.ndarray:
    """Contour accuracy F (boundary F-measure) per frame.

    Empty-boundary conventions: prediction without boundary and GT with some → P = 1, R = 0;
    the reverse → P = 0, R = 1; neither → P = R = 1. ``F = 2PR / (P + R)``, 0 if ``P + R = 0``.

    Args:
        gt: ``(H, W)`` or ``(T, H, W)`` ground-truth mask, bool or 0/non-zero.
        pred: predicted mask of the same shape.
        bound_th: tolerance as a fraction of the image diagonal (< 1) or in pixels (≥ 1).

    Returns:
        A float in [0, 1] for 2-D input, else a ``(T,)`` float64 array.

    Raises:
        ValueError: shapes differ, are not 2-D/3-D, or ``bound_th <= 0``.
    """
    g, p, stacked = _check_pair(gt, pred)
    f = np.array([_f_frame(g[t], p[t], bound_th) for t in range(g.shape[0])], dtype=np.float64)
    return f if stacked else float(f[0])


def jf_summary(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> dict[str, float]:
    """J, F and J&F of one expression: means over all ``T`` frames of ``(T, H, W)`` masks.

    Returns:
        ``{"J": float, "F": float, "J&F": float}``, fractions in [0, 1].
    """
    j = float(np.mean(region_similarity(gt, pred)))
    f = float(np.mean(contour_accuracy(gt, pred, bound_th)))
    return {"J": j, "F": f, "J&F": (j + f) / 2.0}
