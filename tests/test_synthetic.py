"""Procedural referring-motion clips: determinism, exact masks, truthful unique expressions, kinds, split output."""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from rvos_core import synthetic as S
from rvos_core.formats.mevis import read_mevis_split
from rvos_core.synthetic import ExpressionSpec, SynthObject, _referents, generate_video

N_VIDEOS = 200


@pytest.fixture(scope="module")
def videos() -> list[S.SynthVideo]:
    return [generate_video(np.random.default_rng([11, i])) for i in range(N_VIDEOS)]


def _obj(k: int, shape: str, color: str, size: str, motion: str, speed: str | None, r: float = 10.0) -> SynthObject:
    return SynthObject(k, shape, color, size, motion, speed, radius=r)


def test_shapes_dtypes_and_ids(videos) -> None:
    for v in videos[:20]:
        k = len(v.objects)
        assert 2 <= k <= 4
        assert v.frames.shape == (8, 128, 128, 3) and v.frames.dtype == np.uint8
        assert v.masks.shape == (k, 8, 128, 128) and v.masks.dtype == bool
        assert [o.obj_id for o in v.objects] == list(range(k))
        assert 2 <= len(v.expressions) <= 5
    v = generate_video(np.random.default_rng(0), num_frames=5, size=(72, 96))
    assert v.frames.shape == (5, 72, 96, 3) and v.masks.shape[1:] == (5, 72, 96)


def test_same_rng_state_same_clip() -> None:
    a = generate_video(np.random.default_rng([5, 3]))
    b = generate_video(np.random.default_rng([5, 3]))
    c = generate_video(np.random.default_rng([5, 4]))
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.masks, b.masks)
    assert a.objects == b.objects and a.expressions == b.expressions
    assert not np.array_equal(a.frames, c.frames)


def test_masks_exact_disjoint_and_visible(videos) -> None:
    for v in videos[:60]:
        assert (v.masks.sum(axis=0) <= 1).all(), "occlusion: a pixel belongs to at most one object"
        for o, m in zip(v.objects, v.masks):
            visible = m.sum(axis=(1, 2)) >= S._MIN_VISIBLE * S._full_area(o.shape, o.radius)
            assert visible.sum() * 2 >= m.shape[0], "each object is clearly visible on half the frames"
            colours = np.unique(v.frames[m].reshape(-1, 3), axis=0)
            assert len(colours) == 1, "every mask pixel has the object's colour: masks are pixel-exact"


def test_occluded_object_loses_covered_pixels() -> None:
    back = SynthObject(0, "square", "red", "big", "still", None, radius=20.0, start=(64.0, 64.0), end=(64.0, 64.0))
    front = SynthObject(1, "circle", "blue", "small", "still", None, radius=10.0, start=(64.0, 64.0), end=(64.0, 64.0))
    both = S._render_masks([back, front], 2, 128, 128)
    alone = S._render_masks([back], 2, 128, 128)[0]
    assert np.array_equal(both[0] | both[1], alone)
    assert not (both[0] & both[1]).any() and both[1].sum() > 250


@pytest.mark.parametrize("motion, axis, sign", [("left", 0, -1), ("right", 0, 1), ("up", 1, -1), ("down", 1, 1)])
def test_rendered_motion_matches_attribute(motion: str, axis: int, sign: int) -> None:
    """``axis`` indexes (x, y); placement respects the speed range and rendered centroids follow it."""
    rng = np.random.default_rng(0)
    for speed, (lo, hi) in S.SPEEDS.items():
        attrs = dict(shape="circle", color="red", size_name="small", radius=8.0, motion=motion, speed=speed)
        placed = S._place(rng, attrs, 0, 128, 128)
        travel = placed.end[axis] - placed.start[axis]
        assert lo * 128 - 1e-6 <= sign * travel <= hi * 128 + 1e-6
        assert placed.end[1 - axis] == placed.start[1 - axis]
        start = [64.0, 64.0]
        start[axis] -= travel / 2
        end = list(start)
        end[axis] += travel
        centred = SynthObject(0, "circle", "red", "small", motion, speed, 8.0, tuple(start), tuple(end))
        m = S._render_masks([centred], 8, 128, 128)[0]
        centroid = np.array([np.argwhere(f).mean(axis=0)[::-1] for f in m])  # (x, y)
        assert np.all(sign * np.diff(centroid[:, axis]) > 0), f"{motion}/{speed}: centroid must move monotonically"
        assert abs(centroid[-1, axis] - centroid[0, axis] - travel) < 1.0
        assert np.ptp(centroid[:, 1 - axis]) < 0.5


