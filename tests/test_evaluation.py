"""J&F evaluation of predictions: exact hand-computed scores, problems scored as empty, workers/start methods."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from rvos_core.evaluation import (
    EvaluationResult,
    ExpressionScore,
    evaluate_predictions,
    format_summary,
    load_evaluation_json,
    score_expression,
)
from rvos_core.formats.mevis import (
    MevisExpression,
    MevisFormatError,
    MevisVideo,
    read_mevis_split,
    write_mevis_split,
    write_prediction_pngs,
)
from rvos_core.formats.predictions import PredictionFormatError, open_predictions
from rvos_core.masks import write_mask_png
from rvos_core.synthetic import write_split

H, W = 40, 48
BIG_TOL = 100.0  # bound_th in pixels larger than the frame: every boundary pixel matches → F = 1 unless a side is empty


def _square(y0: int, x0: int, size: int = 10) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y0:y0 + size, x0:x0 + size] = True
    return m


A = _square(10, 10)  # anno 1, on every frame of "v1"
B = _square(25, 30)  # anno 2, on frames 0 and 1 of "v1" only
C = _square(5, 30)   # anno 3, on both frames of "v2"


def _hand_videos() -> dict[str, MevisVideo]:
    frames = lambda t: np.full((t, H, W, 3), 90, dtype=np.uint8)  # noqa: E731
    v1 = MevisVideo(frame_names=[f"{i:05d}" for i in range(4)], frames=frames(4),
                    expressions={"0": MevisExpression("the left square", [0], [1], kind="appearance"),
                                 "1": MevisExpression("both squares", [0, 1], [1, 2], kind="motion")},
                    masks={1: [A] * 4, 2: [B, B, None, None]})
    v2 = MevisVideo(frame_names=["00000", "00001"], frames=frames(2),
                    expressions={"0": MevisExpression("the top square", [0], [3], kind="appearance")},
                    masks={3: [C, C]})
    return {"v1": v1, "v2": v2}


@pytest.fixture(scope="module")
def hand_split(tmp_path_factory) -> Path:
    return write_mevis_split(tmp_path_factory.mktemp("hand") / "split", _hand_videos())


def _perfect(split_dir: Path, out: Path) -> Path:
    with read_mevis_split(split_dir) as split:
        for v in split.videos:
            for e in split.expressions(v):
                write_prediction_pngs(out, v, e, split.expression_masks(v, e), split.frame_names(v))
    return out


def test_perfect_predictions_score_exactly_one(hand_split, tmp_path):
    res = evaluate_predictions(hand_split, _perfect(hand_split, tmp_path / "p"))
    assert (res.J, res.F, res.JF) == (1.0, 1.0, 1.0)
    assert res.problems == [] and list(res.per_expression) == ["v1/0", "v1/1", "v2/0"]
    s = res.per_expression["v1/1"]
    assert s.key == "v1/1" and s.exp == "both squares" and s.num_objects == 2 and s.kind == "motion"
    assert s.j_per_frame.dtype == np.float64 and s.j_per_frame.shape == (4,) and s.f_per_frame.shape == (4,)


def test_hand_computed_shift_union_and_empty(hand_split, tmp_path):
    pred = tmp_path / "p"
    shifted = np.roll(A, 5, axis=1)  # 10x10 square moved 5 px right: |A∩P| = 50, |A∪P| = 150
    write_prediction_pngs(pred, "v1", "0", np.stack([shifted] * 4), ["00000", "00001", "00002", "00003"])
    write_prediction_pngs(pred, "v1", "1", np.stack([A] * 4), ["00000", "00001", "00002", "00003"])  # misses B
    write_prediction_pngs(pred, "v2", "0", np.zeros((2, H, W), bool), ["00000", "00001"])  # empty
    res = evaluate_predictions(hand_split, pred, bound_th=BIG_TOL)
    per = res.per_expression
    assert per["v1/0"].J == pytest.approx(1 / 3) and per["v1/0"].F == 1.0
    # union GT = A ∪ B on frames 0, 1 (J = 100 / 200) and A alone on frames 2, 3 (J = 1)
    assert per["v1/1"].j_per_frame.tolist() == [0.5, 0.5, 1.0, 1.0] and per["v1/1"].J == 0.75
    # empty prediction, GT present on every frame: J = 0, F = 0 (P = 1, R = 0)
    assert per["v2/0"].J == 0.0 and per["v2/0"].F == 0.0
    assert res.J == pytest.approx((1 / 3 + 0.75 + 0.0) / 3)
    assert res.F == pytest.approx((1.0 + 1.0 + 0.0) / 3)
    assert res.JF == pytest.approx((res.J + res.F) / 2) and res.problems == []
    tight = evaluate_predictions(hand_split, pred)  # default 0.008 → r = 1 px: the shifted edges do not match
    assert tight.per_expression["v1/0"].F < 1.0 and tight.per_expression["v1/0"].J == pytest.approx(1 / 3)


def test_empty_gt_frames_count_and_empty_prediction_scores_their_fraction(tmp_path):
    split = write_split(tmp_path / "synth", videos=2, seed=5, frames=5, size=(48, 64), progress=False)
    pred = tmp_path / "p"
    with read_mevis_split(split) as s:
        for v in s.videos:
            for e in s.expressions(v):
                write_prediction_pngs(pred, v, e, np.zeros((5, 48, 64), bool), s.frame_names(v))
        gts = {f"{v}/{e}": s.expression_masks(v, e) for v in s.videos for e in s.expressions(v)}
    res = evaluate_predictions(split, pred)
    for key, gt in gts.items():  # J = F = 1 exactly on empty-GT frames, 0 elsewhere
        empty = (gt.sum(axis=(1, 2)) == 0).astype(float)
        assert res.per_expression[key].j_per_frame.tolist() == empty.tolist()
        assert res.per_expression[key].f_per_frame.tolist() == empty.tolist()
    groups = res.groups()
    assert groups["all"]["n"] == len(gts) and any(k.startswith("kind: ") for k in groups)
    assert groups["single-object"]["n"] + groups.get("multi-object", {"n": 0})["n"] == len(gts)


def _problem_preds(hand_split: Path, root: Path) -> Path:
    """Perfect predictions with one missing frame, one wrong-size, one colour and one corrupt PNG, a missing
    expression folder, an extra video and an extra expression."""
    pred = _perfect(hand_split, root)
    (pred / "v1" / "0" / "00001.png").unlink()
    write_mask_png(pred / "v1" / "1" / "00000.png", np.ones((H, W + 2), bool))
    from PIL import Image

    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(pred / "v1" / "1" / "00003.png")
    (pred / "v1" / "0" / "00002.png").write_bytes(b"not a png")
    for p in (pred / "v2" / "0").iterdir():
        p.unlink()
    (pred / "v2" / "0").rmdir()
    write_mask_png(pred / "v9" / "0" / "00000.png", A)
    write_mask_png(pred / "v2" / "5" / "00000.png", A)
    return pred


def test_problems_are_named_and_scored_as_empty_never_dropped(hand_split, tmp_path):
    res = evaluate_predictions(hand_split, _problem_preds(hand_split, tmp_path / "p"))
    per = res.per_expression
    assert len(per) == 3  # nothing dropped
    assert per["v1/0"].j_per_frame.tolist() == [1.0, 0.0, 0.0, 1.0]  # missing + corrupt frame → empty vs GT A
    assert per["v1/1"].j_per_frame.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert per["v2/0"].J == 0.0 and len(per["v2/0"].problems) == 1
    text = "\n".join(res.problems)
    for phrase in ("v1/0/00001.png: missing", "v1/0/00002.png: not a PNG file", "v1/1/00000.png: size 40x50",
                   "v1/1/00003.png: image mode 'RGB'", "v2/0: expression folder missing",
                   "v9: predicted video is not in the split", "v2/5: predicted expression is not in the split"):
        assert phrase in text, phrase
    assert len(res.problems) == 7
    assert res.problems == [p for s in per.values() for p in s.problems] + res.problems[5:]
    assert res.J == pytest.approx((0.5 + 0.5 + 0.0) / 3)


@pytest.mark.parametrize("prefix", ["", "Annotations/", "run3/Annotations/"])
def test_zip_predictions_score_the_same_as_the_folder(hand_split, tmp_path, prefix):
    folder = _problem_preds(hand_split, tmp_path / "p")
    zp = tmp_path / "p.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        for p in sorted(folder.rglob("*.png")):
            zf.write(p, prefix + p.relative_to(folder).as_posix())
    a, b = evaluate_predictions(hand_split, folder), evaluate_predictions(hand_split, zp)
    assert a.to_json()["per_expression"] == b.to_json()["per_expression"] and a.problems == b.problems


def test_gt_zip_and_open_objects_are_accepted(hand_split, tmp_path):
    from rvos_core.formats.mevis import write_mevis_zip

    gz = write_mevis_zip(tmp_path / "gt.zip", _hand_videos())
    pred = _perfect(hand_split, tmp_path / "p")
    with read_mevis_split(gz) as split, open_predictions(pred) as src:
        res = evaluate_predictions(split, src)
        assert res.JF == 1.0
        assert score_expression(split, src, "v1", "1").J == 1.0  # caller's objects stay open


@pytest.mark.parametrize(("method", "as_zip"), [("fork", False), ("spawn", True), ("forkserver", False)])
def test_workers_under_any_start_method_match_one_worker(hand_split, tmp_path, method, as_zip):
    pred = _problem_preds(hand_split, tmp_path / "p")
    if as_zip:  # workers re-open the zip from its path
        pred = shutil.make_archive(str(tmp_path / "p"), "zip", root_dir=pred)
    one = evaluate_predictions(hand_split, pred)
    calls: list[tuple[int, int]] = []
    two = evaluate_predictions(hand_split, pred, workers=2, mp_context=method, progress=lambda d, t: calls.append((d, t)))
    assert two.to_json()["per_expression"] == one.to_json()["per_expression"]
    assert (two.J, two.F, two.problems) == (one.J, one.F, one.problems) and not np.isnan(two.J)
    assert calls[0] == (0, 3) and calls[-1] == (3, 3) and [d for d, _ in calls] == [0, 1, 2, 3]


def test_bad_inputs_raise_clear_errors(hand_split, tmp_path):
    pred = _perfect(hand_split, tmp_path / "p")
    with pytest.raises(FileNotFoundError, match="nope"):
        evaluate_predictions(tmp_path / "nope", pred)
    with pytest.raises(FileNotFoundError, match="missing_pred"):
        evaluate_predictions(hand_split, tmp_path / "missing_pred")
    with pytest.raises(ValueError, match="workers"):
        evaluate_predictions(hand_split, pred, workers=0)
    with pytest.raises(ValueError, match="mp_context"):
        evaluate_predictions(hand_split, pred, workers=2, mp_context="threads")
    with pytest.raises(ValueError, match="bound_th"):
        evaluate_predictions(hand_split, pred, bound_th=0)
    no_masks = write_mevis_split(tmp_path / "valid", _hand_videos(), with_masks=False)
    with pytest.raises(FileNotFoundError, match="mask_dict.json"):
        evaluate_predictions(no_masks, pred)
    bad_meta = tmp_path / "bad"
    bad_meta.mkdir()
    (bad_meta / "meta_expressions.json").write_text('{"videos": 3}')
    with pytest.raises(MevisFormatError, match="videos"):
        evaluate_predictions(bad_meta, pred)
    unsafe = tmp_path / "unsafe.zip"
    with zipfile.ZipFile(unsafe, "w") as zf:
        zf.writestr("../v1/0/00000.png", b"")
    with pytest.raises(PredictionFormatError, match="unsafe"):
        evaluate_predictions(hand_split, unsafe)


def test_json_round_trip_and_summary(hand_split, tmp_path):
    res = evaluate_predictions(hand_split, _problem_preds(hand_split, tmp_path / "p"))
    path = res.write_json(tmp_path / "out" / "r.json")
    data = load_evaluation_json(path)
    assert set(data) >= {"J", "F", "J&F", "per_expression", "problems"}
    assert set(data["per_expression"]["v1/0"]) >= {"J", "F", "J&F", "exp", "num_objects"}
    assert data["J&F"] == res.JF and data["problems"] == res.problems
    back = EvaluationResult.from_json(data)
    assert back.to_json() == json.loads(json.dumps(res.to_json()))
    assert isinstance(back.per_expression["v1/1"], ExpressionScore) and back.per_expression["v1/1"].JF == res.per_expression["v1/1"].JF
    text = format_summary(res, max_problems=2)
    assert "3 expressions (2 videos, 10 frames)" in text and "kind: appearance" in text and "multi-object" in text
    assert "problems: 7" in text and "... and 5 more" in text
    (tmp_path / "bad.json").write_text('{"J": 1, "F": "x"}')
    with pytest.raises(ValueError, match="'F'"):
        load_evaluation_json(tmp_path / "bad.json")


_FORK_AFTER_OPENCV_POOL = """
import sys, cv2, numpy as np
sys.path.insert(0, sys.argv[3])
from rvos_core.evaluation import evaluate_predictions
img = np.random.default_rng(0).random((1080, 1920), dtype=np.float32)
for _ in range(3):  # large resizes start OpenCV's worker-thread pool in this process
    cv2.resize(img, (2500, 1400), interpolation=cv2.INTER_CUBIC)
threads = cv2.getNumThreads()
res = evaluate_predictions(sys.argv[1], sys.argv[2], workers=2, mp_context="fork")
print(res.JF, threads == cv2.getNumThreads())
"""


def test_fork_workers_do_not_hang_after_the_parent_used_opencv_threads(hand_split, tmp_path):
    import subprocess
    import sys

    pred = _perfect(hand_split, tmp_path / "p")
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", _FORK_AFTER_OPENCV_POOL, str(hand_split), str(pred), str(root)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1.0", "True"]  # scores right; the caller's OpenCV thread count restored
