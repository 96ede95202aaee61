"""The app's files: the per-user engine choice with its predictions (:class:`EngineChoiceMixin`),
the exports (:class:`ExportMixin`), both mixed into :class:`demo.service.Workbench`, and the helpers
that copy uploads into the user's private folder, unpack a zip of frames and zip exports.

Engine choice (:meth:`demo.service.Workbench.set_engine`): each user's Run uses the app's model (default) or
precomputed predictions (:class:`rvos_core.engines.predictions.PredictionsEngine`: a prediction
folder / zip on the server or an uploaded zip, plus a ``meta_expressions.json`` when none is
inside). The choice is per user (kept on the user's :class:`demo.store.Workspace`, closed with it);
uploads are copied into the user's private folder. Predictions are looked up by the
open session's video name, so an uploaded clip matches its MeViS folder name.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from demo.store import Workspace
from demo.values import ProgressFn

#: Frame images taken from an uploaded zip (as ``rvos_core.video.FRAME_EXTENSIONS``).
ZIP_FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
#: Largest uncompressed size accepted for a zip of frames (bytes).
MAX_ZIP_BYTES = 2 * 1024**3
#: What Run uses (per user): the app's model, or precomputed predictions (see :meth:`Workbench.set_engine`).
ENGINE_KINDS = ("model", "predictions")


class EngineChoiceMixin:
    """:class:`demo.service.Workbench`'s choice of what Run uses (:meth:`set_engine`); uses its ``store``
    and ``model``."""

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


class ExportMixin:
    """:class:`demo.service.Workbench`'s exports into the user's private folder; they use its helpers
    (``_workspace``, ``_session``)."""

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

    @staticmethod
    def _require_objects(ws: Workspace) -> None:
        if not ws.session.state.objects:
            raise ValueError("nothing to export yet: run an expression or click on an object first")


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
