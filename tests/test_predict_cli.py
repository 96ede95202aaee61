"""``python -m rvos_core predict``: a random-init micro clip-rvos model on a generated split → the MeViS
prediction layout (names, sizes, 0/255), read by ``evaluate``; resume, atomic expressions, --zip, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rvos_core.cli import main
from rvos_core.engines.clip_rvos import build_net, save_checkpoint
from rvos_core.engines.predictions import STAGING_PREFIX, predict_split
from rvos_core.formats.mevis import read_mevis_split
from rvos_core.synthetic import write_split
from test_model import micro_config

H, W, T = 64, 96, 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """A 2-video split (with masks) and a random-init micro model: its config JSON and checkpoint."""
    root = tmp_path_factory.mktemp("predict")
    write_split(root / "split", videos=2, seed=21, frames=T, size=(H, W), progress=False)
    cfg = micro_config()
    (root / "micro.json").write_text(json.dumps(cfg.to_dict()))
    torch.manual_seed(0)
    save_checkpoint(build_net(cfg), root / "micro.pt", half=False)
    return {"root": root, "split": root / "split", "config": root / "micro.json", "ckpt": root / "micro.pt"}


def _predict(setup: dict[str, Path], out: Path, *extra: str, dataset: Path | None = None) -> int:
    return main(["predict", "--dataset", str(dataset or setup["split"]), "--out", str(out),
                 "--model", str(setup["config"]), "--checkpoint", str(setup["ckpt"]), "--threads", "1", *extra])


def _jobs(split: Path) -> list[tuple[str, str, list[str]]]:
    with read_mevis_split(split) as s:
        return [(v, e, s.frame_names(v)) for v in s.videos for e in s.expressions(v)]


def _snapshot(out: Path) -> dict[str, tuple[int, bytes]]:
    return {p.relative_to(out).as_posix(): (p.stat().st_mtime_ns, p.read_bytes()) for p in out.rglob("*.png")}


@pytest.fixture(scope="module")
def predicted(setup) -> Path:
    out = setup["root"] / "pred"
    assert _predict(setup, out) == 0
    return out


def test_layout_names_sizes_and_values(setup, predicted):
    jobs = _jobs(setup["split"])
    assert len(jobs) >= 4
    assert sorted(p.name for p in predicted.iterdir()) == sorted({v for v, _, _ in jobs})  # no staging left
    for video, exp_id, frames in jobs:
        jpegs = sorted(p.stem for p in (setup["split"] / "JPEGImages" / video).glob("*.jpg"))
        assert frames == jpegs
        folder = predicted / video / exp_id
        assert sorted(p.stem for p in folder.iterdir()) == jpegs and all(p.suffix == ".png" for p in folder.iterdir())
        for p in folder.iterdir():
            im = Image.open(p)
            assert im.mode == "L" and im.size == (W, H)
            assert set(np.unique(np.asarray(im)).tolist()) <= {0, 255}


def test_evaluate_reads_the_predictions_without_problems(setup, predicted, capsys):
    out = setup["root"] / "scores.json"
    assert main(["evaluate", "--gt", str(setup["split"]), "--pred", str(predicted), "--out", str(out), "--strict"]) == 0
    res = json.loads(out.read_text())
    assert res["problems"] == [] and 0.0 <= res["J&F"] <= 1.0
    assert sorted(res["per_expression"]) == sorted(f"{v}/{e}" for v, e, _ in _jobs(setup["split"]))


def test_progress_bar_and_summary(setup, tmp_path, capsys):
    assert _predict(setup, tmp_path / "p") == 0
    captured = capsys.readouterr()
    n = len(_jobs(setup["split"]))
    assert f"{n} expressions predicted ({n * T} PNGs), 0 already complete" in captured.out
    assert "engine clip-rvos-micro" in captured.out
    assert "predict: 100%" in captured.err and f"{n}/{n}" in captured.err and "expression" in captured.err


def test_resume_skips_complete_expressions_and_redoes_broken_ones(setup, predicted, tmp_path, capsys):
    out = tmp_path / "pred"
    shutil.copytree(predicted, out)
    before = _snapshot(out)
    # A killed run left a staging folder: removed, never seen as predictions.
    stale = out / f"{STAGING_PREFIX}dead01" / "synth_00000" / "0"
    stale.mkdir(parents=True)
    (stale / "00000.png").write_bytes(b"partial")
    capsys.readouterr()
    assert _predict(setup, out) == 0
    n = len(_jobs(setup["split"]))
    assert f"0 expressions predicted (0 PNGs), {n} already complete" in capsys.readouterr().out
    assert _snapshot(out) == before and not list(out.glob(f"{STAGING_PREFIX}*"))
    # An expression folder missing a PNG is predicted again, as a whole; the others are left alone.
    video, exp_id, _ = _jobs(setup["split"])[1]
    (out / video / exp_id / "00002.png").unlink()
    assert _predict(setup, out) == 0
    assert f"1 expressions predicted ({T} PNGs), {n - 1} already complete" in capsys.readouterr().out
    after = _snapshot(out)
    assert {k: v[1] for k, v in after.items()} == {k: v[1] for k, v in before.items()}  # same model, same masks
    redone = {k for k in after if after[k][0] != before[k][0]}
    assert redone == {f"{video}/{exp_id}/{i:05d}.png" for i in range(T)}


def test_a_failing_expression_leaves_no_partial_folder(setup, tmp_path):
    from rvos_core.engines.base import Masklet, SegmentResult

    jobs = _jobs(setup["split"])
    fail_on = jobs[2][:2]
    seen: list[str] = []

    class Flaky:
        name = "flaky"

        def segment(self, video, expression, progress=None):
            seen.append(expression)
            if len(seen) == 3:
                raise RuntimeError("engine died")
            m = np.zeros((T, H, W), bool)
            m[:, 10:20, 10:30] = True
            return SegmentResult([Masklet(0, m, 1.0)], T, H, W, list(range(T)), "flaky")

    out = tmp_path / "pred"
    with pytest.raises(RuntimeError, match="engine died"):
        predict_split(setup["split"], out, Flaky())
    done = {f"{p.parent.name}/{p.name}" for p in out.glob("*/*")}
    assert done == {f"{v}/{e}" for v, e, _ in jobs[:2]} and f"{fail_on[0]}/{fail_on[1]}" not in done
    assert not list(out.glob(f"{STAGING_PREFIX}*"))
    # The next run finishes the rest without building the engine for the finished ones.
    report = predict_split(setup["split"], out, lambda: Flaky())
    assert report.skipped == [f"{v}/{e}" for v, e, _ in jobs[:2]] and len(report.written) == len(jobs) - 2
    assert report.engine == "flaky"
    report = predict_split(setup["split"], out, lambda: pytest.fail("a finished run must not load the engine"))
    assert report.written == [] and report.engine == ""


def test_refiner_refines_each_masklet_before_the_union(setup, tmp_path, monkeypatch):
    """--refiner: every non-empty masklet mask is refined on its frame (seed 003's box + points from
    that mask), and the PNG is the union of the refined masks."""
    from rvos_core.engines.base import Masklet, SegmentResult
    from rvos_core.refiners import registry
    from rvos_core.refiners.base import RefineResult

    left, right = np.zeros((T, H, W), bool), np.zeros((T, H, W), bool)
    left[:, 10:30, 5:25] = True
    right[1:, 30:50, 60:90] = True  # absent on frame 0: nothing to refine there

    class TwoObjects:
        name = "two"

        def segment(self, video, expression, progress=None):
            return SegmentResult([Masklet(0, left, 1.0), Masklet(1, right, 1.0)], T, H, W, list(range(T)), "two")

    calls: list[tuple[str, tuple[int, ...]]] = []

    class BoxFill:
        """Fills the prompt box, so the refined mask is the proposal's bounding box grown by 2 px."""

        name = "boxfill"

        def refine(self, frame, points=None, labels=None, box=None, mask_prior=None, frame_key=None):
            calls.append((frame_key, tuple(int(v) for v in box)))
            out = np.zeros(frame.shape[:2], bool)
            x0, y0, x1, y1 = (int(v) for v in box)
            out[max(y0 - 2, 0):y1 + 3, max(x0 - 2, 0):x1 + 3] = True
            return RefineResult(out, 1.0)

    monkeypatch.setattr(registry, "load_refiner", lambda name: BoxFill() if name == "boxfill" else pytest.fail(name))
    out = tmp_path / "pred"
    report = predict_split(setup["split"], out, TwoObjects(), refiner="boxfill")
    jobs = _jobs(setup["split"])
    assert report.engine == "two" and len(report.written) == len(jobs)
    assert len(calls) == len(jobs) * (T + T - 1)  # left on every frame, right on frames 1..T-1
    assert {key.split(":")[1] for key, _ in calls} == {str(t) for t in range(T)}
    expected = np.zeros((T, H, W), bool)
    expected[:, 8:32, 3:27] = True  # box x 5..24, y 10..29, grown by 2 px on each side
    expected[1:, 28:52, 58:92] = True
    video, exp_id, frames = jobs[0]
    got = np.stack([np.asarray(Image.open(out / video / exp_id / f"{f}.png")) == 255 for f in frames])
    np.testing.assert_array_equal(got, expected)


