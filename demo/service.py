"""Service layer between the Gradio widgets and the library (no gradio import here).

Every method takes the caller's ``session_hash``, looks up that user's :class:`~demo.store.Workspace`,
calls ``rvos_core`` (video → engine → session → refiner → export) and returns plain data: a
:class:`FrameView` for anything that changes what is shown, a path for exports. User mistakes
raise ``ValueError`` / ``FileNotFoundError`` / ``LookupError`` with a message meant for the user;
:mod:`demo.ui` turns them into ``gr.Error``. Models are shared: the engine and refiner come from
the registries (or the injected factories), never from per-user state.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from demo.store import SessionStore, Workspace

#: ``progress(done, total, message)`` as in :mod:`rvos_core.engines.base`.
ProgressFn = Callable[[int, int, str], None]

#: Extensions accepted for an uploaded clip (a zip holds a folder of frames).
CLIP_EXTENSIONS = (".mp4", ".webm", ".avi", ".mov", ".mkv", ".zip")
#: Frame images taken from an uploaded zip (as ``rvos_core.video.FRAME_EXTENSIONS``).
ZIP_FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: Largest uncompressed size accepted for a zip of frames (bytes).
MAX_ZIP_BYTES = 2 * 1024**3


@dataclass
class FrameView:
    """What the left column shows after an action.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB overlay of the shown frame at original size (click markers drawn).
        frame: index of the shown frame, 0-based.
        num_frames: number of frames in the clip (>= 1).
        clip_info: one Markdown line: name, frames, fps, size.
        objects: ``(label, obj_id)`` choices for the object selector.
        selected: obj_id to select, or None.
        status: one line describing the last action.
    """

    image: np.ndarray
    frame: int
    num_frames: int
    clip_info: str
    objects: list[tuple[str, int]] = field(default_factory=list)
    selected: int | None = None
    status: str = ""


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
    """

    def __init__(self, store: SessionStore, sample: str | Path, model: str = "clip-rvos-tiny",
                 refiner: str = "auto", engine_factory: Callable | None = None,
                 refiner_factory: Callable | None = None):
        self.store = store
        self.sample = Path(sample)
        self.model = model
        self.refiner_name = refiner
        self._engine_factory = engine_factory or _default_engine_factory
        self._refiner_factory = refiner_factory or _default_refiner_factory
        self._refiner = None
        self._refiner_lock = threading.Lock()

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
        """(Re)open the sample clip in a fresh annotation session for this user.

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

        video = open_video(path)
        session = AnnotationSession(video, video_name=name)
        with ws.lock:
            old = ws.video
            ws.video, ws.session = video, session
        if old is not None:
            old.close()
            _remove_upload(ws, Path(old.path))
        return self._view(ws, 0, f"Opened {session.video_name}. Type an expression and press Run.")

    # ---- engine -------------------------------------------------------------------------------

    def run(self, session_hash: str, expression: str, frame: int, progress: ProgressFn | None = None) -> FrameView:
        """Segment ``expression`` over the whole clip and add the referred objects to the session.

        Raises:
            ValueError: empty expression or no clip open.
            FileNotFoundError: the engine's checkpoint is not installed (registry message).
        """
        expression = (expression or "").strip()
        if not expression:
            raise ValueError("type an expression first, e.g. “the small dog running around the woman”")
        ws = self._workspace(session_hash)
        with ws.lock:
            video, session = ws.video, ws.session
        engine = self._engine_factory(self.model)
        t0 = time.perf_counter()
        result = engine.segment(video, expression, progress=progress)
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
        return self._view(ws, frame, status, selected=selected)

    # ---- viewing and editing ------------------------------------------------------------------

    def show(self, session_hash: str, frame: int, status: str = "") -> FrameView:
        """The overlay of ``frame`` (clamped to the clip) with every object's mask and clicks."""
        return self._view(self._workspace(session_hash), frame, status)

    def add_object(self, session_hash: str, frame: int) -> FrameView:
        """Create a new empty object and select it (clicks then draw it)."""
        ws = self._workspace(session_hash)
        with ws.lock:
            obj_id = ws.session.add_object()
        return self._view(ws, frame, f"New object #{obj_id}: click on it in any frame.", selected=obj_id)

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
                mask = ws.session.add_click(obj_id, frame, int(x), int(y), bool(positive), refiner)
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
        x0, y0, x1, y1 = (int(v) for v in box_xyxy)
        box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        with ws.lock:
            frame = self._clamp(ws, frame)
            obj_id, created = self._target_object(ws, obj_id)
            with _drop_new_object_on_error(ws, created):
                mask = ws.session.add_box(obj_id, frame, box, refiner)
        return self._view(ws, frame, f"Box {box} on frame {frame} → {int(np.count_nonzero(mask))} px.",
                          selected=obj_id)

    def undo(self, session_hash: str, frame: int) -> FrameView:
        """Undo the last edit (any frame); the shown frame is re-rendered."""
        return self._history(session_hash, frame, redo=False)

    def redo(self, session_hash: str, frame: int) -> FrameView:
        """Redo the last undone edit."""
        return self._history(session_hash, frame, redo=True)

    def clear_clicks(self, session_hash: str, frame: int, obj_id: int | None) -> FrameView:
        """Remove the selected object's clicks on ``frame`` (its mask there goes back to the engine's)."""
        ws = self._workspace(session_hash)
        obj_id = _as_obj_id(obj_id)
        if obj_id is None or obj_id not in ws.session.state.objects:
            raise ValueError("select an object first")
        with ws.lock:
            frame = self._clamp(ws, frame)
            ws.session.clear_prompts(obj_id, frame)
        return self._view(ws, frame, f"Cleared the clicks of object #{obj_id} on frame {frame}.", selected=obj_id)

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

    def close(self, session_hash: str) -> None:
        """Free this user's workspace (tab closed)."""
        self.store.drop(session_hash)

    # ---- helpers ------------------------------------------------------------------------------

    def _workspace(self, session_hash: str) -> Workspace:
        ws = self.store.get(session_hash)
        if ws.session is None:
            raise LookupError("no clip is open; open a clip (or reload the page for the sample)")
        return ws

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
            possible = ws.session.can_redo if redo else ws.session.can_undo
            done = (ws.session.redo() if redo else ws.session.undo()) if possible else None
        return self._view(ws, frame, f"{verb}: {done}." if done else f"Nothing to {verb.lower()}.")

    def _view(self, ws: Workspace, frame: int, status: str, selected: int | None = None) -> FrameView:
        with ws.lock:
            frame = self._clamp(ws, frame)
            image = ws.session.render(frame)
            objects = [(f"#{oid} {obj.name}", oid) for oid, obj in ws.session.state.objects.items()]
            meta = ws.video.meta
        info = (f"**{ws.session.video_name}** · {meta.num_frames} frames · {meta.fps:.2f} fps · "
                f"{meta.width}×{meta.height}")
        return FrameView(image=image, frame=frame, num_frames=meta.num_frames, clip_info=info,
                         objects=objects, selected=selected, status=status)


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


@contextmanager
def _drop_new_object_on_error(ws: Workspace, created: bool) -> Iterator[None]:
    """Undo the creation of a just-created object when the prompt that follows it fails."""
    try:
        yield
    except BaseException:
        if created:
            ws.session.undo()
        raise


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
