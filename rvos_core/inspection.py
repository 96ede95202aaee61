"""Qualitative error inspection of RVOS predictions against a MeViS-layout ground truth.

Works on the output of :func:`rvos_core.evaluation.evaluate_predictions` (one or two models scored
on the same split) and keeps everything per-frame lazy:

* a table of expressions (:class:`InspectionRow`, columns :data:`SINGLE_COLUMNS` for one model,
  :data:`PAIR_COLUMNS` for two, with ``Δ = J&F_B − J&F_A``), filters (:class:`RowFilter`: video,
  words of the expression, score range, single vs multi-object), sorting (worst first by default),
  an atomic CSV export and its reader;
* score histograms (:func:`score_histogram`) and per-frame J curves (:func:`frame_curve`);
* :func:`error_overlay`: a frame with the ground truth vs a prediction coloured as true positive
  (:data:`TP_COLOR`, green), false positive (:data:`FP_COLOR`, red) and false negative
  (:data:`FN_COLOR`, blue);
* :class:`Inspection`: an opened GT split + prediction sources + results; :meth:`Inspection.read_frame`
  reads one frame, its ground truth and each model's predicted mask only when asked.

Scores are fractions in [0, 1] (J region similarity, F contour accuracy, J&F their mean; definition
in ``shared/ARCHITECTURE.md``, from the DAVIS / MeViS evaluation). Nothing happens at import time.
"""

from __future__ import annotations

import csv
import math
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from rvos_core.fileio import atomic_output_path
from rvos_core.formats.mevis import _natural_key
from rvos_core.masks import as_bool_mask, overlay

if TYPE_CHECKING:  # types only: the evaluation module is imported where it is used
    from rvos_core.evaluation import EvaluationResult, ExpressionScore
    from rvos_core.formats.mevis import MevisSplit
    from rvos_core.formats.predictions import PredictionSource

__all__ = [
    "TP_COLOR", "FP_COLOR", "FN_COLOR", "OVERLAY_ALPHA", "CONTOUR_PX", "SINGLE_COLUMNS", "PAIR_COLUMNS",
    "SCORE_COLUMNS", "InspectionRow", "RowFilter", "Histogram", "ExpressionFrame", "Inspection",
    "build_rows", "table_columns", "row_values", "filter_rows", "sort_rows", "write_csv", "read_csv",
    "score_histogram", "frame_curve", "worst_frame", "error_masks", "error_overlay", "open_inspection",
]

#: RGB fill of true-positive pixels (ground truth and prediction): green.
TP_COLOR: tuple[int, int, int] = (0, 200, 0)
#: RGB fill of false-positive pixels (prediction only): red.
FP_COLOR: tuple[int, int, int] = (230, 0, 0)
#: RGB fill of false-negative pixels (ground truth only): blue.
FN_COLOR: tuple[int, int, int] = (0, 90, 250)
#: Fill opacity of :func:`error_overlay`: a coloured pixel is ``round(0.5 · frame + 0.5 · colour)``.
OVERLAY_ALPHA = 0.5
#: Contour thickness (pixels) drawn on each TP / FP / FN region's own boundary pixels.
CONTOUR_PX = 1

#: Table columns for one model (``objects`` = number of referred objects, ``len(anno_id)``).
SINGLE_COLUMNS: tuple[str, ...] = ("video", "exp_id", "expression", "objects", "J", "F", "J&F")
#: Table columns for two models A and B on the same split; ``Δ = J&F_B − J&F_A``.
PAIR_COLUMNS: tuple[str, ...] = ("video", "exp_id", "expression", "objects",
                                 "J_A", "F_A", "J&F_A", "J_B", "F_B", "J&F_B", "Δ")
#: Numeric score columns (fractions in [0, 1]; ``Δ`` in [-1, 1]).
SCORE_COLUMNS: tuple[str, ...] = ("J", "F", "J&F", "J_A", "F_A", "J&F_A", "J_B", "F_B", "J&F_B", "Δ")
_TEXT_COLUMNS = ("video", "exp_id", "expression")
#: Digits after the decimal point of scores in the CSV (round trip within 5e-7).
CSV_DECIMALS = 6

ObjectsFilter = Literal["all", "single", "multi"]


