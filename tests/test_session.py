"""Tests for rvos_core.session.AnnotationSession: objects, expressions, clicks, undo/redo, exports."""

from __future__ import annotations

import tracemalloc
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


@pytest.fixture
def clip_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "toyclip"
    folder.mkdir()
    for t in range(T):
        cv2.imwrite(str(folder / f"{t:05d}.jpg"), _frame(t)[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 98])
    return folder


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
