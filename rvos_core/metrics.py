"""Region similarity J, contour accuracy F and J&F, as defined by the DAVIS / MeViS evaluation.

Definitions (Perazzi et al., "A Benchmark Dataset and Evaluation Methodology for Video Object
Segmentation", CVPR 2016; used unchanged by the MeViS evaluation, Ding et al., ICCV 2023), written
from the definition recorded in ``shared/ARCHITECTURE.md``:

* J on a frame: ``|G ∩ P| / |G ∪ P|``; 1 when both masks are empty.
* F on a frame: boundary maps of G and P (see :func:`boundary_map`), each dilated with the disk
  ``{x² + y² ≤ r²}`` (zero padding) where ``r = ceil(bound_th · hypot(H, W))`` if ``bound_th < 1``
  else ``bound_th`` pixels. Precision = fraction of P's boundary pixels inside dilated G's boundary;
  recall = the reverse; empty-boundary conventions in :func:`contour_accuracy`.
  ``F = 2PR / (P + R)`` (0 if P + R = 0).
* Per expression: mean over all frames (empty-GT frames included); dataset: mean over expressions;
  ``J&F = (J + F) / 2``.

Speed (the results equal the whole-frame computation exactly; tests/test_metrics.py checks it and
bench/metrics_speed.py measures it): J is three OpenCV pixel counts per frame. F works only inside
the bounding box of the two masks grown by one pixel (no boundary pixel lies elsewhere) and carries
G and P as two bit-planes of one uint8 crop, so every step serves both. The dilation runs on the rows
that hold boundary pixels, cut into four row strips stacked in the bits of one byte, and uses the disk
written as its ``2r + 1`` horizontal chords (OR of the row shifted by ``|dx| ≤ chord``, then of those
rows shifted by ``±dy``): the same pixels as ``cv2.dilate`` with :func:`disk` and zero padding.
"""

from __future__ import annotations

import math
from functools import lru_cache

import cv2
import numpy as np

_GT_BIT = 1  # bit-plane of the ground truth inside the packed crop used by contour_accuracy
_PRED_BIT = 2  # bit-plane of the prediction
_STRIPS = 4  # row strips of the dilation window stacked in one byte, 2 bits each (see _stack_strips)
_GT_BITS_WORD = np.uint64(0x5555555555555555)  # the GT bits of eight stacked bytes seen as one 64-bit word
_ONE = np.uint64(1)


