"""Tests for rvos_core.masks: RLE, PNG I/O, palette, overlay, boxes, prompt points."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from rvos_core import masks as M

from _paths import SHARED_DATA as DATA


# ----------------------------------------------------------------------------- RLE


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (13, 17), (31, 9), (480, 854)])
def test_rle_round_trip_random_odd_sizes(shape):
    rng = np.random.default_rng(sum(shape))
    for density in (0.05, 0.5, 0.95):
        m = rng.random(shape) < density
        rle = M.mask_to_rle(m)
        assert rle["size"] == list(shape)
        assert isinstance(rle["counts"], str)
        json.dumps(rle)  # JSON-serialisable as in mask_dict.json
        back = M.rle_to_mask(rle, expected_size=shape)
        assert back.dtype == bool and back.shape == shape
        np.testing.assert_array_equal(back, m)


@pytest.mark.parametrize("fill", [False, True])
def test_rle_empty_and_full(fill):
    m = np.full((11, 5), fill)
    rle = M.mask_to_rle(m)
    np.testing.assert_array_equal(M.rle_to_mask(rle), m)
    assert int(coco_mask.area({"size": rle["size"], "counts": rle["counts"].encode()})) == (55 if fill else 0)


def test_rle_accepts_numeric_masks_nonzero_is_foreground():
    m = np.array([[0, 3, 0], [255, 0, -1]], dtype=np.int16)
    np.testing.assert_array_equal(M.rle_to_mask(M.mask_to_rle(m)), m != 0)


def test_rle_is_fortran_order_and_decodes_with_pycocotools():
    # Only the first column is set: column-major runs are [0, H, rest].
    m = np.zeros((4, 3), dtype=bool)
    m[:, 0] = True
    rle = M.mask_to_rle(m)
    direct = coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
    np.testing.assert_array_equal(direct.astype(bool), m)
    assert rle == {"size": [4, 3], "counts": coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode()}


def test_rle_from_pycocotools_decodes_str_and_bytes():
    rng = np.random.default_rng(3)
    m = rng.random((23, 41)) < 0.3
    coded = coco_mask.encode(np.asfortranarray(m.astype(np.uint8)))
    np.testing.assert_array_equal(M.rle_to_mask(coded), m)
    np.testing.assert_array_equal(M.rle_to_mask({"size": coded["size"], "counts": coded["counts"].decode()}), m)


def test_rle_uncompressed_counts_list():
    m = np.zeros((3, 4), dtype=bool)
    m[1, 1:3] = True
    # column-major: col0 3 zeros, col1 [0,1,0], col2 [0,1,0], col3 3 zeros
    rle = {"size": [3, 4], "counts": [4, 1, 2, 1, 4]}
    np.testing.assert_array_equal(M.rle_to_mask(rle), m)


def test_rle_wrong_expected_size_names_both_sizes():
    rle = M.mask_to_rle(np.ones((5, 6), dtype=bool))
    with pytest.raises(ValueError, match=r"\[5, 6\].*\[6, 5\]"):
        M.rle_to_mask(rle, expected_size=(6, 5))


@pytest.mark.parametrize(
    "rle",
    [
        {"size": [5, 7], "counts": ""},  # runs cover 0 pixels
        {"size": [5, 7], "counts": "3"},  # too few pixels
        {"size": [5, 8], "counts": ";230009"},  # valid string, wrong size
        {"size": [5, 7], "counts": "zzzz"},  # characters outside the alphabet
        {"size": [5, 7], "counts": "é"},  # non-ASCII
        {"size": [5, 7], "counts": "0"},
        {"size": [5, 7]},
        {"size": [5], "counts": "0"},
        {"size": [0, 7], "counts": "0"},
        {"size": [5, 7], "counts": 12},
        {"size": [5, 7], "counts": [10, 30]},  # list summing to 40 != 35
        "not a dict",
    ],
)
def test_rle_malformed_raises_value_error(rle):
    with pytest.raises(ValueError):
        M.rle_to_mask(rle)


def test_rle_truncated_string_raises_instead_of_garbage():
    rng = np.random.default_rng(5)
    m = rng.random((30, 30)) < 0.5
    counts = M.mask_to_rle(m)["counts"]
    with pytest.raises(ValueError, match=r"\[30, 30\]"):
        M.rle_to_mask({"size": [30, 30], "counts": counts[: len(counts) // 2]})


def test_rle_counts_parser_matches_run_lengths():
    rng = np.random.default_rng(9)
    for _ in range(50):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        m = rng.random((h, w)) < rng.random()
        flat = m.T.reshape(-1).astype(np.int8)
        edges = np.concatenate(([0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]))
        expected = np.diff(edges)
        if flat[0]:
            expected = np.concatenate(([0], expected))
        runs = M._rle_counts(M.mask_to_rle(m)["counts"].encode())
        np.testing.assert_array_equal(runs, expected)


def test_mask_to_rle_rejects_non_2d():
    with pytest.raises(ValueError, match="shape"):
        M.mask_to_rle(np.zeros((2, 3, 4), dtype=bool))


# ----------------------------------------------------------------------------- PNG


def test_mask_png_round_trip_is_0_255_greyscale(tmp_path):
    rng = np.random.default_rng(0)
    m = rng.random((37, 53)) < 0.4
    p = tmp_path / "sub" / "00000.png"
    M.write_mask_png(p, m)
    im = Image.open(p)
    assert im.mode == "L"
    assert set(np.unique(np.asarray(im)).tolist()) <= {0, 255}
    np.testing.assert_array_equal(M.read_mask_png(p), m)
    assert [f.name for f in p.parent.iterdir()] == ["00000.png"]  # no temp file left


def test_read_mask_png_any_nonzero_and_palette(tmp_path):
    grey = np.array([[0, 1, 128], [255, 0, 7]], dtype=np.uint8)
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    np.testing.assert_array_equal(M.read_mask_png(tmp_path / "g.png"), grey != 0)
    ids = np.array([[0, 1], [2, 0]], dtype=np.uint8)
    M.write_palette_png(tmp_path / "p.png", ids)
    np.testing.assert_array_equal(M.read_mask_png(tmp_path / "p.png"), ids != 0)


def test_read_mask_png_real_davis_annotation():
    m = M.read_mask_png(DATA / "davis2016_blackswan" / "Annotations" / "00000.png")
    assert m.shape == (480, 854) and m.dtype == bool
    assert 0 < m.sum() < m.size


def test_read_mask_png_rgb_is_rejected_naming_file(tmp_path):
    p = tmp_path / "colour.png"
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(p)
    with pytest.raises(ValueError, match="colour.png"):
        M.read_mask_png(p)


def test_read_mask_png_missing_and_corrupt(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        M.read_mask_png(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="bad.png"):
        M.read_mask_png(bad)


def test_palette_png_round_trip_and_colours(tmp_path):
    ids = np.zeros((9, 11), dtype=np.uint8)
    ids[1:4, 2:5] = 1
    ids[5:8, 6:10] = 2
    ids[0, 0] = 255
    p = tmp_path / "ann.png"
    M.write_palette_png(p, ids)
    im = Image.open(p)
    assert im.mode == "P"
    np.testing.assert_array_equal(M.read_palette_png(p), ids)
    rgb = np.asarray(im.convert("RGB"))
    assert tuple(rgb[2, 3]) == (128, 0, 0) and tuple(rgb[6, 7]) == (0, 128, 0) and tuple(rgb[8, 0]) == (0, 0, 0)


def test_read_palette_png_real_davis_multiobject():
    ids = M.read_palette_png(DATA / "davis2016_bmx-trees" / "Annotations_multiobject_frame0" / "00000.png")
    assert ids.shape == (480, 854) and ids.dtype == np.uint8
    assert sorted(np.unique(ids).tolist()) == [0, 1, 2]


def test_write_palette_png_rejects_out_of_range(tmp_path):
    with pytest.raises(ValueError, match="256"):
        M.write_palette_png(tmp_path / "x.png", np.array([[0, 256]]))
    with pytest.raises(ValueError, match="integer"):
        M.write_palette_png(tmp_path / "x.png", np.array([[0.5, 1.0]]))
    assert not list(tmp_path.iterdir())


def test_voc_palette_known_entries():
    pal = M.voc_palette()
    assert pal.shape == (256, 3) and pal.dtype == np.uint8
    expected = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128),
                5: (128, 0, 128), 6: (0, 128, 128), 7: (128, 128, 128), 8: (64, 0, 0), 255: (224, 224, 192)}
    for i, c in expected.items():
        assert tuple(pal[i]) == c
    assert len({tuple(c) for c in pal}) == 256  # every index has its own colour


def test_voc_palette_matches_real_davis_file():
    im = Image.open(DATA / "davis2016_bmx-trees" / "Annotations_multiobject_frame0" / "00000.png")
    davis = np.array(im.getpalette()[: 3 * 3], dtype=np.uint8).reshape(3, 3)
    np.testing.assert_array_equal(davis, M.voc_palette()[:3])


def test_object_color_is_palette_index_plus_one():
    assert M.object_color(0) == (128, 0, 0)
    assert M.object_color(1) == (0, 128, 0)
    assert M.object_color(254) == tuple(int(v) for v in M.voc_palette()[255])
    for bad in (-1, 255, 1.5, True):
        with pytest.raises(ValueError, match="obj_id"):
            M.object_color(bad)


# ----------------------------------------------------------------------------- overlay


def _frame(h=40, w=60):
    # mid-grey frame: blended pixels always differ from it for the palette colours used
    return np.full((h, w, 3), 100, dtype=np.uint8)


def test_overlay_without_contour_changes_exactly_mask_pixels():
    frame = _frame()
    m = np.zeros((40, 60), dtype=bool)
    m[10:20, 5:30] = True
    m[25, 40] = True
    out = M.overlay(frame, [m], alpha=0.5, contour_px=0)
    changed = np.any(out != frame, axis=2)
    np.testing.assert_array_equal(changed, m)
    expected = np.round(0.5 * 100 + 0.5 * np.array(M.object_color(0))).astype(np.uint8)
    np.testing.assert_allclose(out[m].astype(int), np.broadcast_to(expected, (int(m.sum()), 3)), atol=1)
    np.testing.assert_array_equal(frame, _frame())  # input untouched


def test_overlay_contour_stays_near_the_mask_boundary():
    frame = _frame()
    m = np.zeros((40, 60), dtype=bool)
    m[10:30, 15:45] = True
    out = M.overlay(frame, [m], alpha=0.5, contour_px=3)
    changed = np.any(out != frame, axis=2)
    near = cv2.dilate(m.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert changed[m].all()
    assert not changed[~near].any()
    fill_only = M.overlay(frame, [m], alpha=0.5, contour_px=0)
    # boundary pixels carry the contour colour, not the fill
    assert not np.array_equal(out[10, 20], fill_only[10, 20])
    # interior pixels far from the boundary are fill only
    np.testing.assert_array_equal(out[20, 30], fill_only[20, 30])


def test_overlay_multiple_masks_colours_in_order():
    frame = _frame()
    a = np.zeros((40, 60), dtype=bool)
    a[5:15, 5:15] = True
    b = np.zeros((40, 60), dtype=bool)
    b[10:20, 10:20] = True
    out = M.overlay(frame, [a, b], colors=[(255, 0, 0), (0, 0, 255)], alpha=1.0, contour_px=0)
    assert tuple(out[6, 6]) == (255, 0, 0)
    assert tuple(out[12, 12]) == (0, 0, 255)  # later mask on top
    assert tuple(out[30, 50]) == (100, 100, 100)
    single = M.overlay(frame, a, alpha=1.0, contour_px=0)  # a single 2-D mask is accepted
    assert tuple(single[6, 6]) == M.object_color(0)


def test_overlay_empty_mask_and_alpha_zero_leave_frame():
    frame = _frame()
    out = M.overlay(frame, [np.zeros((40, 60), bool)])
    np.testing.assert_array_equal(out, frame)
    m = np.zeros((40, 60), bool)
    m[3:9, 3:9] = True
    np.testing.assert_array_equal(M.overlay(frame, [m], alpha=0.0, contour_px=0), frame)


def test_overlay_errors():
    frame = _frame()
    with pytest.raises(ValueError, match=r"masks\[1\].*\(40, 60\)"):
        M.overlay(frame, [np.zeros((40, 60), bool), np.zeros((41, 60), bool)])
    with pytest.raises(ValueError, match="alpha"):
        M.overlay(frame, [np.zeros((40, 60), bool)], alpha=1.5)
    with pytest.raises(ValueError, match="colors"):
        M.overlay(frame, [np.zeros((40, 60), bool)] * 2, colors=[(1, 2, 3)])
    with pytest.raises(ValueError, match="frame"):
        M.overlay(frame.astype(np.float32), [np.zeros((40, 60), bool)])
    with pytest.raises(ValueError, match="contour_px"):
        M.overlay(frame, [np.zeros((40, 60), bool)], contour_px=-1)


# ----------------------------------------------------------------------------- boxes and points


def test_mask_to_box_hand_cases():
    m = np.zeros((10, 12), dtype=bool)
    assert M.mask_to_box(m) is None
    m[4, 7] = True
    np.testing.assert_array_equal(M.mask_to_box(m), [7, 4, 7, 4])
    m[2, 9] = True
    m[8, 1] = True
    box = M.mask_to_box(m)
    assert box.dtype == np.float32 and box.shape == (4,)
    np.testing.assert_array_equal(box, [1, 2, 9, 8])
    np.testing.assert_array_equal(M.mask_to_box(np.ones((3, 5))), [0, 0, 4, 2])


def _ring_mask():
    m = np.zeros((50, 70), dtype=bool)
    cv2.circle(m.view(np.uint8), (35, 25), 18, 1, thickness=-1)
    return m


def test_sample_prompt_points_properties():
    m = _ring_mask()
    points, labels, box = M.sample_prompt_points(m, rng=np.random.default_rng(1))
    assert points.shape == (15, 2) and points.dtype == np.float32
    assert labels.shape == (15,) and labels.dtype == np.int64
    assert labels.tolist() == [1] * 10 + [0] * 5
    np.testing.assert_array_equal(box, M.mask_to_box(m))
    xs, ys = points[:, 0].astype(int), points[:, 1].astype(int)
    np.testing.assert_array_equal(points, np.stack([xs, ys], 1))  # integer pixel indices
    assert m[ys[:10], xs[:10]].all()  # positives inside (x = column, y = row)
    assert not m[ys[10:], xs[10:]].any()  # negatives outside the mask ...
    x1, y1, x2, y2 = box
    assert ((xs[10:] >= x1) & (xs[10:] <= x2) & (ys[10:] >= y1) & (ys[10:] <= y2)).all()  # ... inside the box
    assert len({(x, y) for x, y in zip(xs, ys)}) == 15  # distinct


def test_sample_prompt_points_deterministic_with_seed_and_varies_otherwise():
    m = _ring_mask()
    a = M.sample_prompt_points(m, rng=np.random.default_rng(7))
    b = M.sample_prompt_points(m, rng=np.random.default_rng(7))
    c = M.sample_prompt_points(m, rng=np.random.default_rng(8))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    np.testing.assert_array_equal(M.sample_prompt_points(m)[0], M.sample_prompt_points(m)[0])  # rng=None is fixed


def test_sample_prompt_points_fewer_when_not_enough_pixels():
    full_box = np.zeros((20, 20), dtype=bool)
    full_box[5:9, 5:12] = True  # a rectangle fills its box: no negatives possible
    points, labels, _ = M.sample_prompt_points(full_box, n_pos=10, n_neg=5)
    assert labels.tolist() == [1] * 10
    l_shape = np.zeros((10, 10), dtype=bool)
    l_shape[2:5, 2] = True
    l_shape[4, 2:4] = True  # 4 pixels, box 2x3 → 2 outside pixels
    points, labels, box = M.sample_prompt_points(l_shape, n_pos=10, n_neg=5)
    assert labels.tolist() == [1] * 4 + [0] * 2
    assert {tuple(p) for p in points[labels == 0].astype(int).tolist()} == {(3, 2), (3, 3)}


def test_sample_prompt_points_errors():
    with pytest.raises(ValueError, match="empty"):
        M.sample_prompt_points(np.zeros((5, 5), bool))
    with pytest.raises(ValueError, match="n_neg"):
        M.sample_prompt_points(np.ones((5, 5), bool), n_neg=-1)
    with pytest.raises(ValueError, match="rng"):
        M.sample_prompt_points(np.ones((5, 5), bool), rng=np.random.RandomState(0))


# ----------------------------------------------------------------------------- resize / IoU


def test_resize_mask_nearest():
    m = np.array([[1, 0], [0, 1]], dtype=bool)
    up = M.resize_mask(m, (4, 6))
    assert up.dtype == bool and up.shape == (4, 6)
    np.testing.assert_array_equal(up, np.kron(m, np.ones((2, 3), dtype=bool)))
    np.testing.assert_array_equal(M.resize_mask(up, (2, 2)), m)
    with pytest.raises(ValueError, match="size_hw"):
        M.resize_mask(m, (0, 3))


def test_mask_iou():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert M.mask_iou(a, b) == 1.0
    a[0, :2] = True
    assert M.mask_iou(a, b) == 0.0
    b[0, 1:3] = True
    assert M.mask_iou(a, b) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        M.mask_iou(a, np.zeros((4, 5), bool))


def test_atomic_output_path_cleans_up_on_error(tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with M.atomic_output_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]
