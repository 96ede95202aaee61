"""The precomputed-predictions engine: matching by video name and expression text, meta_expressions
inside a folder / zip / given apart / an explicit mapping, clear errors, and the registry entry."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from rvos_core.engines.predictions import PredictionMatchError, PredictionsEngine, normalise_expression
from rvos_core.engines.registry import engine_status, get_engine, list_engines, load_predictions_engine
from rvos_core.formats.mevis import MevisFormatError, read_mevis_split, write_prediction_pngs
from rvos_core.formats.predictions import write_prediction_zip
from rvos_core.masks import write_mask_png
from rvos_core.synthetic import write_split
from rvos_core.video import open_video
from _files import zip_folder

T, H, W = 4, 48, 64


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path, dict]:
    """A synthetic split, perfect predictions of it (with the split's meta_expressions.json inside),
    and ``{(video, exp_id): (text, (T, H, W) ground truth)}``."""
    root = tmp_path_factory.mktemp("pred_engine")
    split, pred = root / "split", root / "pred"
    write_split(split, videos=2, seed=11, frames=T, size=(H, W), progress=False)
    truth = {}
    with read_mevis_split(split) as s:
        for v in s.videos:
            for e, exp in s.expressions(v).items():
                gt = s.expression_masks(v, e)
                write_prediction_pngs(pred, v, e, gt, s.frame_names(v))
                truth[(v, e)] = (exp.exp, gt)
    shutil.copy(split / "meta_expressions.json", pred / "meta_expressions.json")
    return split, pred, truth


def _video(split: Path, name: str):
    return open_video(split / "JPEGImages" / name)


def _shouty(text: str) -> str:
    """The same expression as a user may type it: other case, extra spaces."""
    return "  " + "   ".join(text.upper().split()) + " "


def test_normalise_expression_collapses_whitespace_and_case():
    assert normalise_expression("  The  Dog\tRUNNING\n") == "the dog running"
    assert normalise_expression("Straße") == normalise_expression("STRASSE")  # casefold, not lower


def test_segment_returns_the_predicted_masks_matched_by_name_and_text(data):
    split, pred, truth = data
    engine = PredictionsEngine(pred)
    assert engine.expressions_from.endswith("meta_expressions.json")
    for (video, exp_id), (text, gt) in truth.items():
        with _video(split, video) as src:
            calls = []
            res = engine.segment(src, _shouty(text), progress=lambda d, t, m: calls.append((d, t)))
        assert (res.num_frames, res.height, res.width, res.engine) == (T, H, W, "predictions")
        assert res.sampled_frames == list(range(T)) and calls[-1] == (T, T)
        if gt.any():
            (m,) = res.masklets
            assert m.obj_id == 0 and m.score == 1.0 and m.masks.dtype == bool
        np.testing.assert_array_equal(res.union(), gt, err_msg=f"{video}/{exp_id}")
        assert engine.find(video, text) in [e for (v, e), (t, _) in truth.items() if v == video and
                                             normalise_expression(t) == normalise_expression(text)]
    engine.close()


def test_zip_with_meta_inside_a_wrapping_folder(data, tmp_path):
    split, pred, truth = data
    archive = zip_folder(pred, tmp_path / "sub.zip", prefix="submission/")  # one top folder, as zip tools make
    (video, exp_id), (text, gt) = next(iter(truth.items()))
    engine = get_engine("predictions", checkpoint=archive)
    assert isinstance(engine, PredictionsEngine) and engine.source.is_zip
    assert engine.expressions_from.endswith("submission/meta_expressions.json")
    with _video(split, video) as src:
        np.testing.assert_array_equal(engine.segment(src, text).union(), gt)
    assert get_engine("predictions", checkpoint=archive) is not engine  # never cached: files may change
    engine.close()


def test_meta_given_apart_and_explicit_mapping(data, tmp_path):
    split, pred, truth = data
    bare = tmp_path / "bare.zip"
    write_prediction_zip(bare, pred)  # PNGs only
    with pytest.raises(PredictionMatchError, match="no meta_expressions.json inside.*give the split's"):
        PredictionsEngine(bare)
    (video, exp_id), (text, gt) = next(iter(truth.items()))
    with _video(split, video) as src:
        by_file = load_predictions_engine(bare, meta_expressions=split / "meta_expressions.json")
        np.testing.assert_array_equal(by_file.segment(src, text).union(), gt)
        by_split_folder = PredictionsEngine(bare, meta_expressions=split)  # a split folder holding one
        np.testing.assert_array_equal(by_split_folder.segment(src, text).union(), gt)
        # An explicit mapping: frames come from the PNGs (natural order), video name overridden.
        mapped = PredictionsEngine(bare, expressions={video: {exp_id: "my own words"}})
        np.testing.assert_array_equal(mapped.segment(src, "My own  words").union(), gt)
        assert mapped.expressions(video) == {exp_id: "my own words"} and mapped.expressions("nope") == {}
    with pytest.raises(ValueError, match="not both"):
        PredictionsEngine(bare, meta_expressions=split / "meta_expressions.json", expressions={})
    with pytest.raises(ValueError, match=r"expressions\['v'\]: expected a mapping exp_id"):
        PredictionsEngine(bare, expressions={"v": ["a"]})
    with pytest.raises(FileNotFoundError, match="nope.json"):
        PredictionsEngine(bare, meta_expressions=tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"videos": [1]}')
    with pytest.raises(MevisFormatError, match="broken.json.*videos"):
        PredictionsEngine(bare, meta_expressions=broken)


def test_errors_name_what_is_missing(data, tmp_path):
    split, pred, truth = data
    engine = PredictionsEngine(pred)
    (video, exp_id), (text, _) = next(iter(truth.items()))
    # The video: matched by the opened file's stem, here a clip the predictions do not have.
    other = tmp_path / "other_clip"
    shutil.copytree(split / "JPEGImages" / video, other)
    with open_video(other) as src, pytest.raises(PredictionMatchError,
                                                 match=r"video 'other_clip' is not in the predictions .*2 videos: "
                                                       r"'synth_00000', 'synth_00001'"):
        engine.segment(src, text)
    # ... unless the caller names it (the app passes the session's video name).
    with open_video(other) as src:
        assert engine.segment(src, text, video_name=video).num_frames == T
        # The expression: not found → the closest known texts are listed.
        typo = text[:-1] + "x"
        with pytest.raises(PredictionMatchError, match=rf"expression {typo!r} not found for video {video!r} .*"
                                                       rf"closest: .*{text!r}"):
            engine.segment(src, typo, video_name=video)
        n_known = len({t for (v, _), (t, _) in truth.items() if v == video})
        with pytest.raises(PredictionMatchError, match=rf"not found .*\({n_known} known: '"):
            engine.segment(src, "zzzz qqqq", video_name=video)
        with pytest.raises(ValueError, match="expression is empty"):
            engine.segment(src, "  ", video_name=video)
    # The expression folder missing although the meta file lists it.
    partial = tmp_path / "partial"
    shutil.copytree(pred, partial)
    shutil.rmtree(partial / video / exp_id)
    with _video(split, video) as src, pytest.raises(PredictionMatchError,
                                                    match=rf"is {video}/{exp_id} in .*no {video}/{exp_id}/ folder"):
        PredictionsEngine(partial).segment(src, text)


def test_frame_count_and_size_mismatch(data, tmp_path):
    split, pred, truth = data
    (video, exp_id), (text, _) = next(iter(truth.items()))
    short = tmp_path / video
    short.mkdir()
    for f in sorted((split / "JPEGImages" / video).iterdir())[:3]:
        shutil.copy(f, short / f.name)
    with open_video(short) as src, pytest.raises(PredictionMatchError,
                                                 match=r"frame count mismatch: the predictions have 4 frames "
                                                       r".*'frames' of .* but the video has 3"):
        PredictionsEngine(pred).segment(src, text)
    bad = tmp_path / "bad"
    shutil.copytree(pred, bad)
    write_mask_png(bad / video / exp_id / "00002.png", np.ones((H // 2, W), bool))
    (bad / video / exp_id / "00003.png").unlink()
    with _video(split, video) as src, pytest.raises(PredictionMatchError) as err:
        PredictionsEngine(bad).segment(src, text)
    msg = str(err.value)
    assert f"2 of 4 prediction PNGs of {video}/{exp_id} cannot be used" in msg
    assert "00002.png: size 24x64 (HxW), expected the frame size 48x64" in msg and "00003.png: missing" in msg


def test_empty_prediction_gives_no_masklet(data, tmp_path):
    split, pred, truth = data
    (video, exp_id), (text, _) = next(iter(truth.items()))
    empty = tmp_path / "empty"
    write_prediction_pngs(empty, video, exp_id, np.zeros((T, H, W), bool), [f"{i:05d}" for i in range(T)])
    engine = PredictionsEngine(empty, expressions={video: {exp_id: text}})
    with _video(split, video) as src:
        res = engine.segment(src, text)
    assert res.masklets == [] and not res.union().any()


def test_registry_entry(tmp_path):
    assert list_engines()[-1] == "predictions" and "clip-rvos-tiny" in list_engines()
    assert "precomputed masks" in engine_status("predictions")
    with pytest.raises(ValueError, match="needs the prediction folder or .zip"):
        get_engine("predictions")
    with pytest.raises(ValueError, match="unknown engine 'nope'; valid engines: .*clip-rvos-tiny.*predictions"):
        get_engine("nope")
    with pytest.raises(FileNotFoundError, match="no such prediction folder"):
        get_engine("predictions", checkpoint=tmp_path / "missing")


def test_segment_cli_with_precomputed_predictions(data, tmp_path, capsys):
    from rvos_core.cli import main
    from rvos_core.masks import read_mask_png

    split, pred, truth = data
    (video, exp_id), (text, gt) = next(iter(truth.items()))
    out = tmp_path / "masks"
    assert main(["segment", str(split / "JPEGImages" / video), "--expression", text, "--out", str(out),
                 "--model", "predictions", "--checkpoint", str(pred)]) == 0
    got = np.stack([read_mask_png(out / f"{i:05d}.png") for i in range(T)])
    np.testing.assert_array_equal(got, gt)
    assert "engine predictions" in capsys.readouterr().out
    assert main(["segment", str(split / "JPEGImages" / video), "--expression", "no such thing", "--out", str(out),
                 "--model", "predictions", "--checkpoint", str(pred)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: expression 'no such thing' not found")
