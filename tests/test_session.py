"""Tests for rvos_core.session.AnnotationSession: objects, expressions, clicks, undo/redo, exports."""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from rvos_core.engines.base import Masklet, SegmentResult
from rvos_core.refiners.base import RefineResult
from rvos_core.session import (
    AnnotationSession,
    CompactMask,
    Prompt,
    UnknownExpressionError,
    UnknownObjectError,
)
from rvos_core.video import open_video

T, H, W = 6, 64, 96
from _paths import SHARED_DATA
BLACKSWAN = SHARED_DATA / "davis2016_blackswan"


# ------------------------------------------------------------------------------------------ fixtures


def _frame(t: int) -> np.ndarray:
    """A textured RGB frame with a moving bright square (so JPEG round trips are non-trivial)."""
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([xx * 255 // W, yy * 255 // H, np.full((H, W), 40 + 20 * t)], axis=-1).astype(np.uint8)
    img[10:30, 10 + 5 * t: 30 + 5 * t] = (250, 250, 250)
    return img


def _write_clip(folder: Path, shift: int = 0) -> Path:
    """Write the toy clip's T JPEG frames (content rolled ``shift`` pixels right) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(T):
        frame = np.roll(_frame(t), shift, axis=1)
        cv2.imwrite(str(folder / f"{t:05d}.jpg"), frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])
    return folder


@pytest.fixture
def clip_dir(tmp_path: Path) -> Path:
    return _write_clip(tmp_path / "toyclip")


@pytest.fixture
def session(clip_dir: Path) -> AnnotationSession:
    return AnnotationSession(open_video(clip_dir))


def _square_masks(x0: int, y0: int, size: int, absent: tuple[int, ...] = ()) -> np.ndarray:
    masks = np.zeros((T, H, W), bool)
    for t in range(T):
        if t not in absent:
            masks[t, y0: y0 + size, x0 + 3 * t: x0 + 3 * t + size] = True
    return masks


def _two_masklet_result() -> SegmentResult:
    return SegmentResult(
        masklets=[Masklet(0, _square_masks(5, 5, 12), 0.9), Masklet(1, _square_masks(50, 35, 10, absent=(4,)), 0.7)],
        num_frames=T, height=H, width=W, engine="fake",
    )


class DiskRefiner:
    """Refiner protocol stand-in: prior ∪ disks at positive clicks ∪ box, minus disks at negative clicks."""

    name = "disk-test"

    def __init__(self, radius: int = 4) -> None:
        self.radius = radius
        self.calls: list[dict] = []

    def refine(self, frame, points=None, labels=None, box=None, mask_prior=None, frame_key=None) -> RefineResult:
        self.calls.append(dict(frame=frame.copy(), points=None if points is None else points.copy(),
                               labels=None if labels is None else labels.copy(), box=box,
                               mask_prior=None if mask_prior is None else mask_prior.copy(), frame_key=frame_key))
        h, w = frame.shape[:2]
        out = np.zeros((h, w), bool) if mask_prior is None else mask_prior.copy()
        if box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            out[y0:y1, x0:x1] = True
        yy, xx = np.mgrid[0:h, 0:w]
        for (x, y), lab in zip(points if points is not None else [], labels if labels is not None else []):
            disk = (xx - x) ** 2 + (yy - y) ** 2 <= self.radius ** 2
            out = out | disk if lab == 1 else out & ~disk
        return RefineResult(out, 1.0)


class FailingRefiner:
    name = "failing"

    def refine(self, *args, **kwargs) -> RefineResult:
        raise ValueError("no prompt that locates the object")


def _all_masks(s: AnnotationSession) -> dict[tuple[int, int], np.ndarray]:
    return {(o.obj_id, t): s.mask(o.obj_id, t) for o in s.objects for t in range(s.num_frames)}


def _full_state(s: AnnotationSession) -> dict:
    """Everything observable about the session, for exact comparisons across undo/redo."""
    return {
        "masks": {k: v.tobytes() for k, v in _all_masks(s).items()},
        "objects": [(o.obj_id, o.name, o.color, dict(o.origin), {f: list(p) for f, p in o.prompts.items()})
                    for o in s.objects],
        "expressions": [(e.exp_id, e.text, list(e.obj_ids)) for e in s.expressions],
    }


# ------------------------------------------------------------------------------------------ parts


def test_compact_mask_round_trip_and_bound() -> None:
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (7, 13), (480, 854)]:
        m = rng.random(shape) < 0.5
        cm = CompactMask.encode(m)
        np.testing.assert_array_equal(cm.decode(), m)
        assert cm.nbytes <= (m.size + 7) // 8 + 64  # noise: bounded by the packed size
    smooth = np.zeros((480, 854), bool)
    cv2.ellipse(smooth.view(np.uint8), (400, 240), (150, 90), 0, 0, 360, 1, -1)
    assert CompactMask.encode(smooth).nbytes < 5_000


def test_prompt_validation() -> None:
    Prompt(0, "point", xy=(1.0, 2.0), label=1)
    Prompt(0, "box", box=(0.0, 0.0, 5.0, 5.0))
    with pytest.raises(ValueError, match="label"):
        Prompt(0, "point", xy=(1.0, 2.0), label=2)
    with pytest.raises(ValueError, match="x0 < x1"):
        Prompt(0, "box", box=(5.0, 0.0, 5.0, 5.0))
    with pytest.raises(ValueError, match="kind"):
        Prompt(0, "scribble")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ objects


def test_accept_result_makes_one_object_per_masklet(session: AnnotationSession) -> None:
    result = _two_masklet_result()
    entry = session.accept_result("  the two squares  ", result)
    assert (entry.exp_id, entry.text, entry.obj_ids) == ("0", "the two squares", [0, 1])
    assert [o.name for o in session.objects] == ["the two squares #1", "the two squares #2"]
    assert session.objects[0].color != session.objects[1].color
    for k, obj_id in enumerate(entry.obj_ids):
        for t in range(T):
            np.testing.assert_array_equal(session.mask(obj_id, t), result.masklets[k].masks[t])
        assert set(session.get_object(obj_id).origin.values()) == {"engine"}
    assert not session.has_mask(1, 4) and session.has_mask(1, 3)
    np.testing.assert_array_equal(session.union_mask(2), result.union()[2])
    np.testing.assert_array_equal(session.union_mask(2, [1]), result.masklets[1].masks[2])

    empty = session.accept_result("nothing here", SegmentResult([], T, H, W))
    assert (empty.exp_id, empty.obj_ids) == ("1", [])
    new = session.add_object(exp_id="1")
    assert session.get_expression("1").obj_ids == [new] and new == 2
    assert session.get_object(new).name == "object 2"
    assert not session.mask(new, 0).any()


def test_accept_result_rejects_bad_input(session: AnnotationSession) -> None:
    with pytest.raises(ValueError, match="expression"):
        session.accept_result("   ", _two_masklet_result())
    with pytest.raises(ValueError, match="does not match"):
        session.accept_result("x", SegmentResult([], T + 1, H, W))
    bad = SegmentResult([Masklet(0, np.zeros((T, H, W - 1), bool), 1.0)], T, H, W)
    with pytest.raises(ValueError, match="masklet 0"):
        session.accept_result("x", bad)
    assert session.objects == [] and session.expressions == [] and not session.can_undo


def test_rename_and_delete_object(session: AnnotationSession) -> None:
    entry = session.accept_result("squares", _two_masklet_result())
    session.rename_object(0, "left square")
    assert session.get_object(0).name == "left square"
    with pytest.raises(ValueError, match="name"):
        session.rename_object(0, " ")
    session.delete_object(0)
    assert [o.obj_id for o in session.objects] == [1]
    assert session.get_expression(entry.exp_id).obj_ids == [1]
    assert session.add_object() == 2  # ids are never reused


# ------------------------------------------------------------------------------------------ clicks


def test_click_changes_exactly_that_frame(session: AnnotationSession) -> None:
    session.accept_result("squares", _two_masklet_result())
    engine_mask = session.mask(0, 2)
    before = _all_masks(session)
    refiner = DiskRefiner()
    out = session.add_click(0, 2, 60.5, 10.0, True, refiner)
    after = _all_masks(session)
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert changed == [(0, 2)]
    np.testing.assert_array_equal(out, after[(0, 2)])
    assert out[10, 60] and out[engine_mask].all()
    assert session.get_object(0).origin[2] == "click"
    call = refiner.calls[-1]
    np.testing.assert_array_equal(call["points"], [[60.5, 10.0]])
    np.testing.assert_array_equal(call["labels"], [1])
    np.testing.assert_array_equal(call["mask_prior"], engine_mask)
    np.testing.assert_array_equal(call["frame"], session.video.get_frame(2))
    assert call["frame_key"] == f"{session.video.video_id}:2" and call["box"] is None

    # A second (negative) click: the refiner gets ALL clicks, and the prior stays the engine proposal.
    out2 = session.add_click(0, 2, 11.0, 8.0, False, refiner)
    call = refiner.calls[-1]
    np.testing.assert_array_equal(call["points"], [[60.5, 10.0], [11.0, 8.0]])
    np.testing.assert_array_equal(call["labels"], [1, 0])
    np.testing.assert_array_equal(call["mask_prior"], engine_mask)
    assert not out2[8, 11] and out2[10, 60]
    assert [p.label for p in session.prompts(0, 2)] == [1, 0]
    assert session.prompts(0, 3) == [] and session.prompts(1, 2) == []


def test_box_then_click_passes_the_box(session: AnnotationSession) -> None:
    obj = session.add_object("new")
    refiner = DiskRefiner()
    out = session.add_box(obj, 1, (20, 20, 40, 50), refiner)
    assert out[20:50, 20:40].all() and out.sum() == 20 * 30
    assert refiner.calls[-1]["mask_prior"] is None and refiner.calls[-1]["points"] is None
    session.add_click(obj, 1, 30, 30, False, refiner)
    np.testing.assert_array_equal(refiner.calls[-1]["box"], [20, 20, 40, 50])
    assert [p.kind for p in session.prompts(obj, 1)] == ["box", "point"]


def test_clear_prompts_restores_proposal(session: AnnotationSession) -> None:
    session.accept_result("squares", _two_masklet_result())
    engine_mask = session.mask(1, 0)
    session.add_click(1, 0, 5, 5, True, DiskRefiner())
    session.add_click(1, 0, 80, 60, True, DiskRefiner())
    assert not np.array_equal(session.mask(1, 0), engine_mask)
    restored = session.clear_prompts(1, 0)
    np.testing.assert_array_equal(restored, engine_mask)
    assert session.prompts(1, 0) == [] and session.get_object(1).origin[0] == "engine"

    fresh = session.add_object()  # a frame with no proposal returns to "no mask"
    session.add_click(fresh, 3, 10, 10, True, DiskRefiner())
    assert not session.clear_prompts(fresh, 3).any() and 3 not in session.get_object(fresh).origin


def test_set_mask_replaces_base_and_validates(session: AnnotationSession) -> None:
    obj = session.add_object()
    session.add_click(obj, 0, 10, 10, True, DiskRefiner())
    imported = np.zeros((H, W), np.uint8)
    imported[40:60, 60:90] = 255
    session.set_mask(obj, 0, imported, "import")
    np.testing.assert_array_equal(session.mask(obj, 0), imported > 0)
    assert session.prompts(obj, 0) == [] and session.get_object(obj).origin[0] == "import"
    refiner = DiskRefiner()
    session.add_click(obj, 0, 5, 5, True, refiner)
    np.testing.assert_array_equal(refiner.calls[-1]["mask_prior"], imported > 0)
    with pytest.raises(ValueError, match=r"\(64, 96\)"):
        session.set_mask(obj, 0, np.zeros((H, W + 1), bool), "import")
    with pytest.raises(ValueError, match="origin"):
        session.set_mask(obj, 0, imported, "magic")  # type: ignore[arg-type]


def test_click_outside_frame_is_rejected(session: AnnotationSession) -> None:
    obj = session.add_object()
    refiner = DiskRefiner()
    for x, y in [(96, 10), (-1, 10), (10, 64), (10, -0.5)]:
        with pytest.raises(ValueError, match=r"outside the 96x64 frame"):
            session.add_click(obj, 0, x, y, True, refiner)
    with pytest.raises(ValueError, match="finite"):
        session.add_click(obj, 0, float("nan"), 3, True, refiner)
    with pytest.raises(ValueError, match=r"\(96, 10\).*96x64"):
        session.add_click(obj, 0, 96, 10, True, refiner)
    with pytest.raises(ValueError, match="box"):
        session.add_box(obj, 0, (10, 10, 97, 20), refiner)
    with pytest.raises(ValueError, match="box"):
        session.add_box(obj, 0, (10, 10, 5, 20), refiner)
    assert refiner.calls == [] and session.prompts(obj, 0) == []


def test_unknown_ids_and_frames(session: AnnotationSession) -> None:
    session.accept_result("squares", _two_masklet_result())
    with pytest.raises(UnknownObjectError, match=r"7.*valid obj_ids: \[0, 1\]") as err:
        session.mask(7, 0)
    assert isinstance(err.value, KeyError)
    for call in (lambda: session.add_click(9, 0, 1, 1, True, DiskRefiner()), lambda: session.delete_object(9),
                 lambda: session.rename_object(9, "x"), lambda: session.union_mask(0, [0, 9]),
                 lambda: session.set_mask(9, 0, np.zeros((H, W), bool), "click")):
        with pytest.raises(UnknownObjectError):
            call()
    with pytest.raises(UnknownExpressionError, match=r"'5'.*valid exp_ids: \['0'\]"):
        session.export_prediction_pngs("/nonexistent", "5")
    with pytest.raises(UnknownExpressionError):
        session.add_object(exp_id="3")
    with pytest.raises(IndexError, match=r"frame 6 out of range \[0, 5\]"):
        session.mask(0, 6)
    with pytest.raises(IndexError, match=r"\[0, 5\]"):
        session.add_click(0, -1, 1, 1, True, DiskRefiner())
    assert len(session.objects) == 2  # nothing was created by the failing calls


def test_failed_refiner_leaves_state_unchanged(session: AnnotationSession) -> None:
    session.accept_result("squares", _two_masklet_result())
    before = _full_state(session)
    with pytest.raises(ValueError, match="locates"):
        session.add_click(0, 1, 3, 3, False, FailingRefiner())
    assert _full_state(session) == before
    session.undo()
    assert session.objects == [] and not session.can_undo


# ------------------------------------------------------------------------------------------ undo/redo


def test_undo_redo_restore_exact_masks_and_prompts(session: AnnotationSession) -> None:
    refiner = DiskRefiner()
    assert not session.can_undo and not session.can_redo
    states = [_full_state(session)]
    imported = np.zeros((H, W), bool)
    imported[::3, ::5] = True
    edits = [
        lambda: session.accept_result("squares", _two_masklet_result()),
        lambda: session.add_click(0, 2, 60, 10, True, refiner),
        lambda: session.add_click(0, 2, 12, 8, False, refiner),
        lambda: session.add_box(1, 4, (0, 0, 30, 30), refiner),
        lambda: session.add_object("extra"),
        lambda: session.set_mask(2, 5, imported, "import"),
        lambda: session.rename_object(1, "renamed"),
        lambda: session.clear_prompts(0, 2),
        lambda: session.delete_object(0),
        lambda: session.accept_result("empty", SegmentResult([], T, H, W)),
    ]
    for edit in edits:
        edit()
        states.append(_full_state(session))
    assert all(a != b for a, b in zip(states, states[1:]))  # every edit changed something

    for k in range(len(edits), 0, -1):
        assert session.can_undo
        session.undo()
        assert _full_state(session) == states[k - 1], f"undo to state {k - 1}"
    assert not session.can_undo and session.can_redo
    with pytest.raises(IndexError, match="undo"):
        session.undo()
    for k in range(1, len(edits) + 1):
        session.redo()
        assert _full_state(session) == states[k], f"redo to state {k}"
    assert not session.can_redo
    with pytest.raises(IndexError, match="redo"):
        session.redo()

    # A new edit after undo drops the redo branch; ids stay unique.
    session.undo()
    session.undo()
    assert session.can_redo
    new = session.add_object()
    assert not session.can_redo and new == 3


def test_undo_is_bounded(clip_dir: Path) -> None:
    s = AnnotationSession(open_video(clip_dir), max_undo=3)
    for _ in range(5):
        s.add_object()
    undone = 0
    while s.can_undo:
        s.undo()
        undone += 1
    assert undone == 3 and len(s.objects) == 2


# ------------------------------------------------------------------------------------------ render


def test_render_draws_masks_and_markers(session: AnnotationSession) -> None:
    session.accept_result("squares", _two_masklet_result())
    refiner = DiskRefiner(radius=2)
    session.add_click(1, 0, 80, 10, True, refiner)
    session.add_click(1, 0, 55, 40, False, refiner)
    frame = session.video.get_frame(0)
    img = session.render(0)
    assert img.shape == (H, W, 3) and img.dtype == np.uint8
    assert tuple(img[10, 80]) == (0, 200, 0)  # positive click marker centre
    assert tuple(img[40, 55]) == (220, 0, 0)  # negative click marker centre
    plain = session.render(0, show_prompts=False)
    assert not np.array_equal(plain[12, 12], frame[12, 12])  # inside object 0: tinted
    np.testing.assert_array_equal(plain[55, 5], frame[55, 5])  # background: untouched
    only1 = session.render(0, obj_ids=[1], show_prompts=False)
    np.testing.assert_array_equal(only1[12, 12], frame[12, 12])
    np.testing.assert_array_equal(session.render(0, alpha=0.0, show_prompts=False)[12, 12], frame[12, 12])
    with pytest.raises(ValueError, match="alpha"):
        session.render(0, alpha=1.5)


# ------------------------------------------------------------------------------------------ exports


def test_export_mevis_zip_round_trip(session: AnnotationSession, tmp_path: Path) -> None:
    from rvos_core.formats.mevis import read_mevis_split

    session.accept_result("squares", _two_masklet_result())
    session.add_click(0, 2, 60, 10, True, DiskRefiner())
    session.accept_result("nothing", SegmentResult([], T, H, W))
    extra = session.add_object("to delete")
    session.delete_object(extra)  # leaves a gap in obj_ids
    kept = session.add_object("kept", exp_id="1")
    session.set_mask(kept, 3, np.pad(np.ones((5, 5), bool), ((20, H - 25), (40, W - 45))), "import")
    calls: list[tuple[int, int, str]] = []
    out = session.export_mevis_zip(tmp_path / "out" / "split.zip", progress=lambda d, n, m: calls.append((d, n, m)))
    assert out.is_file() and not [p for p in out.parent.iterdir() if p != out]  # no temp file left
    assert calls[-1][:2] == (T, T) and len(calls) == T + 1

    with read_mevis_split(out) as split:
        assert split.videos == ["toyclip"]
        assert split.frame_names("toyclip") == [f"{t:05d}" for t in range(T)]
        exps = split.expressions("toyclip")
        assert {k: (e.exp, e.obj_id, e.anno_id) for k, e in exps.items()} == {
            "0": ("squares", [0, 1], [0, 1]), "1": ("nothing", [kept], [kept])}
        for obj in session.objects:
            read = split.object_masks(obj.obj_id)
            assert len(read) == T
            for t in range(T):
                if session.has_mask(obj.obj_id, t):
                    np.testing.assert_array_equal(read[t], session.mask(obj.obj_id, t))
                else:
                    assert read[t] is None
        for t in range(T):
            diff = np.abs(split.frame("toyclip", t).astype(int) - session.video.get_frame(t).astype(int))
            assert diff.mean() < 2.0 and diff.max() < 40
    with pytest.raises(FileExistsError):
        session.export_mevis_zip(out)
    session.export_mevis_zip(out, overwrite=True)


def test_export_overlay_mp4(session: AnnotationSession, tmp_path: Path) -> None:
    session.accept_result("squares", _two_masklet_result())
    seen: list[int] = []
    path = session.export_overlay_mp4(tmp_path / "overlay.mp4", progress=lambda d, n, m: seen.append(d))
    assert seen == list(range(1, T + 1))
    video = open_video(path)
    assert (len(video), video.meta.width, video.meta.height) == (T, W, H)
    rendered = session.render(3, show_prompts=False).astype(int)
    assert np.abs(video.get_frame(3).astype(int) - rendered).mean() < 6.0


def test_export_prediction_pngs(session: AnnotationSession, tmp_path: Path) -> None:
    entry = session.accept_result("squares", _two_masklet_result())
    paths = session.export_prediction_pngs(tmp_path / "pred", entry.exp_id)
    assert [p.relative_to(tmp_path / "pred").as_posix() for p in paths] == [
        f"toyclip/0/{t:05d}.png" for t in range(T)]
    for t, p in enumerate(paths):
        png = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint8 and png.shape == (H, W)
        np.testing.assert_array_equal(png, np.where(session.union_mask(t), 255, 0))


def test_default_video_name_from_dataset_folder() -> None:
    s = AnnotationSession(open_video(BLACKSWAN / "JPEGImages"))
    assert s.video_name == "davis2016_blackswan"
    assert (s.num_frames, s.height, s.width) == (50, 480, 854)
    with pytest.raises(ValueError, match="video_name"):
        AnnotationSession(open_video(BLACKSWAN / "JPEGImages"), video_name="a/b")


# ------------------------------------------------------------------------------------------ memory


def _blackswan_masks() -> np.ndarray:
    files = sorted((BLACKSWAN / "Annotations").glob("*.png"))
    return np.stack([cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) > 127 for f in files])


class _FakeVideo:
    """Geometry-only stand-in: 60 frames of 854×480 (masks only are measured here)."""

    class meta:  # noqa: N801 - mirrors VideoSource.meta
        path = "/tmp/memory-test.mp4"
        num_frames = 60
        height = 480
        width = 854
        fps = 24.0
        frame_names = tuple(f"{i:05d}" for i in range(60))


def test_stored_masks_memory_is_bounded() -> None:
    gt = _blackswan_masks()  # real DAVIS annotations, 50 frames
    masks = np.concatenate([gt, gt[:10]])  # 60 frames
    shifted = [np.roll(masks, s, axis=2) for s in (0, 150, 300)]
    result = SegmentResult([Masklet(k, m, 1.0) for k, m in enumerate(shifted)], 60, 480, 854)
    s = AnnotationSession(_FakeVideo())  # type: ignore[arg-type]
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        s.accept_result("the black swan", result)
        retained = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    realistic = s.stored_bytes()
    assert realistic < 1_000_000  # object-like masks: a few KB per frame
    assert retained < 2_000_000  # everything the session keeps, measured by the allocator
    for t in (0, 37, 59):
        np.testing.assert_array_equal(s.mask(2, t), shifted[2][t])

    # Worst case (pixel noise): bounded by the packed size, 3 objects × 60 frames × 51 KB ≈ 9.2 MB.
    noise = np.random.default_rng(0).random((60, 480, 854)) < 0.5
    s.accept_result("noise", SegmentResult([Masklet(k, noise, 1.0) for k in range(3)], 60, 480, 854))
    worst = s.stored_bytes() - realistic
    assert worst < 3 * 60 * ((480 * 854 + 7) // 8 + 64) < 10_000_000


# ------------------------------------------------------------------------------------------ real refiner


def test_click_with_grabcut_refiner() -> None:
    from rvos_core.metrics import region_similarity
    from rvos_core.refiners.registry import load_refiner

    gt = cv2.imread(str(BLACKSWAN / "Annotations" / "00000.png"), cv2.IMREAD_GRAYSCALE) > 127
    s = AnnotationSession(open_video(BLACKSWAN / "JPEGImages"))
    obj = s.add_object("swan")
    ys, xs = np.nonzero(gt)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    mask = s.add_box(obj, 0, (x0 - 10, y0 - 10, x1 + 10, y1 + 10), load_refiner("grabcut"))
    cy, cx = np.argwhere(gt)[len(ys) // 2]
    mask2 = s.add_click(obj, 0, float(cx), float(cy), True, load_refiner("grabcut"))
    assert mask2[cy, cx]
    assert region_similarity(gt, mask) > 0.5 and region_similarity(gt, mask2) > 0.5
    assert [p.kind for p in s.prompts(obj, 0)] == ["box", "point"]
    assert all(not s.has_mask(obj, t) for t in range(1, s.num_frames))


def test_edit_failing_midway_is_rolled_back(session: AnnotationSession, monkeypatch: pytest.MonkeyPatch) -> None:
    session.accept_result("first", _two_masklet_result())
    before = _full_state(session)
    real_encode = CompactMask.encode
    calls = {"n": 0}

    def flaky(mask: np.ndarray) -> CompactMask:
        calls["n"] += 1
        if calls["n"] == 3:
            raise MemoryError("simulated")
        return real_encode(mask)

    monkeypatch.setattr(CompactMask, "encode", staticmethod(flaky))
    with pytest.raises(MemoryError):
        session.accept_result("second", _two_masklet_result())
    assert _full_state(session) == before
    assert session.undo() == "accept result" and session.objects == [] and not session.can_undo


# ------------------------------------------------------------------------------------------ objects anywhere, colours


def _square(x0: int, y0: int, size: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0: y0 + size, x0: x0 + size] = True
    return m


def test_add_object_on_any_frame_with_colour(session: AnnotationSession) -> None:
    first = _square(40, 20, 9)
    obj = session.add_object("late", frame=4, mask=first, color=(1, 2, 250))
    o = session.get_object(obj)
    assert o.color == (1, 2, 250) and set(o.masks) == {4} and o.origin == {4: "manual"}
    np.testing.assert_array_equal(session.mask(obj, 4), first)
    assert session.hand_edited_frames(obj) == {4}
    default = session.add_object()
    from rvos_core.masks import object_color
    assert session.get_object(default).color == object_color(default)
    session.set_object_color(default, np.array([9, 8, 7]))
    assert session.get_object(default).color == (9, 8, 7)
    session.undo()
    assert session.get_object(default).color == object_color(default)
    many = [session.add_object() for _ in range(300)]  # no cap; colours wrap around the palette
    assert many[-1] == 301 and session.get_object(301).color == object_color(301 % 255)
    for bad in [(0, 0), (0, 0, 256), (0.5, 0, 0), "red", (True, 0, 0)]:
        with pytest.raises(ValueError, match="color"):
            session.set_object_color(obj, bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="both frame and mask"):
        session.add_object(frame=2)
    with pytest.raises(ValueError, match=r"\(64, 96\)"):
        session.add_object(frame=2, mask=np.ones((H, W + 1), bool))
    with pytest.raises(IndexError):
        session.add_object(frame=T, mask=first)
    with pytest.raises(UnknownObjectError):
        session.set_object_color(999, (0, 0, 0))
    assert len(session.objects) == 302


# ------------------------------------------------------------------------------------------ expressions


def test_expressions_link_edit_delete(session: AnnotationSession) -> None:
    session.accept_result("squares", _two_masklet_result())
    extra = session.add_object("extra")
    entry = session.add_expression("  the left one ", [0])
    assert (entry.exp_id, entry.text, entry.obj_ids) == ("1", "the left one", [0])
    session.set_expression_text("1", "the left square")
    session.link_object("1", extra)
    assert session.get_expression("1").obj_ids == [0, extra]
    session.unlink_object("1", 0)
    session.set_expression_objects("0", [extra, 1])
    assert [(e.exp_id, e.text, e.obj_ids) for e in session.expressions] == [
        ("0", "squares", [extra, 1]), ("1", "the left square", [extra])]
    np.testing.assert_array_equal(session.union_mask(2, session.get_expression("0").obj_ids), session.mask(1, 2))
    session.delete_expression("0")
    assert [e.exp_id for e in session.expressions] == ["1"] and len(session.objects) == 3  # objects stay
    assert session.add_expression("new").exp_id == "2"  # exp_ids are never reused


def test_accept_masklets_answers_an_existing_expression(session: AnnotationSession) -> None:
    entry = session.add_expression("the small square")
    result = _two_masklet_result()
    assert session.accept_masklets(entry.exp_id, result, indices=[1]) == [0]
    assert session.get_expression("0").obj_ids == [0]
    assert session.get_object(0).name == "the small square"
    for t in range(T):
        np.testing.assert_array_equal(session.mask(0, t), result.masklets[1].masks[t])
    assert session.accept_masklets("0", result) == [1, 2]
    assert session.get_expression("0").obj_ids == [0, 1, 2]
    for bad in ([2], [0, 0], [-1], [True]):
        with pytest.raises(ValueError, match="indices"):
            session.accept_masklets("0", result, indices=bad)
    with pytest.raises(UnknownExpressionError):
        session.accept_masklets("7", result)
    with pytest.raises(ValueError, match="does not match"):
        session.accept_masklets("0", SegmentResult([], T, H + 1, W))
    session.undo()
    assert session.get_expression("0").obj_ids == [0] and len(session.objects) == 1


def test_expression_bad_input(session: AnnotationSession) -> None:
    session.accept_result("squares", _two_masklet_result())
    for text in ["", "   ", None, 5]:
        with pytest.raises(ValueError, match="expression must be a non-empty string"):
            session.add_expression(text)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        session.set_expression_text("0", " ")
    with pytest.raises(UnknownObjectError, match=r"unknown obj_id 9; valid obj_ids: \[0, 1\]"):
        session.add_expression("x", [0, 9])
    with pytest.raises(ValueError, match="distinct"):
        session.add_expression("x", [1, 1])
    with pytest.raises(ValueError, match="sequence"):
        session.set_expression_objects("0", "01")  # type: ignore[arg-type]
    with pytest.raises(UnknownObjectError):
        session.set_expression_objects("0", [5])
    with pytest.raises(ValueError, match="already linked"):
        session.link_object("0", 1)
    session.unlink_object("0", 1)
    with pytest.raises(ValueError, match="not linked"):
        session.unlink_object("0", 1)
    with pytest.raises(UnknownObjectError):
        session.link_object("0", 4)
    for call in (lambda: session.set_expression_text("3", "x"), lambda: session.delete_expression("3"),
                 lambda: session.link_object("3", 0), lambda: session.set_expression_objects("3", [])):
        with pytest.raises(UnknownExpressionError, match=r"'3'.*valid exp_ids: \['0'\]"):
            call()
    assert [(e.exp_id, e.obj_ids) for e in session.expressions] == [("0", [0])]


# ------------------------------------------------------------------------------------------ seed 003 refinement


class RecordingRefiner(DiskRefiner):
    """Returns the prompt box filled (XYXY inclusive), so refined masks differ from their priors."""

    name = "recording"

    def refine(self, frame, points=None, labels=None, box=None, mask_prior=None, frame_key=None) -> RefineResult:
        super().refine(frame, points, labels, box, mask_prior, frame_key)
        out = np.zeros(frame.shape[:2], bool)
        x0, y0, x1, y1 = (int(v) for v in box)
        out[y0: y1 + 1, x0: x1 + 1] = True
        return RefineResult(out, 1.0)


def _disk_masks() -> SegmentResult:
    yy, xx = np.mgrid[0:H, 0:W]
    masks = np.stack([(xx - 30 - 4 * t) ** 2 + (yy - 30) ** 2 <= 12 ** 2 for t in range(T)])
    masks[5] = False  # absent on the last frame
    return SegmentResult([Masklet(0, masks, 0.9)], T, H, W)


def test_refine_seed003_recipe_on_one_frame_and_all(session: AnnotationSession) -> None:
    result = _disk_masks()
    session.accept_result("the disk", result)
    session.add_click(0, 1, 5, 5, True, DiskRefiner())  # prompts on frame 1 are dropped by the refinement
    refiner = RecordingRefiner()
    assert session.refine_seed003(0, 2, refiner, n_pos=7, n_neg=4, seed=3) == [2]
    call = refiner.calls[-1]
    prior = result.masklets[0].masks[2]
    ys, xs = np.nonzero(prior)
    np.testing.assert_array_equal(call["box"], [xs.min(), ys.min(), xs.max(), ys.max()])  # extreme coordinates
    np.testing.assert_array_equal(call["labels"], [1] * 7 + [0] * 4)
    pts = call["points"].astype(int)
    assert prior[pts[:7, 1], pts[:7, 0]].all() and not prior[pts[7:, 1], pts[7:, 0]].any()
    assert len({tuple(p) for p in pts}) == 11
    np.testing.assert_array_equal(call["mask_prior"], prior)
    assert call["frame_key"] == f"{session.video.video_id}:2"
    refined2 = session.mask(0, 2)
    assert refined2.sum() == (xs.max() - xs.min() + 1) * (ys.max() - ys.min() + 1)
    assert session.get_object(0).origin[2] == "refined" and session.can_undo

    session.undo()
    np.testing.assert_array_equal(session.mask(0, 2), prior)
    refiner.calls.clear()
    frames = session.refine_seed003(0, None, refiner, n_pos=7, n_neg=4, seed=3)
    assert frames == [0, 1, 2, 3, 4]  # every frame with a mask (frame 5 has none)
    np.testing.assert_array_equal(refiner.calls[2]["points"], call["points"])  # same points per frame, alone or all
    np.testing.assert_array_equal(session.mask(0, 2), refined2)
    assert session.prompts(0, 1) == [] and session.hand_edited_frames(0) == set()
    assert {session.get_object(0).origin[t] for t in frames} == {"refined"}
    session.undo()  # the whole refinement is ONE undo step
    for t in (0, 2, 3, 4):
        np.testing.assert_array_equal(session.mask(0, t), result.masklets[0].masks[t])
    assert [p.label for p in session.prompts(0, 1)] == [1]


def test_refine_seed003_bad_input_changes_nothing(session: AnnotationSession) -> None:
    session.accept_result("the disk", _disk_masks())
    before = _full_state(session)
    with pytest.raises(ValueError, match=r"no mask on frame\(s\) \[5\]"):
        session.refine_seed003(0, [1, 5], RecordingRefiner())
    with pytest.raises(ValueError, match="locates"):
        session.refine_seed003(0, None, FailingRefiner())
    with pytest.raises(ValueError, match="n_pos"):
        session.refine_seed003(0, 1, RecordingRefiner(), n_pos=-1)
    with pytest.raises(ValueError, match="seed"):
        session.refine_seed003(0, 1, RecordingRefiner(), seed=-2)
    with pytest.raises(IndexError):
        session.refine_seed003(0, [T], RecordingRefiner())
    with pytest.raises(UnknownObjectError):
        session.refine_seed003(4, None, RecordingRefiner())
    empty = session.add_object()
    before = _full_state(session)
    with pytest.raises(ValueError, match="no mask on any frame"):
        session.refine_seed003(empty, None, RecordingRefiner())
    assert _full_state(session) == before


# ------------------------------------------------------------------------------------------ propagation


@dataclass
class _Step:
    """Stand-in for rvos_core.propagation.PropagationStep."""

    frame: int
    mask: np.ndarray
    source: int = 0
    score: float = 1.0
    ms: float = 0.0


def test_apply_propagation_is_one_step_and_keeps_hand_edits(session: AnnotationSession) -> None:
    obj = session.add_object("tracked", frame=0, mask=_square(10, 10, 8))
    session.add_click(obj, 3, 50, 30, True, DiskRefiner())
    assert session.hand_edited_frames(obj) == {0, 3}
    clicked = session.mask(obj, 3)
    steps = [_Step(t, _square(10 + 3 * t, 10, 8)) for t in range(1, T)]
    steps.append((5, np.zeros((H, W), np.uint8)))  # a later step for frame 5 wins: "no mask"
    written = session.apply_propagation(obj, iter(steps))
    assert written == [1, 2, 4, 5]
    o = session.get_object(obj)
    assert {t: o.origin[t] for t in written} == {1: "propagated", 2: "propagated", 4: "propagated", 5: "propagated"}
    np.testing.assert_array_equal(session.mask(obj, 4), _square(22, 10, 8))
    np.testing.assert_array_equal(session.mask(obj, 3), clicked)  # hand edit kept
    assert not session.has_mask(obj, 5) and session.hand_edited_frames(obj) == {0, 3}
    assert session.undo() == "propagate"
    assert set(session.get_object(obj).origin) == {0, 3}

    assert session.apply_propagation(obj, [(3, _square(0, 0, 4))], overwrite_hand_edits=True) == [3]
    assert session.prompts(obj, 3) == [] and session.get_object(obj).origin[3] == "propagated"
    n_undo = len(session.history._undo)
    assert session.apply_propagation(obj, [(0, _square(0, 0, 4))]) == []  # only a hand-edited frame: no edit
    assert len(session.history._undo) == n_undo


def test_apply_propagation_errors_change_nothing(session: AnnotationSession) -> None:
    obj = session.add_object("tracked", frame=0, mask=_square(10, 10, 8))
    before = _full_state(session)

    def failing():
        yield 1, _square(1, 1, 3)
        raise RuntimeError("propagation model failed")

    with pytest.raises(RuntimeError, match="failed"):
        session.apply_propagation(obj, failing())
    with pytest.raises(ValueError, match=r"propagation step 1 \(frame 2\) mask must have shape"):
        session.apply_propagation(obj, [(1, _square(1, 1, 3)), (2, np.ones((3, 3), bool))])
    with pytest.raises(ValueError, match="propagation step 0: expected a \\(frame, mask\\) pair"):
        session.apply_propagation(obj, [42])
    with pytest.raises(IndexError, match="out of range"):
        session.apply_propagation(obj, [(T, _square(1, 1, 3))])
    with pytest.raises(UnknownObjectError):
        session.apply_propagation(obj + 1, [])
    with pytest.raises(UnknownObjectError):
        session.hand_edited_frames(obj + 1)
    assert _full_state(session) == before


# ------------------------------------------------------------------------------------------ undo across new edits


def test_undo_redo_across_new_edit_types(session: AnnotationSession, tmp_path: Path) -> None:
    refiner = RecordingRefiner()
    session.accept_result("squares", _two_masklet_result())
    davis = tmp_path / "davis"
    session.export_davis_pngs(davis)
    session.export_prediction_pngs(tmp_path / "pred", "0")
    states = [_full_state(session)]
    edits = [
        lambda: session.add_object("late", frame=3, mask=_square(60, 40, 6), color=(5, 6, 7)),
        lambda: session.set_object_color(0, (200, 100, 0)),
        lambda: session.add_expression("the late one", [2]),
        lambda: session.set_expression_text("1", "the late square"),
        lambda: session.link_object("1", 0),
        lambda: session.unlink_object("1", 2),
        lambda: session.set_expression_objects("0", [2, 1]),
        lambda: session.accept_masklets("1", _two_masklet_result(), [0]),
        lambda: session.refine_seed003(1, None, refiner),
        lambda: session.apply_propagation(2, [(t, _square(60 - 5 * t, 40, 6)) for t in range(T)]),
        lambda: session.import_davis(davis),
        lambda: session.import_prediction_pngs(tmp_path / "pred", "0"),
        lambda: session.delete_expression("0"),
    ]
    for edit in edits:
        edit()
        states.append(_full_state(session))
    assert all(a != b for a, b in zip(states, states[1:]))
    for k in range(len(edits), 0, -1):
        session.undo()
        assert _full_state(session) == states[k - 1], f"undo to state {k - 1}"
    for k in range(1, len(edits) + 1):
        session.redo()
        assert _full_state(session) == states[k], f"redo to state {k}"


# ------------------------------------------------------------------------------------------ import / export round trips


def _masks_and_expressions(s: AnnotationSession) -> tuple[dict, list]:
    masks = {(o.obj_id, t): s.mask(o.obj_id, t).tobytes() for o in s.objects for t in range(s.num_frames)}
    return masks, [(e.exp_id, e.text, e.obj_ids) for e in s.expressions]


def test_mevis_zip_export_import_round_trip(session: AnnotationSession, tmp_path: Path) -> None:
    session.accept_result("squares", _two_masklet_result())
    session.add_click(0, 2, 60, 10, True, DiskRefiner())
    gap = session.add_object("deleted")
    session.delete_object(gap)  # obj_ids 0, 1, 3: the gap survives the round trip
    late = session.add_object("late", frame=5, mask=_square(3, 50, 5))
    session.add_expression("the late one", [late, 0])
    session.add_expression("nothing yet")
    out = session.export_mevis_zip(tmp_path / "split.zip")
    back = AnnotationSession.from_mevis(out, session.video_name, session.video)
    assert _masks_and_expressions(back) == _masks_and_expressions(session)
    assert [o.obj_id for o in back.objects] == [0, 1, 3] and back.video_name == session.video_name
    assert {o.origin[t] for o in back.objects for t in range(T)} == {"import"}
    assert not back.can_undo
    assert back.add_object() == 4 and back.add_expression("next").exp_id == "3"  # ids continue after the import


def test_from_mevis_reads_a_synthetic_split_folder(tmp_path: Path) -> None:
    from rvos_core.formats.mevis import read_mevis_split
    from rvos_core.synthetic import write_split

    split_dir = write_split(tmp_path / "split", videos=2, seed=5, frames=4, size=(48, 64), progress=False)
    s = AnnotationSession.from_mevis(split_dir, "synth_00001")  # frames from JPEGImages/synth_00001
    assert (s.num_frames, s.height, s.width, s.video_name) == (4, 48, 64, "synth_00001")
    with read_mevis_split(split_dir) as split:
        exps = split.expressions("synth_00001")
        assert [(e.exp_id, e.text, e.obj_ids) for e in s.expressions] == [
            (k, e.exp, e.obj_id) for k, e in exps.items()]
        for k, e in exps.items():
            np.testing.assert_array_equal(
                np.stack([s.union_mask(t, e.obj_id) for t in range(4)]), split.expression_masks("synth_00001", k))
    with pytest.raises(ValueError, match=r"'nope' is not in the split .*synth_00000"):
        AnnotationSession.from_mevis(split_dir, "nope")
    # another clip's frames:
    with pytest.raises(ValueError, match=r"4 frames of 64x48, but the video .* has 6 frames of 96x64"):
        AnnotationSession.from_mevis(split_dir, "synth_00000", open_video(_write_clip(tmp_path / "toy")))


def test_from_mevis_zip_needs_the_video(session: AnnotationSession, tmp_path: Path) -> None:
    session.accept_result("squares", _two_masklet_result())
    out = session.export_mevis_zip(tmp_path / "split.zip")
    with pytest.raises(ValueError, match="is a zip; pass the video"):
        AnnotationSession.from_mevis(out, session.video_name)


def test_davis_export_import_round_trip(session: AnnotationSession, tmp_path: Path) -> None:
    from rvos_core.formats.davis import MaskOverlapError
    from rvos_core.masks import read_palette_png, voc_palette

    session.accept_result("squares", _two_masklet_result())
    session.delete_object(0)
    late = session.add_object("late", frame=5, mask=_square(3, 50, 5))
    paths = session.export_davis_pngs(tmp_path / "ann")
    assert [p.name for p in paths] == [f"{t:05d}.png" for t in range(T)]
    ids = read_palette_png(paths[5])
    assert set(np.unique(ids)) == {0, 2, late + 1}  # palette id = obj_id + 1
    from PIL import Image
    assert tuple(np.array(Image.open(paths[5]).getpalette()[: 3 * 4])[9:12]) == tuple(voc_palette()[3])

    back = AnnotationSession.from_davis(tmp_path / "ann", session.video)
    assert [o.obj_id for o in back.objects] == [1, late]
    assert _masks_and_expressions(back)[0] == _masks_and_expressions(session)[0]
    assert back.get_object(late).color == session.get_object(late).color

    mapping = session.import_davis(tmp_path / "ann")  # into a live session: new ids, one undo step
    assert mapping == {2: 3, 3: 4}
    for pid, obj_id in mapping.items():
        for t in range(T):
            np.testing.assert_array_equal(session.mask(obj_id, t), session.mask(pid - 1, t))
    assert session.undo() == "import DAVIS" and len(session.objects) == 2

    session.set_mask(late, 0, session.mask(1, 0), "manual")  # overlaps object 1 on frame 0
    with pytest.raises(MaskOverlapError, match="frame '00000'.*objects 2 and 3 overlap"):
        session.export_davis_pngs(tmp_path / "ann2")
    session.export_davis_pngs(tmp_path / "ann2", on_overlap="last")
    assert (read_palette_png(tmp_path / "ann2" / "00000.png") == late + 1).sum() == session.mask(late, 0).sum()
    with pytest.raises(FileExistsError):
        session.export_davis_pngs(tmp_path / "ann", on_overlap="last")
    with pytest.raises(ValueError, match="6 frames"):
        AnnotationSession.from_davis(tmp_path / "ann", open_video(BLACKSWAN / "JPEGImages"))


def test_from_davis_reads_real_davis2016_annotations() -> None:
    s = AnnotationSession.from_davis(BLACKSWAN / "Annotations", open_video(BLACKSWAN / "JPEGImages"))
    gt = _blackswan_masks()
    assert [o.obj_id for o in s.objects] == [0]
    for t in (0, 25, 49):
        np.testing.assert_array_equal(s.mask(0, t), gt[t])


def test_prediction_pngs_export_import(session: AnnotationSession, tmp_path: Path) -> None:
    entry = session.accept_result("squares", _two_masklet_result())
    session.export_prediction_pngs(tmp_path / "pred", entry.exp_id)
    other = AnnotationSession(session.video)
    other.add_expression("squares")
    obj = other.import_prediction_pngs(tmp_path / "pred", "0")
    assert other.get_expression("0").obj_ids == [obj] and other.get_object(obj).name == "squares"
    for t in range(T):
        np.testing.assert_array_equal(other.mask(obj, t), session.union_mask(t))
    other.add_expression("missing")
    with pytest.raises(ValueError, match="expression '1'.*missing"):
        other.import_prediction_pngs(tmp_path / "pred", "1")
    (tmp_path / "pred" / "toyclip" / "0" / "00003.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="00003.png"):
        other.import_prediction_pngs(tmp_path / "pred", "0")
    with pytest.raises(UnknownExpressionError):
        other.import_prediction_pngs(tmp_path / "pred", "9")
    assert len(other.objects) == 1
