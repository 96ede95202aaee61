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

Propagation (:meth:`Workbench.propagate`, :meth:`Workbench.stop`): one :class:`PropagationJob` per
user at a time, holding a :class:`rvos_core.propagation.CancelToken`. The frames arrive one by one
(streamed to the page) and are kept compressed; at the end they are written with
:meth:`~rvos_core.session.AnnotationSession.apply_propagation` as ONE undoable edit. Stop sets the
token (the library stops before its next frame; a frame being computed is dropped) and commits the
frames done so far, also as one edit — whichever of the Stop handler and the (cancelled) generator
gets there first commits, exactly once. A propagation that fails part-way commits nothing.

Engine choice (:meth:`Workbench.set_engine`): each user's Run uses the app's model (default) or
precomputed predictions (:class:`rvos_core.engines.predictions.PredictionsEngine`: a prediction
folder / zip on the server or an uploaded zip, plus a ``meta_expressions.json`` when none is
inside). The choice is per user (kept on the user's :class:`demo.store.Workspace`, closed with it);
uploads are copied into the user's private folder. Predictions are looked up by the
open session's video name, so an uploaded clip matches its MeViS folder name.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import threading
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from demo.store import SessionStore, Workspace

if TYPE_CHECKING:
    from rvos_core.session import AnnotationSession

logger = logging.getLogger(__name__)

#: ``progress(done, total, message)`` as in :mod:`rvos_core.engines.base`.
ProgressFn = Callable[[int, int, str], None]

#: Extensions accepted for an uploaded clip (a zip holds a folder of frames).
CLIP_EXTENSIONS = (".mp4", ".webm", ".avi", ".mov", ".mkv", ".zip")
#: Frame images taken from an uploaded zip (as ``rvos_core.video.FRAME_EXTENSIONS``).
ZIP_FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: Largest uncompressed size accepted for a zip of frames (bytes).
MAX_ZIP_BYTES = 2 * 1024**3
#: Propagation directions (as :data:`rvos_core.propagation.DIRECTIONS`).
DIRECTIONS = ("forward", "backward", "both")
#: What "Refine" works on: the shown frame, or every frame where the object has a mask.
REFINE_SCOPES = ("frame", "all")
#: What Run uses (per user): the app's model, or precomputed predictions (see :meth:`Workbench.set_engine`).
ENGINE_KINDS = ("model", "predictions")
#: Keyframe gap (frames) above which an opened clip gets a background fast-scrubbing copy (demo.scrub), or,
#: with ``scrub_copies=False``, the clip line suggests re-encoding it (see rvos_core.video).
SLOW_SCRUB_GAP = 60


@dataclass(frozen=True)
class ObjectInfo:
    """One object as the object list and the timeline show it.

    Attributes:
        obj_id: the object's id. name: its display name. color: ``(R, G, B)`` ints in 0..255.
        mask_frames: frames (0-based, ascending) where it has a non-empty mask.
        prompt_frames: frames (ascending) where it has clicks or a box.
    """

    obj_id: int
    name: str
    color: tuple[int, int, int]
    mask_frames: tuple[int, ...]
    prompt_frames: tuple[int, ...]

    @property
    def hex_color(self) -> str:
        """The colour as ``"#rrggbb"``."""
        return "#{:02x}{:02x}{:02x}".format(*self.color)


@dataclass(frozen=True)
class ExpressionInfo:
    """One referring expression: ``exp_id`` (``"0"``, ``"1"``, …), its text and the obj_ids it refers to."""

    exp_id: str
    text: str
    obj_ids: tuple[int, ...]


@dataclass
class FrameView:
    """What the page shows after an action.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB overlay of the shown frame at original size (click markers drawn).
        frame: index of the shown frame, 0-based.
        num_frames: number of frames in the clip (>= 1).
        clip_info: one Markdown line: name, frames, fps, size.
        objects: ``(label, obj_id)`` choices for the object selector.
        selected: obj_id to select, or None (the page keeps its selection).
        status: one line describing the last action.
        object_info: every object with its mask / prompt frames (object list, timeline).
        expressions: every expression, in creation order.
        selected_exp: exp_id to select, or None (the page keeps its selection).
        workspace: the folder the session autosaves to, or None.
    """

    image: np.ndarray
    frame: int
    num_frames: int
    clip_info: str
    objects: list[tuple[str, int]] = field(default_factory=list)
    selected: int | None = None
    status: str = ""
    object_info: list[ObjectInfo] = field(default_factory=list)
    expressions: list[ExpressionInfo] = field(default_factory=list)
    selected_exp: str | None = None
    workspace: str | None = None


@dataclass(frozen=True)
class PropagationProgress:
    """One propagated frame, streamed while :meth:`Workbench.propagate` runs.

    Attributes:
        frame: the frame just propagated. done / total: frames done so far / planned (both >= 1).
        image: ``(H, W, 3)`` uint8 RGB: that frame with the object's new mask overlaid in its colour.
        status: one progress line.
    """

    frame: int
    done: int
    total: int
    image: np.ndarray
    status: str


class PropagationJob:
    """One user's propagation of one object: a cancel token plus the frames done so far, committed once.

    Frames are stored compressed as they arrive (:class:`rvos_core.session.CompactMask`), so a long
    clip costs a few KB per frame. :meth:`finish` writes them with
    :meth:`~rvos_core.session.AnnotationSession.apply_propagation` (one undo step) the first time it
    is called and only returns the result afterwards; :meth:`add` refuses frames after that.

    Args:
        session: the session propagated in (the commit is skipped if the user's session changed).
        obj_id: the object. start: the start frame. direction: as :data:`DIRECTIONS`.
        total: frames planned (>= 1). overwrite: also overwrite hand-edited frames.
    """

    def __init__(self, session: AnnotationSession, obj_id: int, start: int, direction: str, total: int,
                 overwrite: bool) -> None:
        from rvos_core.propagation import CancelToken

        self.session, self.obj_id, self.start, self.direction = session, obj_id, start, direction
        self.total, self.overwrite = total, overwrite
        self.token = CancelToken()
        self.stop_handled = False  # set by Workbench.stop once it reported this job's stop
        self.sources: dict[str, int] = {}
        self.t0 = time.perf_counter()
        self._frames: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._written: list[int] | None = None

    def cancel(self) -> None:
        """Ask the propagation to stop before its next frame (see :class:`rvos_core.propagation.CancelToken`)."""
        self.token.cancel()

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called."""
        return self.token.cancelled

    @property
    def finished(self) -> bool:
        """True once the frames were committed (or abandoned)."""
        return self._written is not None

    @property
    def done(self) -> int:
        """Frames received so far."""
        return len(self._frames)

    def add(self, step: Any) -> bool:
        """Keep one :class:`rvos_core.propagation.PropagationStep`; False (nothing kept) once finished."""
        from rvos_core.session import CompactMask

        stored = CompactMask.encode(step.mask) if step.mask.any() else None
        with self._lock:
            if self._written is not None:
                return False
            self._frames[int(step.frame)] = stored
            self.sources[step.source] = self.sources.get(step.source, 0) + 1
            return True

    def finish(self, ws: Workspace) -> list[int]:
        """Commit the frames so far as one edit (first call only); returns the frames written, ascending.

        Nothing is written when the user's session is no longer the one propagated in.

        Raises:
            ValueError / LookupError: the library refused the commit (e.g. the object was deleted
                meanwhile); the job then counts as finished with nothing written.
        """
        with self._lock:
            if self._written is None:
                self._written = []
                with ws.lock:
                    if ws.session is self.session and self._frames:
                        self._written = self.session.apply_propagation(
                            self.obj_id, self._decoded(), overwrite_hand_edits=self.overwrite)
            return self._written

    def abandon(self) -> None:
        """Finish without writing anything (the propagation failed)."""
        with self._lock:
            if self._written is None:
                self._written = []

    def _decoded(self) -> Iterator[tuple[int, np.ndarray]]:
        empty = np.zeros((self.session.height, self.session.width), bool)
        for t, stored in sorted(self._frames.items()):
            yield t, (empty if stored is None else stored.decode())

    def summary(self, written: list[int]) -> str:
        """One line: frames done, written and how each was made."""
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.sources.items()))
        kept = self.done - len(written)
        seconds = time.perf_counter() - self.t0
        head = (f"Stopped after {self.done} of {self.total} frames" if self.cancelled
                else f"Propagated object #{self.obj_id} {self.direction} from frame {self.start} "
                     f"over {self.done} frames")
        wrote = (f"{len(written)} frame{'s' if len(written) != 1 else ''} written as one edit (Undo removes them)"
                 if written else "nothing written")
        return (f"{head} in {seconds:.1f} s: {wrote}{f', {kept} hand-edited kept' if kept > 0 else ''}"
                f"{f' ({kinds})' if kinds else ''}.")


def _default_engine_factory(name: str):
    from rvos_core.engines.registry import get_engine

    return get_engine(name)


def _default_refiner_factory(name: str):
    from rvos_core.refiners.registry import load_refiner

    return load_refiner(name)


class Workbench:
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

    def set_engine(self, session_hash: str, kind: str, path: str | Path | None = None,
                   upload: str | Path | None = None, meta_path: str | Path | None = None,
                   meta_upload: str | Path | None = None) -> str:
        """Choose what this user's Run uses: ``"model"`` (the app's engine) or ``"predictions"``.

        Args:
            kind: one of :data:`ENGINE_KINDS`.
            path: predictions on the server: a folder or ``.zip`` of ``<video>/<exp_id>/<frame>.png``.
            upload: an uploaded predictions ``.zip`` (copied into the user's folder; wins over ``path``).
            meta_path / meta_upload: the split's ``meta_expressions.json`` (server path / upload; the
                upload wins) when the predictions do not hold one.

        Returns:
            One status line: the engine now used and, for predictions, what they hold for the open clip.

        Raises:
            ValueError: unknown kind; no predictions given; a wrong file type; predictions or a meta
                file the library refuses (its message). FileNotFoundError: a server path that does not exist.
        """
        if kind not in ENGINE_KINDS:
            raise ValueError(f"engine must be one of {', '.join(ENGINE_KINDS)}, got {kind!r}")
        ws = self.store.get_or_create(session_hash)
        if kind == "model":
            _swap_engine(ws, None, None)
            return f"Run uses the model ({self.model})."
        engine, folder, shown = self._open_predictions(ws, path, upload, meta_path, meta_upload)
        _swap_engine(ws, engine, folder)
        return f"Run uses precomputed predictions: {shown}. {self._predictions_hint(ws, engine)}"

    def _open_predictions(self, ws: Workspace, path: str | Path | None, upload: str | Path | None,
                          meta_path: str | Path | None, meta_upload: str | Path | None) -> tuple[Any, Path, str]:
        """Build a PredictionsEngine from the user's inputs: ``(engine, folder of its uploads, description)``."""
        from rvos_core.engines.registry import load_predictions_engine

        folder = Path(tempfile.mkdtemp(prefix="predictions-", dir=ws.tmp_dir))
        try:
            source = (_uploaded_copy(upload, ".zip", folder, "predictions") if upload
                      else _server_path(path, "predictions folder or .zip"))
            meta = (_uploaded_copy(meta_upload, ".json", folder, "meta_expressions.json") if meta_upload
                    else _server_path(meta_path, "meta_expressions.json") if str(meta_path or "").strip() else None)
            engine = load_predictions_engine(source, meta_expressions=meta)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        n_exp = sum(len(engine.source.expressions(v)) for v in engine.videos())
        name = Path(upload).name if upload else str(source)
        return engine, folder, (f"{name} ({len(engine.videos())} videos, {n_exp} expression folders; "
                        f"texts from {Path(engine.expressions_from).name})")

    @staticmethod
    def _predictions_hint(ws: Workspace, engine: Any) -> str:
        """What the predictions hold for the open clip (or that they do not hold it)."""
        if ws.session is None:
            return "Open a clip whose name is one of the predicted videos."
        name = ws.session.video_name
        if name not in engine.videos():
            return (f"The open clip {name!r} is not in them; open one of: "
                    f"{', '.join(repr(v) for v in engine.videos()[:5])}{', …' if len(engine.videos()) > 5 else ''}.")
        texts = [t for e, t in engine.expressions(name).items() if e in set(engine.source.expressions(name))]
        return (f"The open clip {name!r} has {len(texts)} predicted expressions, e.g. "
                f"{', '.join(f'“{t}”' for t in texts[:3])}: type one and press Run.")

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

    def propagate(self, session_hash: str, frame: int, obj_id: int | None, direction: str = "forward",
                  window: int | float | None = None, overwrite: bool = False,
                  refit: bool = True) -> Iterator[PropagationProgress | FrameView]:
        """Propagate the object's mask from the shown frame (:func:`rvos_core.propagation.propagate`).

        Checks the arguments at once (errors are raised by this call, not by the iteration), then
        returns an iterator: one :class:`PropagationProgress` per frame, then a :class:`FrameView`
        after the commit (one undo step; see the module docstring for Stop).

        Args:
            frame: the start frame (the object must have a mask there).
            direction: ``"forward"``, ``"backward"`` or ``"both"``.
            window: frames per direction (>= 1); None or 0 for the clip's end.
            overwrite: also overwrite hand-edited frames (clicks, boxes, manual masks); by default they are kept
                and anchor the propagation.
            refit: re-fit each warped mask with the refiner (slower, sharper); False for optical flow only.

        Raises:
            ValueError: no object selected, no mask on the start frame, a bad direction / window,
                nothing to propagate, or a propagation already running. LookupError: unknown obj_id.
        """
        from rvos_core.propagation import frames_to_visit, propagate

        oid = _require_obj_id(obj_id)
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        span = _as_window(window)
        ws = self._workspace(session_hash)
        refiner = self._get_refiner() if refit else None
        with ws.lock:
            self._refuse_while_propagating(ws)
            session = self._session(ws)
            start = self._clamp(ws, frame)
            start_mask = session.mask(oid, start)
            if not start_mask.any():
                raise ValueError(f"object #{oid} has no mask on frame {start}; propagation starts from the shown "
                                 "frame: click on the object here first, or go to a frame where it has a mask")
            total = sum(len(p) for p in frames_to_visit(session.num_frames, start, direction, span))
            if total == 0:
                raise ValueError(f"nothing to propagate {direction} from frame {start} "
                                 f"(the clip has frames 0 to {session.num_frames - 1})")
            keep = session.hand_edited_frames(oid)
            color = session.state.objects[oid].color
            job = ws.job = PropagationJob(session, oid, start, direction, total, bool(overwrite))

        def existing(t: int) -> np.ndarray | None:
            with ws.lock:
                return session.mask(oid, t) if oid in session.state.objects else None

        steps = propagate(ws.video.get_frame, session.num_frames, start, start_mask, direction, span, refiner,
                          keep=keep, existing_mask=existing, overwrite=bool(overwrite), cancel=job.token,
                          frame_key_prefix=ws.video.video_id)
        return self._run_job(ws, job, steps, color)

    def _run_job(self, ws: Workspace, job: PropagationJob, steps: Iterator[Any],
                 color: tuple[int, int, int]) -> Iterator[PropagationProgress | FrameView]:
        from rvos_core.masks import overlay

        try:
            for step in steps:
                if not job.add(step):
                    break
                image = overlay(ws.video.get_frame(step.frame), [step.mask], colors=[color])
                bar = "█" * round(10 * job.done / job.total) + "░" * (10 - round(10 * job.done / job.total))
                yield PropagationProgress(
                    step.frame, job.done, job.total, image,
                    f"Propagating object #{job.obj_id} {job.direction}: {bar} {job.done}/{job.total} · frame "
                    f"{step.frame} ({step.source}, {step.ms:.0f} ms). Stop (Esc) keeps what is done.")
        except GeneratorExit:  # the page cancelled the event (Stop): commit what is done, quietly
            job.cancel()
            _quietly(lambda: job.finish(ws))
            raise
        except BaseException:
            job.abandon()
            raise
        written = job.finish(ws)
        yield self._view(ws, job.start, job.summary(written), selected=job.obj_id)

    def stop(self, session_hash: str, frame: int) -> FrameView:
        """Stop this user's propagation: no further frame is computed, the frames done are committed as one edit.

        Returns the view of ``frame`` with a status line (also when nothing was running).
        """
        ws = self._workspace(session_hash)
        job = ws.job
        if job is None or job.stop_handled or (job.finished and not job.cancelled):
            return self._view(ws, frame, "Nothing to stop: no propagation is running.")
        job.cancel()
        written = job.finish(ws)
        job.stop_handled = True
        return self._view(ws, frame, job.summary(written), selected=job.obj_id)

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

    # ---- export -------------------------------------------------------------------------------

    def export_zip(self, session_hash: str, progress: ProgressFn | None = None) -> Path:
        """Write the session as a MeViS zip into the user's private folder; returns its path."""
        ws = self._workspace(session_hash)
        self._require_objects(ws)
        path = ws.export_path(ws.session.video_name, ".zip")
        with ws.lock:
            ws.session.export_mevis_zip(path, progress=progress)
        return path

    def export_mp4(self, session_hash: str, progress: ProgressFn | None = None) -> Path:
        """Write the overlay video (every frame, every object) into the user's private folder."""
        ws = self._workspace(session_hash)
        path = ws.export_path(ws.session.video_name + "-overlay", ".mp4")
        with ws.lock:
            ws.session.export_overlay_mp4(path, progress=progress)
        return path

    def export_davis(self, session_hash: str) -> Path:
        """Write every object as DAVIS palette PNGs (pixel value ``obj_id + 1``; where objects overlap the
        higher obj_id wins), zipped as ``<video_name>/<frame>.png``; returns the zip's path.

        Raises:
            ValueError: no objects; an obj_id above 254 (library message).
        """
        ws = self._workspace(session_hash)
        self._require_objects(ws)
        folder = ws.export_path(ws.session.video_name + "-davis", "")
        try:
            with ws.lock:
                session = self._session(ws)
                session.export_davis_pngs(folder / session.video_name, on_overlap="last")
            return _zip_folder(folder, folder.with_name(folder.name + ".zip"))
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def export_predictions(self, session_hash: str) -> Path:
        """Write every expression's masks in the MeViS prediction layout (``<video>/<exp_id>/<frame>.png``,
        0/255, the union of its objects), zipped for submission; returns the zip's path.

        Raises:
            ValueError: no expression yet.
        """
        from rvos_core.formats.predictions import write_prediction_zip

        ws = self._workspace(session_hash)
        if not ws.session.state.expressions:
            raise ValueError("no expression to export yet: run one, or add one and tick its objects")
        folder = ws.export_path(ws.session.video_name + "-predictions", "")
        try:
            with ws.lock:
                session = self._session(ws)
                for exp_id in session.state.expressions:
                    session.export_prediction_pngs(folder, exp_id)
            return write_prediction_zip(folder.with_name(folder.name + ".zip"), folder)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

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
    def _require_objects(ws: Workspace) -> None:
        if not ws.session.state.objects:
            raise ValueError("nothing to export yet: run an expression or click on an object first")

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