def test_background_never_confusable_with_objects(videos) -> None:
    coloured = [c for n, c in S.COLORS.items() if n != "white"]
    min_obj_sat = min(cv2.cvtColor(np.uint8([[c]]), cv2.COLOR_RGB2HSV)[0, 0, 1] for c in coloured)
    for v in videos[:40]:
        bg = ~v.masks.any(axis=0)
        hsv = cv2.cvtColor(v.frames[0], cv2.COLOR_RGB2HSV)
        assert hsv[..., 1][bg[0]].max() < min_obj_sat - 60
        assert v.frames[bg].max() < 230 <= min(S.COLORS["white"]) - 12  # white objects stay brighter


def test_referents_checker() -> None:
    objs = [_obj(0, "circle", "red", "small", "left", "slow"),
            _obj(1, "circle", "red", "small", "still", None),
            _obj(2, "square", "red", "big", "left", "fast")]
    assert _referents(objs, ExpressionSpec(shape="circle")) == [0, 1]
    assert _referents(objs, ExpressionSpec(shape="circle", motion="left")) == [0]
    assert _referents(objs, ExpressionSpec(speed="slow")) == [0]
    assert _referents(objs, ExpressionSpec(color="red")) == [0, 1, 2]
    assert _referents(objs, ExpressionSpec(motion="still", size="big")) == []
    assert S._kind(objs, ExpressionSpec(shape="circle", motion="left"), [0]) == "motion"
    assert S._kind(objs, ExpressionSpec(size="big"), [2]) == "appearance"
    # no same-looking distractor and no appearance word: not generated
    assert S._kind(objs, ExpressionSpec(speed="fast"), [2]) is None


def test_every_expression_is_true_unique_and_minimal(videos) -> None:
    for v in videos:
        seen = set()
        for e in v.expressions:
            assert _referents(v.objects, e.spec) == e.obj_ids, e.text
            assert (len(e.obj_ids) > 1) == e.spec.plural
            assert 0 < len(e.obj_ids) < len(v.objects)
            seen.add(e.text)
            if e.kind == "mixed":  # appearance and motion words are both needed
                assert _referents(v.objects, e.spec.without(S.MOTION_ATTRS)) != e.obj_ids
                assert _referents(v.objects, e.spec.without(S.APPEARANCE_ATTRS)) != e.obj_ids
        assert len(seen) == len(v.expressions), "no duplicate expression text within a clip"


def test_motion_kind_has_same_looking_distractor(videos) -> None:
    n = 0
    for v in videos:
        for e in v.expressions:
            if e.kind != "motion":
                continue
            n += 1
            ref = set(e.obj_ids)
            twins = [(i, o) for i in ref for o in v.objects if o.obj_id not in ref and S._looks_same(v.objects[i], o)]
            assert twins, e.text
            i, o = twins[0]
            a = v.objects[i]
            assert (a.motion, a.speed) != (o.motion, o.speed)
            assert np.allclose(S._full_area(a.shape, a.radius), S._full_area(o.shape, o.radius))
            assert _referents(v.objects, e.spec.without(S.MOTION_ATTRS)) != e.obj_ids, "appearance alone is not enough"
    assert n > 0


def test_appearance_kind_uses_no_motion_words(videos) -> None:
    motion_words = re.compile(r"\b(moving|moves?|going|heading|still|slowly|quickly|fast|slow-moving|fast-moving)\b")
    for v in videos:
        for e in v.expressions:
            if e.kind == "appearance":
                assert not set(e.spec.attrs()) & set(S.MOTION_ATTRS)
                assert not motion_words.search(e.text), e.text


def test_text_states_exactly_the_spec(videos) -> None:
    for v in videos:
        for e in v.expressions:
            words = set(e.text.split())
            for c in S.COLORS:
                assert (c in words) == (e.spec.color == c), e.text
            for s in S.SHAPES:
                assert (s in words or s + "s" in words) == (e.spec.shape == s), e.text
            assert ({"small", "little"} & words != set()) == (e.spec.size == "small"), e.text
            assert ({"big", "large"} & words != set()) == (e.spec.size == "big"), e.text
            for d in S.DIRECTIONS:
                stated = bool(re.search(rf"\b{d}(wards)?\b", e.text))
                assert stated == (e.spec.motion == d), e.text
            assert bool(re.search(r"still|not moving|not move", e.text)) == (e.spec.motion == "still"), e.text
            assert bool(re.search(r"fast|quickly", e.text)) == (e.spec.speed == "fast"), e.text
            assert bool(re.search(r"slow", e.text)) == (e.spec.speed == "slow"), e.text


