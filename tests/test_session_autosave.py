"""Autosave of rvos_core.session.AnnotationSession to a workspace folder, resume after a crash
(a real child process killed with SIGKILL), and workspace errors."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from rvos_core.session import (
    WORKSPACE_MANIFEST,
    AnnotationSession,
    WorkspaceError,
    WorkspaceMismatchError,
)
from rvos_core.video import open_video
from test_session import T, DiskRefiner, _square, _two_masklet_result, _write_clip

REPO = Path(__file__).resolve().parents[1]
N_EDITS = 16


# ------------------------------------------------------------------------------------------ helpers


@pytest.fixture
def clip_dir(tmp_path: Path) -> Path:
    return _write_clip(tmp_path / "toyclip")


def _edits(s: AnnotationSession) -> list[Callable[[], object]]:
    """N_EDITS deterministic edits of every kind (the child process runs the same list)."""
    refiner = DiskRefiner()
    return [
        lambda: s.accept_result("the two squares", _two_masklet_result()),
        lambda: s.add_click(0, 2, 60, 10, True, refiner),
        lambda: s.add_box(1, 4, (0, 0, 30, 30), refiner),
        lambda: s.add_object("late", frame=3, mask=_square(40, 40, 9)),
        lambda: s.set_object_color(2, (10, 20, 30)),
        lambda: s.add_expression("the late one", [2]),
        lambda: s.set_expression_text("1", "the late square"),
        lambda: s.link_object("1", 0),
        lambda: s.apply_propagation(2, [(t, _square(40 - 4 * t, 40, 9)) for t in (4, 5)]),
        lambda: s.refine_seed003(1, None, refiner),
        lambda: s.undo(),
        lambda: s.rename_object(1, "right square"),
        lambda: s.add_click(0, 2, 12, 8, False, refiner),
        lambda: s.unlink_object("1", 0),
        lambda: s.delete_object(1),
        lambda: s.delete_expression("0"),
    ]


def _view(s: AnnotationSession) -> dict:
    """Everything a workspace must restore, in comparable form (masks as bytes)."""
    objects = []
    for o in s.objects:
        proposals = {t: (None if p.mask is None else p.mask.decode().tobytes(), p.origin)
                     for t, p in o.proposals.items()}
        masks = {t: s.mask(o.obj_id, t).tobytes() for t in range(s.num_frames)}
        objects.append((o.obj_id, o.name, o.color, masks, dict(o.origin),
                        {t: list(p) for t, p in o.prompts.items()}, proposals))
    return {"objects": objects, "expressions": [(e.exp_id, e.text, e.obj_ids) for e in s.expressions],
            "next": (s.state.next_obj_id, s.state.next_exp_id), "video_name": s.video_name}


def _expected_views(clip_dir: Path) -> list[dict]:
    """The view after 0, 1, …, N_EDITS edits, replayed in this process without a workspace."""
    s = AnnotationSession(open_video(clip_dir))
    views = [_view(s)]
    for edit in _edits(s):
        edit()
        views.append(_view(s))
    return views


def _leftovers(ws: Path) -> list[str]:
    """Temp files and object files the manifest does not name."""
    named = {o["file"] for o in json.loads((ws / WORKSPACE_MANIFEST).read_text())["objects"]}
    files = [p for p in ws.rglob("*") if p.is_file() and p.name != WORKSPACE_MANIFEST]
    return sorted(p.name for p in files if p.name not in named)


# ------------------------------------------------------------------------------------------ the child process


def _child_main(clip_dir: str, ws_dir: str, crash_edit: int) -> None:
    """Run in a child process: attach a workspace, do the edits, print ``EDIT k`` after each.

    With ``crash_edit > 0`` the process kills itself with SIGKILL inside edit ``crash_edit``'s
    autosave, after its object files are written and just before the manifest is replaced.
    """
    s = AnnotationSession(open_video(clip_dir))
    s.attach_workspace(ws_dir)
    current = {"edit": 0}
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if current["edit"] == crash_edit and Path(dst).name == WORKSPACE_MANIFEST:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace
    print("READY", flush=True)
    for k, edit in enumerate(_edits(s), start=1):
        current["edit"] = k
        edit()
        print(f"EDIT {k}", flush=True)
    print("DONE", flush=True)
    signal.pause()  # wait to be killed


def _start_child(clip_dir: Path, ws: Path, crash_edit: int = 0) -> subprocess.Popen:
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import test_session_autosave as m; "
            "m._child_main(sys.argv[3], sys.argv[4], int(sys.argv[5]))")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-c", code, str(REPO / "tests"), str(REPO), str(clip_dir), str(ws), str(crash_edit)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _read_markers(proc: subprocess.Popen, stop_after: int | None) -> int:
    """Read ``EDIT k`` lines; return how many edits were acknowledged (stop early after ``stop_after``)."""
    acknowledged = 0
    for line in proc.stdout:  # type: ignore[union-attr]
        if line.startswith("EDIT"):
            acknowledged = int(line.split()[1])
            if stop_after is not None and acknowledged >= stop_after:
                break
        elif line.startswith("DONE"):
            break
    return acknowledged


# ------------------------------------------------------------------------------------------ crash tests


def test_sigkill_at_random_points_loses_at_most_the_edit_in_progress(clip_dir: Path, tmp_path: Path) -> None:
    expected = _expected_views(clip_dir)
    rng = random.Random(20240607)
    for run, kill_after in enumerate(sorted(rng.sample(range(1, N_EDITS), 2))):
        ws = tmp_path / f"ws{run}"
        proc = _start_child(clip_dir, ws)
        try:
            acknowledged = _read_markers(proc, stop_after=kill_after)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            proc.kill()
            proc.communicate(timeout=60)
        assert acknowledged == kill_after, proc.stderr
        resumed = AnnotationSession.resume(ws, open_video(clip_dir))
        view = _view(resumed)
        matches = [j for j, v in enumerate(expected) if v == view]
        assert matches and max(matches) >= acknowledged, f"run {run}: state after {matches} edits, {acknowledged} acked"
        assert _leftovers(ws) == []
        resumed.add_object("after resume")  # the workspace keeps working
        again = AnnotationSession.resume(ws, open_video(clip_dir))
        assert _view(again) == _view(resumed)


@pytest.mark.parametrize("crash_edit", [2, 10])
def test_sigkill_inside_the_save_keeps_the_previous_state(clip_dir: Path, tmp_path: Path, crash_edit: int) -> None:
    ws = tmp_path / "ws"
    proc = _start_child(clip_dir, ws, crash_edit=crash_edit)
    acknowledged = _read_markers(proc, stop_after=None)
    proc.wait(timeout=60)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL and acknowledged == crash_edit - 1, err
    # The crash left the new object files and the new manifest's temp file behind, unnamed.
    leftovers = _leftovers(ws)
    assert any(name.startswith(f".{WORKSPACE_MANIFEST}.tmp-") for name in leftovers)
    assert any(name.startswith("obj") for name in leftovers)
    resumed = AnnotationSession.resume(ws, open_video(clip_dir))
    assert _view(resumed) == _expected_views(clip_dir)[crash_edit - 1]
    assert _leftovers(ws) == [] and not resumed.can_undo


# ------------------------------------------------------------------------------------------ in-process autosave


def test_every_edit_is_saved_and_resumed(clip_dir: Path, tmp_path: Path) -> None:
    video = open_video(clip_dir)
    s = AnnotationSession(video, video_name="my clip")
    ws = tmp_path / "deep" / "ws"
    assert s.attach_workspace(ws) == ws and s.workspace == ws
    for edit in _edits(s):
        edit()
        assert _view(AnnotationSession.resume(ws, video)) == _view(s)
    assert _leftovers(ws) == []
    manifest = json.loads((ws / WORKSPACE_MANIFEST).read_text())
    assert manifest["video"]["path"] == str(clip_dir.resolve()) and manifest["video_name"] == "my clip"
    assert manifest["expressions"] == [{"exp_id": "1", "exp": "the late square", "obj_id": [2]}]
    s.undo()
    s.undo()
    assert _view(AnnotationSession.resume(ws, video)) == _view(s)
    s.redo()
    assert _view(AnnotationSession.resume(ws, video)) == _view(s)


def test_only_changed_objects_are_rewritten(clip_dir: Path, tmp_path: Path) -> None:
    s = AnnotationSession(open_video(clip_dir))
    s.attach_workspace(tmp_path / "ws")
    s.accept_result("the two squares", _two_masklet_result())

    def files() -> dict[int, str]:
        manifest = json.loads((tmp_path / "ws" / WORKSPACE_MANIFEST).read_text())
        return {o["obj_id"]: o["file"] for o in manifest["objects"]}

    first = files()
    s.add_click(1, 3, 10, 10, True, DiskRefiner())
    second = files()
    assert second[0] == first[0] and second[1] != first[1]
    s.add_expression("left", [0])  # expressions live in the manifest: no object file rewritten
    assert files() == second
    obj_file = json.loads((tmp_path / "ws" / "objects" / second[1]).read_text())
    frame3 = next(f for f in obj_file["frames"] if f["frame"] == 3)
    assert frame3["origin"] == "click" and frame3["prompts"] == [{"kind": "point", "xy": [10.0, 10.0], "label": 1}]
    assert set(frame3["mask"]) == {"size", "counts"} and frame3["proposal"]["origin"] == "engine"
    assert sorted(p.name for p in (tmp_path / "ws" / "objects").iterdir()) == sorted(files().values())


def test_failed_autosave_rolls_the_edit_back(clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rvos_core.workspace as workspace_module

    video = open_video(clip_dir)
    s = AnnotationSession(video)
    s.attach_workspace(tmp_path / "ws")
    s.accept_result("the two squares", _two_masklet_result())
    s.rename_object(0, "left")
    saved = _view(s)
    real = workspace_module._write_json

    def disk_full(path: Path, obj: object) -> None:
        if path.name == WORKSPACE_MANIFEST:
            raise OSError(28, "No space left on device")
        real(path, obj)

    monkeypatch.setattr(workspace_module, "_write_json", disk_full)
    with pytest.raises(OSError, match="No space"):
        s.add_click(0, 1, 50, 50, True, DiskRefiner())
    with pytest.raises(OSError, match="No space"):
        s.undo()
    assert _view(s) == saved and s.get_object(0).name == "left"
    monkeypatch.setattr(workspace_module, "_write_json", real)
    assert _view(AnnotationSession.resume(tmp_path / "ws", video)) == saved
    assert s.undo() == "rename object"  # the history is intact
    assert s.redo() == "rename object" and _view(s) == saved
    assert _view(AnnotationSession.resume(tmp_path / "ws", video)) == saved


def test_open_workspace_creates_then_resumes(clip_dir: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    s = AnnotationSession.open_workspace(ws, open_video(clip_dir), video_name="named")
    s.add_object("first", frame=2, mask=_square(1, 1, 4))
    again = AnnotationSession.open_workspace(ws, open_video(clip_dir))
    assert _view(again) == _view(s) and again.video_name == "named"
    s.detach_workspace()
    s.add_object("not saved")
    assert s.workspace is None and len(AnnotationSession.resume(ws, open_video(clip_dir)).objects) == 1


def test_moved_video_still_matches(clip_dir: Path, tmp_path: Path) -> None:
    import shutil

    s = AnnotationSession(open_video(clip_dir))
    s.attach_workspace(tmp_path / "ws")
    s.accept_result("the two squares", _two_masklet_result())
    moved = shutil.copytree(clip_dir, tmp_path / "elsewhere" / "toyclip")
    resumed = AnnotationSession.resume(tmp_path / "ws", open_video(moved))
    assert _view(resumed) == _view(s)
    resumed.rename_object(0, "x")  # the manifest now names the new path
    assert json.loads((tmp_path / "ws" / WORKSPACE_MANIFEST).read_text())["video"]["path"] == str(moved.resolve())


# ------------------------------------------------------------------------------------------ errors


def test_workspace_of_another_video_is_refused(clip_dir: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    s = AnnotationSession(open_video(clip_dir))
    s.attach_workspace(ws)
    s.add_object("a")
    other = _write_clip(tmp_path / "other", shift=37)  # same size and length, other content
    with pytest.raises(WorkspaceMismatchError, match=rf"{clip_dir}.*not to {other}.*frame 0 shows other content"):
        AnnotationSession.resume(ws, open_video(other))
    shorter = tmp_path / "shorter"
    _copy_frames(clip_dir, shorter, T - 1)
    with pytest.raises(WorkspaceMismatchError, match=r"6 vs 5 frames"):
        AnnotationSession.resume(ws, open_video(shorter))
    stranger = AnnotationSession(open_video(other))
    with pytest.raises(WorkspaceMismatchError, match="belongs to the video"):
        stranger.attach_workspace(ws)
    with pytest.raises(FileExistsError, match="already holds a workspace of this video"):
        AnnotationSession(open_video(clip_dir)).attach_workspace(ws)
    stranger.add_object("b")
    stranger.attach_workspace(ws, overwrite=True)
    assert [o.name for o in AnnotationSession.resume(ws, open_video(other)).objects] == ["b"]
    assert _leftovers(ws) == []
    assert isinstance(WorkspaceMismatchError("x"), ValueError)


def _copy_frames(src: Path, dst: Path, count: int) -> None:
    """The first ``count`` frames of a clip folder, copied (a shorter clip)."""
    dst.mkdir()
    for t in range(count):
        (dst / f"{t:05d}.jpg").write_bytes((src / f"{t:05d}.jpg").read_bytes())


def test_damaged_workspaces_give_clear_errors(clip_dir: Path, tmp_path: Path) -> None:
    video = open_video(clip_dir)
    with pytest.raises(FileNotFoundError, match="no workspace manifest"):
        AnnotationSession.resume(tmp_path / "nothing", video)
    ws = tmp_path / "ws"
    s = AnnotationSession(video)
    s.attach_workspace(ws)
    s.accept_result("the two squares", _two_masklet_result())
    manifest_path = ws / WORKSPACE_MANIFEST
    good = json.loads(manifest_path.read_text())

    def resume_with(change: Callable[[dict], None]) -> None:
        broken = json.loads(json.dumps(good))
        change(broken)
        manifest_path.write_text(json.dumps(broken))
        AnnotationSession.resume(ws, video)

    manifest_path.write_text("{not json")
    with pytest.raises(WorkspaceError, match=r"workspace.json: not valid JSON"):
        AnnotationSession.resume(ws, video)
    with pytest.raises(WorkspaceError, match="not an RVOS Workbench workspace"):
        resume_with(lambda m: m.update(format="something else"))
    with pytest.raises(WorkspaceError, match=r"workspace.json.version: 99"):
        resume_with(lambda m: m.update(version=99))
    with pytest.raises(WorkspaceError, match=r"workspace.json.next_obj_id: expected an int >= 0, got '2'"):
        resume_with(lambda m: m.update(next_obj_id="2"))
    with pytest.raises(WorkspaceError, match=r"expressions\[0\].*distinct ids of the workspace's objects"):
        resume_with(lambda m: m["expressions"][0].update(obj_id=[0, 7]))
    with pytest.raises(WorkspaceError, match=r"video.thumbnails\['0'\]: expected base64"):
        resume_with(lambda m: m["video"]["thumbnails"].update({"0": "AAAA"}))
    with pytest.raises(FileNotFoundError, match="obj1-r9.json: no such workspace file"):
        resume_with(lambda m: m["objects"][1].update(file="obj1-r9.json"))
    manifest_path.write_text(json.dumps(good))
    obj_path = ws / "objects" / good["objects"][0]["file"]
    raw = json.loads(obj_path.read_text())
    raw["frames"][2]["mask"]["size"] = [10, 10]
    obj_path.write_text(json.dumps(raw))
    with pytest.raises(WorkspaceError, match=r"frames\[2\].mask: not an RLE mask of size \[64, 96\]"):
        AnnotationSession.resume(ws, video)
    raw["frames"][2]["mask"] = None
    raw["frames"][2]["origin"] = "magic"
    obj_path.write_text(json.dumps(raw))
    with pytest.raises(WorkspaceError, match=r"frames\[2\].origin: expected null or one of"):
        AnnotationSession.resume(ws, video)
    manifest_path.write_text("[]")
    with pytest.raises(WorkspaceError, match="not an RVOS Workbench workspace"):
        AnnotationSession(video).attach_workspace(ws)
    AnnotationSession(video).attach_workspace(ws, overwrite=True)  # a damaged workspace can be replaced
    assert AnnotationSession.resume(ws, video).objects == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        AnnotationSession(video).attach_workspace(tmp_path / "file")