def _object_info(session: AnnotationSession) -> list[ObjectInfo]:
    """Every object of ``session`` as :class:`ObjectInfo`, in creation order (caller holds the user's lock)."""
    return [ObjectInfo(o.obj_id, o.name, tuple(o.color), tuple(sorted(o.masks)), tuple(sorted(o.prompts)))
            for o in session.state.objects.values()]


def _as_obj_id(value: int | float | str | None) -> int | None:
    """An object selector value as an obj_id (None when nothing is selected).

    Raises:
        ValueError: a value that is not a whole number.
    """
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"object {value!r} is not an object id; pick one from the list") from None
    if not number.is_integer():
        raise ValueError(f"object {value!r} is not an object id; pick one from the list")
    return int(number)


def _require_obj_id(value: int | float | str | None) -> int:
    """:func:`_as_obj_id`, with ValueError when no object is selected."""
    oid = _as_obj_id(value)
    if oid is None:
        raise ValueError("select an object first (or click on the frame to start one)")
    return oid


def _as_obj_ids(values: Sequence[int | str] | None) -> list[int]:
    """A checkbox / API list of object ids as ints (None → [])."""
    if values is None:
        return []
    if isinstance(values, (str, int, float)):
        values = [values]
    return [_require_obj_id(v) for v in values]


