"""rvos_core.inspection: table rows from real evaluations, filters, sorting, CSV, histograms,
per-frame J, TP/FP/FN overlays and lazy frame reads.

Data: a small synthetic MeViS-layout split (:func:`rvos_core.synthetic.write_split`); model A
predicts the ground truth exactly, model B a perturbed copy (shifted masks on one video, an empty
expression, one missing PNG), both written with ``write_prediction_pngs``.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from rvos_core import inspection as insp
from rvos_core.formats.mevis import read_mevis_split, write_prediction_pngs
from rvos_core.inspection import (
    FN_COLOR,
    FP_COLOR,
    PAIR_COLUMNS,
    SINGLE_COLUMNS,
    TP_COLOR,
    InspectionRow,
    RowFilter,
    build_rows,
    error_overlay,
    filter_rows,
    frame_curve,
    open_inspection,
    read_csv,
    score_histogram,
    sort_rows,
    worst_frame,
    write_csv,
)
from rvos_core.synthetic import write_split

#: The expression B leaves empty, and the frame of another expression whose PNG B lacks.
EMPTY_KEY = "synth_00001/1"
MISSING = ("synth_00002", "0", "00003")


def write_inspection_data(root):
    """Write the split and both prediction sets under ``root``; returns ``(split, pred A, pred B)`` dirs.

    Shared with ``test_inspect_browser.py``.
    """
    split_dir = write_split(root / "split", videos=3, seed=0, frames=6, size=(48, 64), progress=False)
    pred_a, pred_b = root / "pred_a", root / "pred_b"
    with read_mevis_split(split_dir) as split:
        for video in split.videos:
            names = split.frame_names(video)
            for exp_id in split.expressions(video):
                gt = split.expression_masks(video, exp_id)
                write_prediction_pngs(pred_a, video, exp_id, gt, names)
                if f"{video}/{exp_id}" == EMPTY_KEY:
                    perturbed = np.zeros_like(gt)
                elif video == "synth_00000":
                    perturbed = np.roll(gt, 4, axis=2)  # 4 px to the right
                else:
                    perturbed = gt
                write_prediction_pngs(pred_b, video, exp_id, perturbed, names)
    (pred_b / MISSING[0] / MISSING[1] / f"{MISSING[2]}.png").unlink()
    return split_dir, pred_a, pred_b


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """``(split dir, predictions A dir, predictions B dir)``."""
    return write_inspection_data(tmp_path_factory.mktemp("inspect"))


@pytest.fixture(scope="module")
def pair(data):
    split_dir, pred_a, pred_b = data
    seen = []
    ins = open_inspection(split_dir, [pred_a, pred_b], progress=lambda d, t, m: seen.append((d, t, m)))
    ins.progress_seen = seen
    yield ins
    ins.close()


def _row(video="v", exp_id="0", expression="a dog", objects=1, j=0.5, f=0.5, jb=None, fb=None) -> InspectionRow:
    b = None if jb is None else (jb + fb) / 2
    return InspectionRow(video, exp_id, expression, objects, j, f, (j + f) / 2, jb, fb, b)


# ---------------------------------------------------------------------------- rows from evaluations


def test_pair_rows_match_the_evaluations(pair):
    a, b = pair.results
    assert pair.pair and pair.labels == ["A", "B"]
    assert [r.key for r in pair.rows] == list(a.per_expression)
    assert len(pair.rows) == 10 and pair.videos == ["synth_00000", "synth_00001", "synth_00002"]
    for row in pair.rows:
        sa, sb = a.per_expression[row.key], b.per_expression[row.key]
        assert row.JF == pytest.approx(1.0)  # A is the ground truth
        assert (row.J_B, row.F_B) == (sb.J, sb.F) and row.expression == sa.exp
        assert row.delta == pytest.approx(sb.JF - sa.JF)
    by_key = {r.key: r for r in pair.rows}
    assert by_key["synth_00000/0"].num_objects == 2 and by_key["synth_00001/1"].num_objects == 3
    assert by_key[EMPTY_KEY].J_B < 0.2 and by_key[EMPTY_KEY].delta < -0.5
    assert by_key["synth_00000/1"].delta < 0  # shifted masks lose J&F
    assert by_key["synth_00001/0"].delta == pytest.approx(0.0)  # untouched expression
    assert [insp._GETTERS[c](by_key["synth_00000/1"]) for c in PAIR_COLUMNS][-1] == by_key["synth_00000/1"].delta


def test_progress_covers_both_models(pair):
    seen = pair.progress_seen
    assert seen[-1][:2] == (20, 20) and seen[0][1] == 20
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)
    assert "Evaluating A" in seen[0][2] and "Evaluating B" in seen[-1][2]


def test_single_model_inspection(data):
    split_dir, _, pred_b = data
    with open_inspection(split_dir, [pred_b]) as single:
        assert not single.pair and single.labels == ["A"] and not single.rows[0].pair
        assert sort_rows(single.rows)[0].key == EMPTY_KEY  # worst first
        shown = single.read_frame(EMPTY_KEY, 0)
        assert len(shown.preds) == 1 and not shown.preds[0].any() and shown.gt.any()
        (res,) = single.results
        assert any(MISSING[2] in p for p in res.problems)


def test_build_rows_rejects_results_of_different_splits(pair):
    a, b = pair.results
    fewer = type(b)(**{**b.__dict__, "per_expression": dict(list(b.per_expression.items())[:-1])})
    with pytest.raises(ValueError, match="different expressions"):
        build_rows(a, fewer)
    single = build_rows(a)
    assert not single[0].pair and single[0].delta is None
    assert insp.row_values(single[0])[:4] == ["synth_00000", "0", "the two squares", 2]
    with pytest.raises(ValueError, match="J&F_B"):
        single[0].value("J&F_B")


# ---------------------------------------------------------------------------- filters and sorting


def test_filters_video_words_range_and_objects():
    rows = [_row("v1", "0", "The Black dog running", 1, 0.2, 0.4),
            _row("v1", "1", "a cat sitting", 2, 0.9, 0.9),
            _row("v2", "0", "the dog that turns left", 3, 0.6, 0.6),
            _row("v10", "0", "black cat", 1, 1.0, 1.0)]
    keys = lambda f: [r.key for r in filter_rows(rows, f)]  # noqa: E731
    assert keys(RowFilter()) == ["v1/0", "v1/1", "v2/0", "v10/0"]
    assert keys(RowFilter(video="v1")) == ["v1/0", "v1/1"]
    assert keys(RowFilter(words="DOG")) == ["v1/0", "v2/0"]
    assert keys(RowFilter(words="black  dog")) == ["v1/0"]  # all words must appear
    assert keys(RowFilter(words="turn")) == ["v2/0"]  # substring: "turns"
    assert keys(RowFilter(words="dog cat")) == []
    assert keys(RowFilter(score_range=(0.3, 0.6))) == ["v1/0", "v2/0"]  # inclusive bounds
    assert keys(RowFilter(objects="single")) == ["v1/0", "v10/0"]
    assert keys(RowFilter(objects="multi", score_range=(0.0, 0.7))) == ["v2/0"]
    assert keys(RowFilter(score_column="J", score_range=(0.0, 0.25))) == ["v1/0"]
    with pytest.raises(ValueError, match="objects filter 'few'"):
        filter_rows(rows, RowFilter(objects="few"))
    with pytest.raises(ValueError, match="score range"):
        filter_rows(rows, RowFilter(score_range=(0.8, 0.2)))
    with pytest.raises(ValueError, match="'Δ'"):
        filter_rows(rows, RowFilter(score_column="Δ"))  # one model: no Δ column
    assert filter_rows([], RowFilter(objects="multi")) == []


def test_pair_filter_on_delta(pair):
    worse = filter_rows(pair.rows, RowFilter(score_column="Δ", score_range=(-1.0, -1e-9)))
    assert {r.video for r in worse} >= {"synth_00000"} and EMPTY_KEY in {r.key for r in worse}
    assert all(r.delta < 0 for r in worse)
    assert all(r.num_objects > 1 for r in filter_rows(pair.rows, RowFilter(objects="multi")))


def test_sorting_worst_first_natural_text_and_stable_ties():
    rows = [_row("v10", "0", "b", j=0.5, f=0.5), _row("v2", "1", "A", j=0.1, f=0.1),
            _row("v2", "10", "c", j=0.5, f=0.5), _row("v2", "2", "d", j=0.9, f=0.7)]
    assert [r.key for r in sort_rows(rows)] == ["v2/1", "v2/10", "v10/0", "v2/2"]  # ties: natural key order
    assert [r.key for r in sort_rows(rows, "J&F", descending=True)] == ["v2/2", "v2/10", "v10/0", "v2/1"]
    assert [r.key for r in sort_rows(rows, "video")] == ["v2/1", "v2/2", "v2/10", "v10/0"]
    assert [r.expression for r in sort_rows(rows, "expression")] == ["A", "b", "c", "d"]
    assert [r.key for r in sort_rows(rows, "F")][0] == "v2/1"
    with pytest.raises(ValueError, match="sort column 'Δ'"):
        sort_rows(rows, "Δ")


def test_pair_default_sort_is_worst_a_and_delta_sort_finds_regressions(pair):
    assert [r.key for r in sort_rows(pair.rows)] == [r.key for r in pair.rows]  # A is perfect: ties keep order
    assert sort_rows(pair.rows, "Δ")[0].key == EMPTY_KEY
    assert sort_rows(pair.rows, "J&F_B")[0].key == EMPTY_KEY


# ---------------------------------------------------------------------------- CSV


def test_csv_round_trip_pair_table(pair, tmp_path):
    rows = sort_rows(pair.rows, "Δ")
    path = write_csv(tmp_path / "out" / "table.csv", rows)
    assert path == tmp_path / "out" / "table.csv" and [p.name for p in path.parent.iterdir()] == ["table.csv"]
    with open(path, newline="", encoding="utf-8") as fh:
        lines = list(csv.reader(fh))
    assert tuple(lines[0]) == PAIR_COLUMNS and len(lines) == len(rows) + 1
    assert lines[1][:2] == EMPTY_KEY.split("/")
    back = read_csv(path)
    assert [r.key for r in back] == [r.key for r in rows]
    for got, want in zip(back, rows):
        assert (got.expression, got.num_objects) == (want.expression, want.num_objects)
        for c in ("J_A", "F_A", "J&F_A", "J_B", "F_B", "J&F_B", "Δ"):
            assert got.value(c) == pytest.approx(want.value(c), abs=1e-6)


def test_csv_round_trip_single_table_with_quotes_and_unicode(tmp_path):
    rows = [_row("v1", "0", 'the "big", red car — left', 2, 0.123456789, 0.5), _row("v1", "1", "naïve\nline", 1)]
    path = write_csv(tmp_path / "t.csv", rows)
    assert path.read_text(encoding="utf-8").splitlines()[0] == ",".join(SINGLE_COLUMNS)
    back = read_csv(path)
    assert [r.expression for r in back] == [r.expression for r in rows]
    assert back[0].J == pytest.approx(0.123457, abs=1e-9) and back[0].JF == pytest.approx(rows[0].JF, abs=1e-6)
    with pytest.raises(ValueError, match="one table kind"):
        write_csv(tmp_path / "mixed.csv", rows + [_row(jb=0.1, fb=0.1)])
    assert not (tmp_path / "mixed.csv").exists()
    (tmp_path / "bad.csv").write_text("video,exp_id\nv,0\n", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.csv: header"):
        read_csv(tmp_path / "bad.csv")
    with pytest.raises(FileNotFoundError):
        read_csv(tmp_path / "none.csv")


# ---------------------------------------------------------------------------- plots


def test_histogram_bins_and_delta_range(pair):
    rows = [_row(j=v, f=v) for v in (0.0, 0.05, 0.15, 0.95, 1.0)]
    hist = score_histogram(rows)
    assert hist.counts.tolist() == [2, 1, 0, 0, 0, 0, 0, 0, 0, 2] and hist.edges[0] == 0 and hist.edges[-1] == 1
    assert hist.labels()[:2] == ["0.0–0.1", "0.1–0.2"]
    delta = score_histogram(pair.rows, "Δ", bins=4)
    assert delta.edges.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0] and int(delta.counts.sum()) == len(pair.rows)
    assert delta.counts[0] >= 1  # the emptied expression
    with pytest.raises(ValueError, match="bins"):
        score_histogram(rows, bins=0)
    with pytest.raises(ValueError, match="'video'"):
        score_histogram(rows, "video")


def test_frame_curve_and_worst_frame(pair):
    a, b = pair.scores("synth_00002/0")
    curve = frame_curve([("A", a), ("B", b)])
    assert curve["frame"] == list(range(6)) * 2 and curve["model"] == ["A"] * 6 + ["B"] * 6
    assert curve["J"][:6] == [1.0] * 6
    assert pair.split.expression_masks("synth_00002", "0")[3].any()
    assert curve["J"][6 + 3] == 0.0  # B's missing PNG on frame 3 is scored as an empty mask
    assert worst_frame(b) == 3 and worst_frame(a) == 0  # A is perfect everywhere: the first frame
    assert worst_frame(a, b) == 3
    with pytest.raises(ValueError, match="at least one"):
        worst_frame()


# ---------------------------------------------------------------------------- overlay


def test_error_overlay_colours_at_known_pixels():
    frame = np.full((40, 50, 3), 100, dtype=np.uint8)
    gt = np.zeros((40, 50), dtype=bool)
    pred = np.zeros((40, 50), dtype=bool)
    gt[5:25, 5:25] = True     # GT square
    pred[5:25, 15:35] = True  # prediction shifted 10 px right: TP columns 15..24, FP 25..34, FN 5..14
    out = error_overlay(frame, gt, pred)
    assert out.shape == frame.shape and out.dtype == np.uint8 and (frame == 100).all()
    blend = lambda c: tuple(int(100 / 2 + v / 2) for v in c)  # noqa: E731  (all values even: exact)
    assert tuple(out[15, 20]) == blend(TP_COLOR) == (50, 150, 50)
    assert tuple(out[15, 30]) == blend(FP_COLOR) == (165, 50, 50)
    assert tuple(out[15, 10]) == blend(FN_COLOR) == (50, 95, 175)
    assert tuple(out[35, 45]) == (100, 100, 100) and tuple(out[2, 2]) == (100, 100, 100)  # true negatives
    # Region corners carry the contour: half-way to white for dark colours, half-way to black for light ones.
    assert tuple(out[5, 5]) == (128, 172, 252)  # FN (dark blue) → lighter
    assert tuple(out[24, 34]) == (242, 128, 128)  # FP (dark red) → lighter
    assert tuple(out[5, 15]) == (0, 100, 0)  # TP (light green) → darker
    empty = error_overlay(frame, np.zeros_like(gt), np.zeros_like(gt))
    np.testing.assert_array_equal(empty, frame)


def test_error_overlay_rejects_bad_inputs():
    frame = np.zeros((8, 8, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="differ in shape"):
        error_overlay(frame, np.zeros((8, 8), bool), np.zeros((8, 9), bool))
    with pytest.raises(ValueError, match="uint8"):
        error_overlay(frame.astype(np.float32), np.zeros((8, 8), bool), np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        error_overlay(frame, np.zeros((8, 8, 1), bool), np.zeros((8, 8), bool))


# ---------------------------------------------------------------------------- lazy frames


def test_read_frame_gt_predictions_and_problems(pair, monkeypatch):
    video, exp_id, name = MISSING
    key = f"{video}/{exp_id}"
    calls = []
    real = pair.split.expression_masks
    monkeypatch.setattr(pair.split, "expression_masks", lambda v, e: calls.append((v, e)) or real(v, e))
    gt_stack = real(video, exp_id)
    for index in range(pair.num_frames(key)):
        shown = pair.read_frame(key, index)
        assert shown.frame_name == f"{index:05d}" and shown.frame.shape == (48, 64, 3)
        np.testing.assert_array_equal(shown.frame, pair.split.frame(video, index))
        np.testing.assert_array_equal(shown.gt, gt_stack[index])
        np.testing.assert_array_equal(shown.preds[0], gt_stack[index])
        assert shown.problems[0] is None and shown.j[0] == 1.0
        if shown.frame_name == name:
            assert not shown.preds[1].any() and "missing" in shown.problems[1] and name in shown.problems[1]
        else:
            np.testing.assert_array_equal(shown.preds[1], gt_stack[index])
    assert calls == [(video, exp_id)]  # the ground truth was decoded once for all frames
    counts = pair.read_frame(key, 3).pixel_counts()
    assert counts[0]["fp"] == counts[0]["fn"] == 0 and counts[1]["fn"] == int(gt_stack[3].sum())
    a_img, b_img = pair.read_frame(key, 3).overlays()
    assert a_img.shape == b_img.shape == (48, 64, 3)
    with pytest.raises(IndexError, match="out of range 0..5"):
        pair.read_frame(key, 6)
    with pytest.raises(KeyError, match="nope/0"):
        pair.read_frame("nope/0", 0)


def test_open_inspection_errors(data, tmp_path):
    split_dir, pred_a, pred_b = data
    with pytest.raises(ValueError, match="1 or 2 prediction sets, got 3"):
        open_inspection(split_dir, [pred_a, pred_b, pred_a])
    with pytest.raises(FileNotFoundError, match="no_split"):
        open_inspection(tmp_path / "no_split", [pred_a])
    with pytest.raises(FileNotFoundError, match="no_pred"):
        open_inspection(split_dir, [tmp_path / "no_pred"])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "meta_expressions.json").write_text('{"videos": []}', encoding="utf-8")
    with pytest.raises(ValueError, match="meta_expressions.json"):
        open_inspection(tmp_path / "broken", [pred_a])
