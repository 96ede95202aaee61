"""Ref-YouTube-VOS layout: the real shared clip, write → read round trips (folder and zip), obj_id
spellings, malformed input, atomic and deterministic writes."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _paths import SHARED_DATA
from rvos_core.formats.ytvos import (
    YtvosExpression,
    YtvosFormatError,
    YtvosObject,
    YtvosVideo,
    read_ytvos_split,
    write_ytvos_split,
)
from _files import tree_hash, zip_folder

TRUCK = SHARED_DATA / "refytvos_0c04834d61_truck"
H, W, T = 40, 56, 3


def _truck_split(root: Path, official: bool = False) -> Path:
    """The shared clip laid out as a Ref-YouTube-VOS ``valid`` split (frames linked, not copied)."""
    entry = json.loads((TRUCK / "expressions.json").read_text())
    split = root / "valid"
    frames = split / "JPEGImages" / entry["video_id"]
    frames.mkdir(parents=True)
    for f in sorted((TRUCK / "JPEGImages").iterdir()):
        (frames / f.name).symlink_to(f)
    meta = {"videos": {entry["video_id"]: {"expressions": entry["expressions"], "frames": entry["frames"]}}}
    meta_file = (root / "meta_expressions" / "valid" if official else split) / "meta_expressions.json"
    meta_file.parent.mkdir(parents=True, exist_ok=True)
    meta_file.write_text(json.dumps(meta))
    return split


@pytest.mark.parametrize("official", [False, True])
def test_reads_the_real_ref_youtube_vos_clip(tmp_path: Path, official: bool) -> None:
    with read_ytvos_split(_truck_split(tmp_path, official)) as split:
        assert split.videos == ["0c04834d61"]
        assert not split.has_annotations and not split.has_meta
        names = split.frame_names("0c04834d61")
        assert names == [f"{i:05d}" for i in range(0, 95, 5)]  # every 5th frame of the 30 fps video
        exps = split.expressions("0c04834d61")
        assert list(exps) == ["0", "1"]
        assert exps["1"] == YtvosExpression("a truck is moving on the road from left to right", [], {})
        assert split.frame("0c04834d61", 18).shape == (480, 854, 3)
        assert split.frame_size("0c04834d61") == (480, 854)
        assert split.frame_bytes("0c04834d61", 3) == (TRUCK / "JPEGImages" / "00015.jpg").read_bytes()
        assert split.annotation("0c04834d61", 0) is None
        assert split.objects("0c04834d61") == {}
        with pytest.raises(YtvosFormatError, match=r"\['0'\] has no obj_id"):
            split.expression_masks("0c04834d61", "0")


def test_real_clip_rewritten_keeps_frames_and_expressions(tmp_path: Path) -> None:
    with read_ytvos_split(_truck_split(tmp_path)) as src:
        v = "0c04834d61"
        out = write_ytvos_split(tmp_path / "copy", {v: YtvosVideo(
            frame_names=src.frame_names(v), frames=lambda i: src.frame_bytes(v, i),
            expressions=src.expressions(v))})
        with read_ytvos_split(out) as back:
            assert back.expressions(v) == src.expressions(v)
            assert all(back.frame_bytes(v, i) == src.frame_bytes(v, i) for i in range(19))
    meta = json.loads((out / "meta_expressions.json").read_text())
    assert meta["videos"][v]["expressions"]["0"] == {
        "exp": "the black truck with red/white and blue is moving down the road to the right with a crowd behind it"}
    assert not (out / "meta.json").exists() and not (out / "Annotations").exists()


def _ids(t: int) -> np.ndarray:
    ids = np.zeros((H, W), np.uint8)
    ids[2:12, 3 + 5 * t:15 + 5 * t] = 1
    ids[20:30, 20:40] = 3
    if t == 1:
        ids[32:38, 0:10] = 7
    return ids


def _frames() -> np.ndarray:
    """``(T, H, W, 3)`` smooth RGB gradients (JPEG-friendly)."""
    x = np.linspace(20, 220, W, dtype=np.float32)
    row = np.stack([x, x[::-1], np.full(W, 90, np.float32)], axis=-1)  # (W, 3)
    return np.broadcast_to(row, (T, H, W, 3)).astype(np.uint8)


def _videos() -> dict[str, YtvosVideo]:
    names = ["00000", "00005", "00010"]
    objects = {1: YtvosObject("truck", names), 3: YtvosObject("person", names, {"note": "kept"}),
               7: YtvosObject(None, ["00005"])}
    exps = {"0": YtvosExpression("a truck", [1]),
            "1": YtvosExpression("the truck and the person", [1, 3], {"anno_id": [4, 5], "kind": "mixed"}),
            "2": YtvosExpression("the dog", [7])}
    return {"vid_b": YtvosVideo(names, _frames(), exps, [_ids(t) for t in range(T)], objects),
            "vid_a": YtvosVideo(names, lambda i: _frames()[i],
                                {"0": YtvosExpression("the truck", [1]), "1": YtvosExpression("nothing referred", [])},
                                annotations=[None, _ids(1), None])}


def _check_round_trip(path: Path) -> None:
    with read_ytvos_split(path) as split:
        assert split.videos == ["vid_a", "vid_b"] and split.has_annotations and split.has_meta
        src = _videos()
        for name, v in src.items():
            assert split.frame_names(name) == v.frame_names
            assert split.expressions(name) == v.expressions
            assert split.objects(name) == (dict(v.objects) if v.objects else {})
            for i in range(T):
                assert np.abs(split.frame(name, i).astype(int) - _frames()[i].astype(int)).mean() < 3
        for i in range(T):
            assert np.array_equal(split.annotation("vid_b", i), _ids(i))
        assert [a is None for a in (split.annotation("vid_a", i) for i in range(T))] == [True, False, True]
        union = split.expression_masks("vid_b", "1")
        assert union.shape == (T, H, W) and union.dtype == bool
        assert all(np.array_equal(union[t], np.isin(_ids(t), [1, 3])) for t in range(T))
        dog = split.object_masks("vid_b", 7)
        assert [int(m.sum()) for m in dog] == [0, 60, 0]
        with pytest.raises(FileNotFoundError, match=r"Annotations/vid_a/00000\.png"):
            split.expression_masks("vid_a", "0")


def test_folder_round_trip_and_obj_id_spelling(tmp_path: Path) -> None:
    out = write_ytvos_split(tmp_path / "train", _videos())
    _check_round_trip(out)
    meta = json.loads((out / "meta_expressions.json").read_text())["videos"]
    assert meta["vid_b"]["expressions"]["0"] == {"exp": "a truck", "obj_id": "1"}  # Ref-YouTube-VOS: a string
    assert meta["vid_b"]["expressions"]["1"] == {"exp": "the truck and the person", "obj_id": ["1", "3"],
                                                 "anno_id": [4, 5], "kind": "mixed"}  # multi-object: a list
    assert meta["vid_a"]["expressions"]["1"] == {"exp": "nothing referred"}  # no obj_id: field left out
    objects = json.loads((out / "meta.json").read_text())["videos"]
    assert list(objects) == ["vid_b"]
    assert objects["vid_b"]["objects"]["3"] == {"category": "person", "frames": ["00000", "00005", "00010"],
                                                "note": "kept"}
    assert objects["vid_b"]["objects"]["7"] == {"frames": ["00005"]}
    im = Image.open(out / "Annotations" / "vid_b" / "00005.png")
    assert im.mode == "P"
    assert sorted(p.name for p in (out / "Annotations" / "vid_a").iterdir()) == ["00005.png"]


def test_reader_accepts_every_obj_id_spelling(tmp_path: Path) -> None:
    out = write_ytvos_split(tmp_path / "s", _videos())
    meta_path = out / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    exps = meta["videos"]["vid_b"]["expressions"]
    exps["0"]["obj_id"], exps["1"]["obj_id"], exps["2"]["obj_id"] = 1, [1, "3"], ["7"]
    meta_path.write_text(json.dumps(meta))
    got = read_ytvos_split(out).expressions("vid_b")
    assert [got[k].obj_id for k in ("0", "1", "2")] == [[1], [1, 3], [7]]


def test_zip_with_a_top_folder_reads_identically(tmp_path: Path) -> None:
    folder = write_ytvos_split(tmp_path / "train", _videos())
    _check_round_trip(zip_folder(folder, tmp_path / "train.zip", prefix="train/"))


def test_official_zip_without_meta_expressions_takes_an_explicit_file(tmp_path: Path) -> None:
    folder = write_ytvos_split(tmp_path / "train", _videos())
    z = zip_folder(folder, tmp_path / "train.zip", prefix="train/", exclude=frozenset({"meta_expressions.json"}))
    with pytest.raises(FileNotFoundError, match="meta_expressions.json"):
        read_ytvos_split(z)
    with read_ytvos_split(z, meta_expressions=folder / "meta_expressions.json") as split:
        assert np.array_equal(split.annotation("vid_b", 2), _ids(2))


@pytest.mark.parametrize("entry", ["../evil.txt", "/abs/path.txt", "train/../../x.jpg", "C:/windows.txt"])
def test_zip_with_unsafe_entries_is_refused(tmp_path: Path, entry: str) -> None:
    folder = write_ytvos_split(tmp_path / "train", _videos())
    z = tmp_path / "bad.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(folder / "meta_expressions.json", "meta_expressions.json")
        zf.writestr(entry, b"x")
    with pytest.raises(YtvosFormatError, match=r"bad\.zip: zip entry .* absolute path or a '\.\.' component"):
        read_ytvos_split(z)


def _mutate(root: Path, file: str, fn) -> None:
    p = root / file
    obj = json.loads(p.read_text())
    fn(obj)
    p.write_text(json.dumps(obj))


def _exp(m: dict) -> dict:
    return m["videos"]["vid_b"]["expressions"]["1"]


META_CASES = [
    ("meta_expressions.json", lambda m: m.pop("videos"), "videos"),
    ("meta_expressions.json", lambda m: m["videos"]["vid_b"].__setitem__("frames", "00000"), "frames"),
    ("meta_expressions.json", lambda m: m["videos"]["vid_b"].__setitem__("frames", ["a", "a", "b"]), "'a' appears"),
    ("meta_expressions.json", lambda m: m["videos"]["vid_b"].__setitem__("expressions", []), "expressions"),
    ("meta_expressions.json", lambda m: _exp(m).__setitem__("exp", None), ".exp"),
    ("meta_expressions.json", lambda m: _exp(m).__setitem__("obj_id", "0"), "palette id 0 outside 1..255"),
    ("meta_expressions.json", lambda m: _exp(m).__setitem__("obj_id", "abc"), "obj_id: expected a palette id"),
    ("meta_expressions.json", lambda m: _exp(m).__setitem__("obj_id", ["1", 1]), "duplicates"),
    ("meta_expressions.json", lambda m: _exp(m).__setitem__("obj_id", 300), "palette id 300"),
    ("meta.json", lambda m: m["videos"]["vid_b"]["objects"].__setitem__("x", {}), "objects key"),
    ("meta.json", lambda m: m["videos"]["vid_b"]["objects"]["1"].__setitem__("category", 5), "category"),
    ("meta.json", lambda m: m["videos"]["vid_b"].__setitem__("objects", None), "objects"),
]


@pytest.mark.parametrize("file, mutate, field", META_CASES)
def test_malformed_json_names_file_and_field(tmp_path: Path, file: str, mutate, field: str) -> None:
    out = write_ytvos_split(tmp_path / "s", _videos())
    _mutate(out, file, mutate)
    with pytest.raises(YtvosFormatError) as err:
        read_ytvos_split(out)
    assert file in str(err.value) and field in str(err.value)


def test_invalid_json_is_reported_with_the_file(tmp_path: Path) -> None:
    out = write_ytvos_split(tmp_path / "s", _videos())
    (out / "meta.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(YtvosFormatError, match=r"meta\.json: not valid JSON"):
        read_ytvos_split(out)


def test_bad_annotation_pngs_name_the_file(tmp_path: Path) -> None:
    out = write_ytvos_split(tmp_path / "s", _videos())
    ann = out / "Annotations" / "vid_b"
    Image.fromarray(np.zeros((H, W, 3), np.uint8), "RGB").save(ann / "00005.png")
    Image.fromarray(np.zeros((H + 1, W), np.uint8), "P").save(ann / "00010.png")
    split = read_ytvos_split(out)
    assert np.array_equal(split.annotation("vid_b", 0), _ids(0))
    with pytest.raises(YtvosFormatError, match=r"vid_b/00005\.png.*'RGB'"):
        split.annotation("vid_b", 1)
    with pytest.raises(YtvosFormatError, match=r"vid_b/00010\.png: size \[41, 56\].*frame size \[40, 56\]"):
        split.annotation("vid_b", 2)
    with pytest.raises(KeyError, match="nope"):
        split.frame_names("nope")
    with pytest.raises(IndexError, match="out of range"):
        split.annotation("vid_b", 3)


def _with(change) -> dict[str, YtvosVideo]:
    vids = _videos()
    change(vids)
    return vids


@pytest.mark.parametrize("change, message", [
    (lambda v: v["vid_b"].expressions.__setitem__("9", YtvosExpression("x", [256])), "palette id 256"),
    (lambda v: v["vid_b"].expressions.__setitem__("9", YtvosExpression("x", [5])), r"palette ids \[5\]"),
    (lambda v: v["vid_b"].expressions.__setitem__("9", YtvosExpression("x", [1], {"obj_id": 2})), "must not hold"),
    (lambda v: setattr(v["vid_b"], "annotations", [np.zeros((H, W + 1), np.uint8)] * T), "annotation shape"),
    (lambda v: setattr(v["vid_b"], "annotations", [np.full((H, W), -1)] * T), r"frame '00000'.*\[0, 255\]"),
    (lambda v: setattr(v["vid_b"], "annotations", [None] * (T - 1)), "2 annotations but 3 frame_names"),
    (lambda v: v["vid_b"].objects.__setitem__(7, YtvosObject(None, ["00001"])), r"\['00001'\] are not frames"),
    (lambda v: setattr(v["vid_a"], "frame_names", ["a", "b/c", "d"]), "path separators"),
    (lambda v: v.__setitem__("../x", v.pop("vid_a")), "video name"),
    (lambda v: setattr(v["vid_a"], "frames", [b"not a jpeg"] * T), "not a readable image"),
])
def test_writer_rejects_bad_input_and_leaves_nothing(tmp_path: Path, change, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_ytvos_split(tmp_path / "s", _with(change))
    assert list(tmp_path.iterdir()) == []



def test_writes_are_deterministic_and_refuse_non_empty_folders(tmp_path: Path) -> None:
    a = write_ytvos_split(tmp_path / "a", _videos())
    b = write_ytvos_split(tmp_path / "b", dict(reversed(list(_videos().items()))))
    assert tree_hash(a) == tree_hash(b)
    with pytest.raises(FileExistsError, match="not empty"):
        write_ytvos_split(a, _videos())
    (a / "stale.txt").write_text("old")
    write_ytvos_split(a, _videos(), overwrite=True)
    assert not (a / "stale.txt").exists() and tree_hash(a) == tree_hash(b)
    shutil.rmtree(b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
