"""Service layer between the Gradio widgets and the library (no gradio import here).

Every method takes the caller's ``session_hash``, looks up that user's :class:`~demo.store.Workspace`,
calls ``rvos_core`` (video → engine → session → refiner / propagation → export) and returns plain
data: a :class:`FrameView` for anything that changes what is shown, a path for exports. User
mistakes raise ``ValueError`` / ``FileNotFoundError`` / ``LookupError`` with a message meant for the
user; :mod:`demo.ui` turns them into ``gr.Error``. Models are shared: the engine and refiner come
from the registries (or the injected factories), never from per-user state.

Autosave: every clip opened gets a fresh workspace folder under the user's private folder
(:meth:`demo.store.Workspace.new_autosave_dir`) and the session autosaves there after every edit,
undo and redo (:meth:`rvos_core.session.AnnotationSession.attach_workspace`). :meth:`Workbench.resume`
reopens such a folder (listed by :meth:`Workbench.workspaces`, or any server path) on the open clip;
a workspace of another video is refused with the library's message naming both videos.

The parts live in sibling modules and are re-exported here (this is the public import path):
:mod:`demo.values` (the returned views, input checks), :mod:`demo.propagation` (propagation job,
Propagate / Stop) and :mod:`demo.files` (engine choice, exports, uploads).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

# The public names of the sibling modules are re-exported here (see __all__): the app and the tests
# import them from demo.service.
from demo.files import (
    ENGINE_KINDS,
    MAX_ZIP_BYTES,
    ZIP_FRAME_EXTENSIONS,
    EngineChoiceMixin,
    ExportMixin,
    _extract_frames,
    _remove_upload,
)
from demo.propagation import DIRECTIONS, PropagationJob, PropagationMixin, PropagationProgress
from demo.store import SessionStore, Workspace
from demo.values import (
    ExpressionInfo,
    FrameView,
    ObjectInfo,
    ProgressFn,
    _as_obj_id,
    _as_obj_ids,
    _as_pixel,
    _expression_text,
    _object_info,
    _require_exp_id,
    _require_obj_id,
    parse_color,
)

if TYPE_CHECKING:
    from rvos_core.session import AnnotationSession

__all__ = [
    "CLIP_EXTENSIONS",
    "ZIP_FRAME_EXTENSIONS",
    "MAX_ZIP_BYTES",
    "DIRECTIONS",
    "REFINE_SCOPES",
    "ENGINE_KINDS",
    "SLOW_SCRUB_GAP",
    "ProgressFn",
    "ObjectInfo",
    "ExpressionInfo",
    "FrameView",
    "PropagationProgress",
    "PropagationJob",
    "Workbench",
    "parse_color",
]

#: Extensions accepted for an uploaded clip (a zip holds a folder of frames).
CLIP_EXTENSIONS = (".mp4", ".webm", ".avi", ".mov", ".mkv", ".zip")
#: What "Refine" works on: the shown frame, or every frame where the object has a mask.
REFINE_SCOPES = ("frame", "all")
#: Keyframe gap (frames) above which an opened clip gets a background fast-scrubbing copy (demo.scrub), or,
#: with ``scrub_copies=False``, the clip line suggests re-encoding it (see rvos_core.video).
SLOW_SCRUB_GAP = 60


def _default_engine_factory(name: str):
    from rvos_core.engines.registry import get_engine

    return get_engine(name)


def _default_refiner_factory(name: str):
    from rvos_core.refiners.registry import load_refiner

    return load_refiner(name)


class Workbench(EngineChoiceMixin, PropagationMixin, ExportMixin):
    """The app's operations on per-user workspaces.

    Args:
        store: the per-user workspace store.
        sample: path of the clip opened on page load.
        model: engine name for :func:`rvos_core.engines.registry.get_engine`.
        refiner: refiner name for :func:`rvos_core.refiners.registry.load_refiner` (``"auto"``, ``"grabcut"``, …).
        engine_factory: ``name → Engine``; default the shared registry (tests may inject one).
        refiner_factory: ``name → Refiner``; default the shared registry.
        scrub_copies: re-encode opened clips whose keyframes are more than :data:`SLOW_SCRUB_GAP` frames
            apart in the background and swap the copy in when ready (:mod:`demo.scrub`).

    Propagate / Stop, the engine choice and the exports are inherited from the mixins of
    :mod:`demo.propagation` and :mod:`demo.files`.
    """

    def __init__(self, store: SessionStore, sample: str | Path, model: str = "clip-rvos-tiny",
                 refiner: str = "auto", engine_factory: Callable | None = None,
                 refiner_factory: Callable | None = None, scrub_copies: bool = True):
        self.store = store
        self.sample = Path(sample)
        self.model = model
        self.refiner_name = refiner
        self._engine_factory = engine_factory or _default_engine_factory
        self._refiner_factory = refiner_factory or _default_refiner_factory
        self._refiner = None
        self._refiner_lock = threading.Lock()
        self.scrub_copies = bool(scrub_copies)

    # ---- status lines -------------------------------------------------------------------------

    def engine_status(self) -> str:
        """One line about the engine (from the registry; the injected engine's name under test)."""
        if self._engine_factory is not _default_engine_factory:
            return f"Engine: {self.model} (injected)."
        from rvos_core.engines.registry import engine_status

        return engine_status(self.model)

    def refiner_status(self) -> str:
        """Which refiner is active and how to install the other one."""
        if self._refiner_factory is not _default_refiner_factory:
            return f"Refiner: {self.refiner_name} (injected)."
        from rvos_core.refiners.registry import refiner_status

        return refiner_status(self.refiner_name)

    # ---- clip ---------------------------------------------------------------------------------

    def open_sample(self, session_hash: str) -> FrameView:
        """(Re)open the sample clip in a fresh annotation session (with a fresh autosave folder) for this user.

        Raises:
            FileNotFoundError / ValueError: the sample is missing or unreadable (library message).
        """
        ws = self.store.get_or_create(session_hash)
        return self._open(ws, self.sample, None)

    def open_clip(self, session_hash: str, upload: str | Path | None) -> FrameView:
        """Open an uploaded clip (video file, or a zip of frames) in a fresh annotation session.

        The upload is copied into the user's private folder (Gradio's upload cache may be cleaned
        while the clip is still open); frames are decoded lazily by the ``VideoSource``.

        Raises:
            ValueError: no file, an unsupported extension, or a clip the library cannot read
                (``rvos_core.video.VideoError`` names the file and the problem).
        """
        if not upload:
            raise ValueError("no file received; choose a video (mp4/webm/avi/mov) or a zip of frames")
        src = Path(upload)
        if src.suffix.lower() not in CLIP_EXTENSIONS:
            raise ValueError(f"unsupported file type {src.suffix or '(none)'!r} for {src.name}; "
                             f"expected one of {', '.join(CLIP_EXTENSIONS)}")
        if not src.is_file():
            raise FileNotFoundError(f"uploaded file {src.name} is missing on the server; upload it again")
        ws = self.store.get_or_create(session_hash)
        clips = ws.tmp_dir / "clips"
        clips.mkdir(exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="clip-", dir=clips))
        try:
            if src.suffix.lower() == ".zip":
                local = _extract_frames(src, folder)
            else:
                local = folder / src.name
                shutil.copyfile(src, local)
            return self._open(ws, local, src.stem)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _open(self, ws: Workspace, path: Path, name: str | None) -> FrameView:
        from rvos_core.session import AnnotationSession
        from rvos_core.video import open_video

        self._refuse_while_propagating(ws)
        video = open_video(path)
        try:
            session = AnnotationSession(video, video_name=name)
            session.attach_workspace(ws.new_autosave_dir(session.video_name))
        except BaseException:
            video.close()
            raise
        with ws.lock:
            old, old_scrub = ws.video, ws.scrub
            ws.video, ws.session, ws.scrub = video, session, None
        if old_scrub is not None:
            old_scrub.discard()
        if old is not None:
            old.close()
            _remove_upload(ws, Path(old.path))
        self._start_scrub_copy(ws, video)
        return self._view(ws, 0, f"Opened {session.video_name}. Type an expression and press Run, "
                                 "or click on an object to start one.")

    # ---- engine -------------------------------------------------------------------------------

    def run(self, session_hash: str, expression: str, frame: int, progress: ProgressFn | None = None) -> FrameView:
        """Segment ``expression`` over the whole clip with this user's engine (:meth:`set_engine`) and add
        the referred objects to the session.

        Raises:
            ValueError: empty expression or no clip open; with precomputed predictions, a video or
                expression they do not hold (``PredictionMatchError`` lists close expressions).
            FileNotFoundError: the engine's checkpoint is not installed (registry message).
        """
        expression = _expression_text(expression)
        ws = self._workspace(session_hash)
        with ws.lock:
            video, session, predictions = ws.video, ws.session, ws.engine
            ws.readers += 1
        t0 = time.perf_counter()
        try:
            if predictions is not None:  # looked up by the session's MeViS video name (uploads keep theirs)
                engine = predictions
                result = predictions.segment(video, expression, progress=progress, video_name=session.video_name)
            else:
                engine = self._engine_factory(self.model)
                result = engine.segment(video, expression, progress=progress)
        finally:
            with ws.lock:
                ws.readers -= 1
        seconds = time.perf_counter() - t0
        with ws.lock:
            if ws.session is not session:
                raise ValueError("another clip was opened while the expression ran; press Run again")
            entry = session.accept_result(expression, result)
        n = len(entry.obj_ids)
        status = (f"“{expression}”: {n} object{'s' if n != 1 else ''} found in {seconds:.1f} s "
                  f"({result.num_frames} frames, {getattr(engine, 'name', self.model)}).")
        if n == 0:
            status += " Nothing was referred; try another wording, or click on the object to add it."
        selected = entry.obj_ids[0] if n else None
        return self._view(ws, frame, status, selected=selected, selected_exp=entry.exp_id)

    # ---- viewing ------------------------------------------------------------------------------

    def show(self, session_hash: str, frame: int, status: str = "", selected: int | None = None) -> FrameView:
        """The overlay of ``frame`` (clamped to the clip) with every object's mask and clicks."""
        return self._view(self._workspace(session_hash), frame, status, selected=_as_obj_id(selected))

    def step_frame(self, session_hash: str, frame: int, delta: int) -> int:
        """``frame + delta`` clamped to the clip (for the previous / next frame buttons and keys)."""
        ws = self._workspace(session_hash)
        return self._clamp(ws, int(frame or 0) + int(delta))

    def overview(self, session_hash: str) -> tuple[list[ObjectInfo], int]:
        """Every object's mask / prompt frames and the clip's frame count (for the timeline)."""
        ws = self._workspace(session_hash)
        with ws.lock:
            return _object_info(self._session(ws)), len(ws.video)

    def workspaces(self, session_hash: str) -> list[tuple[str, str]]:
        """``(label, folder)`` of this user's autosaved workspaces, newest first (the open one marked)."""
        ws = self.store.get(session_hash)
        current = ws.session.workspace if ws.session is not None else None
        out = []
        for folder in ws.autosave_dirs():
            saved = time.strftime("%H:%M:%S", time.localtime((folder / "workspace.json").stat().st_mtime))
            mark = " (open)" if current is not None and folder == current else ""
            out.append((f"{folder.name}{mark} · saved {saved}", str(folder)))
        return out

    # ---- objects ------------------------------------------------------------------------------

    def add_object(self, session_hash: str, frame: int) -> FrameView:
        """Create a new empty object and select it (clicks then draw it)."""
        ws = self._workspace(session_hash)
        with ws.lock:
            obj_id = self._session(ws).add_object()
        return self._view(ws, frame, f"New object #{obj_id}: click on it in any frame.", selected=obj_id)

    def rename_object(self, session_hash: str, frame: int, obj_id: int | None, name: str) -> FrameView:
        """Rename object ``obj_id``.

        Raises:
            ValueError: no object selected, or an empty name. LookupError: unknown obj_id.
        """
        oid = _require_obj_id(obj_id)
        name = (name or "").strip()
        if not name:
            raise ValueError("type a name for the object first")
        return self._edit(session_hash, frame, lambda s: s.rename_object(oid, name),
                          f"Object #{oid} renamed to “{name}”.", selected=oid)

    def set_color(self, session_hash: str, frame: int, obj_id: int | None, color: str | Sequence[int]) -> FrameView:
        """Set object ``obj_id``'s display colour: ``"#rrggbb"``, ``"#rgb"``, ``"rgb(r, g, b)"`` or ``(r, g, b)``.

        Raises:
            ValueError: no object selected or an unreadable colour. LookupError: unknown obj_id.
        """
        oid = _require_obj_id(obj_id)
        rgb = parse_color(color)
        return self._edit(session_hash, frame, lambda s: s.set_object_color(oid, rgb),
                          f"Object #{oid} is now drawn in rgb{rgb}.", selected=oid)

    def delete_object(self, session_hash: str, frame: int, obj_id: int | None) -> FrameView:
        """Delete object ``obj_id`` (and its links from every expression); undo brings it back.

        Raises:
            ValueError: no object selected; a propagation of it is running. LookupError: unknown obj_id.
        """
        oid = _require_obj_id(obj_id)
        ws = self._workspace(session_hash)
        if ws.job is not None and not ws.job.finished and ws.job.obj_id == oid:
            raise ValueError(f"object #{oid} is being propagated; press Stop first")
        return self._edit(session_hash, frame, lambda s: s.delete_object(oid),
                          f"Deleted object #{oid} (Undo brings it back).")

    # ---- expressions --------------------------------------------------------------------------

    def add_expression(self, session_hash: str, frame: int, text: str,
                       obj_ids: Sequence[int | str] | None = None) -> FrameView:
        """Record a referring expression (without running the engine) referring to ``obj_ids``.

        Raises:
            ValueError: empty text or repeated ids. LookupError: an unknown obj_id.
        """
        text = _expression_text(text)
        ids = _as_obj_ids(obj_ids)
        ws = self._workspace(session_hash)
        with ws.lock:
            entry = self._session(ws).add_expression(text, ids)
        refers = ", ".join(f"#{i}" for i in entry.obj_ids) or "no object yet (tick its objects)"
        return self._view(ws, frame, f"Expression {entry.exp_id} “{entry.text}” added, referring to {refers}.",
                          selected_exp=entry.exp_id)

    def set_expression_text(self, session_hash: str, frame: int, exp_id: str | None, text: str) -> FrameView:
        """Edit expression ``exp_id``'s text.

        Raises:
            ValueError: no expression selected or empty text. LookupError: unknown exp_id.
        """
        eid = _require_exp_id(exp_id)
        text = _expression_text(text)
        return self._edit(session_hash, frame, lambda s: s.set_expression_text(eid, text),
                          f"Expression {eid} now reads “{text}”.", selected_exp=eid)

    def set_expression_objects(self, session_hash: str, frame: int, exp_id: str | None,
                               obj_ids: Sequence[int | str] | None) -> FrameView:
        """Set the objects expression ``exp_id`` refers to (its target is their union on each frame).

        Raises:
            ValueError: no expression selected, repeated ids. LookupError: unknown exp_id / obj_id.
        """
        eid = _require_exp_id(exp_id)
        ids = _as_obj_ids(obj_ids)
        refers = ", ".join(f"#{i}" for i in ids) or "no object"
        return self._edit(session_hash, frame, lambda s: s.set_expression_objects(eid, ids),
                          f"Expression {eid} refers to {refers}.", selected_exp=eid)

    def delete_expression(self, session_hash: str, frame: int, exp_id: str | None) -> FrameView:
        """Delete expression ``exp_id`` (its objects stay).

        Raises:
            ValueError: no expression selected. LookupError: unknown exp_id.
        """
        eid = _require_exp_id(exp_id)
        return self._edit(session_hash, frame, lambda s: s.delete_expression(eid),
                          f"Deleted expression {eid} (its objects stay; Undo brings it back).")

    # ---- prompts ------------------------------------------------------------------------------

    def click(self, session_hash: str, frame: int, obj_id: int | None, x: int, y: int,
              positive: bool) -> FrameView:
        """A positive / negative click at pixel ``(x, y)`` of ``frame`` for object ``obj_id``.

        With no object selected (or none existing) a new object is created first. The refiner
        re-segments that frame of that object from all of its clicks there.

        Raises:
            ValueError: a point outside the frame, an unknown object, or no clip open.
        """
        ws = self._workspace(session_hash)
        if _as_obj_id(obj_id) is None and not positive:
            raise ValueError("a negative click removes from an object: select one, or start with a positive click")
        refiner = self._get_refiner()
        with ws.lock:
            frame = self._clamp(ws, frame)
            obj_id, created = self._target_object(ws, obj_id)
            t0 = time.perf_counter()
            with _drop_new_object_on_error(ws, created):
                mask = ws.session.add_click(obj_id, frame, _as_pixel(x, "click x"), _as_pixel(y, "click y"),
                                            bool(positive), refiner)
            ms = (time.perf_counter() - t0) * 1000
        kind = "positive" if positive else "negative"
        status = (f"{'New object #%d: ' % obj_id if created else ''}{kind} click at ({int(x)}, {int(y)}) "
                  f"on frame {frame} → {int(np.count_nonzero(mask))} px in {ms:.0f} ms ({refiner.name}).")
        return self._view(ws, frame, status, selected=obj_id)

    def box(self, session_hash: str, frame: int, obj_id: int | None, box_xyxy: tuple[int, int, int, int]) -> FrameView:
        """A box prompt (XYXY pixels) on ``frame`` for ``obj_id`` (a new object if None).

        Raises:
            ValueError: a degenerate box or one outside the frame (library message).
        """
        ws = self._workspace(session_hash)
        refiner = self._get_refiner()
        x0, y0, x1, y1 = (_as_pixel(v, "box coordinate") for v in box_xyxy)
        box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        with ws.lock:
            frame = self._clamp(ws, frame)
            obj_id, created = self._target_object(ws, obj_id)
            with _drop_new_object_on_error(ws, created):
                mask = ws.session.add_box(obj_id, frame, box, refiner)
        return self._view(ws, frame, f"Box {box} on frame {frame} → {int(np.count_nonzero(mask))} px.",
                          selected=obj_id)

    def clear_clicks(self, session_hash: str, frame: int, obj_id: int | None) -> FrameView:
        """Remove the selected object's clicks on ``frame`` (its mask there goes back to the one before them)."""
        ws = self._workspace(session_hash)
        obj_id = _as_obj_id(obj_id)
        if obj_id is None or obj_id not in ws.session.state.objects:
            raise ValueError("select an object first")
        with ws.lock:
            frame = self._clamp(ws, frame)
            ws.session.clear_prompts(obj_id, frame)
        return self._view(ws, frame, f"Cleared the clicks of object #{obj_id} on frame {frame}.", selected=obj_id)

    # ---- refine and propagate -----------------------------------------------------------------

    def refine(self, session_hash: str, frame: int, obj_id: int | None, scope: str = "frame",
               progress: ProgressFn | None = None) -> FrameView:
        """Refine the object's mask with seed 003's recipe (:meth:`rvos_core.session.AnnotationSession.refine_seed003`)
        on the shown frame (``scope="frame"``) or on every frame where it has a mask (``"all"``); one undo step.

        Raises:
            ValueError: no object selected, an unknown scope, no mask to refine (library message).
        """
        oid = _require_obj_id(obj_id)
        if scope not in REFINE_SCOPES:
            raise ValueError(f"refine scope must be one of {REFINE_SCOPES}, got {scope!r}")
        ws = self._workspace(session_hash)
        refiner = self._get_refiner()
        t0 = time.perf_counter()
        with ws.lock:
            frame = self._clamp(ws, frame)
            done = self._session(ws).refine_seed003(oid, [frame] if scope == "frame" else None, refiner,
                                                    progress=progress)
        status = (f"Refined object #{oid} on {len(done)} frame{'s' if len(done) != 1 else ''} with seed 003's "
                  f"prompts ({refiner.name}) in {time.perf_counter() - t0:.1f} s (one undo step).")
        return self._view(ws, frame, status, selected=oid)

    # ---- history ------------------------------------------------------------------------------

    def undo(self, session_hash: str, frame: int) -> FrameView:
        """Undo the last edit (any frame); the shown frame is re-rendered."""
        return self._history(session_hash, frame, redo=False)

    def redo(self, session_hash: str, frame: int) -> FrameView:
        """Redo the last undone edit."""
        return self._history(session_hash, frame, redo=True)

    # ---- workspaces ---------------------------------------------------------------------------

    def resume(self, session_hash: str, folder: str | Path | None) -> FrameView:
        """Reopen an autosaved workspace folder on the open clip (:meth:`rvos_core.session.AnnotationSession.resume`).

        The session then autosaves to that folder; the previous session's folder stays listed.

        Raises:
            ValueError: no folder given; a workspace of another video (the library's message names
                both); malformed workspace files. FileNotFoundError: no such folder / no manifest.
        """
        from rvos_core.session import AnnotationSession

        text = str(folder or "").strip()
        if not text:
            raise ValueError("pick an autosaved workspace from the list, or type the server path of a workspace folder")
        path = Path(text).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"workspace folder {path} does not exist on the server")
        ws = self._workspace(session_hash)
        self._refuse_while_propagating(ws)
        session = AnnotationSession.resume(path, ws.video)
        with ws.lock:
            ws.session = session
        st = session.state
        return self._view(ws, 0, f"Resumed {path.name}: {len(st.objects)} objects, {len(st.expressions)} expressions "
                                 "(undo history starts empty); autosaving there.")

    def close(self, session_hash: str) -> None:
        """Free this user's workspace (tab closed); a running propagation is cancelled, predictions closed."""
        self.store.drop(session_hash)

    # ---- helpers ------------------------------------------------------------------------------

    def _workspace(self, session_hash: str) -> Workspace:
        ws = self.store.get(session_hash)
        if ws.session is None:
            raise LookupError("no clip is open; open a clip (or reload the page for the sample)")
        return ws

    @staticmethod
    def _session(ws: Workspace) -> AnnotationSession:
        """The workspace's session (caller holds ``ws.lock``); LookupError once the workspace was freed."""
        if ws.session is None:
            raise LookupError("this session was closed; reload the page")
        return ws.session

    @staticmethod
    def _refuse_while_propagating(ws: Workspace) -> None:
        if ws.job is not None and not ws.job.finished:
            raise ValueError("a propagation is running; press Stop (or wait for it) first")

    def _edit(self, session_hash: str, frame: int, apply: Callable[[AnnotationSession], Any], status: str,
              selected: int | None = None, selected_exp: str | None = None) -> FrameView:
        """Run one session edit under the user's lock and return the view with ``status``."""
        ws = self._workspace(session_hash)
        with ws.lock:
            apply(self._session(ws))
        return self._view(ws, frame, status, selected=selected, selected_exp=selected_exp)

    def _get_refiner(self):
        with self._refiner_lock:
            if self._refiner is None:
                self._refiner = self._refiner_factory(self.refiner_name)
            return self._refiner

    @staticmethod
    def _target_object(ws: Workspace, obj_id: int | str | None) -> tuple[int, bool]:
        """``(obj_id, created)``: the selected object, or a new one when none is selected."""
        obj_id = _as_obj_id(obj_id)
        if obj_id is None:
            return ws.session.add_object(), True
        if obj_id not in ws.session.state.objects:
            raise ValueError(f"object #{obj_id} does not exist; pick one from the list")
        return obj_id, False

    @staticmethod
    def _clamp(ws: Workspace, frame: int | float | None) -> int:
        n = len(ws.video)
        return int(min(max(int(frame or 0), 0), n - 1))

    def _history(self, session_hash: str, frame: int, redo: bool) -> FrameView:
        ws = self._workspace(session_hash)
        verb = "Redo" if redo else "Undo"
        with ws.lock:
            session = self._session(ws)
            possible = session.can_redo if redo else session.can_undo
            done = (session.redo() if redo else session.undo()) if possible else None
        return self._view(ws, frame, f"{verb}: {done}." if done else f"Nothing to {verb.lower()}.")

    # ---- fast-scrubbing copy -----------------------------------------------------------------

    def _start_scrub_copy(self, ws: Workspace, video: Any) -> None:
        """Start re-encoding ``video`` (just opened) in the background when its keyframes are far apart.

        The copy goes next to an uploaded clip (deleted with it) or, for a server file such as the
        sample, into a fresh private folder that the job owns.
        """
        from demo.scrub import ScrubCopyJob

        if not self.scrub_copies or video.is_folder or video.max_keyframe_gap <= SLOW_SCRUB_GAP:
            return
        src = Path(video.path)
        clips = ws.tmp_dir / "clips"
        try:
            src.resolve().relative_to(clips.resolve())
            folder, owned = src.parent, None
        except ValueError:
            clips.mkdir(parents=True, exist_ok=True)
            folder = owned = Path(tempfile.mkdtemp(prefix="scrub-", dir=clips))
        job = ScrubCopyJob(src, folder / f"{src.stem}.scrub.mp4", len(video), video.max_keyframe_gap,
                           owned_dir=owned, on_ready=lambda j: self._swap_in_scrub_copy(ws, j))
        with ws.lock:
            if ws.video is not video:  # another clip was opened meanwhile
                job.discard()
                return
            ws.scrub = job
        job.start()

    @staticmethod
    def _swap_in_scrub_copy(ws: Workspace, job: Any = None) -> None:
        """Swap the user's clip for its finished fast-scrubbing copy when nothing reads the clip
        outside the lock (no propagation, no Run); otherwise a later call (every view) does it.

        The job's thread has opened the copy; the check against the workspace's fingerprint decodes
        three frames of the copy only (keyframes every 15 frames: fast)."""
        with ws.lock:
            job = ws.scrub if job is None else job
            if job is None or ws.scrub is not job or job.state != "ready" or ws.session is None:
                return
            if ws.readers or (ws.job is not None and not ws.job.finished):
                return
            try:
                old = ws.session.replace_video(job.video)
            except ValueError as e:
                job.fail(str(e).splitlines()[0])
                return
            ws.video, job.state = job.video, "in use"
        old.close()

    def _view(self, ws: Workspace, frame: int, status: str, selected: int | None = None,
              selected_exp: str | None = None) -> FrameView:
        self._swap_in_scrub_copy(ws)
        with ws.lock:
            session = self._session(ws)
            frame = self._clamp(ws, frame)
            image = session.render(frame)
            info = _object_info(session)
            expressions = [ExpressionInfo(e.exp_id, e.text, tuple(e.obj_ids))
                           for e in session.state.expressions.values()]
            workspace = None if session.workspace is None else str(session.workspace)
            meta = ws.video.meta
            scrub = ws.scrub
        clip = (f"**{session.video_name}** · {meta.num_frames} frames · {meta.fps:.2f} fps · "
                f"{meta.width}×{meta.height}")
        gap = ws.video.max_keyframe_gap
        if scrub is not None:
            clip += " · " + scrub.describe()
        elif gap > SLOW_SCRUB_GAP:
            clip += (f" · keyframes up to {gap} frames apart, so jumping to a frame decodes up to {gap} frames: "
                     f"`python -m rvos_core reencode IN.mp4 OUT.mp4` makes the slider fast")
        return FrameView(image=image, frame=frame, num_frames=meta.num_frames, clip_info=clip,
                         objects=[(f"#{o.obj_id} {o.name}", o.obj_id) for o in info], selected=selected,
                         status=status, object_info=info, expressions=expressions, selected_exp=selected_exp,
                         workspace=workspace)


@contextmanager
def _drop_new_object_on_error(ws: Workspace, created: bool) -> Iterator[None]:
    """Undo the creation of a just-created object when the prompt that follows it fails."""
    try:
        yield
    except BaseException:
        if created:
            ws.session.undo()
        raise
