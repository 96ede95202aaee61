"""MeViS ⇄ Ref-YouTube-VOS conversion: lossless round trips, overlap handling, id bookkeeping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from _paths import SHARED_DATA
from rvos_core.formats.convert import ConversionError, mevis_to_ytvos, ytvos_to_mevis
from rvos_core.formats.davis import MaskOverlapError
from rvos_core.formats.mevis import (
    MevisExpression,
    MevisVideo,
    read_mevis_split,
    write_mevis_split,
    write_mevis_zip,
)
from rvos_core.formats.ytvos import YtvosExpression, YtvosVideo, read_ytvos_split, write_ytvos_split
from rvos_core.synthetic import write_split
from _files import tree_hash

H, W, T = 32, 48, 4
NAMES = [f"{i:05d}" for i in range(T)]



def _box(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _frames() -> np.ndarray:
    x = np.linspace(10, 240, W, dtype=np.float32)
    return np.broadcast_to(np.stack([x, x[::-1], x], -1), (T, H, W, 3)).astype(np.uint8)


def _mevis_videos(overlap: bool = False) -> dict[str, MevisVideo]:
    """obj_id 0 and 2 referred (1 is not: palette ids 1 and 3), null vs empty masks, an unreferenced anno."""
    a = [_box(0, 0, 8, 8), None, np.zeros((H, W), bool), _box(4, 4, 12, 12)]   # frame 2: present but empty
    b = [_box(20, 20, 30, 30), _box(20, 0, 30, 10), None, _box(8, 8, 20, 20) if overlap else None]
    return {"clip": MevisVideo(
        frame_names=NAMES, frames=_frames(),
        expressions={"0": MevisExpression("the left one", [0], [100], kind="appearance"),
                     "1": MevisExpression("both", [0, 2], [100, 102], kind="motion"),
                     "2": MevisExpression("the other one", [2], [102])},
        masks={100: a, 102: b, 101: [None] * T})}


def _assert_same_split(a_path: Path, b_path: Path) -> None:
    with read_mevis_split(a_path) as a, read_mevis_split(b_path) as b:
        assert a.videos == b.videos and a.has_masks == b.has_masks
        for v in a.videos:
            assert a.expressions(v) == b.expressions(v) and a.frame_names(v) == b.frame_names(v)
            assert all(a.frame_bytes(v, i) == b.frame_bytes(v, i) for i in range(len(a.frame_names(v))))
            for anno in {x for e in a.expressions(v).values() for x in e.anno_id}:
                for ma, mb in zip(a.object_masks(anno), b.object_masks(anno)):
                    assert (ma is None) == (mb is None)
                    assert ma is None or np.array_equal(ma, mb)


def test_synthetic_split_round_trip_is_byte_identical(tmp_path: Path) -> None:
    src = write_split(tmp_path / "mevis", videos=3, seed=7, frames=5, size=(64, 80), progress=False)
    report = mevis_to_ytvos(src, tmp_path / "ytvos")
    assert (report.videos, report.frames, report.overlap_pixels) == (3, 15, 0)
    assert report.expressions == sum(len(read_mevis_split(src).expressions(v)) for v in read_mevis_split(src).videos)
    back = ytvos_to_mevis(tmp_path / "ytvos", tmp_path / "back")
    assert (back.videos, back.expressions, back.objects) == (report.videos, report.expressions, report.objects)
    _assert_same_split(src, tmp_path / "back")
    assert tree_hash(src) == tree_hash(tmp_path / "back")


def test_ytvos_side_holds_palette_ids_and_meta(tmp_path: Path) -> None:
    src = write_mevis_split(tmp_path / "mevis", _mevis_videos())
    report = mevis_to_ytvos(src, tmp_path / "yt", category="others")
    assert report.unreferenced_anno_ids == [101]
    assert "1 anno_ids referred to by no expression" in report.summary()
    with read_ytvos_split(tmp_path / "yt") as yt:
        exps = yt.expressions("clip")
        assert exps["1"] == YtvosExpression("both", [1, 3], {"anno_id": [100, 102], "kind": "motion"})
        assert exps["2"] == YtvosExpression("the other one", [3], {"anno_id": [102]})
        objects = yt.objects("clip")
        assert list(objects) == [1, 3] and objects[1].category == "others"
        assert objects[1].frames == ["00000", "00002", "00003"] and objects[3].frames == ["00000", "00001"]
        ids = yt.annotation("clip", 0)
        assert set(np.unique(ids)) == {0, 1, 3}
        assert np.array_equal(ids == 1, _box(0, 0, 8, 8)) and np.array_equal(ids == 3, _box(20, 20, 30, 30))
        assert not yt.annotation("clip", 2).any()  # object 1 present but empty, object 3 absent
    raw = json.loads((tmp_path / "yt" / "meta_expressions.json").read_text())
    assert raw["videos"]["clip"]["expressions"]["1"]["obj_id"] == ["1", "3"]
    assert raw["videos"]["clip"]["expressions"]["2"]["obj_id"] == "3"


def test_null_and_empty_masks_survive_the_round_trip_through_a_zip(tmp_path: Path) -> None:
    src = write_mevis_zip(tmp_path / "mevis.zip", _mevis_videos())
    mevis_to_ytvos(src, tmp_path / "yt")
    ytvos_to_mevis(tmp_path / "yt", tmp_path / "back.zip")
    _assert_same_split(src, tmp_path / "back.zip")
    masks = read_mevis_split(tmp_path / "back.zip").object_masks(100)
    assert masks[1] is None and masks[2] is not None and not masks[2].any()
    with pytest.raises(KeyError, match="101"):  # referred to by no expression: not carried over
        read_mevis_split(tmp_path / "back.zip").object_masks(101)


def test_overlap_is_an_error_naming_video_frame_and_objects(tmp_path: Path) -> None:
    src = write_mevis_split(tmp_path / "mevis", _mevis_videos(overlap=True))
    with pytest.raises(MaskOverlapError) as err:
        mevis_to_ytvos(src, tmp_path / "yt")
    msg = str(err.value)
    assert "video 'clip' frame '00003'" in msg and "objects 1 and 3 overlap on 16 pixels" in msg
    assert "{1: 100, 3: 102}" in msg  # palette id -> anno_id
    assert not (tmp_path / "yt").exists()


def test_overlap_last_rule_counts_the_pixels(tmp_path: Path) -> None:
    src = write_mevis_split(tmp_path / "mevis", _mevis_videos(overlap=True))
    report = mevis_to_ytvos(src, tmp_path / "yt", on_overlap="last")
    assert (report.overlap_pixels, report.overlap_frames) == (16, 1)
    assert "16 overlapping pixels on 1 frames" in report.summary()
    ids = read_ytvos_split(tmp_path / "yt").annotation("clip", 3)
    assert (ids[8:12, 8:12] == 3).all()  # the shared pixels went to the higher id
    assert (ids[4:8, 4:12] == 1).all() and (ids[8:12, 4:8] == 1).all()
    with pytest.raises(ValueError, match="on_overlap"):
        mevis_to_ytvos(src, tmp_path / "yt2", on_overlap="union")


@pytest.mark.parametrize("exps, message", [
    ({"0": MevisExpression("a", [0], [100]), "1": MevisExpression("b", [1], [100])},
     r"expression '1': anno_id 100 has obj_id 0 elsewhere and 1 here"),
    ({"0": MevisExpression("a", [0], [100]), "1": MevisExpression("b", [0], [101])},
     r"expression '1': obj_id 0 is paired with anno_id 100 elsewhere and with 101 here"),
    ({"0": MevisExpression("a", [255], [100])}, "obj_id 255 cannot become a palette id"),
])
def test_unrepresentable_pairings_are_errors(tmp_path: Path, exps, message: str) -> None:
    video = MevisVideo(NAMES, _frames(), exps, {100: [None] * T, 101: [None] * T})
    src = write_mevis_split(tmp_path / "mevis", {"clip": video})
    with pytest.raises(ConversionError, match=message):
        mevis_to_ytvos(src, tmp_path / "yt")
    assert not (tmp_path / "yt").exists()


def _ref_ytvos_style() -> dict[str, YtvosVideo]:
    """Ref-YouTube-VOS spelling: one string obj_id per expression, no anno_id, no meta.json."""
    ids = np.zeros((T, H, W), np.uint8)
    ids[:, 0:10, 0:10] = 2
    ids[1:, 20:30, 20:30] = 5
    ids[3, 25:30, 40:45] = 9  # never referred to
    exps_b = {"0": YtvosExpression("a dog", [5]), "1": YtvosExpression("a cat", [2])}
    exps_a = {"0": YtvosExpression("a cat", [2])}
    return {"b": YtvosVideo(NAMES, _frames(), exps_b, list(ids)), "a": YtvosVideo(NAMES, _frames(), exps_a, list(ids))}


def test_ref_ytvos_style_split_gets_anno_ids_and_pixel_presence(tmp_path: Path) -> None:
    yt = write_ytvos_split(tmp_path / "train", _ref_ytvos_style())
    report = ytvos_to_mevis(yt, tmp_path / "mevis")
    assert (report.videos, report.expressions, report.objects, report.frames) == (2, 3, 3, 2 * T)
    with read_mevis_split(tmp_path / "mevis") as m:
        assert m.expressions("a") == {"0": MevisExpression("a cat", [1], [0])}
        assert m.expressions("b") == {"0": MevisExpression("a dog", [4], [2]), "1": MevisExpression("a cat", [1], [1])}
        dog = m.object_masks(2)
        assert dog[0] is None and all(np.array_equal(d, _box(20, 20, 30, 30)) for d in dog[1:])
        assert m.anno_ids == [0, 1, 2]
    # and back: palette ids and masks are the same as before
    again = mevis_to_ytvos(tmp_path / "mevis", tmp_path / "yt2")
    assert again.objects == 3
    with read_ytvos_split(tmp_path / "yt2") as y2, read_ytvos_split(yt) as y1:
        assert [e.obj_id for e in y2.expressions("b").values()] == [[5], [2]]
        for i in range(T):
            kept = np.isin(y1.annotation("b", i), [2, 5])
            assert np.array_equal(y2.annotation("b", i), np.where(kept, y1.annotation("b", i), 0))


def test_given_anno_ids_are_kept_and_new_ones_follow(tmp_path: Path) -> None:
    vids = _ref_ytvos_style()
    vids["b"].expressions["0"].extra["anno_id"] = [40]
    ytvos_to_mevis(write_ytvos_split(tmp_path / "train", vids), tmp_path / "mevis")
    m = read_mevis_split(tmp_path / "mevis")
    assert m.expressions("b")["0"].anno_id == [40]
    assert m.expressions("a")["0"].anno_id == [41] and m.expressions("b")["1"].anno_id == [42]


@pytest.mark.parametrize("extra, message", [
    ({"anno_id": [1, 2]}, r"expression '0'.anno_id: expected a list of 1 non-negative ints"),
    ({"anno_id": "7"}, r"anno_id: expected a list"),
    ({"kind": 3}, r"expression '0'.kind: expected a string"),
])
def test_bad_extra_fields_are_errors(tmp_path: Path, extra: dict, message: str) -> None:
    vids = _ref_ytvos_style()
    vids["b"].expressions["0"].extra.update(extra)
    yt = write_ytvos_split(tmp_path / "train", vids)
    with pytest.raises(ConversionError, match=message):
        ytvos_to_mevis(yt, tmp_path / "mevis")
    assert not (tmp_path / "mevis").exists()


def test_conflicting_anno_ids_are_errors(tmp_path: Path) -> None:
    vids = _ref_ytvos_style()
    vids["b"].expressions["0"].extra["anno_id"] = [7]
    vids["a"].expressions["0"].extra["anno_id"] = [7]
    with pytest.raises(ConversionError, match=r"anno_id 7 is also used by video 'a'"):
        ytvos_to_mevis(write_ytvos_split(tmp_path / "train", vids), tmp_path / "mevis")


def test_valid_split_without_masks_round_trips(tmp_path: Path) -> None:
    vids = _mevis_videos()
    for v in vids.values():
        v.masks = {}
        for e in v.expressions.values():
            e.obj_id, e.anno_id = [], []
    src = write_mevis_split(tmp_path / "valid", vids, with_masks=False)
    mevis_to_ytvos(src, tmp_path / "yt")
    assert not (tmp_path / "yt" / "Annotations").exists() and not (tmp_path / "yt" / "meta.json").exists()
    ytvos_to_mevis(tmp_path / "yt", tmp_path / "back")
    assert not (tmp_path / "back" / "mask_dict.json").exists()
    _assert_same_split(src, tmp_path / "back")


def test_real_ref_ytvos_clip_converts_to_a_mevis_valid_split(tmp_path: Path) -> None:
    clip = SHARED_DATA / "refytvos_0c04834d61_truck"
    entry = json.loads((clip / "expressions.json").read_text())
    v = entry["video_id"]
    frames = {f.stem: f.read_bytes() for f in (clip / "JPEGImages").iterdir()}
    exps = {k: YtvosExpression(e["exp"], []) for k, e in entry["expressions"].items()}
    yt = write_ytvos_split(tmp_path / "valid", {v: YtvosVideo(entry["frames"], [frames[n] for n in entry["frames"]],
                                                                exps)})
    report = ytvos_to_mevis(yt, tmp_path / "mevis")
    assert (report.videos, report.expressions, report.frames) == (1, 2, 19)
    with read_mevis_split(tmp_path / "mevis") as m:
        assert not m.has_masks and m.frame_names(v) == entry["frames"]
        assert m.expressions(v)["1"].exp == "a truck is moving on the road from left to right"
        assert m.frame_bytes(v, 18) == (clip / "JPEGImages" / "00090.jpg").read_bytes()
        assert m.frame_size(v) == (480, 854)