def _require_exp_id(value: str | int | None) -> str:
    """An expression selector value as an exp_id string; ValueError when none is selected."""
    if value is None or str(value).strip() == "":
        raise ValueError("select an expression first (or add one)")
    return str(value).strip()


def _expression_text(text: str | None) -> str:
    """The expression stripped; ValueError when empty."""
    text = (text or "").strip()
    if not text:
        raise ValueError("type an expression first, e.g. “the small dog running around the woman”")
    return text


def _as_pixel(value: int | float | str, what: str) -> int:
    """A pixel coordinate from the page or the API as an int; ValueError naming ``what`` otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of pixels, got {value!r}") from None
    if not np.isfinite(number):
        raise ValueError(f"{what} must be a finite number of pixels, got {value!r}")
    return int(number)


def _as_window(value: int | float | str | None) -> int | None:
    """The propagation window: None / 0 → None (to the clip's end); else an int >= 1."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"window must be a number of frames (0 = to the clip's end), got {value!r}") from None
    if not number.is_integer() or number < 0:
        raise ValueError(f"window must be a whole number of frames >= 0 (0 = to the clip's end), got {value!r}")
    return int(number) or None


_HEX_COLOR = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")
_RGB_COLOR = re.compile(r"rgba?\(\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*(?:,\s*[\d.]+\s*)?\)")


