"""Prediction layout <video>/<exp_id>/<frame>.png: folders, zips (prefixes, unsafe entries), strict PNG checks."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rvos_core.formats.predictions import (
    PredictionFormatError,
    PredictionSource,
    open_predictions,
    write_prediction_zip,
)
from rvos_core.masks import write_mask_png

H, W = 24, 32


def _mask(shift: int = 0) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[4:14, 6 + shift:18 + shift] = True
    return m


def _write_tree(root: Path) -> dict[str, np.ndarray]:
    """Two videos ("v2", "v10" to check natural order), masks differing per file; returns rel → mask."""
    out = {}
    for video, exps in (("v10", ("0",)), ("v2", ("0", "1"))):
        for exp_id in exps:
            for i in range(3):
                m = _mask(shift=i + int(exp_id))
                rel = f"{video}/{exp_id}/{i:05d}.png"
                write_mask_png(root / rel, m)
                out[rel] = m
    return out


def _zip_folder(src: Path, zip_path: Path, prefix: str = "") -> Path:
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in sorted(src.rglob("*.png")):
            zf.write(p, prefix + p.relative_to(src).as_posix())
    return zip_path


def _check_all(source: PredictionSource, expected: dict[str, np.ndarray]) -> None:
    for rel, m in expected.items():
        video, exp_id, fname = rel.split("/")
        got, problem = source.read_mask(video, exp_id, fname[:-4], (H, W))
        assert problem is None, problem
        assert got.dtype == bool and np.array_equal(got, m)


def test_folder_index_lists_in_natural_order_and_reads_masks(tmp_path):
    expected = _write_tree(tmp_path / "pred")
    (tmp_path / "pred" / "notes.txt").write_text("hello")
    src = open_predictions(tmp_path / "pred")
    assert src.videos() == ["v2", "v10"]
    assert src.expressions("v2") == ["0", "1"] and src.expressions("nope") == []
    assert src.frames("v10", "0") == ["00000", "00001", "00002"]
    assert src.num_pngs() == 9 and not src.is_zip and src.prefix == ""
    assert src.ignored_entries == ["notes.txt"]
    _check_all(src, expected)


@pytest.mark.parametrize("prefix", ["", "Annotations/", "my_submission/", "team/Annotations/"])
def test_zip_with_root_or_wrapping_prefix_reads_the_same(tmp_path, prefix):
    expected = _write_tree(tmp_path / "pred")
    zp = _zip_folder(tmp_path / "pred", tmp_path / "pred.zip", prefix)
    with open_predictions(zp) as src:
        assert src.is_zip and src.prefix == prefix.rstrip("/")
        assert src.videos() == ["v2", "v10"]
        _check_all(src, expected)


def test_single_video_folder_is_not_mistaken_for_a_wrapper(tmp_path):
    write_mask_png(tmp_path / "p" / "only_video" / "0" / "00000.png", _mask())
    src = open_predictions(tmp_path / "p")
    assert src.videos() == ["only_video"] and src.prefix == ""


def test_folder_with_annotations_wrapper(tmp_path):
    expected = _write_tree(tmp_path / "pred" / "Annotations")
    src = open_predictions(tmp_path / "pred")
    assert src.prefix == "Annotations" and src.videos() == ["v2", "v10"]
    _check_all(src, {f"{k}": v for k, v in expected.items()})


@pytest.mark.parametrize("name", ["../evil/0/00000.png", "v/../../0/00000.png", "/abs/v/0/00000.png",
                                  "C:/v/0/00000.png", "v\\..\\..\\x.png"])
def test_unsafe_zip_entries_are_refused(tmp_path, name):
    zp = tmp_path / "bad.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        zf.writestr("v/0/00000.png", b"x")
        zf.writestr(name, b"x")
    with pytest.raises(PredictionFormatError, match="unsafe entry"):
        open_predictions(zp)


def test_missing_path_and_non_zip_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        open_predictions(tmp_path / "nope")
    bad = tmp_path / "preds.zip"
    bad.write_bytes(b"this is not a zip")
    with pytest.raises(PredictionFormatError, match="preds.zip"):
        open_predictions(bad)


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG")


def _bad_files(root: Path) -> dict[str, str]:
    """frame name → a phrase its problem must contain."""
    m = _mask().astype(np.uint8)
    d = root / "v" / "0"
    _save(d / "size.png", np.zeros((H + 1, W), np.uint8))
    _save(d / "rgb.png", np.stack([m * 255] * 3, axis=-1))
    _save(d / "ones.png", m)  # 0/1 instead of 0/255
    _save(d / "grey.png", m * 128)
    _save(d / "deep.png", m.astype(np.uint16) * 65535)
    pal = Image.fromarray(m).convert("P")
    pal.putpalette([0, 0, 0, 255, 255, 255])
    pal.save(d / "palette.png")
    (d / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    write_mask_png(d / "ok.png", _mask())
    (d / "trunc.png").write_bytes((d / "ok.png").read_bytes()[:60])
    Image.fromarray(m * 255).save(d / "jpeg.png", format="JPEG")
    return {"size": "size 25x32 (HxW), expected the frame size 24x32", "rgb": "mode 'RGB'",
            "ones": "other than 0/255", "grey": "other than 0/255", "deep": "mode 'I;16'",
            "palette": "mode 'P'", "garbage": "unreadable PNG", "trunc": "unreadable PNG",
            "jpeg": "not a PNG", "absent": "missing"}


@pytest.mark.parametrize("as_zip", [False, True])
def test_bad_pngs_give_empty_masks_and_named_problems(tmp_path, as_zip):
    expect = _bad_files(tmp_path / "pred")
    path = _zip_folder(tmp_path / "pred", tmp_path / "p.zip") if as_zip else tmp_path / "pred"
    src = open_predictions(path)
    for frame, phrase in expect.items():
        mask, problem = src.read_mask("v", "0", frame, (H, W))
        assert mask.shape == (H, W) and mask.dtype == bool and not mask.any()
        assert problem is not None and problem.startswith(f"v/0/{frame}.png: ") and phrase in problem, problem
        assert "\n" not in problem and "scored as an empty mask" in problem
    mask, problem = src.read_mask("v", "0", "ok", (H, W))
    assert problem is None and np.array_equal(mask, _mask())


def test_read_expression_missing_folders_give_one_line(tmp_path):
    _write_tree(tmp_path / "pred")
    src = open_predictions(tmp_path / "pred")
    masks, problems = src.read_expression("absent", "0", ["00000", "00001"], (H, W))
    assert masks.shape == (2, H, W) and not masks.any()
    assert len(problems) == 1 and "video folder 'absent' missing" in problems[0]
    _, problems = src.read_expression("v10", "7", ["00000"], (H, W))
    assert len(problems) == 1 and problems[0].startswith("v10/7: expression folder missing")
    masks, problems = src.read_expression("v10", "0", ["00000", "00009"], (H, W))
    assert masks[0].any() and not masks[1].any() and problems == ["v10/0/00009.png: missing; scored as an empty mask"]
    with pytest.raises(ValueError, match="size_hw"):
        src.read_mask("v10", "0", "00000", (0, W))


def test_zip_source_pickles_and_reopens(tmp_path):
    expected = _write_tree(tmp_path / "pred")
    src = open_predictions(_zip_folder(tmp_path / "pred", tmp_path / "p.zip", "Annotations/"))
    _check_all(src, expected)  # opens the zip in this process
    clone = pickle.loads(pickle.dumps(src))
    _check_all(clone, expected)
    src.close()
    _check_all(src, expected)  # re-opened lazily after close


def test_write_prediction_zip_is_deterministic_with_videos_at_the_root(tmp_path):
    expected = _write_tree(tmp_path / "pred" / "Annotations")
    (tmp_path / "pred" / "Annotations" / "readme.md").write_text("x")
    a = write_prediction_zip(tmp_path / "a.zip", tmp_path / "pred")
    b = write_prediction_zip(tmp_path / "b.zip", tmp_path / "pred")
    assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as zf:
        names = zf.namelist()
    assert names[:3] == ["v2/0/00000.png", "v2/0/00001.png", "v2/0/00002.png"] and len(names) == 9
    assert set(names) == set(expected)
    _check_all(open_predictions(a), expected)
    write_prediction_zip(a, tmp_path / "pred")  # replaces atomically
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_write_prediction_zip_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_prediction_zip(tmp_path / "o.zip", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PredictionFormatError, match="no <video>/<exp_id>/<frame>.png"):
        write_prediction_zip(tmp_path / "o.zip", tmp_path / "empty")
    assert not (tmp_path / "o.zip").exists()


@pytest.mark.parametrize("as_zip", [False, True])
def test_oversized_file_is_a_problem_not_a_read(tmp_path, monkeypatch, as_zip):
    import rvos_core.formats.predictions as predictions

    _write_tree(tmp_path / "pred")
    path = _zip_folder(tmp_path / "pred", tmp_path / "p.zip") if as_zip else tmp_path / "pred"
    monkeypatch.setattr(predictions, "_MAX_PNG_BYTES", 16)
    mask, problem = open_predictions(path).read_mask("v2", "0", "00000", (H, W))
    assert not mask.any() and problem is not None and "byte limit" in problem and problem.startswith("v2/0/00000.png")
