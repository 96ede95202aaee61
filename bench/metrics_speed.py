"""Per-frame CPU time of J and F: ``rvos_core.metrics`` vs a straightforward whole-frame implementation.

Usage: python bench/metrics_speed.py [--clips davis2016_blackswan davis2016_bmx-trees] [--repeats 7] [--bound-th 0.008]

Ground truth: the DAVIS-2016 masks of the shared clips (480×854). Predictions: perturbed ground truth
(identical, shifted, eroded, dilated, ragged boundary, salt noise, another frame, empty, full).
Everything runs on one thread (``cv2.setNumThreads(1)``, OMP/BLAS threads 1), so the figures are per
core. Each timing is the minimum over ``--repeats`` runs (the machine is shared). Prints per-frame ms
for J and F, old vs new, speed-up factors and the largest |new − old| over the whole set.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _paths import SHARED_DATA  # noqa: E402

from rvos_core.masks import read_mask_png  # noqa: E402
from rvos_core.metrics import contour_accuracy, region_similarity  # noqa: E402

# ------------------------------------------------------------------ straightforward reference ("old")


def old_region_similarity(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """J per frame of ``(T, H, W)`` bool stacks: whole-array intersection / union sums."""
    inter = np.logical_and(gt, pred).sum(axis=(1, 2), dtype=np.int64)
    union = np.logical_or(gt, pred).sum(axis=(1, 2), dtype=np.int64)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def old_boundary_map(s: np.ndarray) -> np.ndarray:
    """DAVIS boundary map of an ``(H, W)`` bool mask over the whole frame."""
    right, below, below_right = np.zeros_like(s), np.zeros_like(s), np.zeros_like(s)
    right[:, :-1] = s[:, 1:]
    below[:-1, :] = s[1:, :]
    below_right[:-1, :-1] = s[1:, 1:]
    b = (s ^ right) | (s ^ below) | (s ^ below_right)
    b[-1, :] = s[-1, :] ^ right[-1, :]
    b[:, -1] = s[:, -1] ^ below[:, -1]
    b[-1, -1] = False
    return b


def old_f_frame(gt: np.ndarray, pred: np.ndarray, bound_th: float) -> float:
    """F of one frame: whole-frame boundary maps, whole-frame cv2.dilate with the disk."""
    h, w = gt.shape
    r = int(bound_th) if bound_th >= 1 else int(np.ceil(bound_th * np.linalg.norm([h, w])))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    kernel = (xx * xx + yy * yy <= r * r).astype(np.uint8)
    gt_b, pred_b = old_boundary_map(gt), old_boundary_map(pred)
    gt_dil = cv2.dilate(gt_b.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    pred_dil = cv2.dilate(pred_b.astype(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    n_gt, n_pred = int(gt_b.sum()), int(pred_b.sum())
    if n_gt and n_pred:
        precision = np.count_nonzero(pred_b & (gt_dil > 0)) / n_pred
        recall = np.count_nonzero(gt_b & (pred_dil > 0)) / n_gt
    else:  # DAVIS conventions, keyed by (GT has boundary pixels, prediction has boundary pixels)
        precision, recall = {(1, 0): (1.0, 0.0), (0, 1): (0.0, 1.0), (0, 0): (1.0, 1.0)}[(n_gt > 0, n_pred > 0)]
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def old_contour_accuracy(gt: np.ndarray, pred: np.ndarray, bound_th: float) -> np.ndarray:
    return np.array([old_f_frame(gt[t], pred[t], bound_th) for t in range(len(gt))], dtype=np.float64)


# -------------------------------------------------------------------------------------- benchmark set


def load_clip(name: str) -> np.ndarray:
    files = sorted((SHARED_DATA / name / "Annotations").glob("*.png"))
    if not files:
        raise FileNotFoundError(f"{SHARED_DATA / name / 'Annotations'}: no PNG masks")
    return np.stack([read_mask_png(f) for f in files])


def shifted(gt: np.ndarray, dy: int, dx: int) -> np.ndarray:
    out = np.zeros_like(gt)
    h, w = gt.shape[1:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = gt[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def morphed(gt: np.ndarray, op: Callable, size: int) -> np.ndarray:
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return np.stack([op(m.view(np.uint8), k) for m in gt]).astype(bool)


def ragged(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boundary moved in and out by a few pixels: blurred mask plus smooth noise, re-thresholded."""
    out = []
    for m in gt:
        soft = cv2.GaussianBlur(m.astype(np.float32), (0, 0), 3)
        noise = cv2.GaussianBlur(rng.standard_normal(m.shape).astype(np.float32), (0, 0), 4) * 2.5
        out.append(soft + noise > 0.5)
    return np.stack(out)


