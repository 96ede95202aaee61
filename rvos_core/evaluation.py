"""J&F evaluation of predicted masks against a MeViS-layout split with ground truth (``train`` / ``valid_u``).

Metrics: region similarity J and contour accuracy F per frame (:mod:`rvos_core.metrics`, the
DAVIS / MeViS definitions, Perazzi et al. CVPR 2016; Ding et al. ICCV 2023); per expression the mean
over *all* frames of the video (empty-GT frames included); dataset J and F are means over
expressions, ``J&F = (J + F) / 2``. The ground truth of an expression is the union of its objects'
masks (:meth:`rvos_core.formats.mevis.MevisSplit.expression_masks`). Predictions are read with
:mod:`rvos_core.formats.predictions` (pixel rule and accepted PNGs documented there).

Differences from the official MeViS script (``eval_mevis.py``), on purpose:

* a missing video / expression / frame, a PNG of the wrong size, a colour or non-0/255 PNG, or an
  unreadable file is listed by name in ``problems`` and scored as an *empty* mask — never dropped
  and never an exception (the official script crashes on a missing frame, gives ``[0, 0]`` for a
  missing video and accepts any image by casting grey values to bool);
* predicted videos / expressions that the split does not have are listed in ``problems`` too;
* ``workers > 1`` uses a process pool under any start method (fork, spawn, forkserver): each worker
  re-opens the split and the predictions from their paths (the official script keeps them in
  globals set under ``__main__``, so spawn workers see nothing and the scores come out NaN).
  Results do not depend on ``workers`` or the start method.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rvos_core.formats.mevis import MevisFormatError, MevisSplit, read_mevis_split
from rvos_core.formats.predictions import PredictionSource, open_predictions

__all__ = [
    "EvaluationError", "ExpressionScore", "EvaluationResult", "evaluate_predictions", "score_expression",
    "format_summary", "load_evaluation_json", "default_start_method",
]

#: Problems shown by :func:`format_summary` before "... and N more".
_SHOWN_PROBLEMS = 10


class EvaluationError(RuntimeError):
    """The evaluation itself failed (e.g. a worker process died); not raised for bad predictions."""


@dataclass
class ExpressionScore:
    """Scores of one referring expression.

    Attributes:
        video, exp_id: names as in ``meta_expressions.json``.
        exp: the expression text.
        num_objects: ``len(anno_id)``; > 1 is a multi-object expression.
        J, F: means over all ``T`` frames, fractions in [0, 1].
        j_per_frame, f_per_frame: ``(T,)`` float64 in [0, 1], in the split's ``"frames"`` order.
        problems: one line per prediction problem of this expression (empty when all PNGs were fine).
        kind: the expression's ``"kind"`` field (``"appearance"`` / ``"motion"`` / ``"mixed"``) or None.
    """

    video: str
    exp_id: str
    exp: str
    num_objects: int
    J: float
    F: float
    j_per_frame: np.ndarray
    f_per_frame: np.ndarray
    problems: list[str]
    kind: str | None = None

    @property
    def key(self) -> str:
        """``"<video>/<exp_id>"``."""
        return f"{self.video}/{self.exp_id}"

    @property
    def JF(self) -> float:  # noqa: N802 - the field's name
        """``(J + F) / 2``."""
        return (self.J + self.F) / 2.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict: ``J, F, J&F, exp, num_objects`` (the contract) plus ``video, exp_id, kind,
        num_frames, j_per_frame, f_per_frame, problems``."""
        return {"J": self.J, "F": self.F, "J&F": self.JF, "exp": self.exp, "num_objects": self.num_objects,
                "video": self.video, "exp_id": self.exp_id, "kind": self.kind,
                "num_frames": int(len(self.j_per_frame)),
                "j_per_frame": [float(v) for v in self.j_per_frame],
                "f_per_frame": [float(v) for v in self.f_per_frame], "problems": list(self.problems)}

    @classmethod
    def from_json(cls, key: str, obj: dict[str, Any]) -> ExpressionScore:
        """Inverse of :meth:`to_json`; ``key`` gives video / exp_id when the dict lacks them.

        Raises:
            ValueError: a missing or ill-typed field (named in the message).
        """
        video, _, exp_id = key.partition("/")
        try:
            return cls(video=str(obj.get("video", video)), exp_id=str(obj.get("exp_id", exp_id)),
                       exp=str(obj.get("exp", "")), num_objects=int(obj.get("num_objects", 0)),
                       J=float(obj["J"]), F=float(obj["F"]),
                       j_per_frame=np.asarray(obj.get("j_per_frame", []), dtype=np.float64),
                       f_per_frame=np.asarray(obj.get("f_per_frame", []), dtype=np.float64),
                       problems=[str(p) for p in obj.get("problems", [])], kind=obj.get("kind"))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"per_expression[{key!r}]: expected numbers J, F (and optional per-frame lists), "
                             f"got {e!r}") from None


