"""Precomputed predictions: write them for a whole split (``predict``), and serve them as an engine.

Both sides use the MeViS prediction layout (Ding et al., ICCV 2023; the same as Ref-YouTube-VOS)::

    <video>/<exp_id>/<frame>.png     8-bit greyscale, 0 background / 255 referred object(s), original size

**Writing** (:func:`predict_split`, the ``predict`` CLI command): an engine is run on every
(video, expression) of a MeViS-layout split folder (``train`` / ``valid_u`` / ``valid``: masks are
not needed) and each expression's masks (the union of the engine's masklets) are written for every
frame listed in the video's ``"frames"``. One expression is one unit of work: its PNGs are written
into a staging folder ``<out>/.predict-partial-<hex>/<video>/<exp_id>/`` and the folder is then
renamed to ``<out>/<video>/<exp_id>/``, so an expression folder exists only when complete. A run
that is killed leaves at most its staging folder (removed by the next run); running again skips
every expression whose folder is complete (resume). Do not run two ``predict`` jobs on the same
output folder at once.

**Serving** (:class:`PredictionsEngine`): ``segment(video, expression)`` returns a researcher's
precomputed masks for that video and expression as one masklet, so the app and the CLI can show,
correct and export them like the model's. The video is matched by name (``video_name=`` when given,
else the opened video's file stem or folder name); the expression by its text, compared after
collapsing whitespace and case-folding, against a MeViS ``meta_expressions.json`` (which maps
``exp_id → text`` per video; found inside the prediction folder/zip, or given) or an explicit
``video → {exp_id: text}`` mapping. Anything that does not match raises
:class:`PredictionMatchError` naming what is missing (with close expressions as candidates).
"""

from __future__ import annotations

import difflib
import os
import secrets
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rvos_core.engines.base import Engine, Masklet, ProgressFn, SegmentResult
from rvos_core.formats.predictions import PredictionSource, open_predictions

__all__ = ["PredictionMatchError", "PredictionsEngine", "PredictReport", "normalise_expression",
           "predict_split", "STAGING_PREFIX"]

#: Name prefix of the staging folders :func:`predict_split` writes expressions into (inside ``out_dir``).
STAGING_PREFIX = ".predict-partial-"
#: Largest ``meta_expressions.json`` read (bytes); MeViS ``train`` is about 5 MB.
_MAX_META_BYTES = 256 * 1024 * 1024
#: Candidates listed when an expression is not found.
_CANDIDATES = 3


class PredictionMatchError(ValueError):
    """Precomputed predictions do not cover a request: the video, the expression, its PNG folder,
    or frames of the right count / size are missing. The message names what was asked and what exists."""


def normalise_expression(text: str) -> str:
    """``text`` with runs of whitespace collapsed to one space, stripped and case-folded (the key the
    :class:`PredictionsEngine` matches expressions by)."""
    return " ".join(str(text).split()).casefold()


# ----------------------------------------------------------------------------------------------
# serving precomputed predictions
# ----------------------------------------------------------------------------------------------

def _meta_bytes(path: Path) -> tuple[bytes, str] | None:
    """The bytes of a ``meta_expressions.json`` and where they came from: ``path`` itself when it is a
    ``.json`` file, else the one at the root of a folder or the shallowest in a zip (None if absent).

    Raises:
        FileNotFoundError: ``path`` does not exist. MevisFormatError: an unreadable zip, or a file over
            :data:`_MAX_META_BYTES`.
    """
    from rvos_core.formats.mevis import META_FILE, MevisFormatError, _open_store

    if path.is_file() and path.suffix.lower() == ".json":
        if path.stat().st_size > _MAX_META_BYTES:
            raise MevisFormatError(f"{path}: over the {_MAX_META_BYTES} byte limit for a meta_expressions.json")
        return path.read_bytes(), str(path)
    store = _open_store(path, (META_FILE,), MevisFormatError)
    try:
        if not store.exists(META_FILE):
            return None
        return store.read(META_FILE), store.describe(META_FILE)
    finally:
        store.close()


