"""J / F / J&F: hand-computed cases for every convention, and the fast implementation against an
independent straightforward reference of the definition (whole-frame boundary maps, scipy distance
transform; bench/metrics_speed.py holds the whole-frame cv2.dilate one)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from scipy import ndimage

from rvos_core.masks import read_mask_png
from rvos_core.metrics import (
    boundary_map,
    contour_accuracy,
    disk,
    jf_summary,
    region_similarity,
    tolerance_px,
)

from _paths import SHARED_DATA


# ----------------------------------------------------------------------------------------- reference


def _ref_boundary(s: np.ndarray) -> np.ndarray:
    """DAVIS boundary map spelled out: zero-padded E/S/SE neighbours, then the last-row/column rules."""
    s = s != 0
    h, w = s.shape
    padded = np.pad(s, ((0, 1), (0, 1)))  # neighbours outside the image are 0
    neighbour = {d: padded[d[0] : d[0] + h, d[1] : d[1] + w] for d in ((0, 1), (1, 0), (1, 1))}  # E, S, SE
    b = np.logical_or.reduce([s ^ n for n in neighbour.values()])
    b[-1, :] = s[-1, :] ^ neighbour[0, 1][-1, :]  # last row: E only
    b[:, -1] = s[:, -1] ^ neighbour[1, 0][:, -1]  # last column: S only
    b[-1, -1] = False
    return b


def _ref_f(g: np.ndarray, p: np.ndarray, bound_th: float) -> float:
    """Whole-frame F of one frame: boundary maps, then "inside the dilation by the disk {x² + y² ≤ r²}"
    as "Euclidean distance to the other boundary ≤ r" (scipy's exact distance transform), DAVIS conventions."""
    h, w = g.shape
    r = int(bound_th) if bound_th >= 1 else int(np.ceil(bound_th * np.linalg.norm([h, w])))
    bg, bp = _ref_boundary(g), _ref_boundary(p)
    n_g, n_p = int(bg.sum()), int(bp.sum())
    if n_g == 0 or n_p == 0:
        precision, recall = float(n_p == 0), float(n_g == 0)
    else:
        precision = (bp & (ndimage.distance_transform_edt(~bg) <= r)).sum() / n_p
        recall = (bg & (ndimage.distance_transform_edt(~bp) <= r)).sum() / n_g
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _ref_j(g: np.ndarray, p: np.ndarray) -> float:
    union = np.logical_or(g, p).sum()
    return 1.0 if union == 0 else np.logical_and(g, p).sum() / union


# ------------------------------------------------------------------------------------ J hand cases


def test_j_hand_cases():
    g = np.zeros((4, 4), bool)
    p = np.zeros((4, 4), bool)
    assert region_similarity(g, p) == 1.0  # both empty
    g[0:2, 0:2] = True
    assert region_similarity(g, p) == 0.0  # prediction empty
    assert region_similarity(p, g) == 0.0  # GT empty
    p[0:2, 1:3] = True  # overlap 2, union 6
    assert region_similarity(g, p) == pytest.approx(1 / 3, abs=1e-12)
    full = np.ones((4, 4), bool)
    assert region_similarity(full, full) == 1.0
    assert region_similarity(full, g) == 4 / 16
    one = np.zeros((4, 4), bool)
    one[3, 3] = True
    assert region_similarity(one, one) == 1.0
    assert region_similarity(one, g) == 0.0
    stack = region_similarity(np.stack([g, g]), np.stack([p, g]))
    assert stack.shape == (2,) and stack.dtype == np.float64 and stack[1] == 1.0


def test_j_accepts_zero_nonzero_and_tiny_frames():
    g = np.zeros((2, 5, 3), np.uint8)
    p = np.zeros((2, 5, 3), np.int32)
    g[0, 1:4, 1] = 255
    p[0, 2:5, 1] = 7
    assert region_similarity(g, p).tolist() == [0.5, 1.0]
    assert region_similarity(g != 0, p != 0).tolist() == [0.5, 1.0]
    assert region_similarity(np.ones((1, 1)), np.zeros((1, 1))) == 0.0
    assert region_similarity(np.ones((1, 1)), np.ones((1, 1))) == 1.0
    assert region_similarity(np.zeros((0, 4, 4), bool), np.zeros((0, 4, 4), bool)).shape == (0,)


# ------------------------------------------------------------------------------ boundary map rules


def test_boundary_map_single_pixel():
    s = np.zeros((3, 3), bool)
    s[1, 1] = True
    expected = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0]], bool)
    assert np.array_equal(boundary_map(s), expected)
    corner = np.zeros((3, 3), bool)
    corner[0, 0] = True  # top-left: only the pixel itself differs from a lower/right neighbour
    assert np.argwhere(boundary_map(corner)).tolist() == [[0, 0]]
    corner = np.zeros((3, 3), bool)
    corner[2, 2] = True  # bottom-right: forced 0; its left and upper neighbours and the diagonal one remain
    assert np.argwhere(boundary_map(corner)).tolist() == [[1, 1], [1, 2], [2, 1]]