def parse_color(value: str | Sequence[int]) -> tuple[int, int, int]:
    """A colour from the colour picker or the API as ``(R, G, B)`` ints in 0..255.

    Accepts ``"#rrggbb"``, ``"#rgb"``, ``"rgb(r, g, b)"`` / ``"rgba(r, g, b, a)"`` (alpha ignored) and
    a sequence of three ints.

    Raises:
        ValueError: anything else, or a channel outside 0..255.
    """
    if isinstance(value, str):
        text = value.strip()
        if m := _HEX_COLOR.fullmatch(text):
            digits = m.group(1) if len(m.group(1)) == 6 else "".join(c * 2 for c in m.group(1))
            return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
        if m := _RGB_COLOR.fullmatch(text):
            channels = [round(float(g)) for g in m.groups()]
        else:
            channels = []
    else:
        try:
            channels = [int(v) for v in value]
        except (TypeError, ValueError):
            channels = []
    if len(channels) != 3 or not all(0 <= c <= 255 for c in channels):
        raise ValueError(f"colour {value!r} is not #rrggbb, rgb(r, g, b) or three ints in 0..255")
    return channels[0], channels[1], channels[2]


def _quietly(fn: Callable[[], Any]) -> None:
    """Call ``fn``; a user-facing error is logged instead of raised (where nobody can be told, e.g. a
    cancelled stream)."""
    try:
        fn()
    except (ValueError, LookupError, OSError) as exc:
        logger.warning("propagation commit after cancel failed: %s", exc)