def _load_meta(path: Path) -> tuple[dict[str, tuple[list[str], dict[str, Any]]], str] | None:
    """Parse the ``meta_expressions.json`` found by :func:`_meta_bytes`: ``(video → (frames,
    {exp_id: MevisExpression}), where)``, or None when a folder / zip holds none.

    Raises:
        FileNotFoundError, MevisFormatError: as :func:`_meta_bytes`; malformed JSON or fields.
    """
    from rvos_core.formats.mevis import _parse_json, _parse_meta

    found = _meta_bytes(path)
    if found is None:
        return None
    data, where = found
    return _parse_meta(_parse_json(data, where), where, needs_ids=False), where


def _check_mapping(expressions: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
    """An explicit ``video → {exp_id: text}`` mapping as plain dicts of str.

    Raises:
        ValueError: not a mapping of mappings of str → str.
    """
    if not isinstance(expressions, Mapping):
        raise ValueError(f"expressions: expected a mapping video → {{exp_id: text}}, got {type(expressions).__name__}")
    out: dict[str, dict[str, str]] = {}
    for video, exps in expressions.items():
        if not isinstance(exps, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in exps.items()):
            raise ValueError(f"expressions[{video!r}]: expected a mapping exp_id (str) → expression text (str)")
        out[str(video)] = dict(exps)
    return out


def _video_stem(video: Any) -> str:
    """The name a video is matched by: the file stem of a video file, the name of a frame folder."""
    p = Path(video.meta.path)
    return p.name if p.is_dir() or not p.suffix else p.stem


def _shown(names: list[str], limit: int = 5) -> str:
    """``'a', 'b', 'c', …`` (at most ``limit`` names, repr-quoted)."""
    return ", ".join(repr(n) for n in names[:limit]) + (", …" if len(names) > limit else "")


class PredictionsEngine:
    """An engine that answers from precomputed masks (implements :class:`rvos_core.engines.base.Engine`).

    Args:
        predictions: a folder or ``.zip`` of ``<video>/<exp_id>/<frame>.png`` (see
            :mod:`rvos_core.formats.predictions` for the accepted files and wrapping folders), or an
            open :class:`~rvos_core.formats.predictions.PredictionSource` (then not closed by :meth:`close`).
        meta_expressions: a MeViS ``meta_expressions.json`` file (or a split folder / zip holding
            one) that maps each video's ``exp_id`` to its text; None → the one inside ``predictions``
            (the shallowest in a zip; at the root of a folder).
        expressions: instead of a meta file, an explicit mapping ``video → {exp_id: text}``.
        name: the engine name reported in results.

    Raises:
        FileNotFoundError: ``predictions`` or ``meta_expressions`` does not exist.
        PredictionFormatError: ``predictions`` is an unreadable or unsafe zip.
        MevisFormatError: a malformed ``meta_expressions.json``.
        PredictionMatchError: no expressions at all (no meta file inside and none given), or the
            predictions hold no PNG.
        ValueError: both ``meta_expressions`` and ``expressions`` given, or a malformed mapping.

    Thread safety: :meth:`segment` may be called from several threads (the source is thread-safe).
    """

    def __init__(self, predictions: str | os.PathLike | PredictionSource,
                 meta_expressions: str | os.PathLike | None = None,
                 expressions: Mapping[str, Mapping[str, str]] | None = None, name: str = "predictions") -> None:
        if meta_expressions is not None and expressions is not None:
            raise ValueError("give either meta_expressions (a meta_expressions.json) or expressions (a mapping), not both")
        self.name = name
        self._owns_source = not isinstance(predictions, PredictionSource)
        self.source = open_predictions(predictions) if self._owns_source else predictions
        try:
            self._texts, self._frames, self.expressions_from = self._expression_table(meta_expressions, expressions)
            if not self.source.num_pngs():
                raise PredictionMatchError(f"{self.source.path}: no <video>/<exp_id>/<frame>.png files found")
        except BaseException:
            self.close()
            raise
        self._by_text = {video: self._text_index(exps) for video, exps in self._texts.items()}

    def _expression_table(self, meta_expressions: str | os.PathLike | None,
                          expressions: Mapping[str, Mapping[str, str]] | None
                          ) -> tuple[dict[str, dict[str, str]], dict[str, list[str]], str]:
        """``(video → {exp_id: text}, video → frame names, description of the source)``."""
        if expressions is not None:
            return _check_mapping(expressions), {}, "the given expression mapping"
        meta_path = Path(meta_expressions) if meta_expressions is not None else self.source.path
        if meta_expressions is not None and not meta_path.exists():
            raise FileNotFoundError(f"{meta_path}: no such meta_expressions.json")
        loaded = _load_meta(meta_path)
        if loaded is None:
            raise PredictionMatchError(
                f"{meta_path}: no meta_expressions.json inside to match expression texts to <video>/<exp_id>; "
                "give the split's meta_expressions.json too")
        meta, where = loaded
        texts = {video: {exp_id: e.exp for exp_id, e in exps.items()} for video, (_, exps) in meta.items()}
        frames = {video: list(names) for video, (names, _) in meta.items()}
        return texts, frames, where

    @staticmethod
    def _text_index(exps: dict[str, str]) -> dict[str, list[str]]:
        """normalised text → exp_ids (in the file's order)."""
        index: dict[str, list[str]] = {}
        for exp_id, text in exps.items():
            index.setdefault(normalise_expression(text), []).append(exp_id)
        return index

    # -- listing ---------------------------------------------------------------------------------
    def videos(self) -> list[str]:
        """Videos that have prediction PNGs, natural order."""
        return self.source.videos()

    def expressions(self, video: str) -> dict[str, str]:
        """``exp_id → text`` known for ``video`` (from the meta file / mapping); ``{}`` if none."""
        return dict(self._texts.get(video, {}))

    def close(self) -> None:
        """Close the prediction zip (if this engine opened it)."""
        if self._owns_source:
            self.source.close()

    # -- matching --------------------------------------------------------------------------------
    def find(self, video: str, expression: str) -> str:
        """The ``exp_id`` of ``expression`` in ``video`` whose PNG folder is present.

        With several exp_ids of the same normalised text, the first (in the meta file's order) that
        has predictions is taken.

        Raises:
            PredictionMatchError: the video has no predictions or no expressions; the expression is
                not among them (close candidates listed); or its ``<video>/<exp_id>/`` folder is missing.
        """
        if not self.source.has_video(video):
            held = self.source.videos()
            hint = (f"; {self.expressions_from} lists it, but no {video}/ folder holds PNGs"
                    if video in self._texts else "")
            raise PredictionMatchError(f"video {video!r} is not in the predictions {self.source.path} "
                                       f"({len(held)} videos: {_shown(held)}){hint}")
        known = self._texts.get(video)
        if not known:
            raise PredictionMatchError(f"video {video!r} has predictions but no expressions in {self.expressions_from}")
        key = normalise_expression(expression)
        ids = self._by_text[video].get(key)
        if not ids:
            raise PredictionMatchError(self._not_found(video, expression, known))
        present = [i for i in ids if i in set(self.source.expressions(video))]
        if not present:
            raise PredictionMatchError(f"expression {expression.strip()!r} is {video}/{ids[0]} in "
                                       f"{self.expressions_from}, but the predictions have no {video}/{ids[0]}/ folder")
        return present[0]

    def _not_found(self, video: str, expression: str, known: dict[str, str]) -> str:
        texts = list(dict.fromkeys(known.values()))
        by_norm = {normalise_expression(t): t for t in texts}
        close = difflib.get_close_matches(normalise_expression(expression), list(by_norm), n=_CANDIDATES, cutoff=0.5)
        listed = [by_norm[c] for c in close] or texts
        what = "closest" if close else f"{len(texts)} known"
        return (f"expression {expression.strip()!r} not found for video {video!r} in {self.expressions_from} "
                f"({what}: {_shown(listed, _CANDIDATES)})")

    def _frame_names(self, video: str, exp_id: str, num_frames: int) -> list[str]:
        """The frame names to read: the meta file's ``"frames"`` of ``video``, else the PNGs present."""
        names = self._frames.get(video) or self.source.frames(video, exp_id)
        if len(names) != num_frames:
            origin = (f"'frames' of {video!r} in {self.expressions_from}" if video in self._frames
                      else f"PNGs in {video}/{exp_id}/")
            raise PredictionMatchError(f"frame count mismatch: the predictions have {len(names)} frames ({origin}) "
                                       f"but the video has {num_frames}")
        return names

    # -- the engine ------------------------------------------------------------------------------
    def segment(self, video, expression: str, progress: ProgressFn | None = None, *,
                video_name: str | None = None) -> SegmentResult:
        """The precomputed masks of ``expression`` in ``video``.

        Args:
            video: a :class:`rvos_core.video.VideoSource` (only its geometry and path are used).
            expression: the referring expression, matched as in :func:`normalise_expression`.
            progress: ``progress(done_frames, total_frames, message)``.
            video_name: the name to look the video up by (e.g. the session's MeViS video name);
                None → the video's file stem / folder name.

        Returns:
            One masklet (obj_id 0, score 1.0) whose ``(T, H, W)`` bool masks are the PNGs (True where
            255), or no masklet when the prediction is empty on every frame. ``sampled_frames`` is
            every frame.

        Raises:
            ValueError: empty expression.
            PredictionMatchError: see :meth:`find`; a frame count that differs from the video's; a
                missing, unreadable, non-0/255 or wrongly sized PNG (the first few named).
        """
        if not (expression or "").strip():
            raise ValueError("expression is empty: type the expression text as in meta_expressions.json")
        t0 = time.perf_counter()
        name = video_name or _video_stem(video)
        exp_id = self.find(name, expression)
        meta = video.meta
        n, h, w = meta.num_frames, meta.height, meta.width
        frames = self._frame_names(name, exp_id, n)
        masks = np.zeros((n, h, w), dtype=bool)
        problems: list[str] = []
        for t, frame in enumerate(frames):
            masks[t], problem = self.source.read_mask(name, exp_id, frame, (h, w))
            if problem:
                problems.append(problem.removesuffix("; scored as an empty mask"))
            if progress is not None:
                progress(t + 1, n, f"predictions: frames {t + 1}/{n}")
        if problems:
            raise PredictionMatchError(f"{len(problems)} of {n} prediction PNGs of {name}/{exp_id} cannot be used "
                                       f"(video {w}x{h}, {n} frames): {'; '.join(problems[:3])}"
                                       f"{'; …' if len(problems) > 3 else ''}")
        masklets = [Masklet(obj_id=0, masks=masks, score=1.0)] if masks.any() else []
        return SegmentResult(masklets=masklets, num_frames=n, height=h, width=w, sampled_frames=list(range(n)),
                             engine=self.name, seconds=time.perf_counter() - t0)

    def describe(self) -> str:
        """One line: where the masks and the expression texts come from, and how many there are."""
        n_exp = sum(len(self.source.expressions(v)) for v in self.source.videos())
        return (f"{self.name}: {self.source.path} ({len(self.source.videos())} videos, {n_exp} expression folders); "
                f"texts from {self.expressions_from}")

    def __repr__(self) -> str:
        return f"PredictionsEngine({str(self.source.path)!r}, videos={len(self.source.videos())})"


# ----------------------------------------------------------------------------------------------
# writing predictions for a split
# ----------------------------------------------------------------------------------------------

@dataclass
class PredictReport:
    """What :func:`predict_split` did.

    Attributes:
        out_dir: the prediction folder.
        written: ``"<video>/<exp_id>"`` predicted by this run, in split order.
        skipped: ``"<video>/<exp_id>"`` already complete (resume), in split order.
        pngs: PNG files written by this run.
        seconds: wall time in seconds.
        engine: the engine's name (``""`` when nothing had to be predicted, so none was loaded).
        zip_path: the submission zip written, or None.
    """

    out_dir: Path
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    pngs: int = 0
    seconds: float = 0.0
    engine: str = ""
    zip_path: Path | None = None

    def summary(self) -> str:
        """One line for a terminal."""
        engine = f", engine {self.engine}" if self.engine else ""
        zipped = f"; zip {self.zip_path}" if self.zip_path else ""
        return (f"{len(self.written)} expressions predicted ({self.pngs} PNGs), {len(self.skipped)} already complete, "
                f"in {self.out_dir} ({self.seconds:.1f} s{engine}){zipped}")


def _complete(folder: Path, frames: list[str]) -> bool:
    """Whether ``folder`` holds a PNG for every frame name."""
    if not folder.is_dir():
        return False
    present = {p.name for p in folder.iterdir()}
    return all(f"{f}.png" in present for f in frames)


def _remove_stale_staging(out: Path) -> None:
    """Delete staging folders left by a killed run."""
    for p in out.glob(f"{STAGING_PREFIX}*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def _open_split_video(split_dir: Path, video: str, frames: list[str]):
    """``JPEGImages/<video>`` as a VideoSource whose frames are exactly the meta file's ``"frames"``.

    Raises:
        FileNotFoundError / VideoError: missing or unreadable frames. ValueError: the JPEG names differ.
    """
    from rvos_core.video import open_video

    src = open_video(split_dir / "JPEGImages" / video)
    if list(src.meta.frame_names) != list(frames):
        got = list(src.meta.frame_names)
        src.close()
        diff = next((f"{a!r} vs {b!r}" for a, b in zip(got, frames) if a != b), f"{len(got)} vs {len(frames)} frames")
        raise ValueError(f"{split_dir / 'JPEGImages' / video}: frame files do not match the 'frames' of {video!r} "
                         f"in meta_expressions.json (JPEG stems vs frames: {diff})")
    return src


class _SplitPredictor:
    """One :func:`predict_split` run: the engine and refiner (built on first need), the staging
    folder, and the report."""

    def __init__(self, split_path: Path, out: Path, engine: Engine | Callable[[], Engine],
                 refiner: str | None) -> None:
        self.split_path, self.out = split_path, out
        self._engine: Engine | None = engine if hasattr(engine, "segment") else None
        self._factory = engine
        self._refiner_name = refiner
        self._refiner = None
        self.stage = out / f"{STAGING_PREFIX}{secrets.token_hex(6)}"
        self.report = PredictReport(out_dir=out)

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self._factory()  # type: ignore[operator]
        self.report.engine = str(getattr(self._engine, "name", ""))
        return self._engine

    def refiner(self):
        if self._refiner_name and self._refiner is None:
            from rvos_core.refiners.registry import load_refiner

            self._refiner = load_refiner(self._refiner_name)
        return self._refiner

    def video(self, split, video: str, progress: Callable[[str], None]) -> None:
        """Predict every expression of ``video`` not yet complete; ``progress(key)`` after each."""
        frames = split.frame_names(video)
        src = None
        try:
            for exp_id, exp in split.expressions(video).items():
                key = f"{video}/{exp_id}"
                if _complete(self.out / video / exp_id, frames):
                    self.report.skipped.append(key)
                else:
                    src = src or _open_split_video(self.split_path, video, frames)
                    self.expression(src, video, exp_id, exp.exp, frames)
                    self.report.written.append(key)
                progress(key)
        finally:
            if src is not None:
                src.close()

    def expression(self, src, video: str, exp_id: str, text: str, frames: list[str]) -> None:
        """Segment one expression, write its PNGs into the staging folder, then move the folder into place."""
        from rvos_core.formats.mevis import write_prediction_pngs
        from rvos_core.pipeline import refine_result

        result = self.engine().segment(src, text)
        ref = self.refiner()
        masks = refine_result(result, src, ref) if ref is not None else result.union()
        written = write_prediction_pngs(self.stage, video, exp_id, masks, frames)
        target = self.out / video / exp_id
        if target.exists():  # an incomplete folder (e.g. a PNG deleted by hand): replaced as a whole
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.stage / video / exp_id, target)
        self.report.pngs += len(written)


def _check_dirs(split_dir: str | os.PathLike, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    split, out = Path(split_dir), Path(out_dir)
    if not split.exists():
        raise FileNotFoundError(f"{split}: no such split folder")
    if not split.is_dir():
        raise ValueError(f"{split}: predict needs a MeViS-layout split folder (JPEGImages/, meta_expressions.json); "
                         "unzip a zipped split first")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file; expected a folder for <video>/<exp_id>/<frame>.png")
    return split, out


def predict_split(split_dir: str | os.PathLike, out_dir: str | os.PathLike, engine: Engine | Callable[[], Engine], *,
                  refiner: str | None = None, zip_path: str | os.PathLike | None = None,
                  progress: ProgressFn | None = None) -> PredictReport:
    """Run ``engine`` on every (video, expression) of a MeViS-layout split and write the MeViS
    prediction layout ``out_dir/<video>/<exp_id>/<frame>.png`` (the ``predict`` CLI contract).

    Each PNG is 8-bit greyscale, 0 background / 255 the union of the engine's masklets, at the
    frame's original size, one per name in the video's ``"frames"`` (the ``JPEGImages/<video>/``
    stems, which must match). Resumable and atomic per expression (see the module docstring).

    Args:
        split_dir: split folder with ``JPEGImages/`` and ``meta_expressions.json`` (``mask_dict.json``
            not needed).
        out_dir: prediction folder (created; existing complete expressions are kept).
        engine: an :class:`~rvos_core.engines.base.Engine`, or a zero-argument callable returning
            one: called once, only when some expression still needs predicting (a finished run
            loads no model).
        refiner: None, or a refiner name (``"grabcut"``, ``"hq_sam:vit_b"``, ``"auto"``) to refine each
            masklet on each frame with seed 003's recipe before the union (as ``segment --refiner``).
        zip_path: also write a submission zip here (:func:`rvos_core.formats.predictions.write_prediction_zip`).
        progress: ``progress(done_expressions, total_expressions, "<video>/<exp_id>")``.

    Returns:
        A :class:`PredictReport`.

    Raises:
        FileNotFoundError: missing split, ``meta_expressions.json`` or frame folder.
        MevisFormatError: malformed split files. ValueError: ``split_dir`` is not a folder,
            ``out_dir`` is a file, JPEG names that differ from ``"frames"``, or an engine error
            (e.g. an empty expression). Engine / refiner loading errors propagate.
    """
    from rvos_core.formats.mevis import read_mevis_split

    t0 = time.perf_counter()
    split_path, out = _check_dirs(split_dir, out_dir)
    run = _SplitPredictor(split_path, out, engine, refiner)
    with read_mevis_split(split_path) as split:
        total = sum(len(split.expressions(v)) for v in split.videos)
        report = run.report

        def step(key: str) -> None:
            if progress is not None:
                progress(len(report.written) + len(report.skipped), total, key)

        out.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(out)
        if progress is not None:  # the work starts: the bar's clock covers engine loading too
            progress(0, total, "")
        try:
            for video in split.videos:
                run.video(split, video, step)
        finally:
            shutil.rmtree(run.stage, ignore_errors=True)
    if zip_path is not None:
        from rvos_core.formats.predictions import write_prediction_zip

        report.zip_path = write_prediction_zip(zip_path, out)
    report.seconds = time.perf_counter() - t0
    return report