def test_boundary_map_full_and_last_row_rules():
    full = np.ones((4, 5), bool)
    # zero padding would mark the right/bottom border, but the last-row/last-column rules overwrite it
    assert not boundary_map(full).any()
    line = np.zeros((4, 5), bool)
    line[3, :] = True  # 1-pixel line on the last row
    b = boundary_map(line)
    assert not b[3].any()  # last row: s xor E is 0 inside the line; the bottom-right pixel is forced to 0
    assert b[2].all()  # the row above differs from its lower neighbour everywhere
    assert not b[:2].any()
    assert not boundary_map(np.ones((1, 1), bool)).any()
    assert boundary_map(np.array([[0, 1, 1, 0, 1]])).tolist() == [[True, False, True, True, False]]
    assert boundary_map(np.array([[1], [0], [0], [1]])).T.tolist() == [[True, False, True, False]]


def test_boundary_map_matches_reference_on_random_masks():
    rng = np.random.default_rng(3)
    for h, w in [(1, 1), (1, 9), (8, 1), (2, 2), (5, 7), (33, 17)]:
        for density in (0.1, 0.5, 0.9):
            m = rng.random((h, w)) < density
            assert np.array_equal(boundary_map(m), _ref_boundary(m)), (h, w, density)
    with pytest.raises(ValueError, match="shape"):
        boundary_map(np.zeros((2, 3, 4)))


# ------------------------------------------------------------------------------- tolerance & disk


def test_tolerance():
    assert tolerance_px(480, 854) == 8
    assert tolerance_px(480, 854, 3) == 3
    assert tolerance_px(480, 854, 3.0) == 3
    assert tolerance_px(100, 100, 0.01) == math.ceil(0.01 * math.hypot(100, 100))
    assert tolerance_px(30, 40, 0.04) == 2  # 0.04 · 50 = 2 exactly
    assert tolerance_px(30, 40, 0.041) == 3
    assert tolerance_px(1, 1) == 1
    for bad in (0, -1, float("nan"), float("inf"), 2.5):
        with pytest.raises(ValueError, match="bound_th"):
            tolerance_px(10, 10, bad)


def test_disk_is_the_definition():
    assert disk(0).tolist() == [[1]]
    assert disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    d = disk(8)
    assert d.shape == (17, 17) and d.dtype == np.uint8 and int(d.sum()) == 197
    points = np.random.default_rng(1).random((40, 50)) < 0.01
    for r in (1, 2, 3, 8, 30):  # the tests' distance-transform reference equals cv2.dilate with disk(r)
        dilated = cv2.dilate(points.astype(np.uint8), disk(r), borderType=cv2.BORDER_CONSTANT, borderValue=0)
        assert np.array_equal(dilated > 0, ndimage.distance_transform_edt(~points) <= r)
    with pytest.raises(ValueError):
        disk(-1)


# ------------------------------------------------------------------------------------ F hand cases


def test_f_empty_and_full_conventions():
    e = np.zeros((10, 10), bool)
    m = e.copy()
    m[3:6, 3:6] = True
    full = np.ones((10, 10), bool)
    assert contour_accuracy(e, e) == 1.0  # no boundary on either side: P = R = 1
    assert contour_accuracy(m, e) == 0.0  # prediction has no boundary: P = 1, R = 0
    assert contour_accuracy(e, m) == 0.0  # GT has no boundary: P = 0, R = 1
    assert contour_accuracy(m, m) == 1.0
    assert contour_accuracy(full, full) == 1.0
    assert contour_accuracy(full, e) == 1.0  # a full mask has no boundary either (J is 0 here)
    assert contour_accuracy(full, m) == 0.0
    assert contour_accuracy(m, ~m) == 1.0  # the complement has the same boundary map


def test_f_single_pixels_hand_case():
    g = np.zeros((12, 12), bool)
    p = np.zeros((12, 12), bool)
    g[5, 5] = True  # boundary {(4,4), (4,5), (5,4), (5,5)}
    p[5, 8] = True  # boundary {(4,7), (4,8), (5,7), (5,8)}
    assert contour_accuracy(g, p, bound_th=1) == 0.0
    assert contour_accuracy(g, p, bound_th=2) == pytest.approx(0.5, abs=1e-12)  # 2 of 4 on each side
    assert contour_accuracy(g, p, bound_th=4) == 1.0


