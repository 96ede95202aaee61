"""DAVIS annotation folders: real DAVIS-2016 / DAVIS-2017 files, palette and 0/255 round trips,
overlap handling, malformed input."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from rvos_core.formats.davis import (
    DavisFormatError,
    MaskOverlapError,
    find_annotation_folder,
    ids_from_masks,
    list_davis_videos,
    masks_from_ids,
    read_davis_annotations,
    write_davis_annotations,
)
from rvos_core.masks import voc_palette
from _paths import SHARED_DATA

BLACKSWAN = SHARED_DATA / "davis2016_blackswan"
BMX = SHARED_DATA / "davis2016_bmx-trees"


def _grey(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def test_reads_davis2016_binary_masks_as_object_1() -> None:
    ann = read_davis_annotations(BLACKSWAN)  # resolves davis2016_blackswan/Annotations
    assert ann.folder == BLACKSWAN / "Annotations"
    assert ann.binary
    assert ann.frame_names == [f"{i:05d}" for i in range(50)]
    assert ann.ids.shape == (50, 480, 854) and ann.ids.dtype == np.uint8
    assert ann.object_ids() == [1]
    for i in (0, 49):
        assert np.array_equal(ann.ids[i] == 1, _grey(ann.folder / f"{i:05d}.png") == 255)
    masks = ann.object_masks()
    assert list(masks) == [1] and masks[1].shape == (50, 480, 854) and masks[1].dtype == bool


def test_reads_davis2017_palette_and_matches_the_davis2016_union() -> None:
    multi = read_davis_annotations(BMX / "Annotations_multiobject_frame0")
    assert not multi.binary and multi.frame_names == ["00000"]
    assert multi.object_ids() == [1, 2]  # 1 = bicycle, 2 = rider (SOURCES.md)
    union = _grey(BMX / "Annotations" / "00000.png") == 255
    assert np.array_equal(multi.ids[0] > 0, union)
    counts = {k: int(m.sum()) for k, m in multi.object_masks().items()}
    assert counts == {1: 6466, 2: 7971}


def test_palette_round_trip_keeps_ids_and_davis_colours(tmp_path: Path) -> None:
    multi = read_davis_annotations(BMX / "Annotations_multiobject_frame0")
    rng = np.random.default_rng(0)
    ids = np.concatenate([multi.ids, rng.integers(0, 6, size=(2, 480, 854), dtype=np.uint8)])
    names = ["00000", "00001", "00002"]
    paths = write_davis_annotations(tmp_path / "bmx", ids, names)
    assert paths == [tmp_path / "bmx" / f"{n}.png" for n in names]
    im = Image.open(paths[0])
    assert im.mode == "P"
    assert np.array_equal(np.asarray(im.getpalette()[:9]).reshape(3, 3), voc_palette()[:3])  # 0 black, 1 (128,0,0)…
    back = read_davis_annotations(tmp_path / "bmx")
    assert back.frame_names == names and np.array_equal(back.ids, ids) and not back.binary


def test_binary_round_trip_is_pixel_identical_to_davis2016(tmp_path: Path) -> None:
    ann = read_davis_annotations(BLACKSWAN)
    write_davis_annotations(tmp_path / "swan", ann.ids[:5], ann.frame_names[:5], binary=True)
    for name in ann.frame_names[:5]:
        assert np.array_equal(_grey(tmp_path / "swan" / f"{name}.png"), _grey(ann.folder / f"{name}.png"))
    with pytest.raises(ValueError, match="binary=True needs ids 0/1"):
        write_davis_annotations(tmp_path / "x", np.full((1, 4, 4), 2, np.uint8), ["a"], binary=True)


def test_davis_tree_layout(tmp_path: Path) -> None:
    root = tmp_path / "DAVIS"
    ids = np.zeros((2, 6, 8), np.uint8)
    ids[:, 1:3, 2:5] = 1
    for video in ("dog", "bmx-trees", "car10", "car2"):
        write_davis_annotations(root / "Annotations" / "480p" / video, ids, ["00000", "00001"])
    (root / "Annotations" / "480p" / "empty").mkdir()
    assert list_davis_videos(root) == ["bmx-trees", "car2", "car10", "dog"]
    assert find_annotation_folder(root, "dog") == root / "Annotations" / "480p" / "dog"
    assert np.array_equal(read_davis_annotations(root, "car2").ids, ids)
    with pytest.raises(FileNotFoundError, match="nope"):
        read_davis_annotations(root, "nope")
    with pytest.raises(FileNotFoundError, match="1080p"):
        list_davis_videos(root, "1080p")


def test_ids_from_masks_merges_disjoint_objects() -> None:
    a = np.zeros((5, 6), bool)
    a[0:2, 0:2] = True
    b = np.zeros((5, 6), bool)
    b[3:5, 3:6] = True
    ids, overlap = ids_from_masks({2: b, 1: a})
    assert overlap == 0 and ids.dtype == np.uint8
    assert np.array_equal(ids == 1, a) and np.array_equal(ids == 2, b) and (ids[~(a | b)] == 0).all()
    assert {k: v.tolist() for k, v in masks_from_ids(ids).items()} == {1: a.tolist(), 2: b.tolist()}
    empty, n = ids_from_masks({}, (5, 6))
    assert n == 0 and empty.shape == (5, 6) and not empty.any()


def test_overlap_is_an_error_naming_place_objects_and_pixels() -> None:
    a = np.zeros((4, 4), bool)
    a[:2] = True            # 8 px
    b = np.zeros((4, 4), bool)
    b[1:3] = True           # 8 px, 4 shared with a
    with pytest.raises(MaskOverlapError, match=r"video 'v' frame '00007': objects 3 and 9 overlap on 4 pixels"):
        ids_from_masks({3: a, 9: b}, where="video 'v' frame '00007'")
    ids, overlap = ids_from_masks({3: a, 9: b}, on_overlap="last")
    assert overlap == 4
    assert (ids[1] == 9).all() and (ids[0] == 3).all() and (ids[2] == 9).all()  # the higher id wins


@pytest.mark.parametrize("masks, shape, message", [
    ({0: np.ones((2, 2))}, None, "object id 0"),
    ({256: np.ones((2, 2))}, None, "object id 256"),
    ({1: np.ones((2, 2)), 2: np.ones((3, 2))}, None, "object 2 mask has shape"),
    ({}, None, "no masks and no shape"),
])
def test_ids_from_masks_rejects_bad_input(masks, shape, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ids_from_masks(masks, shape)
    with pytest.raises(ValueError, match="on_overlap"):
        ids_from_masks({1: np.ones((2, 2))}, on_overlap="first")


def test_colour_png_is_rejected_with_the_file_name(tmp_path: Path) -> None:
    folder = tmp_path / "ann"
    write_davis_annotations(folder, np.zeros((2, 4, 5), np.uint8), ["00000", "00001"])
    Image.fromarray(np.zeros((4, 5, 3), np.uint8), "RGB").save(folder / "00002.png")
    with pytest.raises(DavisFormatError, match=r"00002\.png.*'RGB'"):
        read_davis_annotations(folder)


def test_size_mismatch_and_mixed_folders_name_the_files(tmp_path: Path) -> None:
    folder = tmp_path / "sizes"
    write_davis_annotations(folder, np.ones((1, 4, 5), np.uint8), ["00000"])
    write_davis_annotations(folder, np.ones((1, 4, 6), np.uint8), ["00001"])
    with pytest.raises(DavisFormatError, match=r"00001\.png: size \[4, 6\].*00000\.png"):
        read_davis_annotations(folder)
    mixed = tmp_path / "mixed"
    write_davis_annotations(mixed, np.ones((1, 4, 5), np.uint8), ["00000"], binary=True)
    write_davis_annotations(mixed, np.full((1, 4, 5), 2, np.uint8), ["00001"])
    with pytest.raises(DavisFormatError, match=r"mixes 0/255.*00000\.png.*00001\.png"):
        read_davis_annotations(mixed)
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "readme.txt").write_text("no pngs")
    with pytest.raises(FileNotFoundError, match="no folder of annotation PNGs"):
        read_davis_annotations(tmp_path / "none")
    (mixed / "00002.png").write_bytes(b"not a png")
    with pytest.raises(DavisFormatError, match=r"00002\.png.*cannot read image"):
        read_davis_annotations(mixed)


@pytest.mark.parametrize("ids, names, message", [
    (np.zeros((4, 5), np.uint8), ["a"], r"\(T, H, W\)"),
    (np.full((1, 4, 5), 300, np.int32), ["a"], "0..255"),
    (np.zeros((1, 4, 5), np.float32), ["a"], "integer"),
    (np.zeros((2, 4, 5), np.uint8), ["a"], "2 frames but 1 frame_names"),
    (np.zeros((1, 4, 5), np.uint8), ["../a"], "path separators"),
    (np.zeros((2, 4, 5), np.uint8), ["a", "a"], "duplicates"),
])
def test_writer_rejects_bad_input_before_writing(tmp_path: Path, ids, names, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_davis_annotations(tmp_path / "out", ids, names)
    assert not (tmp_path / "out").exists()


def test_writer_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    ids = np.zeros((1, 3, 3), np.uint8)
    write_davis_annotations(tmp_path, ids, ["00000"])
    with pytest.raises(FileExistsError, match="00000.png"):
        write_davis_annotations(tmp_path, ids + 1, ["00000"])
    write_davis_annotations(tmp_path, ids + 1, ["00000"], overwrite=True)
    assert (read_davis_annotations(tmp_path).ids == 1).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.png"]  # no temp files left
