"""J / F / J&F against hand-computed cases and an independent scipy-based reference of the definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from rvos_core.metrics import boundary_map, contour_accuracy, jf_summary, region_similarity, tolerance_px


def test_j_hand_cases():
    g = np.zeros((4, 4), bool)
    p = np.zeros((4, 4), bool)
    assert region_similarity(g, p) == 1.0  # both empty
    g[0:2, 0:2] = True
    assert region_similarity(g, p) == 0.0
    p[0:2, 1:3] = True  # overlap 2, union 6
    assert region_similarity(g, p) == pytest.approx(1 / 3, abs=1e-12)
    stack = region_similarity(np.stack([g, g]), np.stack([p, g]))
    assert stack.shape == (2,) and stack[1] == 1.0


def test_boundary_map_single_pixel():
    s = np.zeros((3, 3), bool)
    s[1, 1] = True
    expected = np.array([[1, 1, 0], [1, 1, 0], [0, 0, 0]], bool)
    assert np.array_equal(boundary_map(s), expected)


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


def test_tolerance():
    assert tolerance_px(480, 854) == 8
    assert tolerance_px(480, 854, 3) == 3
    assert tolerance_px(100, 100, 0.01) == math.ceil(0.01 * math.hypot(100, 100))
    with pytest.raises(ValueError):
        tolerance_px(10, 10, 0)


def test_f_empty_conventions():
    e = np.zeros((10, 10), bool)
    m = e.copy()
    m[3:6, 3:6] = True
    assert contour_accuracy(e, e) == 1.0
    assert contour_accuracy(m, e) == 0.0  # P=1, R=0
    assert contour_accuracy(e, m) == 0.0  # P=0, R=1
    assert contour_accuracy(m, m) == 1.0


def test_f_single_pixels_hand_case():
    g = np.zeros((12, 12), bool)
    p = np.zeros((12, 12), bool)
    g[5, 5] = True
    p[5, 8] = True
    assert contour_accuracy(g, p, bound_th=1) == 0.0
    assert contour_accuracy(g, p, bound_th=2) == pytest.approx(0.5, abs=1e-12)
    assert contour_accuracy(g, p, bound_th=4) == 1.0


def _reference_f(g: np.ndarray, p: np.ndarray, bound_th: float = 0.008) -> float:
    """Independent reference of the definition (scipy binary_dilation, python loops for the boundary)."""
    h, w = g.shape
    r = bound_th if bound_th >= 1 else math.ceil(bound_th * math.hypot(h, w))

    def bmap(s):
        b = np.zeros_like(s)
        for y in range(h):
            for x in range(w):
                e = s[y, x + 1] if x + 1 < w else False
                so = s[y + 1, x] if y + 1 < h else False
                se = s[y + 1, x + 1] if (x + 1 < w and y + 1 < h) else False
                if y == h - 1 and x == w - 1:
                    b[y, x] = False
                elif y == h - 1:
                    b[y, x] = s[y, x] != e
                elif x == w - 1:
                    b[y, x] = s[y, x] != so
                else:
                    b[y, x] = (s[y, x] != e) or (s[y, x] != so) or (s[y, x] != se)
        return b

    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    k = (xx**2 + yy**2) <= r * r
    bg, bp = bmap(g), bmap(p)
    ng, npred = bg.sum(), bp.sum()
    if npred == 0 and ng > 0:
        pr, rc = 1.0, 0.0
    elif npred > 0 and ng == 0:
        pr, rc = 0.0, 1.0
    elif npred == 0 and ng == 0:
        pr, rc = 1.0, 1.0
    else:
        pr = (bp & ndimage.binary_dilation(bg, k)).sum() / npred
        rc = (bg & ndimage.binary_dilation(bp, k)).sum() / ng
    return 0.0 if pr + rc == 0 else 2 * pr * rc / (pr + rc)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (9, 1), (17, 23), (40, 31)])
def test_f_matches_reference_on_random_and_border_masks(shape):
    rng = np.random.default_rng(sum(shape))
    for trial in range(6):
        g = rng.random(shape) < rng.uniform(0.05, 0.7)
        p = rng.random(shape) < rng.uniform(0.05, 0.7)
        if trial == 0:
            g[:] = True  # full
        if trial == 1:
            p[:] = False  # empty
        if trial == 2 and shape[0] > 2:
            g[:] = False
            g[0, :] = True  # border-touching 1-pixel line
        for th in (0.008, 0.05, 2):
            assert contour_accuracy(g, p, th) == pytest.approx(_reference_f(g, p, th), abs=1e-12)


def test_jf_summary_and_shape_errors():
    g = np.zeros((3, 8, 8), bool)
    g[:, 2:5, 2:5] = True
    s = jf_summary(g, g)
    assert s == {"J": 1.0, "F": 1.0, "J&F": 1.0}
    with pytest.raises(ValueError, match="shapes differ"):
        region_similarity(g, g[0])
    with pytest.raises(ValueError, match="shape"):
        contour_accuracy(np.zeros(5), np.zeros(5))