@contextmanager
def _drop_new_object_on_error(ws: Workspace, created: bool) -> Iterator[None]:
    """Undo the creation of a just-created object when the prompt that follows it fails."""
    try:
        yield
    except BaseException:
        if created:
            ws.session.undo()
        raise


def _swap_engine(ws: Workspace, engine: Any, folder: Path | None) -> None:
    """Make ``engine`` (None: the app's model) this user's engine for Run, with ``folder`` holding its
    uploads; the previous one is closed and its uploads deleted."""
    with ws.lock:
        old, old_dir = ws.engine, ws.engine_dir
        ws.engine, ws.engine_dir = engine, folder
    if old is not None:
        old.close()
    if old_dir is not None:
        shutil.rmtree(old_dir, ignore_errors=True)


def _server_path(value: str | Path | None, what: str) -> Path:
    """A path typed by the user that must exist on the server.

    Raises:
        ValueError: nothing given. FileNotFoundError: no such file or folder.
    """
    text = str(value or "").strip()
    if not text:
        raise ValueError(f"give the server path of the {what}, or upload it")
    path = Path(text).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist on the server")
    return path


def _uploaded_copy(upload: str | Path, suffix: str, folder: Path, name: str) -> Path:
    """Copy an uploaded file into ``folder`` (Gradio's upload cache may be cleaned while it is in use).

    Raises:
        ValueError: another extension than ``suffix``. FileNotFoundError: the upload is gone.
    """
    src = Path(upload)
    if src.suffix.lower() != suffix:
        raise ValueError(f"{src.name}: expected a {suffix} file for the {name}")
    if not src.is_file():
        raise FileNotFoundError(f"uploaded file {src.name} is missing on the server; upload it again")
    dest = folder / (name if name.endswith(suffix) else name + suffix)
    shutil.copyfile(src, dest)
    return dest