# ----------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class InspectionRow:
    """One expression's scores: model A (``J``, ``F``, ``JF``) and optionally model B.

    Attributes:
        video: MeViS video name. exp_id: expression id within the video (a string such as ``"0"``).
        expression: the expression text (``exp`` in ``meta_expressions.json``).
        num_objects: number of referred objects (``len(anno_id)``); > 1 = multi-object expression.
        J, F, JF: model A's means over the expression's frames, fractions in [0, 1]; ``JF = (J + F) / 2``.
        J_B, F_B, JF_B: the same for model B, or None when only one model is inspected.
    """

    video: str
    exp_id: str
    expression: str
    num_objects: int
    J: float
    F: float
    JF: float
    J_B: float | None = None
    F_B: float | None = None
    JF_B: float | None = None

    @property
    def key(self) -> str:
        """``"<video>/<exp_id>"``, the key of ``EvaluationResult.per_expression``."""
        return f"{self.video}/{self.exp_id}"

    @property
    def pair(self) -> bool:
        """Whether the row holds two models' scores."""
        return self.JF_B is not None

    @property
    def delta(self) -> float | None:
        """``J&F_B − J&F_A`` in [-1, 1] (positive: B is better), or None for one model."""
        return None if self.JF_B is None else self.JF_B - self.JF

    def value(self, column: str) -> Any:
        """The value shown in ``column`` (one of :data:`SINGLE_COLUMNS` / :data:`PAIR_COLUMNS`).

        Raises:
            ValueError: unknown column, or a column of the other table kind (``J&F_B`` on a
                one-model row, ``J`` on a two-model row).
        """
        columns = PAIR_COLUMNS if self.pair else SINGLE_COLUMNS
        if column not in columns:
            raise ValueError(f"column {column!r}: expected one of {', '.join(columns)}")
        return _GETTERS[column](self)


_GETTERS: dict[str, Callable[[InspectionRow], Any]] = {
    "video": lambda r: r.video, "exp_id": lambda r: r.exp_id, "expression": lambda r: r.expression,
    "objects": lambda r: r.num_objects,
    "J": lambda r: r.J, "F": lambda r: r.F, "J&F": lambda r: r.JF,
    "J_A": lambda r: r.J, "F_A": lambda r: r.F, "J&F_A": lambda r: r.JF,
    "J_B": lambda r: r.J_B, "F_B": lambda r: r.F_B, "J&F_B": lambda r: r.JF_B, "Δ": lambda r: r.delta,
}


def build_rows(result_a: EvaluationResult, result_b: EvaluationResult | None = None) -> list[InspectionRow]:
    """Table rows from one evaluation, or from two evaluations of the same split (A and B).

    Args:
        result_a: model A's :class:`~rvos_core.evaluation.EvaluationResult`.
        result_b: model B's, scored on the same split (same ``per_expression`` keys), or None.

    Returns:
        One :class:`InspectionRow` per expression, in A's (split) order.

    Raises:
        ValueError: the two results do not cover the same expressions (names a few differing keys).
    """
    scores_a = result_a.per_expression
    scores_b = None if result_b is None else result_b.per_expression
    if scores_b is not None and set(scores_a) != set(scores_b):
        only_a = sorted(set(scores_a) - set(scores_b), key=_natural_key)[:3]
        only_b = sorted(set(scores_b) - set(scores_a), key=_natural_key)[:3]
        raise ValueError(f"the two evaluations cover different expressions (only in A: {only_a}, only in B: "
                         f"{only_b}); score both prediction sets on the same ground-truth split")
    rows = []
    for key, a in scores_a.items():
        b = None if scores_b is None else scores_b[key]
        rows.append(InspectionRow(
            video=a.video, exp_id=a.exp_id, expression=a.exp, num_objects=int(a.num_objects),
            J=float(a.J), F=float(a.F), JF=float(a.JF), J_B=None if b is None else float(b.J),
            F_B=None if b is None else float(b.F), JF_B=None if b is None else float(b.JF)))
    return rows


def table_columns(pair: bool) -> tuple[str, ...]:
    """:data:`PAIR_COLUMNS` for two models, else :data:`SINGLE_COLUMNS`."""
    return PAIR_COLUMNS if pair else SINGLE_COLUMNS