def perturbations(gt: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "identical": gt.copy(),
        "shifted (6, -9) px": shifted(gt, 6, -9),
        "eroded 7 px disk": morphed(gt, cv2.erode, 7),
        "dilated 7 px disk": morphed(gt, cv2.dilate, 7),
        "ragged boundary": ragged(gt, rng),
        "salt noise 0.05 %": gt ^ (rng.random(gt.shape) < 0.0005),
        "frame t+5": np.concatenate([gt[5:], gt[-5:]]),
        "empty": np.zeros_like(gt),
        "full": np.ones_like(gt),
    }


def best_time(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", nargs="+", default=["davis2016_blackswan", "davis2016_bmx-trees"])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--bound-th", type=float, default=0.008)
    a = ap.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    gt = np.concatenate([load_clip(c) for c in a.clips])
    sets = perturbations(gt, rng)
    n = len(gt)
    print(f"clips: {', '.join(a.clips)}; {n} GT frames at {gt.shape[2]}x{gt.shape[1]}; bound_th {a.bound_th}; "
          f"1 thread; min of {a.repeats} runs")
    print(f"{'prediction':<20} {'J old':>7} {'J new':>7} {'J x':>6}  {'F old':>7} {'F new':>7} {'F x':>6}  "
          f"{'mean F':>6}  {'max|dJ|':>8} {'max|dF|':>8}")
    totals = np.zeros(4)
    max_dj = max_df = 0.0
    for name, pred in sets.items():
        t_jo, j_old = best_time(lambda: old_region_similarity(gt, pred), a.repeats)
        t_jn, j_new = best_time(lambda: region_similarity(gt, pred), a.repeats)
        t_fo, f_old = best_time(lambda: old_contour_accuracy(gt, pred, a.bound_th), max(2, a.repeats // 2))
        t_fn, f_new = best_time(lambda: contour_accuracy(gt, pred, a.bound_th), a.repeats)
        dj, df = float(np.abs(j_new - j_old).max()), float(np.abs(f_new - f_old).max())
        max_dj, max_df = max(max_dj, dj), max(max_df, df)
        totals += (t_jo, t_jn, t_fo, t_fn)
        ms = [1e3 * t / n for t in (t_jo, t_jn, t_fo, t_fn)]
        print(f"{name:<20} {ms[0]:7.3f} {ms[1]:7.3f} {ms[0] / ms[1]:5.1f}x  {ms[2]:7.3f} {ms[3]:7.3f} "
              f"{ms[2] / ms[3]:5.1f}x  {f_new.mean():6.3f}  {dj:8.1e} {df:8.1e}")
    ms = 1e3 * totals / (n * len(sets))
    print(f"{'all (mean)':<20} {ms[0]:7.3f} {ms[1]:7.3f} {ms[0] / ms[1]:5.1f}x  {ms[2]:7.3f} {ms[3]:7.3f} "
          f"{ms[2] / ms[3]:5.1f}x  {'':6}  {max_dj:8.1e} {max_df:8.1e}")
    old, new = ms[0] + ms[2], ms[1] + ms[3]
    print(f"J+F per frame: old {old:.3f} ms, new {new:.3f} ms -> {old / new:.1f}x "
          f"({1e3 / old:.0f} -> {1e3 / new:.0f} frames/s per core)")
    print(f"max |new - old| over the set: J {max_dj:.1e}, F {max_df:.1e}")


if __name__ == "__main__":
    main()