def test_zip_and_a_split_without_masks(setup, predicted, tmp_path, capsys):
    from rvos_core.formats.predictions import open_predictions

    valid = tmp_path / "valid"
    shutil.copytree(setup["split"], valid, ignore=shutil.ignore_patterns("mask_dict.json"))
    out, archive = tmp_path / "pred", tmp_path / "sub" / "submission.zip"
    assert _predict(setup, out, "--zip", str(archive), dataset=valid) == 0
    assert f"zip {archive}" in capsys.readouterr().out
    with open_predictions(archive) as z:
        assert z.prefix == "" and z.num_pngs() == len(_jobs(valid)) * T and z.ignored_entries == []
        video, exp_id, frames = _jobs(valid)[0]
        stack, problems = z.read_expression(video, exp_id, frames, (H, W))
    assert problems == []
    expected = np.stack([np.asarray(Image.open(predicted / video / exp_id / f"{f}.png")) == 255 for f in frames])
    np.testing.assert_array_equal(stack, expected)  # same model, same split frames → same masks


def test_errors_are_one_clear_line(setup, tmp_path, capsys):
    file_out = tmp_path / "taken"
    file_out.write_text("x")
    renamed = tmp_path / "renamed"
    shutil.copytree(setup["split"], renamed)
    jpeg = renamed / "JPEGImages" / "synth_00001" / "00003.jpg"
    jpeg.rename(jpeg.with_name("frame_3.jpg"))
    cases = [(["--dataset", str(tmp_path / "missing")], "missing: no such split folder"),
             (["--out", str(file_out)], "is a file"),
             (["--dataset", str(renamed)], "frame files do not match the 'frames' of 'synth_00001'"),
             (["--model", "nope"], "unknown engine 'nope'"),
             (["--threads", "-1"], "--threads must be >= 0")]
    capsys.readouterr()
    for args, phrase in cases:
        base = {"--dataset": str(setup["split"]), "--out": str(tmp_path / "o"), "--model": str(setup["config"]),
                "--checkpoint": str(setup["ckpt"])}
        base.update(dict(zip(args[::2], args[1::2])))
        assert main(["predict", *[x for kv in base.items() for x in kv]]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and phrase in err[-1], (args, err)
    assert not list((tmp_path / "o").glob(f"{STAGING_PREFIX}*"))


def test_predict_and_segment_refine_through_one_shared_helper(setup, tmp_path, monkeypatch):
    """``predict --refiner`` and ``segment --refiner`` both go through :func:`rvos_core.pipeline.refine_result`
    (one call per expression / video) and write its per-frame union of refined masklets."""
    from rvos_core import pipeline
    from rvos_core.engines import registry as engines
    from rvos_core.engines.base import Masklet, SegmentResult
    from rvos_core.refiners import registry as refiners
    from rvos_core.refiners.base import RefineResult

    box = np.zeros((T, H, W), bool)
    box[:, 20:40, 30:70] = True

    class OneBox:
        name = "one-box"

        def segment(self, video, expression, progress=None):
            return SegmentResult([Masklet(0, box, 0.9)], T, H, W, list(range(T)), self.name)

    class Complement:  # the refined mask is everything outside the proposal: visibly not the engine's mask
        def refine(self, frame, points=None, labels=None, box=None, mask_prior=None, frame_key=None):
            return RefineResult(~mask_prior, 1.0)

    shared = []

    def recording(result, video, refiner, progress=None):
        shared.append(video.video_id)
        return real(result, video, refiner, progress=progress)

    real = pipeline.refine_result
    monkeypatch.setattr(pipeline, "refine_result", recording)
    monkeypatch.setattr(refiners, "load_refiner", lambda name: Complement())
    monkeypatch.setattr(engines, "get_engine", lambda *args, **kwargs: OneBox())
    report = predict_split(setup["split"], tmp_path / "pred", OneBox(), refiner="complement")
    assert len(shared) == len(report.written) == len(_jobs(setup["split"]))
    video, exp_id, frames = _jobs(setup["split"])[0]
    got = np.stack([np.asarray(Image.open(tmp_path / "pred" / video / exp_id / f"{f}.png")) == 255 for f in frames])
    np.testing.assert_array_equal(got, ~box)
    shared.clear()
    steps: list[str] = []
    pipeline.segment_video(setup["split"] / "JPEGImages" / video, "the box", tmp_path / "seg", refiner="complement",
                           progress=lambda done, total, message: steps.append(message))
    assert len(shared) == 1
    assert [m for m in steps if m.startswith("refine")] == [f"refine: frame {t}/{T}" for t in range(1, T + 1)]
    got = np.stack([np.asarray(Image.open(tmp_path / "seg" / f"{t:05d}.png")) == 255 for t in range(T)])
    np.testing.assert_array_equal(got, ~box)


def test_refine_result_leaves_empty_masklets_and_frames_alone():
    from types import SimpleNamespace

    from rvos_core.engines.base import Masklet, SegmentResult
    from rvos_core.pipeline import refine_result

    calls = []

    class Recorder:
        def refine(self, frame, points=None, labels=None, box=None, mask_prior=None, frame_key=None):
            calls.append(frame_key)
            return SimpleNamespace(mask=mask_prior.copy())

    only_frame_1 = np.zeros((3, 8, 10), bool)
    only_frame_1[1, 2:5, 3:6] = True
    video = SimpleNamespace(video_id="v", get_frame=lambda t: np.zeros((8, 10, 3), np.uint8))
    result = SegmentResult([Masklet(0, only_frame_1, 1.0), Masklet(1, np.zeros((3, 8, 10), bool), 0.5)],
                           3, 8, 10, [0, 1, 2], "x")
    out = refine_result(result, video, Recorder())
    assert out.dtype == bool and out.shape == (3, 8, 10)
    np.testing.assert_array_equal(out, only_frame_1)
    assert calls == ["v:1"]  # the empty masks cost no refiner call
    assert not refine_result(SegmentResult([], 3, 8, 10, [0, 1, 2], "x"), video, Recorder()).any()