def test_f_one_pixel_lines_hand_case():
    g = np.zeros((12, 12), bool)
    g[5, 2:9] = True  # boundary: rows 4 and 5, columns 1..8 (16 px)
    p = np.roll(g, 2, axis=0)  # boundary: rows 6 and 7
    assert contour_accuracy(g, p, bound_th=1) == pytest.approx(0.5, abs=1e-12)  # rows 5↔6 match only
    assert contour_accuracy(g, p, bound_th=2) == 1.0
    assert contour_accuracy(g.T, p.T, bound_th=1) == pytest.approx(0.5, abs=1e-12)
    row_g = np.array([[0, 1, 1, 0, 0, 0, 0, 0, 0]], bool)  # 1×N: boundary {0, 2}
    row_p = np.array([[0, 0, 0, 0, 1, 1, 0, 0, 0]], bool)  # boundary {3, 5}
    assert contour_accuracy(row_g, row_p, bound_th=1) == pytest.approx(0.5, abs=1e-12)
    assert contour_accuracy(row_g.T, row_p.T, bound_th=1) == pytest.approx(0.5, abs=1e-12)  # N×1


def test_f_border_touching_hand_case():
    g = np.zeros((30, 40), bool)
    p = np.zeros((30, 40), bool)
    g[:, :10] = True  # touches top, left and bottom: boundary = column 9, all 30 rows
    p[:, :13] = True  # boundary = column 12: 3 px away
    assert region_similarity(g, p) == pytest.approx(10 / 13, abs=1e-12)
    assert contour_accuracy(g, p, bound_th=2) == 0.0
    assert contour_accuracy(g, p, bound_th=3) == 1.0
    assert contour_accuracy(g, p, bound_th=0.04) == 0.0  # r = ceil(0.04 · 50) = 2
    assert contour_accuracy(g, p, bound_th=0.041) == 1.0  # r = 3
    corner = np.zeros((30, 40), bool)
    corner[-1, -1] = True  # 3 boundary pixels (28, 38), (28, 39), (29, 38), all within 1 px of (28, 38)
    near = np.zeros((30, 40), bool)
    near[28, 38] = True  # 4 boundary pixels (27..28, 37..38); (27, 37) is √2 from the nearest GT one
    assert contour_accuracy(corner, near, bound_th=1) == pytest.approx(6 / 7, abs=1e-12)  # P = 3/4, R = 1
    assert contour_accuracy(corner, near, bound_th=2) == 1.0
    assert contour_accuracy(np.ones((1, 1), bool), np.zeros((1, 1), bool)) == 1.0  # 1×1: never a boundary


def test_f_stack_and_input_errors():
    g = np.zeros((3, 8, 8), bool)
    g[:, 2:5, 2:5] = True
    f = contour_accuracy(g, g)
    assert f.shape == (3,) and f.dtype == np.float64 and f.tolist() == [1.0, 1.0, 1.0]
    assert contour_accuracy(np.zeros((0, 8, 8)), np.zeros((0, 8, 8))).shape == (0,)
    p = np.roll(g, 1, axis=2)
    assert contour_accuracy(g.astype(np.uint8) * 255, p.astype(np.float32), 1).tolist() == contour_accuracy(g, p, 1).tolist()
    with pytest.raises(ValueError, match="bound_th"):
        contour_accuracy(g, g, bound_th=0)
    with pytest.raises(ValueError, match="bound_th"):
        contour_accuracy(g, g, bound_th=1.5)
    with pytest.raises(ValueError, match="shapes differ"):
        contour_accuracy(g, g[:, :7])
    with pytest.raises(ValueError, match="H, W >= 1"):
        contour_accuracy(np.zeros((2, 0, 4)), np.zeros((2, 0, 4)))


def test_jf_summary_and_shape_errors():
    g = np.zeros((3, 8, 8), bool)
    g[:, 2:5, 2:5] = True
    s = jf_summary(g, g)
    assert s == {"J": 1.0, "F": 1.0, "J&F": 1.0}
    p = g.copy()
    p[1] = False  # frame 1: J = 0, F = 0 (P = 1, R = 0)
    s = jf_summary(g, p)
    assert s["J"] == pytest.approx(2 / 3) and s["F"] == pytest.approx(2 / 3) and s["J&F"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        region_similarity(g, g[0])
    with pytest.raises(ValueError, match="shape"):
        contour_accuracy(np.zeros(5), np.zeros(5))


# ------------------------------------------------------------------------- fast == reference (random)


def _random_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.integers(9)
    m = np.zeros((h, w), np.uint8)
    if kind == 0:  # empty
        pass
    elif kind == 1:  # full, or full minus a few pixels
        m[:] = 1
        k = rng.integers(3)
        m[rng.integers(h, size=k), rng.integers(w, size=k)] = 0
    elif kind == 2:  # single pixels, corners and borders included
        k = rng.integers(1, 4)
        m[rng.integers(h, size=k), rng.integers(w, size=k)] = 1
        if rng.random() < 0.5:
            m[rng.choice([0, h - 1]), rng.choice([0, w - 1])] = 1
    elif kind == 3:  # 1-pixel lines (horizontal, vertical, diagonal), often reaching the border
        for _ in range(rng.integers(1, 3)):
            pts = [(int(rng.integers(-2, w + 2)), int(rng.integers(-2, h + 2))) for _ in range(2)]
            cv2.line(m, pts[0], pts[1], 1, 1)
    elif kind == 4:  # rectangles, often touching the border
        for _ in range(rng.integers(1, 3)):
            y0, x0 = rng.integers(-3, h), rng.integers(-3, w)
            m[max(y0, 0) : y0 + rng.integers(1, h + 4), max(x0, 0) : x0 + rng.integers(1, w + 4)] = 1
    elif kind == 5:  # salt noise
        m[:] = rng.random((h, w)) < rng.uniform(0.01, 0.2)
    else:  # blobs: thresholded smooth noise, sometimes complemented
        noise = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), rng.uniform(0.8, 4))
        m[:] = noise > np.quantile(noise, rng.uniform(0.2, 0.9))
        if kind == 8:
            m ^= 1
    return m.astype(bool)