def _as_bool_stack(a: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
    arr = np.asarray(a)
    if arr.ndim not in (2, 3) or 0 in arr.shape[-2:]:
        raise ValueError(f"{name}: expected an (H, W) or (T, H, W) mask array with H, W >= 1, got shape {arr.shape}")
    mask = np.ascontiguousarray(arr if arr.dtype == np.bool_ else arr != 0)
    return (mask[None] if arr.ndim == 2 else mask), arr.ndim == 3


def _check_pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    g, g_stack = _as_bool_stack(gt, "gt")
    p, _ = _as_bool_stack(pred, "pred")
    if g.shape != p.shape or np.ndim(gt) != np.ndim(pred):
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
    g, p = g.view(np.uint8), p.view(np.uint8)
    scratch = np.empty(g.shape[1:], dtype=np.uint8)
    j = np.empty(g.shape[0], dtype=np.float64)
    for t in range(g.shape[0]):  # whole-frame pixel counts; faster than numpy's axis-wise reductions
        inter = cv2.countNonZero(cv2.bitwise_and(g[t], p[t], dst=scratch))
        union = cv2.countNonZero(g[t]) + cv2.countNonZero(p[t]) - inter
        j[t] = inter / union if union else 1.0
    return j if stacked else float(j[0])


def _boundary_planes(s: np.ndarray, out: np.ndarray | None = None, tmp: np.ndarray | None = None) -> np.ndarray:
    """Boundary map of every bit-plane of a contiguous ``(h, w)`` uint8 array (see :func:`boundary_map`).

    A pixel is on the boundary when it differs from its right (E), lower (S) or lower-right (SE)
    neighbour; neighbours outside the array are dropped, which is exactly the DAVIS rule set (the
    last row keeps only ``s ⊕ E``, the last column only ``s ⊕ S``, the bottom-right pixel is 0).
    Computed as whole-array shifts of the flattened image; the last column, where those wrap into
    the next row, is then recomputed. ``out`` / ``tmp``: optional contiguous ``(h, w)`` uint8 buffers.
    """
    h, w = s.shape
    b = np.empty_like(s) if out is None else out
    t = np.empty_like(s) if tmp is None else tmp
    f, bf, tf = s.ravel(), b.ravel(), t.ravel()
    np.bitwise_xor(f[:-1], f[1:], out=bf[:-1])
    np.bitwise_xor(f[:-w], f[w:], out=tf[:-w])
    bf[:-w] |= tf[:-w]
    np.bitwise_xor(f[: -w - 1], f[w + 1 :], out=tf[: -w - 1])
    bf[: -w - 1] |= tf[: -w - 1]
    np.bitwise_xor(s[:-1, -1], s[1:, -1], out=b[:-1, -1])
    b[-1, -1] = 0
    return b


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary map of a binary mask, as the DAVIS evaluation defines it.

    ``b = (s ⊕ E) | (s ⊕ S) | (s ⊕ SE)`` where E, S, SE are the right, lower and lower-right
    neighbours (0 outside the image); then the last row is ``s ⊕ E``, the last column ``s ⊕ S``
    and the bottom-right pixel 0. Only an empty or a full mask has an empty boundary.

    Args:
        mask: ``(H, W)`` bool or 0/non-zero.

    Returns:
        ``(H, W)`` bool boundary map.

    Raises:
        ValueError: ``mask`` is not 2-D.
    """
    s = np.asarray(mask) != 0
    if s.ndim != 2:
        raise ValueError(f"boundary_map expects an (H, W) mask, got shape {s.shape}")
    return _boundary_planes(np.ascontiguousarray(s).view(np.uint8)).view(bool)


def tolerance_px(height: int, width: int, bound_th: float = 0.008) -> int:
    """Boundary tolerance radius in pixels (DAVIS ``bound_pix``).

    ``ceil(bound_th · sqrt(H² + W²))`` if ``bound_th < 1`` (the image diagonal computed as the
    DAVIS code does, ``np.linalg.norm((H, W))``), else ``bound_th`` pixels. 8 px at 480×854 with the
    default ``bound_th = 0.008``.

    Raises:
        ValueError: ``bound_th`` is not a finite number > 0, or is ≥ 1 but not a whole number of pixels.
    """
    bound_th = float(bound_th)
    if not math.isfinite(bound_th) or bound_th <= 0:
        raise ValueError(f"bound_th must be a finite number > 0, got {bound_th!r}")
    if bound_th >= 1:
        if bound_th != int(bound_th):
            raise ValueError(f"bound_th >= 1 is a radius in pixels and must be a whole number, got {bound_th!r}")
        return int(bound_th)
    return int(math.ceil(bound_th * math.sqrt(height * height + width * width)))


def disk(radius: int) -> np.ndarray:
    """``(2r+1, 2r+1)`` uint8 structuring element ``{(x, y): x² + y² ≤ r²}`` (skimage ``disk``).

    Raises:
        ValueError: ``radius`` is negative.
    """
    if radius < 0:
        raise ValueError(f"disk radius must be >= 0, got {radius}")
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return ((xx * xx + yy * yy) <= radius * radius).astype(np.uint8)


@lru_cache(maxsize=64)
def _disk_chords(radius: int) -> tuple[int, ...]:
    """Half-widths of the rows of :func:`disk`: row ``dy`` holds ``|dx| ≤ isqrt(r² − dy²)``; index ``|dy|``."""
    return tuple(math.isqrt(radius * radius - dy * dy) for dy in range(radius + 1))


def _or_shifted(out: np.ndarray, src: np.ndarray, shift: int) -> None:
    """``out |= src`` shifted by ``+shift`` and by ``−shift`` (1-D, zero fill, ``shift ≥ 1``)."""
    if shift < src.size:
        out[shift:] |= src[:-shift]
        out[:-shift] |= src[shift:]


def _dilate_disk(src: np.ndarray, width: int, chords: tuple[int, ...], out: np.ndarray, row: np.ndarray) -> None:
    """Dilate every bit of ``src`` with the disk whose row half-widths are ``chords``, into ``out``.

    ``src`` is a contiguous ``(h, stride)`` uint8 array, ``stride`` a multiple of 8, holding the
    image in its first ``width`` columns and at least ``r = len(chords) − 1`` zero columns after
    them, so whole-array (flat) shifts by ``|dx| ≤ r`` never carry a pixel into another row's image
    columns. ``out`` (result) and ``row`` (work) are buffers of the same layout. On the image
    columns the result equals ``cv2.dilate(bit, disk(r), borderType=BORDER_CONSTANT, borderValue=0)``
    for every bit; the padding columns hold junk. ``row`` grows to each chord's width and is OR-ed
    into ``out`` at ``±dy`` (whole rows, so those shifts run on 64-bit words).
    """
    words_per_row = src.shape[1] // 8
    flat, rw = src.ravel(), row.ravel()
    out64, row64 = out.ravel().view(np.uint64), rw.view(np.uint64)
    out64.fill(0)
    np.copyto(rw, flat)
    grown = 0
    for dy in range(len(chords) - 1, -1, -1):  # chords widen as |dy| shrinks
        for dx in range(grown + 1, min(chords[dy], width - 1) + 1):
            _or_shifted(rw, flat, dx)
        grown = chords[dy]
        if dy:
            _or_shifted(out64, row64, dy * words_per_row)
        else:
            out64 |= row64


class _Workspace:
    """Reusable uint8 buffers for :func:`contour_accuracy` (fresh ~100 kB arrays at every step cost
    more in page faults than the arithmetic on them)."""

    def __init__(self, height: int, width: int) -> None:
        self.union = np.empty((height, width), dtype=np.uint8)
        self._min_size = height * (width + 16)
        self._flat: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, int]) -> np.ndarray:
        """A contiguous ``shape`` view of buffer ``name`` (contents undefined; grown when too small)."""
        size = shape[0] * shape[1]
        buf = self._flat.get(name)
        if buf is None or buf.size < size:
            buf = self._flat[name] = np.empty(max(size, self._min_size), dtype=np.uint8)
        return buf[:size].reshape(shape)


def _plane_counts(b: np.ndarray, tmp: np.ndarray) -> tuple[int, int]:
    """Pixels of boundary planes ``b`` on the GT plane and on the prediction plane; ``tmp`` a buffer like ``b``."""
    return (cv2.countNonZero(np.bitwise_and(b, _GT_BIT, out=tmp)),
            cv2.countNonZero(np.bitwise_and(b, _PRED_BIT, out=tmp)))


def _same_boundary(b: np.ndarray, n_gt: int, n_pred: int, tmp: np.ndarray) -> bool:
    """Whether the GT and prediction planes of ``b`` hold the same pixels (then F = 1, no dilation needed)."""
    both = np.equal(b, _GT_BIT | _PRED_BIT, out=tmp.view(bool)).view(np.uint8)
    return n_gt == n_pred and cv2.countNonZero(both) == n_gt


def _stack_strips(window: np.ndarray, radius: int, ws: _Workspace) -> tuple[np.ndarray, int, int]:
    """Cut contiguous boundary planes ``window`` (``(h, w)``, GT bit 1, prediction bit 2) into up to
    four row strips and stack them in one byte: strip ``k`` on bits ``2k`` (GT) and ``2k + 1`` (prediction).

    Each strip carries ``halo = min(r, h)`` rows of its neighbours above and below, so dilating the
    stack (bitwise, all strips at once, on about a quarter of the rows) is exact on the strips' own
    rows. Returns ``(stack, strip_rows, halo)``; ``stack`` is ``(strip_rows + 2·halo, stride)``
    with the layout :func:`_dilate_disk` expects; the strips' own rows are ``halo … halo + strip_rows``.
    """
    h, w = window.shape
    halo = min(radius, h)
    strip = -(-h // min(_STRIPS, h))
    stride = -(-(w + radius) // 8) * 8
    stack = ws.get("src", (strip + 2 * halo, stride))
    stack.fill(0)
    for k in range(-(-h // strip)):
        lo, hi = max(k * strip - halo, 0), min((k + 1) * strip + halo, h)
        part = stack[lo - k * strip + halo : hi - k * strip + halo, :w]
        bits = np.multiply(window[lo:hi], 1 << (2 * k), out=ws.get("tmp", (hi - lo, w)))
        cv2.bitwise_or(part, bits, dst=part)
    return stack, strip, halo


def _swap_planes(stack: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """``stack`` with every GT bit and its prediction bit exchanged (64-bit word ops); ``out``, ``tmp``: buffers."""
    src, dst, t = (a.ravel().view(np.uint64) for a in (stack, out, tmp))
    np.right_shift(src, _ONE, out=dst)
    dst &= _GT_BITS_WORD
    np.bitwise_and(src, _GT_BITS_WORD, out=t)
    t <<= _ONE
    dst |= t
    return out


def _matched_counts(window: np.ndarray, chords: tuple[int, ...], ws: _Workspace) -> tuple[int, int]:
    """``(|B_P ∩ dilate(B_G)|, |B_G ∩ dilate(B_P)|)`` for contiguous boundary planes ``window``
    (GT bit 1, prediction bit 2)."""
    stack, strip, halo = _stack_strips(window, len(chords) - 1, ws)
    dilated = ws.get("dilated", stack.shape)
    swapped = _swap_planes(stack, ws.get("swapped", stack.shape), dilated)  # prediction on GT bits and vice versa
    _dilate_disk(stack, window.shape[1], chords, dilated, ws.get("row", stack.shape))
    hits = dilated.ravel().view(np.uint64)
    hits &= swapped.ravel().view(np.uint64)
    words_per_row = stack.shape[1] // 8
    own = hits[halo * words_per_row : (halo + strip) * words_per_row]  # each strip's own rows, halos excluded
    total = int(np.bitwise_count(own).sum())
    own &= _GT_BITS_WORD
    hit_pred = int(np.bitwise_count(own).sum())  # prediction boundary pixels inside the dilated GT boundary
    return hit_pred, total - hit_pred


def _f_measure(n_gt: int, n_pred: int, hit_pred: int, hit_gt: int) -> float:
    """F from boundary pixel counts, with the DAVIS empty-boundary conventions."""
    if n_pred == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_pred > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_pred == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        precision, recall = hit_pred / n_pred, hit_gt / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def _crop_with_margin(start: int, size: int, limit: int) -> slice:
    """``[start, start + size)`` grown by one pixel each side, clipped to ``[0, limit)``."""
    return slice(max(start - 1, 0), min(start + size + 1, limit))


def _f_frame(g: np.ndarray, p: np.ndarray, chords: tuple[int, ...], ws: _Workspace) -> float:
    """F of one frame of contiguous ``(H, W)`` bool masks.

    Boundary pixels lie in the masks' bounding box grown by one pixel; that crop ends on the image
    edge or on a zero row/column, so the boundary computed inside it is the whole-frame one. The
    dilation then runs on the crop's rows that hold boundary pixels: pixels outside them are never
    counted and hold no boundary pixel that could reach into them.
    """
    gu, pu = g.view(np.uint8), p.view(np.uint8)
    x, y, w, h = cv2.boundingRect(cv2.bitwise_or(gu, pu, dst=ws.union))
    if w == 0:  # both empty
        return 1.0
    rows, cols = _crop_with_margin(y, h, g.shape[0]), _crop_with_margin(x, w, g.shape[1])
    gc, pc = gu[rows, cols], pu[rows, cols]
    planes, b, tmp = (ws.get(name, gc.shape) for name in ("planes", "boundary", "tmp"))
    planes = cv2.bitwise_or(cv2.add(pc, pc, dst=planes), gc, dst=planes)  # GT on bit 1, prediction on bit 2
    b = _boundary_planes(planes, b, tmp)
    n_gt, n_pred = _plane_counts(b, tmp)
    if n_gt == 0 or n_pred == 0 or _same_boundary(b, n_gt, n_pred, tmp):  # no dilation needed
        return _f_measure(n_gt, n_pred, n_pred, n_gt)
    _, y, _, h = cv2.boundingRect(b)
    hit_pred, hit_gt = _matched_counts(b[y : y + h], chords, ws)
    return _f_measure(n_gt, n_pred, hit_pred, hit_gt)


def contour_accuracy(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> float | np.ndarray:
    """Contour accuracy F (boundary F-measure) per frame.

    Empty-boundary conventions: prediction without boundary and GT with some → P = 1, R = 0;
    the reverse → P = 0, R = 1; neither → P = R = 1. ``F = 2PR / (P + R)``, 0 if ``P + R = 0``.
    A mask has no boundary pixel only when it is empty or full (so full vs empty scores F = 1).

    Args:
        gt: ``(H, W)`` or ``(T, H, W)`` ground-truth mask, bool or 0/non-zero.
        pred: predicted mask of the same shape.
        bound_th: tolerance as a fraction of the image diagonal (< 1) or in whole pixels (≥ 1),
            see :func:`tolerance_px`.

    Returns:
        A float in [0, 1] for 2-D input, else a ``(T,)`` float64 array.

    Raises:
        ValueError: shapes differ, are not 2-D/3-D, or ``bound_th`` is invalid (see :func:`tolerance_px`).
    """
    g, p, stacked = _check_pair(gt, pred)
    _, height, width = g.shape
    radius = tolerance_px(height, width, bound_th)
    chords, ws = _disk_chords(radius), _Workspace(height, width)
    f = np.fromiter((_f_frame(g[t], p[t], chords, ws) for t in range(g.shape[0])), np.float64, g.shape[0])
    return f if stacked else float(f[0])


def jf_summary(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> dict[str, float]:
    """J, F and J&F of one expression: means over all ``T`` frames of ``(T, H, W)`` masks.

    Returns:
        ``{"J": float, "F": float, "J&F": float}``, fractions in [0, 1].
    """
    j = float(np.mean(region_similarity(gt, pred)))
    f = float(np.mean(contour_accuracy(gt, pred, bound_th)))
    return {"J": j, "F": f, "J&F": (j + f) / 2.0}