def test_kind_and_multi_object_proportions(videos) -> None:
    exps = [e for v in videos for e in v.expressions]
    kinds = Counter(e.kind for e in exps)
    assert set(kinds) == set(S.KINDS)
    assert kinds["motion"] / len(exps) >= 0.30
    assert kinds["mixed"] / len(exps) >= 0.05
    assert kinds["appearance"] / len(exps) >= 0.20
    assert sum(len(e.obj_ids) > 1 for e in exps) / len(exps) >= 0.15
    counts = Counter(e.obj_ids.__len__() for e in exps)
    assert counts[2] > 0 and counts[3] > 0


def test_objects_sometimes_leave_the_frame(videos) -> None:
    empty = sum(int((~m.any(axis=(1, 2))).sum()) for v in videos for m in v.masks)
    assert empty > 0


def test_generation_is_fast() -> None:
    rng = np.random.default_rng(1)
    generate_video(rng)
    times = []
    for _ in range(40):
        t0 = time.perf_counter()
        generate_video(rng)
        times.append(time.perf_counter() - t0)
    # the budget is 10 ms on one idle core; leave room for a machine shared with a training run
    assert np.median(times) < 0.010 * 2


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def test_write_split_is_byte_identical_and_readable(tmp_path: Path) -> None:
    a = S.write_split(tmp_path / "a", videos=12, seed=3, progress=False)
    b = S.write_split(tmp_path / "b", videos=12, seed=3, progress=False)
    c = S.write_split(tmp_path / "c", videos=12, seed=4, progress=False)
    assert _tree_hash(a) == _tree_hash(b) != _tree_hash(c)

    split = read_mevis_split(a)
    assert split.has_masks and split.videos == [f"synth_{i:05d}" for i in range(12)]
    annos: dict[int, str] = {}
    nulls = 0
    for i, name in enumerate(split.videos):
        ref = generate_video(np.random.default_rng([3, i]))  # any clip is reproducible alone
        assert split.frame_names(name) == [f"{t:05d}" for t in range(8)]
        assert np.abs(split.frame(name, 7).astype(int) - ref.frames[7]).mean() < 3.0
        exps = split.expressions(name)
        assert [e.exp for e in exps.values()] == [e.text for e in ref.expressions]
        for exp_id, e in exps.items():
            r = ref.expressions[int(exp_id)]
            assert e.kind == r.kind and e.obj_id == r.obj_ids
            assert e.anno_id == [S.anno_id_of(i, k) for k in r.obj_ids]
            assert np.array_equal(split.expression_masks(name, exp_id), ref.masks[r.obj_ids].any(axis=0))
            for anno in e.anno_id:
                assert annos.setdefault(anno, name) == name, "anno_id unique across the split"
                masks = split.object_masks(anno)
                nulls += sum(m is None for m in masks)
                assert all(m is None or m.any() for m in masks), "empty masks are written as null"
    assert nulls == sum(int((~ref_m.any(axis=(1, 2))).sum())
                        for i in range(12)
                        for k, ref_m in enumerate(generate_video(np.random.default_rng([3, i])).masks)
                        if S.anno_id_of(i, k) in annos)
    meta = json.loads((a / "meta_expressions.json").read_text())
    assert all("kind" in e for v in meta["videos"].values() for e in v["expressions"].values())


def test_iterate_training_samples() -> None:
    it = S.iterate_training_samples(3)
    first = [next(it) for _ in range(3)]
    again = next(S.iterate_training_samples(3))
    assert np.array_equal(first[0].frames, again.frames)
    assert not np.array_equal(first[0].frames, first[1].frames)
    held_out = generate_video(np.random.default_rng([3, 0]))
    assert not np.array_equal(first[0].frames, held_out.frames), "training stream differs from the written split"


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_frames=1), "num_frames"),
    (dict(size=(16, 128)), "size"),
    (dict(size="big"), "size"),
])
def test_generate_rejects_bad_arguments(kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate_video(np.random.default_rng(0), **kwargs)


def test_write_split_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="videos"):
        S.write_split(tmp_path / "x", videos=0, seed=0, progress=False)
    with pytest.raises(ValueError, match="seed"):
        S.write_split(tmp_path / "x", videos=1, seed=-1, progress=False)
    assert not (tmp_path / "x").exists()