def row_values(row: InspectionRow) -> list[Any]:
    """The row's values in :func:`table_columns` order (str for text, int for objects, float for scores)."""
    return [_GETTERS[c](row) for c in table_columns(row.pair)]


# ----------------------------------------------------------------------------- filter and sort


@dataclass(frozen=True)
class RowFilter:
    """Which rows to keep; every condition must hold.

    Attributes:
        video: keep only this video (exact name); None or ``""`` = every video.
        words: whitespace-separated words; each must occur in the expression text, case-insensitively,
            as a substring (``"turn"`` matches ``"turning"``); ``""`` = no condition.
        score_range: inclusive ``(low, high)`` on ``score_column``; within [0, 1] for scores,
            [-1, 1] for ``Δ``.
        score_column: the score column the range applies to; None = ``J&F`` (one model) or
            ``J&F_A`` (two models).
        objects: ``"all"``, ``"single"`` (one referred object) or ``"multi"`` (more than one).
    """

    video: str | None = None
    words: str = ""
    score_range: tuple[float, float] = (-1.0, 1.0)
    score_column: str | None = None
    objects: ObjectsFilter = "all"

    def check(self, pair: bool) -> str:
        """Validate against a table kind; returns the score column used.

        Raises:
            ValueError: unknown ``objects`` value, a ``score_column`` that is not a score column of
                this table kind, or a range with low > high or NaN bounds.
        """
        if self.objects not in ("all", "single", "multi"):
            raise ValueError(f"objects filter {self.objects!r}: expected 'all', 'single' or 'multi'")
        column = self.score_column or ("J&F_A" if pair else "J&F")
        if column not in SCORE_COLUMNS or column not in table_columns(pair):
            valid = [c for c in table_columns(pair) if c in SCORE_COLUMNS]
            raise ValueError(f"score column {column!r}: expected one of {', '.join(valid)}")
        low, high = (float(v) for v in self.score_range)
        if math.isnan(low) or math.isnan(high) or low > high:
            raise ValueError(f"score range {self.score_range!r}: expected (low, high) with low <= high")
        return column

    def matches(self, row: InspectionRow, column: str) -> bool:
        """Whether ``row`` passes (``column`` = the score column returned by :meth:`check`)."""
        if self.video and row.video != self.video:
            return False
        if self.objects == "single" and row.num_objects > 1 or self.objects == "multi" and row.num_objects <= 1:
            return False
        text = row.expression.casefold()
        if not all(w in text for w in self.words.casefold().split()):
            return False
        low, high = self.score_range
        return float(low) <= _GETTERS[column](row) <= float(high)


def filter_rows(rows: Iterable[InspectionRow], row_filter: RowFilter) -> list[InspectionRow]:
    """The rows that pass ``row_filter``, in their given order.

    Raises:
        ValueError: as :meth:`RowFilter.check` (the table kind is taken from the first row).
    """
    rows = list(rows)
    if not rows:
        return []
    column = row_filter.check(rows[0].pair)
    return [r for r in rows if row_filter.matches(r, column)]


def sort_rows(rows: Iterable[InspectionRow], column: str | None = None,
              descending: bool = False) -> list[InspectionRow]:
    """Rows sorted by ``column``; the default (None) is worst first: ``J&F`` / ``J&F_A`` ascending.

    Text columns sort case-insensitively with digit runs compared as numbers (``"2"`` before
    ``"10"``). Ties keep video / exp_id order (natural), whatever the direction.

    Raises:
        ValueError: ``column`` is not a column of this table kind.
    """
    rows = list(rows)
    if not rows:
        return []
    pair = rows[0].pair
    column = column or ("J&F_A" if pair else "J&F")
    if column not in table_columns(pair):
        raise ValueError(f"sort column {column!r}: expected one of {', '.join(table_columns(pair))}")
    getter = _GETTERS[column]
    ordered = sorted(rows, key=lambda r: (_natural_key(r.video), _natural_key(r.exp_id)))
    if column in _TEXT_COLUMNS:
        return sorted(ordered, key=lambda r: _natural_key(getter(r).casefold()), reverse=descending)
    return sorted(ordered, key=getter, reverse=descending)


