"""MeViS layout: write → read round trips (folder and zip), validation errors, atomicity, determinism."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from rvos_core.formats.mevis import (
    MevisExpression,
    MevisFormatError,
    MevisVideo,
    read_mevis_split,
    write_mevis_split,
    write_mevis_zip,
    write_prediction_pngs,
)
from rvos_core.masks import mask_to_rle
from _files import tree_hash, zip_folder

H, W, T = 48, 64, 4


def _frames(seed: int) -> np.ndarray:
    """Smooth frames (JPEG-friendly): a gradient plus a moving bright block."""
    rng = np.random.default_rng(seed)
    base = np.linspace(30, 200, W, dtype=np.float32)[None, :, None] * np.ones((H, 1, 3), np.float32)
    base = base * rng.uniform(0.6, 1.0, size=3).astype(np.float32)
    out = np.repeat(base[None], T, axis=0)
    for t in range(T):
        out[t, 10:20, 5 + 8 * t:15 + 8 * t] = (240, 60, 60)
    return out.astype(np.uint8)


def _box(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _videos() -> dict[str, MevisVideo]:
    names = [f"{i:05d}" for i in range(T)]
    a = [_box(2, 2, 10, 12), None, _box(5, 30, 20, 40), None]          # object 10
    b = [_box(20, 20, 30, 30), _box(0, 0, 4, 4), None, None]           # object 11
    c = [None, None, None, None]                                       # object 20: absent everywhere
    v1 = MevisVideo(
        frame_names=names, frames=_frames(1),
        expressions={"0": MevisExpression("the red thing", [0], [10], kind="appearance"),
                     "1": MevisExpression("both things moving", [0, 1], [10, 11], kind="motion")},
        masks={10: a, 11: b})
    v2 = MevisVideo(
        frame_names=names, frames=lambda i: _frames(2)[i],
        expressions={"0": MevisExpression("the ghost", [0], [20])},
        masks={20: c})
    return {"vid_b": v2, "vid_a": v1}



def _check_round_trip(path: Path) -> None:
    src = _videos()
    with read_mevis_split(path) as split:
        assert split.has_masks
        assert split.videos == ["vid_a", "vid_b"]
        for name, v in src.items():
            assert split.frame_names(name) == v.frame_names
            assert split.expressions(name) == v.expressions
            frames = v.frames if not callable(v.frames) else [v.frames(i) for i in range(T)]
            for i in range(T):
                got = split.frame(name, i)
                assert got.shape == (H, W, 3) and got.dtype == np.uint8
                assert np.abs(got.astype(int) - frames[i].astype(int)).mean() < 3.0
            for anno, masks in v.masks.items():
                got_masks = split.object_masks(anno)
                assert len(got_masks) == T
                for g, m in zip(got_masks, masks):
                    if m is None:
                        assert g is None
                    else:
                        assert g.dtype == bool and np.array_equal(g, m)


def test_folder_round_trip(tmp_path: Path) -> None:
    out = write_mevis_split(tmp_path / "split", _videos())
    assert (out / "JPEGImages" / "vid_a" / "00003.jpg").is_file()
    _check_round_trip(out)


def test_zip_round_trip_with_folders_at_root(tmp_path: Path) -> None:
    z = write_mevis_zip(tmp_path / "split.zip", _videos())
    names = zipfile.ZipFile(z).namelist()
    assert "meta_expressions.json" in names and "mask_dict.json" in names
    assert "JPEGImages/vid_b/00000.jpg" in names
    _check_round_trip(z)


def test_zip_with_one_top_folder_is_read(tmp_path: Path) -> None:
    folder = write_mevis_split(tmp_path / "split", _videos())
    _check_round_trip(zip_folder(folder, tmp_path / "nested.zip", prefix="valid_u/"))


def test_expression_masks_union_skips_absent(tmp_path: Path) -> None:
    split = read_mevis_split(write_mevis_split(tmp_path / "s", _videos()))
    v = _videos()["vid_a"]
    union = split.expression_masks("vid_a", "1")
    assert union.shape == (T, H, W) and union.dtype == bool
    a, b = v.masks[10], v.masks[11]
    assert np.array_equal(union[0], a[0] | b[0])
    assert np.array_equal(union[1], b[1])      # object 10 absent
    assert np.array_equal(union[2], a[2])      # object 11 absent
    assert not union[3].any()                  # both absent
    single = split.expression_masks("vid_a", "0")
    assert np.array_equal(single[2], a[2]) and not single[1].any()


def test_frame_size_from_jpeg_when_masks_absent_everywhere(tmp_path: Path) -> None:
    split = read_mevis_split(write_mevis_split(tmp_path / "s", _videos()))
    assert split.object_masks(20) == [None] * T
    m = split.expression_masks("vid_b", "0")
    assert m.shape == (T, H, W) and not m.any()
    assert split.frame_size("vid_b") == (H, W)


def test_writes_are_byte_deterministic(tmp_path: Path) -> None:
    a = write_mevis_split(tmp_path / "a", _videos())
    reordered = dict(reversed(list(_videos().items())))
    b = write_mevis_split(tmp_path / "b", reordered)
    assert tree_hash(a) == tree_hash(b)
    za = write_mevis_zip(tmp_path / "a.zip", _videos())
    zb = write_mevis_zip(tmp_path / "b.zip", reordered)
    assert za.read_bytes() == zb.read_bytes()
    meta = json.loads((a / "meta_expressions.json").read_text())
    assert list(meta["videos"]) == ["vid_a", "vid_b"]
    assert list(meta["videos"]["vid_a"]["expressions"]["1"]) == ["exp", "obj_id", "anno_id", "kind"]
    assert "kind" not in meta["videos"]["vid_b"]["expressions"]["0"]


def test_refuses_non_empty_out_dir_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "s"
    out.mkdir()
    write_mevis_split(out, _videos())  # empty folder: fine
    with pytest.raises(FileExistsError, match="not empty"):
        write_mevis_split(out, _videos())
    (out / "stale.txt").write_text("old")
    write_mevis_split(out, _videos(), overwrite=True)
    assert not (out / "stale.txt").exists()
    _check_round_trip(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temp folders left behind


def _failing_videos(fail_at: int) -> dict[str, MevisVideo]:
    vids = _videos()
    good = _frames(2)

    def frames(i: int) -> np.ndarray:
        if i == fail_at:
            raise RuntimeError("decoder died")
        return good[i]

    vids["vid_b"] = MevisVideo(vids["vid_b"].frame_names, frames, vids["vid_b"].expressions, vids["vid_b"].masks)
    return vids


def test_failed_folder_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="decoder died"):
        write_mevis_split(tmp_path / "s", _failing_videos(2))
    assert list(tmp_path.iterdir()) == []


def test_failed_zip_write_never_leaves_half_written_zip(tmp_path: Path) -> None:
    z = tmp_path / "split.zip"
    with pytest.raises(RuntimeError, match="decoder died"):
        write_mevis_zip(z, _failing_videos(2))
    assert list(tmp_path.iterdir()) == []
    good = write_mevis_zip(z, _videos()).read_bytes()
    with pytest.raises(RuntimeError):
        write_mevis_zip(z, _failing_videos(1), overwrite=True)
    assert z.read_bytes() == good  # the previous zip is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split.zip"]
    with pytest.raises(FileExistsError):
        write_mevis_zip(z, _videos())


def test_valid_split_without_masks(tmp_path: Path) -> None:
    vids = _videos()
    for v in vids.values():
        v.masks = {}
    out = write_mevis_split(tmp_path / "valid", vids, with_masks=False)
    assert not (out / "mask_dict.json").exists()
    split = read_mevis_split(out)
    assert not split.has_masks
    assert split.expressions("vid_a")["0"].exp == "the red thing"
    with pytest.raises(FileNotFoundError, match="mask_dict.json"):
        split.expression_masks("vid_a", "0")
    # the server-scored valid split spells expressions without ids
    meta = json.loads((out / "meta_expressions.json").read_text())
    for v in meta["videos"].values():
        for e in v["expressions"].values():
            del e["obj_id"], e["anno_id"]
    (out / "meta_expressions.json").write_text(json.dumps(meta))
    assert read_mevis_split(out).expressions("vid_b")["0"].anno_id == []


def _mutate_meta(root: Path, fn) -> None:
    p = root / "meta_expressions.json"
    meta = json.loads(p.read_text())
    fn(meta)
    p.write_text(json.dumps(meta))


def _mutate_masks(root: Path, fn) -> None:
    p = root / "mask_dict.json"
    masks = json.loads(p.read_text())
    fn(masks)
    p.write_text(json.dumps(masks))


def _exp(meta: dict) -> dict:
    return meta["videos"]["vid_a"]["expressions"]["1"]


META_CASES = [
    (lambda m: m.pop("videos"), "videos"),
    (lambda m: m["videos"]["vid_a"].__setitem__("frames", "00000"), "frames"),
    (lambda m: m["videos"]["vid_a"].__setitem__("expressions", []), "expressions"),
    (lambda m: _exp(m).__setitem__("exp", 5), "exp"),
    (lambda m: _exp(m).__setitem__("anno_id", [10, "x"]), "anno_id"),
    (lambda m: _exp(m).__setitem__("obj_id", [0]), "obj_id"),
    (lambda m: _exp(m).pop("anno_id"), "anno_id"),
    (lambda m: _exp(m).__setitem__("kind", 3), "kind"),
    (lambda m: _exp(m).__setitem__("anno_id", [10, 99]), "99"),
]


@pytest.mark.parametrize("mutate, field", META_CASES)
def test_malformed_meta_names_file_and_field(tmp_path: Path, mutate, field: str) -> None:
    out = write_mevis_split(tmp_path / "s", _videos())
    _mutate_meta(out, mutate)
    with pytest.raises(MevisFormatError) as err:
        read_mevis_split(out)
    assert "meta_expressions.json" in str(err.value) and field in str(err.value)


MASK_CASES = [
    (lambda d: d.__setitem__("10", d["10"][:2]), "'10'", "2 entries"),
    (lambda d: d.__setitem__("abc", []), "abc", "anno_id"),
    (lambda d: d["11"].__setitem__(0, {"size": [H, W], "counts": 17}), "counts", "17"),
    (lambda d: d["11"].__setitem__(0, {"size": [H], "counts": "x"}), "size", str([H])),
    (lambda d: d["11"].__setitem__(1, "rle"), "'11'][1]", "rle"),
]


@pytest.mark.parametrize("mutate, field, value", MASK_CASES)
def test_malformed_mask_dict_names_file_field_value(tmp_path: Path, mutate, field: str, value: str) -> None:
    out = write_mevis_split(tmp_path / "s", _videos())
    _mutate_masks(out, mutate)
    with pytest.raises(MevisFormatError) as err:
        read_mevis_split(out)
    msg = str(err.value)
    assert "mask_dict.json" in msg and field in msg and value in msg


def test_invalid_json_is_reported_with_file(tmp_path: Path) -> None:
    out = write_mevis_split(tmp_path / "s", _videos())
    (out / "mask_dict.json").write_text("{not json")
    with pytest.raises(MevisFormatError, match="mask_dict.json.*not valid JSON"):
        read_mevis_split(out)


def test_rle_of_wrong_size_is_an_error(tmp_path: Path) -> None:
    out = write_mevis_split(tmp_path / "s", _videos())
    wrong = mask_to_rle(np.ones((H + 1, W), dtype=bool))
    _mutate_masks(out, lambda d: d["11"].__setitem__(1, wrong))
    split = read_mevis_split(out)
    split.object_masks(10)  # other objects still decode
    with pytest.raises(MevisFormatError, match=r"mask_dict.json\['11'\]\[1\].size.*expected the frame size"):
        split.object_masks(11)
    with pytest.raises(MevisFormatError):
        split.expression_masks("vid_a", "1")


def test_corrupt_rle_counts_is_an_error(tmp_path: Path) -> None:
    out = write_mevis_split(tmp_path / "s", _videos())
    _mutate_masks(out, lambda d: d["10"].__setitem__(0, {"size": [H, W], "counts": "0000"}))
    with pytest.raises(MevisFormatError, match=r"\['10'\]\[0\].*cannot decode RLE"):
        read_mevis_split(out).object_masks(10)


def test_lookup_errors(tmp_path: Path) -> None:
    split = read_mevis_split(write_mevis_zip(tmp_path / "s.zip", _videos()))
    with pytest.raises(KeyError, match="nope"):
        split.expressions("nope")
    with pytest.raises(IndexError, match="out of range"):
        split.frame("vid_a", T)
    with pytest.raises(KeyError, match="999"):
        split.object_masks(999)
    with pytest.raises(KeyError, match="'7'"):
        split.expression_masks("vid_a", "7")
    split.close()
    with pytest.raises(FileNotFoundError):
        read_mevis_split(tmp_path / "missing")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(MevisFormatError, match="junk.zip"):
        read_mevis_split(tmp_path / "junk.zip")


def test_missing_jpeg_names_the_path(tmp_path: Path) -> None:
    out = write_mevis_split(tmp_path / "s", _videos())
    (out / "JPEGImages" / "vid_a" / "00002.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="vid_a/00002.jpg"):
        read_mevis_split(out).frame("vid_a", 2)


@pytest.mark.parametrize("change, message", [
    (lambda v: v["vid_a"].masks.__setitem__(10, [np.zeros((H, W + 1), bool)] + [None] * (T - 1)), "mask shape"),
    (lambda v: v["vid_a"].masks.__setitem__(10, [None] * (T - 1)), "3 masks but 4 frames"),
    (lambda v: v["vid_b"].masks.__setitem__(10, [None] * T), "anno_id 10 is used by videos"),
    (lambda v: v["vid_a"].masks.pop(11), r"anno_id \[11\] has no entry"),
    (lambda v: setattr(v["vid_a"], "frames", _frames(1).astype(np.float32)), "uint8"),
    (lambda v: setattr(v["vid_a"], "frame_names", ["a", "b", "c", "d/e"]), "path separators"),
    (lambda v: v.__setitem__("bad/name", v.pop("vid_a")), "video name"),
])
def test_writer_rejects_bad_input(tmp_path: Path, change, message: str) -> None:
    vids = _videos()
    change(vids)
    with pytest.raises(ValueError, match=message):
        write_mevis_split(tmp_path / "s", vids)
    assert not (tmp_path / "s").exists()


def test_write_prediction_pngs(tmp_path: Path) -> None:
    masks = np.stack([_box(0, 0, 5 + i, 9) for i in range(T)])
    names = [f"{i:05d}" for i in range(T)]
    paths = write_prediction_pngs(tmp_path / "pred", "vid_a", "1", masks, names)
    assert paths == [tmp_path / "pred" / "vid_a" / "1" / f"{n}.png" for n in names]
    for p, m in zip(paths, masks):
        img = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert img.dtype == np.uint8 and img.ndim == 2
        assert set(np.unique(img)) == {0, 255}
        assert np.array_equal(img == 255, m)
    with pytest.raises(ValueError, match="3 masks but 4 frame_names"):
        write_prediction_pngs(tmp_path / "pred", "vid_a", "1", masks[:3], names)
    with pytest.raises(ValueError, match="exp_id"):
        write_prediction_pngs(tmp_path / "pred", "vid_a", "../x", masks, names)


def test_split_folder_copy_reads_identically(tmp_path: Path) -> None:
    """Reading does not depend on where the split lives (no absolute paths stored)."""
    a = write_mevis_split(tmp_path / "a", _videos())
    shutil.copytree(a, tmp_path / "b")
    ra, rb = read_mevis_split(a), read_mevis_split(tmp_path / "b")
    assert np.array_equal(ra.expression_masks("vid_a", "1"), rb.expression_masks("vid_a", "1"))


# ---------------------------------------------------------------------------------------------- hardening


def _zip_split_with_extra_entry(tmp_path: Path, entry: str) -> Path:
    folder = write_mevis_split(tmp_path / "s", _videos())
    z = zip_folder(folder, tmp_path / "crafted.zip")
    with zipfile.ZipFile(z, "a") as zf:
        zf.writestr(entry, b"payload")
    return z


@pytest.mark.parametrize("entry", ["../evil.sh", "/etc/cron.d/x", "JPEGImages/../../x.jpg", "C:/x.txt",
                                   "..\\windows.txt"])
def test_zip_with_unsafe_entry_names_is_refused(tmp_path: Path, entry: str) -> None:
    z = _zip_split_with_extra_entry(tmp_path, entry)
    with pytest.raises(MevisFormatError) as err:
        read_mevis_split(z)
    msg = str(err.value)
    assert "crafted.zip" in msg and repr(entry) in msg and "'..'" in msg


def test_zip_with_harmless_dots_in_names_is_read(tmp_path: Path) -> None:
    z = _zip_split_with_extra_entry(tmp_path, "notes/v1..v2.txt")  # '..' inside a name, not a component
    _check_round_trip(z)


@pytest.mark.parametrize("mutate, field", [
    (lambda m: m["videos"]["vid_a"].__setitem__("frames", ["00000", "00001", "00001", "00003"]), "'00001' appears"),
    (lambda m: m["videos"]["vid_a"].__setitem__("frames", ["00000", "..", "00002", "00003"]), "frames"),
    (lambda m: m["videos"]["vid_a"].__setitem__("frames", ["00000", "a\\b", "00002", "00003"]), "frames"),
    (lambda m: _exp(m).__setitem__("obj_id", [0, -1]), "obj_id"),
    (lambda m: _exp(m).__setitem__("anno_id", [10, "¹¹"]), "anno_id"),
    (lambda m: m["videos"].__setitem__("..", m["videos"].pop("vid_b")), "bad video name '..'"),
])
def test_more_malformed_meta_names_file_and_field(tmp_path: Path, mutate, field: str) -> None:
    out = write_mevis_split(tmp_path / "s", _videos())
    _mutate_meta(out, mutate)
    with pytest.raises(MevisFormatError) as err:
        read_mevis_split(out)
    assert "meta_expressions.json" in str(err.value) and field in str(err.value)


def test_non_ascii_digit_anno_id_key_is_a_format_error(tmp_path: Path) -> None:
    out = write_mevis_split(tmp_path / "s", _videos())
    _mutate_masks(out, lambda d: d.__setitem__("²", []))  # str.isdigit() is True, int() fails
    with pytest.raises(MevisFormatError, match=r"mask_dict.json: key '²': expected an anno_id"):
        read_mevis_split(out)


@pytest.mark.parametrize("file, content, message", [
    ("meta_expressions.json", b"\xff\xfe\x00{", "not valid JSON"),
    ("meta_expressions.json", b"[1, 2]", "field 'videos'"),
    ("mask_dict.json", b"[]", "expected an object anno_id"),
    ("mask_dict.json", b"", "not valid JSON"),
])
def test_bad_json_files_are_named(tmp_path: Path, file: str, content: bytes, message: str) -> None:
    out = write_mevis_split(tmp_path / "s", _videos())
    (out / file).write_bytes(content)
    with pytest.raises(MevisFormatError) as err:
        read_mevis_split(out)
    assert file in str(err.value) and message in str(err.value)


def test_per_frame_mask_access_and_anno_ids(tmp_path: Path) -> None:
    vids = _videos()
    vids["vid_a"].masks[99] = [None] * T  # in mask_dict, referred to by no expression
    out = write_mevis_split(tmp_path / "s", vids)
    split = read_mevis_split(out)
    assert split.anno_ids == [10, 11, 20, 99]
    assert [split.object_mask(10, i) is None for i in range(T)] == [False, True, False, True]
    assert np.array_equal(split.object_mask(11, 1), _box(0, 0, 4, 4))
    with pytest.raises(IndexError, match="anno_id 10: frame index 4"):
        split.object_mask(10, T)
    with pytest.raises(KeyError, match="12"):
        split.object_mask(12, 0)
    assert split.frame_bytes("vid_b", 2) == (out / "JPEGImages" / "vid_b" / "00002.jpg").read_bytes()
    assert not read_mevis_split(write_mevis_split(tmp_path / "v", _videos(), with_masks=False)).anno_ids


def test_encoded_jpeg_frames_are_written_verbatim(tmp_path: Path) -> None:
    first = write_mevis_split(tmp_path / "a", _videos())
    jpegs = [(first / "JPEGImages" / "vid_a" / f"{i:05d}.jpg").read_bytes() for i in range(T)]
    vids = _videos()
    vids["vid_a"].frames = jpegs
    z = write_mevis_zip(tmp_path / "b.zip", vids)
    with read_mevis_split(z) as split:
        assert [split.frame_bytes("vid_a", i) for i in range(T)] == jpegs
        assert split.frame_size("vid_a") == (H, W)
    vids = _videos()
    ok, png = cv2.imencode(".png", np.zeros((H, W, 3), np.uint8))
    vids["vid_a"].frames = jpegs[:3] + [png.tobytes()]
    with pytest.raises(ValueError, match=r"frame '00003': a PNG image; expected an encoded JPEG"):
        write_mevis_split(tmp_path / "c", vids)
    vids["vid_a"].frames = jpegs[:3] + [cv2.imencode(".jpg", np.zeros((H, W + 2, 3), np.uint8))[1].tobytes()]
    with pytest.raises(ValueError, match=r"frame '00003': size \(48, 66\) differs"):
        write_mevis_split(tmp_path / "c", vids)
    assert not (tmp_path / "c").exists()


def test_frame_size_follows_exif_orientation_like_the_decoder(tmp_path: Path) -> None:
    import io

    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°: decoders return a W x H image
    buf = io.BytesIO()
    Image.fromarray(_frames(1)[0]).save(buf, "JPEG", exif=exif.tobytes())
    vids = {"vid_r": MevisVideo(["00000"], [buf.getvalue()], {"0": MevisExpression("x", [0], [1])},
                                {1: [np.ones((W, H), bool)]})}
    split = read_mevis_split(write_mevis_split(tmp_path / "r", vids))
    assert split.frame_size("vid_r") == split.frame("vid_r", 0).shape[:2] == (W, H)
    assert split.object_masks(1)[0].shape == (W, H)