def _mean_scores(scores: list[ExpressionScore]) -> dict[str, Any]:
    """``{"n", "J", "F", "J&F", "with_problems"}`` over expressions (NaN scores when empty)."""
    j = float(np.mean([s.J for s in scores])) if scores else math.nan
    f = float(np.mean([s.F for s in scores])) if scores else math.nan
    return {"n": len(scores), "J": j, "F": f, "J&F": (j + f) / 2.0,
            "with_problems": sum(1 for s in scores if s.problems)}


@dataclass
class EvaluationResult:
    """Result of :func:`evaluate_predictions`.

    Attributes:
        J, F, JF: dataset means over expressions, fractions in [0, 1]; ``JF = (J + F) / 2``.
        per_expression: ``"<video>/<exp_id>"`` → :class:`ExpressionScore`, in split order.
        problems: every problem, in split order, then predicted videos / expressions the split
            lacks and files that do not fit the layout.
        gt_path, pred_path: what was evaluated. seconds: wall time of the evaluation.
        bound_th: the F boundary tolerance used. workers: processes used.
    """

    J: float
    F: float
    JF: float
    per_expression: dict[str, ExpressionScore]
    problems: list[str]
    gt_path: str
    pred_path: str
    seconds: float
    bound_th: float = 0.008
    workers: int = 1

    @property
    def num_frames(self) -> int:
        """Frames scored, summed over expressions."""
        return sum(len(s.j_per_frame) for s in self.per_expression.values())

    def groups(self) -> dict[str, dict[str, Any]]:
        """Means per group: ``"all"``, ``"kind: <kind>"`` (when the split has ``"kind"`` fields;
        ``"kind: (none)"`` for expressions without one), ``"single-object"`` and ``"multi-object"``
        (``num_objects > 1``). Each value: ``{"n", "J", "F", "J&F", "with_problems"}``; groups with
        no expression are left out."""
        scores = list(self.per_expression.values())
        out = {"all": _mean_scores(scores)}
        kinds = {s.kind for s in scores}
        if kinds - {None}:
            for k in sorted(kinds, key=lambda v: (v is None, v or "")):
                out[f"kind: {k if k is not None else '(none)'}"] = _mean_scores([s for s in scores if s.kind == k])
        single = [s for s in scores if s.num_objects <= 1]
        multi = [s for s in scores if s.num_objects > 1]
        for name, group in (("single-object", single), ("multi-object", multi)):
            if group:
                out[name] = _mean_scores(group)
        return out

    def to_json(self) -> dict[str, Any]:
        """The CLI contract ``{"J", "F", "J&F", "per_expression": {key: {"J", "F", "J&F", "exp",
        "num_objects", ...}}, "problems": [str]}`` plus ``num_expressions, num_frames, groups,
        gt_path, pred_path, seconds, bound_th, workers``."""
        return {"J": self.J, "F": self.F, "J&F": self.JF,
                "per_expression": {k: s.to_json() for k, s in self.per_expression.items()},
                "problems": list(self.problems), "num_expressions": len(self.per_expression),
                "num_frames": self.num_frames, "groups": self.groups(), "gt_path": self.gt_path,
                "pred_path": self.pred_path, "seconds": self.seconds, "bound_th": self.bound_th,
                "workers": self.workers}

    def write_json(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_json` as UTF-8 JSON atomically (one line per top-level field, per
        expression and per problem); returns ``Path(path)``."""
        from rvos_core.fileio import atomic_output_path

        with atomic_output_path(path) as tmp:
            tmp.write_text(_dumps_result(self.to_json()), encoding="utf-8")
        return Path(path)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> EvaluationResult:
        """Rebuild a result from :meth:`to_json` output (e.g. a file read by :func:`load_evaluation_json`).

        Raises:
            ValueError: missing or ill-typed fields.
        """
        data = _check_result_json(obj, "evaluation JSON")
        per = {k: ExpressionScore.from_json(k, v) for k, v in data["per_expression"].items()}
        return cls(J=float(data["J"]), F=float(data["F"]), JF=float(data["J&F"]), per_expression=per,
                   problems=[str(p) for p in data["problems"]], gt_path=str(data.get("gt_path", "")),
                   pred_path=str(data.get("pred_path", "")), seconds=float(data.get("seconds", 0.0)),
                   bound_th=float(data.get("bound_th", 0.008)), workers=int(data.get("workers", 1)))


def _dumps_result(obj: dict[str, Any]) -> str:
    """JSON text of a result dict, readable and compact: nested dicts / lists one item per line."""
    def block(value: Any, indent: str) -> str:
        if isinstance(value, dict) and value:
            items = [f"{indent} {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in value.items()]
        elif isinstance(value, list) and value:
            items = [f"{indent} {json.dumps(v, ensure_ascii=False)}" for v in value]
        else:
            return json.dumps(value, ensure_ascii=False)
        open_, close = ("{", "}") if isinstance(value, dict) else ("[", "]")
        return open_ + "\n" + ",\n".join(items) + "\n" + indent + close

    fields = [f" {json.dumps(k)}: {block(v, ' ')}" for k, v in obj.items()]
    return "{\n" + ",\n".join(fields) + "\n}\n"


# ----------------------------------------------------------------------------------------------
# scoring one expression
# ----------------------------------------------------------------------------------------------

def score_expression(split: MevisSplit, source: PredictionSource, video: str, exp_id: str,
                     bound_th: float = 0.008) -> ExpressionScore:
    """Score one expression: ground truth ``(T, H, W)`` bool from ``split``, prediction from ``source``
    (problems → empty masks), J and F per frame via :func:`rvos_core.metrics.region_similarity` /
    :func:`rvos_core.metrics.contour_accuracy`.

    Raises:
        KeyError: unknown video / expression. FileNotFoundError: the split has no masks.
        MevisFormatError: undecodable ground truth, or a video without frames.
    """
    from rvos_core.metrics import contour_accuracy, region_similarity

    exps = split.expressions(video)
    if exp_id not in exps:
        raise KeyError(f"video {video!r}: expression id {exp_id!r} is not in the split {split.path}")
    e = exps[exp_id]
    frames = split.frame_names(video)
    if not frames:
        raise MevisFormatError(f"{split.path}: video {video!r} has an empty 'frames' list; nothing to score")
    gt = split.expression_masks(video, exp_id)
    pred, problems = source.read_expression(video, exp_id, frames, gt.shape[1:])
    j = np.asarray(region_similarity(gt, pred), dtype=np.float64)
    f = np.asarray(contour_accuracy(gt, pred, bound_th), dtype=np.float64)
    return ExpressionScore(video=video, exp_id=exp_id, exp=e.exp, num_objects=len(e.anno_id), J=float(j.mean()),
                           F=float(f.mean()), j_per_frame=j, f_per_frame=f, problems=problems, kind=e.kind)


# ----------------------------------------------------------------------------------------------
# worker processes
# ----------------------------------------------------------------------------------------------

#: Per-process state of pool workers: the split and predictions re-opened from paths (filled by
#: :func:`_init_worker` in worker processes only; empty in the main process).
_WORKER: dict[str, Any] = {}


def _init_worker(gt_path: str, pred_path: str, fresh_process: bool) -> None:
    """Pool initializer: open the split and the predictions in this worker.

    In a fresh (spawn / forkserver) process OpenCV is limited to one thread per worker. A forked
    worker must not touch OpenCV's thread pool at all (a pool copied mid-use by ``fork`` hangs on
    reconfiguration, OpenCV issue #5150); it inherits one thread from :func:`_forking_single_threaded`.
    """
    if fresh_process:
        import cv2

        cv2.setNumThreads(1)
    _WORKER["split"] = read_mevis_split(gt_path)
    _WORKER["pred"] = open_predictions(pred_path)


def _worker_score(video: str, exp_id: str, bound_th: float) -> ExpressionScore:
    return score_expression(_WORKER["split"], _WORKER["pred"], video, exp_id, bound_th)


@contextmanager
def _forking_single_threaded(method: str) -> Iterator[None]:
    """While forking workers, stop OpenCV's thread pool in this process so children inherit a
    clean single-threaded OpenCV; the previous thread count is restored afterwards."""
    if method != "fork":
        yield
        return
    import cv2

    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def default_start_method() -> str:
    """``"forkserver"`` where available (as Python 3.14 defaults on POSIX), else ``"spawn"``: both start
    workers from a clean process, unlike ``"fork"``, which copies the caller's threads' state."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _score_in_pool(jobs: list[tuple[str, str]], gt_path: Path, pred_path: Path, bound_th: float, workers: int,
                   mp_context: str | None, on_done: Callable[[ExpressionScore], None]) -> None:
    """Score ``jobs`` in a process pool; ``on_done`` is called in the main process per finished expression."""
    method = mp_context or default_start_method()
    ex = ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=multiprocessing.get_context(method),
                             initializer=_init_worker, initargs=(str(gt_path), str(pred_path), method != "fork"))
    try:
        with _forking_single_threaded(method):  # with fork, every worker is forked on the first submit
            pending = {ex.submit(_worker_score, v, e, bound_th) for v, e in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                on_done(fut.result())
    except BrokenProcessPool as e:
        raise EvaluationError(f"an evaluation worker process died ({e}); retry with --workers 1") from None
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------------------------
# whole split
# ----------------------------------------------------------------------------------------------

def _check_options(workers: int, bound_th: float, mp_context: str | None) -> None:
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers: expected an int >= 1, got {workers!r}")
    if not isinstance(bound_th, (int, float)) or not bound_th > 0:
        raise ValueError(f"bound_th: expected a number > 0 (fraction of the diagonal if < 1, else pixels), "
                         f"got {bound_th!r}")
    methods = multiprocessing.get_all_start_methods()
    if mp_context is not None and mp_context not in methods:
        raise ValueError(f"mp_context: expected one of {methods} or None, got {mp_context!r}")


def _extra_problems(split: MevisSplit, source: PredictionSource) -> list[str]:
    """Predicted videos / expressions the split lacks, and files outside the layout."""
    out = []
    known = set(split.videos)
    for video in source.videos():
        if video not in known:
            out.append(f"{video}: predicted video is not in the split; ignored")
            continue
        exps = split.expressions(video)
        out.extend(f"{video}/{e}: predicted expression is not in the split; ignored"
                   for e in source.expressions(video) if e not in exps)
    if source.ignored_entries:
        n = len(source.ignored_entries)
        shown = ", ".join(source.ignored_entries[:3]) + (", ..." if n > 3 else "")
        out.append(f"{source.path}: {n} file(s) outside the <video>/<exp_id>/<frame>.png layout ignored ({shown})")
    if source.num_pngs() == 0:
        out.append(f"{source.path}: no <video>/<exp_id>/<frame>.png files found")
    return out


def _open_inputs(gt: str | os.PathLike | MevisSplit,
                 pred: str | os.PathLike | PredictionSource) -> tuple[MevisSplit, PredictionSource, list[Any]]:
    """Open what was given as paths; returns the split, the source and the objects to close."""
    owned: list[Any] = []
    split = gt if isinstance(gt, MevisSplit) else read_mevis_split(gt)
    if split is not gt:
        owned.append(split)
    try:
        source = pred if isinstance(pred, PredictionSource) else open_predictions(pred)
    except BaseException:
        for o in owned:
            o.close()
        raise
    if source is not pred:
        owned.append(source)
    return split, source, owned


def evaluate_predictions(gt: str | os.PathLike | MevisSplit, pred: str | os.PathLike | PredictionSource, *,
                         workers: int = 1, bound_th: float = 0.008,
                         progress: Callable[[int, int], None] | None = None,
                         mp_context: str | None = None) -> EvaluationResult:
    """Score predicted masks against a split's ground truth (J, F, J&F per expression and overall).

    Args:
        gt: MeViS-layout split folder or zip with ``mask_dict.json``, or an open :class:`MevisSplit`.
        pred: ``<video>/<exp_id>/<frame>.png`` folder or zip, or an open :class:`PredictionSource`.
        workers: processes; 1 scores in this process, > 1 uses a ``ProcessPoolExecutor`` whose
            workers re-open ``gt`` and ``pred`` from their paths.
        bound_th: F boundary tolerance, fraction of the image diagonal (< 1) or pixels (≥ 1).
        progress: ``progress(done_expressions, total_expressions)``, called in this process.
        mp_context: multiprocessing start method for ``workers > 1`` (``"fork"``, ``"spawn"``,
            ``"forkserver"``); None = :func:`default_start_method` (forkserver on Linux). All give
            the same scores; fork starts fastest but copies this process (OpenCV's thread pool is
            stopped while forking so the children cannot hang on it).

    Returns:
        An :class:`EvaluationResult`; fractions in [0, 1].

    Raises:
        FileNotFoundError: ``gt`` / ``pred`` missing, or the split has no ``mask_dict.json``.
        MevisFormatError: malformed ground truth. PredictionFormatError: an unsafe or unreadable zip.
        ValueError: bad options, or a split without expressions. EvaluationError: a worker died.
        Never raised for missing or bad prediction files: those become ``problems``.
    """
    _check_options(workers, bound_th, mp_context)
    t0 = time.perf_counter()
    split, source, owned = _open_inputs(gt, pred)
    try:
        if not split.has_masks:
            raise FileNotFoundError(f"{split.path}: no mask_dict.json, so no ground truth to score against "
                                    "(the MeViS 'valid' split is scored by the challenge server)")
        jobs = [(v, e) for v in split.videos for e in split.expressions(v)]
        if not jobs:
            raise ValueError(f"{split.path}: the split has no expressions to score")
        scores: dict[tuple[str, str], ExpressionScore] = {}

        def on_done(s: ExpressionScore) -> None:
            scores[(s.video, s.exp_id)] = s
            if progress is not None:
                progress(len(scores), len(jobs))

        if progress is not None:
            progress(0, len(jobs))
        if workers == 1 or len(jobs) == 1:
            for v, e in jobs:
                on_done(score_expression(split, source, v, e, bound_th))
        else:
            _score_in_pool(jobs, Path(split.path).resolve(), Path(source.path).resolve(), bound_th, workers,
                           mp_context, on_done)
        ordered = {f"{v}/{e}": scores[(v, e)] for v, e in jobs}
        problems = [p for s in ordered.values() for p in s.problems] + _extra_problems(split, source)
    finally:
        for o in owned:
            o.close()
    j = float(np.mean([s.J for s in ordered.values()]))
    f = float(np.mean([s.F for s in ordered.values()]))
    return EvaluationResult(J=j, F=f, JF=(j + f) / 2.0, per_expression=ordered, problems=problems,
                            gt_path=str(split.path), pred_path=str(source.path),
                            seconds=time.perf_counter() - t0, bound_th=float(bound_th), workers=int(workers))


# ----------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------

def format_summary(result: EvaluationResult, max_problems: int = _SHOWN_PROBLEMS) -> str:
    """A plain-text table for a terminal: counts, then J, F, J&F per group (see
    :meth:`EvaluationResult.groups`), then the number of problems and the first ``max_problems``."""
    per = result.per_expression
    videos = len({s.video for s in per.values()})
    rate = len(per) / result.seconds if result.seconds > 0 else math.inf
    lines = [f"evaluated {len(per)} expressions ({videos} videos, {result.num_frames} frames) in "
             f"{result.seconds:.1f} s with {result.workers} worker(s) ({rate:.1f} expressions/s)",
             f"{'group':<20} {'n':>6} {'J':>7} {'F':>7} {'J&F':>7} {'w/ problems':>12}"]
    for name, g in result.groups().items():
        lines.append(f"{name:<20} {g['n']:>6} {g['J']:>7.4f} {g['F']:>7.4f} {g['J&F']:>7.4f} {g['with_problems']:>12}")
    lines.append(f"problems: {len(result.problems)}")
    lines.extend(f"  {p}" for p in result.problems[:max_problems])
    if len(result.problems) > max_problems:
        lines.append(f"  ... and {len(result.problems) - max_problems} more (all are in the JSON's \"problems\")")
    return "\n".join(lines)


def _check_result_json(obj: object, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    for key in ("J", "F", "J&F"):
        if isinstance(obj.get(key), bool) or not isinstance(obj.get(key), (int, float)):
            raise ValueError(f"{where}: field {key!r}: expected a number, got {obj.get(key)!r}")
    if not isinstance(obj.get("per_expression"), dict):
        raise ValueError(f"{where}: field 'per_expression': expected an object, got {obj.get('per_expression')!r:.80}")
    if not isinstance(obj.get("problems"), list):
        raise ValueError(f"{where}: field 'problems': expected a list of strings, got {obj.get('problems')!r:.80}")
    return obj


def load_evaluation_json(path: str | os.PathLike) -> dict[str, Any]:
    """Read a file written by ``evaluate`` / :meth:`EvaluationResult.write_json` and check its contract fields.

    Returns:
        The dict (``J``, ``F``, ``J&F``, ``per_expression``, ``problems``, ...); pass it to
        :meth:`EvaluationResult.from_json` for typed access.

    Raises:
        FileNotFoundError: no such file. ValueError: not JSON, or a contract field missing / ill-typed.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such evaluation JSON file")
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None
    return _check_result_json(obj, str(p))