# ----------------------------------------------------------------------------- CSV


def _csv_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.{CSV_DECIMALS}f}"
    return str(value)


def write_csv(path: str | os.PathLike, rows: Sequence[InspectionRow]) -> Path:
    """Write the table as CSV (``csv`` module, UTF-8, header row, rows in the given order), atomically.

    Columns: :data:`SINGLE_COLUMNS`, or :data:`PAIR_COLUMNS` when the rows hold two models; scores
    with :data:`CSV_DECIMALS` decimals. An empty ``rows`` writes the one-model header only.

    Returns:
        ``Path(path)``.

    Raises:
        ValueError: rows mixing one- and two-model scores.
    """
    pair = bool(rows) and rows[0].pair
    if any(r.pair != pair for r in rows):
        raise ValueError("rows mix one-model and two-model scores; expected one table kind")
    target = Path(path)
    with atomic_output_path(target) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(table_columns(pair))
            writer.writerows([_csv_cell(v) for v in row_values(r)] for r in rows)
    return target


def read_csv(path: str | os.PathLike) -> list[InspectionRow]:
    """Read a table written by :func:`write_csv` back into rows (scores rounded as written).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a header other than :data:`SINGLE_COLUMNS` / :data:`PAIR_COLUMNS`, or a cell that
            does not parse (names the line and column).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such CSV file")
    with open(p, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = tuple(next(reader, ()))
        if header not in (SINGLE_COLUMNS, PAIR_COLUMNS):
            raise ValueError(f"{p}: header {list(header)}; expected {list(SINGLE_COLUMNS)} or {list(PAIR_COLUMNS)}")
        return [_parse_csv_row(cells, header, f"{p}:{reader.line_num}") for cells in reader]


def _parse_csv_row(cells: list[str], header: tuple[str, ...], where: str) -> InspectionRow:
    if len(cells) != len(header):
        raise ValueError(f"{where}: {len(cells)} cells, expected {len(header)}")
    values = dict(zip(header, cells))
    try:
        nums = {c: float(values[c]) for c in header if c in SCORE_COLUMNS}
        objects = int(values["objects"])
    except ValueError as e:
        raise ValueError(f"{where}: {e}; expected numbers in the score and objects columns") from None
    a = "_A" if header == PAIR_COLUMNS else ""
    return InspectionRow(video=values["video"], exp_id=values["exp_id"], expression=values["expression"],
                         num_objects=objects, J=nums["J" + a], F=nums["F" + a], JF=nums["J&F" + a],
                         J_B=nums.get("J_B"), F_B=nums.get("F_B"), JF_B=nums.get("J&F_B"))


# ----------------------------------------------------------------------------- plots


@dataclass(frozen=True)
class Histogram:
    """Counts of a score column over equal-width bins.

    Attributes:
        edges: ``(bins + 1,)`` float64 bin edges, increasing; bin ``i`` is ``[edges[i], edges[i+1])``,
            the last bin also holds ``edges[-1]``.
        counts: ``(bins,)`` int64 number of rows per bin.
    """

    edges: np.ndarray
    counts: np.ndarray

    def labels(self, decimals: int = 1) -> list[str]:
        """One ``"low–high"`` label per bin (e.g. ``"0.0–0.1"``)."""
        return [f"{lo:.{decimals}f}–{hi:.{decimals}f}" for lo, hi in zip(self.edges[:-1], self.edges[1:])]


def score_histogram(rows: Iterable[InspectionRow], column: str | None = None, bins: int = 10) -> Histogram:
    """Histogram of ``column`` (default ``J&F`` / ``J&F_A``) over [0, 1] (over [-1, 1] for ``Δ``).

    Raises:
        ValueError: ``bins`` < 1, or ``column`` is not a score column of this table kind.
    """
    rows = list(rows)
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be an int >= 1, got {bins!r}")
    pair = bool(rows) and rows[0].pair
    column = column or ("J&F_A" if pair else "J&F")
    if column not in SCORE_COLUMNS or (rows and column not in table_columns(pair)):
        raise ValueError(f"histogram column {column!r}: expected a score column of the table")
    span = (-1.0, 1.0) if column == "Δ" else (0.0, 1.0)
    values = np.array([_GETTERS[column](r) for r in rows], dtype=np.float64)
    counts, edges = np.histogram(values, bins=int(bins), range=span)
    return Histogram(edges=edges, counts=counts.astype(np.int64))


def frame_curve(scores: Sequence[tuple[str, ExpressionScore]]) -> dict[str, list]:
    """Per-frame J of one expression for each model, as long-format columns for a line plot.

    Args:
        scores: ``(model label, ExpressionScore)`` pairs, e.g. ``[("A", a), ("B", b)]``.

    Returns:
        ``{"frame": [int], "J": [float], "model": [str]}``: frame indices 0…T−1 (split ``frames``
        order) with J in [0, 1], one run per model, in the given order.
    """
    out: dict[str, list] = {"frame": [], "J": [], "model": []}
    for label, score in scores:
        j = np.asarray(score.j_per_frame, dtype=np.float64)
        out["frame"] += list(range(j.size))
        out["J"] += j.tolist()
        out["model"] += [label] * j.size
    return out


def worst_frame(*scores: ExpressionScore) -> int:
    """Index of the frame with the lowest J of any of the given models' scores of one expression
    (the first of ties); 0 for an expression without frames.

    Raises:
        ValueError: no score, or scores with different numbers of frames.
    """
    if not scores:
        raise ValueError("worst_frame: expected at least one ExpressionScore")
    lengths = {len(s.j_per_frame) for s in scores}
    if len(lengths) != 1:
        raise ValueError(f"worst_frame: the scores have different numbers of frames {sorted(lengths)}")
    j = np.min([np.asarray(s.j_per_frame, dtype=np.float64) for s in scores], axis=0)
    return int(np.argmin(j)) if j.size else 0


# ----------------------------------------------------------------------------- overlays


def error_masks(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(tp, fp, fn)`` ``(H, W)`` bool masks: ``gt & pred``, ``pred & ~gt``, ``gt & ~pred``.

    Raises:
        ValueError: not 2-D, or the two shapes differ.
    """
    g, p = as_bool_mask(gt, "gt"), as_bool_mask(pred, "pred")
    if g.shape != p.shape:
        raise ValueError(f"gt {g.shape} and pred {p.shape} differ in shape; expected the same (H, W)")
    return g & p, p & ~g, g & ~p