def _random_prediction(rng: np.random.Generator, g: np.ndarray) -> np.ndarray:
    kind = rng.integers(6)
    if kind == 0:
        return g.copy()
    if kind == 1:  # shifted by (dy, dx) with zero fill
        dy, dx = rng.integers(-4, 5, size=2)
        h, w = g.shape
        return np.pad(g, 4)[4 - dy : 4 - dy + h, 4 - dx : 4 - dx + w].copy()
    if kind == 2:  # eroded or dilated
        k = np.ones((3, 3), np.uint8)
        op = cv2.erode if rng.random() < 0.5 else cv2.dilate
        return op(g.astype(np.uint8), k, iterations=int(rng.integers(1, 3))).astype(bool)
    if kind == 3:  # noisy
        return g ^ (rng.random(g.shape) < 0.05)
    return _random_mask(rng, *g.shape)


SIZES = [(1, 1), (1, 2), (2, 1), (1, 37), (41, 1), (2, 2), (3, 5), (7, 3), (9, 9), (17, 70), (70, 23), (45, 61)]
BOUND_THS = (0.008, 0.03, 0.1, 0.5, 0.99, 1, 2, 3, 7, 90)


def test_fast_equals_reference_on_random_masks():
    rng = np.random.default_rng(2024)
    sizes = SIZES + [tuple(int(v) for v in rng.integers(1, 71, size=2)) for _ in range(150)]
    n = partial = 0
    for h, w in sizes:
        for bound_th in rng.choice(BOUND_THS, size=3, replace=False).tolist():
            g = np.stack([_random_mask(rng, h, w) for _ in range(6)])
            p = np.stack([_random_prediction(rng, gt) for gt in g])
            f = contour_accuracy(g, p, bound_th)
            j = region_similarity(g, p)
            f_ref = [_ref_f(g[t], p[t], bound_th) for t in range(len(g))]
            j_ref = [_ref_j(g[t], p[t]) for t in range(len(g))]
            np.testing.assert_allclose(f, f_ref, rtol=0, atol=1e-12, err_msg=f"F {h}x{w} bound_th={bound_th}")
            np.testing.assert_allclose(j, j_ref, rtol=0, atol=1e-12, err_msg=f"J {h}x{w}")
            assert contour_accuracy(g[0], p[0], bound_th) == pytest.approx(f_ref[0], abs=1e-12)
            n += len(g)
            partial += int(np.count_nonzero((f > 0) & (f < 1)))
    assert n >= 2500 and partial >= n // 5  # most frames need real boundary matching, not a convention


def test_fast_equals_reference_on_davis_frames():
    clip = SHARED_DATA / "davis2016_bmx-trees" / "Annotations"
    g = np.stack([read_mask_png(clip / f"{i:05d}.png") for i in (20, 35, 50)])
    later = np.stack([read_mask_png(clip / f"{i:05d}.png") for i in (22, 37, 52)])
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    preds = {
        "shifted": np.roll(g, (5, -7), axis=(1, 2)),
        "eroded": np.stack([cv2.erode(m.astype(np.uint8), k) for m in g]).astype(bool),
        "noisy": g ^ (np.random.default_rng(0).random(g.shape) < 0.002),
        "other_frame": later,
    }
    for name, p in preds.items():
        f = contour_accuracy(g, p)
        f_ref = [_ref_f(g[t], p[t], 0.008) for t in range(len(g))]
        np.testing.assert_allclose(f, f_ref, rtol=0, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(region_similarity(g, p), [_ref_j(a, b) for a, b in zip(g, p)], rtol=0, atol=1e-12)
        assert 0.0 < f.min() and f.max() < 1.0, name  # real partial matches, not a convention shortcut