def _zip_folder(folder: Path, zip_path: Path) -> Path:
    """Zip every file under ``folder`` (paths relative to it, natural order, PNGs stored) atomically."""
    from rvos_core.fileio import atomic_output_path

    with atomic_output_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            zf.write(path, path.relative_to(folder).as_posix())
    return zip_path


def _remove_upload(ws: Workspace, clip_path: Path) -> None:
    """Delete a closed clip's copy if it is an upload in the workspace (the sample is never touched)."""
    clips = ws.tmp_dir / "clips"
    try:
        first = clip_path.resolve().relative_to(clips.resolve()).parts[0]
    except (ValueError, IndexError):
        return
    shutil.rmtree(clips / first, ignore_errors=True)


def _extract_frames(archive: Path, dest: Path) -> Path:
    """Extract the frame images of a zip into ``dest`` (one folder, names kept) and return it.

    Only ``.jpg/.jpeg/.png`` members are taken; they must all sit in one folder of the archive.

    Raises:
        ValueError: not a zip, no frame images, frames in several folders, or more than
            :data:`MAX_ZIP_BYTES` uncompressed.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{archive.name}: not a readable zip file ({e})") from None
    with zf:
        frames = [m for m in zf.infolist() if not m.is_dir() and Path(m.filename).suffix.lower() in ZIP_FRAME_EXTENSIONS
                  and not Path(m.filename).name.startswith(".") and "__MACOSX" not in m.filename]
        if not frames:
            raise ValueError(f"{archive.name}: no {'/'.join(ZIP_FRAME_EXTENSIONS)} frames inside; "
                             "expected a zip of one folder of frames")
        folders = {str(Path(m.filename).parent) for m in frames}
        if len(folders) > 1:
            raise ValueError(f"{archive.name}: frames are spread over {len(folders)} folders "
                             f"({', '.join(sorted(folders)[:3])}…); expected one folder of frames")
        total = sum(m.file_size for m in frames)
        if total > MAX_ZIP_BYTES:
            raise ValueError(f"{archive.name}: {total / 1024**3:.1f} GB of frames uncompressed; "
                             f"the limit is {MAX_ZIP_BYTES / 1024**3:.0f} GB")
        for m in frames:
            with zf.open(m) as fin, open(dest / Path(m.filename).name, "wb") as fout:
                shutil.copyfileobj(fin, fout)
    return dest