def error_overlay(frame_rgb: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """The frame with the prediction's errors coloured against the ground truth.

    True positives get :data:`TP_COLOR` (green), false positives :data:`FP_COLOR` (red), false
    negatives :data:`FN_COLOR` (blue), each blended with :data:`OVERLAY_ALPHA` (a pixel inside a
    region, away from its edge, is exactly ``cv2.addWeighted(frame, 0.5, colour, 0.5, 0)``, i.e.
    ``round(0.5 · frame + 0.5 · colour)``) and outlined with a :data:`CONTOUR_PX`-pixel contour on
    the region's own boundary pixels, in the colour moved half-way to white for dark colours (FP →
    (242, 128, 128), FN → (128, 172, 252)) or half-way to black for light ones (TP → (0, 100, 0)),
    as :func:`rvos_core.masks.overlay` draws it. True negatives are left as they are.

    Args:
        frame_rgb: ``(H, W, 3)`` uint8 RGB; not modified.
        gt: ``(H, W)`` bool ground truth (non-zero = foreground).
        pred: ``(H, W)`` bool prediction.

    Returns:
        A new ``(H, W, 3)`` uint8 RGB image.

    Raises:
        ValueError: a frame that is not ``(H, W, 3)`` uint8, or masks of another size.
    """
    tp, fp, fn = error_masks(gt, pred)
    return overlay(frame_rgb, [tp, fp, fn], colors=[TP_COLOR, FP_COLOR, FN_COLOR],
                   alpha=OVERLAY_ALPHA, contour_px=CONTOUR_PX)


# ----------------------------------------------------------------------------- lazy frames


@dataclass
class ExpressionFrame:
    """One frame of one expression with the ground truth and each model's prediction.

    Attributes:
        video, exp_id: the expression. index: frame index (0-based, split ``frames`` order).
        frame_name: the frame's name (e.g. ``"00012"``).
        frame: ``(H, W, 3)`` uint8 RGB.
        gt: ``(H, W)`` bool, the union of the referred objects' masks.
        preds: one ``(H, W)`` bool predicted mask per model (all-False where it was missing).
        problems: per model, None or one line saying why the prediction could not be read.
        j: per model, this frame's J from the evaluation, in [0, 1].
    """

    video: str
    exp_id: str
    index: int
    frame_name: str
    frame: np.ndarray
    gt: np.ndarray
    preds: list[np.ndarray]
    problems: list[str | None]
    j: list[float] = field(default_factory=list)

    def overlays(self) -> list[np.ndarray]:
        """:func:`error_overlay` of each model's prediction, ``(H, W, 3)`` uint8 RGB each."""
        return [error_overlay(self.frame, self.gt, p) for p in self.preds]

    def pixel_counts(self) -> list[dict[str, int]]:
        """Per model ``{"tp", "fp", "fn"}`` pixel counts on this frame."""
        return [dict(zip(("tp", "fp", "fn"), (int(m.sum()) for m in error_masks(self.gt, p)))) for p in self.preds]


class Inspection:
    """An opened ground-truth split with one or two models' predictions and their evaluations.

    Frames and masks are read only by :meth:`read_frame`; the ground truth of the most recently
    read expression is kept bit-packed (``T · H · W / 8`` bytes) so browsing its frames decodes no
    RLE again. Safe to share between threads (reads are serialised).

    Args:
        split: the ground truth (``rvos_core.formats.mevis.MevisSplit`` with ``mask_dict.json``).
        sources: one or two ``PredictionSource`` (models A, B), in the order of ``results``.
        results: their ``EvaluationResult`` on ``split``.
        labels: display names of the models (default ``"A"``, ``"B"``).

    Raises:
        ValueError: not 1 or 2 models, ``sources`` / ``results`` / ``labels`` of different lengths,
            or results covering different expressions.
    """

    def __init__(self, split: MevisSplit, sources: Sequence[PredictionSource], results: Sequence[EvaluationResult],
                 labels: Sequence[str] | None = None) -> None:
        labels = list(labels) if labels is not None else ["A", "B"][: len(results)]
        if not 1 <= len(results) <= 2 or len(sources) != len(results) or len(labels) != len(results):
            raise ValueError(f"expected 1 or 2 models with one source, result and label each; got "
                             f"{len(sources)} sources, {len(results)} results, {len(labels)} labels")
        self.split = split
        self.sources = list(sources)
        self.results = list(results)
        self.labels = labels
        self.rows = build_rows(self.results[0], self.results[1] if len(self.results) == 2 else None)
        self._keys = {r.key for r in self.rows}
        self._lock = threading.Lock()
        self._gt_key: str | None = None
        self._gt_packed: np.ndarray | None = None

    @property
    def pair(self) -> bool:
        """Whether two models are inspected."""
        return len(self.results) == 2

    @property
    def videos(self) -> list[str]:
        """Videos of the table, in split order."""
        return list(dict.fromkeys(r.video for r in self.rows))

    def _split_key(self, key: str) -> tuple[str, str]:
        if key not in self._keys:
            raise KeyError(f"expression {key!r} is not in this evaluation; expected '<video>/<exp_id>'")
        video, exp_id = key.split("/", 1)
        return video, exp_id

    def scores(self, key: str) -> list[ExpressionScore]:
        """Each model's :class:`~rvos_core.evaluation.ExpressionScore` of expression ``key``. Raises KeyError."""
        self._split_key(key)
        return [r.per_expression[key] for r in self.results]

    def num_frames(self, key: str) -> int:
        """Number of frames of expression ``key``'s video. Raises KeyError."""
        return len(self.split.frame_names(self._split_key(key)[0]))

    def _gt_frame(self, key: str, video: str, exp_id: str, index: int) -> np.ndarray:
        """``(H, W)`` bool ground truth of one frame (decodes the expression once, keeps it packed)."""
        if self._gt_key != key:
            stack = self.split.expression_masks(video, exp_id)
            self._gt_packed, self._gt_key = np.packbits(stack, axis=-1), key
        width = self.split.frame_size(video)[1]
        return np.unpackbits(self._gt_packed[index], axis=-1, count=width).astype(bool)

    def read_frame(self, key: str, index: int) -> ExpressionFrame:
        """Frame ``index`` of expression ``key`` with its ground truth and every model's prediction.

        A missing or unreadable predicted PNG gives an all-False mask and a problem line (as in
        the evaluation), never an exception.

        Raises:
            KeyError: unknown key. IndexError: ``index`` outside ``0 … T−1``.
            FileNotFoundError / rvos_core.formats.mevis.MevisFormatError: the split's JPEG or RLE is
                missing or malformed (the message names the file).
        """
        video, exp_id = self._split_key(key)
        names = self.split.frame_names(video)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < len(names):
            raise IndexError(f"{key}: frame index {index!r} out of range 0..{len(names) - 1}")
        index = int(index)
        with self._lock:
            frame = self.split.frame(video, index)
            gt = self._gt_frame(key, video, exp_id, index)
            size = (int(gt.shape[0]), int(gt.shape[1]))
            read = [s.read_mask(video, exp_id, names[index], size) for s in self.sources]
        scores = self.scores(key)
        return ExpressionFrame(video=video, exp_id=exp_id, index=index, frame_name=names[index], frame=frame,
                               gt=gt, preds=[m for m, _ in read], problems=[p for _, p in read],
                               j=[float(s.j_per_frame[index]) for s in scores])

    def __enter__(self) -> Inspection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the split's and the sources' files (zips)."""
        with self._lock:
            self._gt_key, self._gt_packed = None, None
            self.split.close()
            for s in self.sources:
                s.close()


def open_inspection(gt: str | os.PathLike, preds: Sequence[str | os.PathLike], *, workers: int = 1,
                    progress: Callable[[int, int, str], None] | None = None,
                    labels: Sequence[str] | None = None) -> Inspection:
    """Open a ground-truth split and one or two prediction sets, and evaluate each (J, F, J&F).

    Args:
        gt: MeViS-layout split folder or ``.zip`` with ``mask_dict.json`` (``train`` / ``valid_u``).
        preds: one or two prediction folders / zips in the layout ``<video>/<exp_id>/<frame>.png``.
        workers: evaluation worker processes (see :func:`rvos_core.evaluation.evaluate_predictions`).
        progress: ``progress(done, total, message)`` over all models' expressions (called from this thread).
        labels: model names (default ``"A"``, ``"B"``).

    Returns:
        The :class:`Inspection` (close it when done).

    Raises:
        ValueError: not 1 or 2 prediction sets; ``rvos_core.formats.mevis.MevisFormatError`` (a
            ``ValueError``): a malformed split (the message names the file and field).
        FileNotFoundError: a missing split or prediction path, or a split without ``mask_dict.json``
            (the server-scored ``valid`` split: no ground truth to score against).
        rvos_core.formats.predictions.PredictionFormatError: an unsafe or unreadable prediction zip.
    """
    from rvos_core.evaluation import evaluate_predictions
    from rvos_core.formats.mevis import read_mevis_split
    from rvos_core.formats.predictions import open_predictions

    if not 1 <= len(preds) <= 2:
        raise ValueError(f"expected 1 or 2 prediction sets, got {len(preds)}")
    labels = list(labels) if labels is not None else ["A", "B"][: len(preds)]
    split = read_mevis_split(gt)
    sources: list[PredictionSource] = []
    try:
        results = []
        for m, path in enumerate(preds):
            sources.append(open_predictions(path))
            report = None if progress is None else _model_progress(progress, m, len(preds), labels[m])
            results.append(evaluate_predictions(split, sources[-1], workers=workers, progress=report))
        return Inspection(split, sources, results, labels)
    except BaseException:
        for s in sources:
            s.close()
        split.close()
        raise


def _model_progress(progress: Callable[[int, int, str], None], model: int, models: int,
                    label: str) -> Callable[[int, int], None]:
    """Map one model's ``(done, total)`` expressions onto the whole run's ``(done, total, message)``."""

    def report(done: int, total: int) -> None:
        progress(model * total + done, models * total, f"Evaluating {label}: {done}/{total} expressions")

    return report
