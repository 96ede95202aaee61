"""The app's Inspect tab: qualitative error inspection of one or two models' predictions.

Open a ground-truth split (MeViS layout with ``mask_dict.json``, folder or zip) and one or two
prediction folders / zips (server paths, or uploads copied into the user's private folder); the
predictions are evaluated with a progress bar (:func:`rvos_core.inspection.open_inspection`), then a
table of expressions (worst J&F first) can be filtered by video, words, score range and single vs
multi-object, shown as a histogram, exported as CSV, and any expression's frames shown with the
ground truth vs each prediction coloured as true positive (green) / false positive (red) /
false negative (blue), with its per-frame J curve.

:class:`InspectService` holds the per-user :class:`~rvos_core.inspection.Inspection` (split and
prediction files open, per-frame scores) keyed by ``request.session_hash`` — never in ``gr.State`` —
and writes exports into the user's :class:`~demo.store.Workspace` folder. Frames are rendered one at a
time, only when shown.

Named API endpoints: ``/inspect_upload``, ``/inspect_load``, ``/inspect_filter``, ``/inspect_pick``,
``/inspect_frame``, ``/inspect_csv``.
"""

from __future__ import annotations

import shutil
import threading
import uuid
from pathlib import Path
from typing import Callable

import gradio as gr
import numpy as np
import pandas as pd

from demo.store import SessionStore
from rvos_core.evaluation import EvaluationError
from rvos_core.inspection import (
    FN_COLOR,
    FP_COLOR,
    SCORE_COLUMNS,
    TP_COLOR,
    ExpressionFrame,
    Inspection,
    InspectionRow,
    RowFilter,
    filter_rows,
    frame_curve,
    open_inspection,
    row_values,
    score_histogram,
    sort_rows,
    table_columns,
    worst_frame,
    write_csv,
)

#: Concurrency group of evaluations (CPU-bound): one at a time across all users.
INSPECT_CONCURRENCY_ID = "rvos-inspect"
#: Value of the video filter meaning "every video".
ALL_VIDEOS = ""
#: Styles of the tab (added to the app's CSS by :mod:`demo.ui`): small frames are scaled up, pixels kept sharp.
CSS = """
#rvos-inspect-image-a img, #rvos-inspect-image-b img { width: 100% !important; height: auto !important;
    max-height: 70vh; object-fit: contain; image-rendering: pixelated; }
#rvos-inspect-image-a .image-frame, #rvos-inspect-image-b .image-frame { width: 100%; }
"""
OBJECT_CHOICES = [("All", "all"), ("Single-object", "single"), ("Multi-object", "multi")]
#: Decimals of scores shown in the table (the CSV keeps more).
SHOWN_DECIMALS = 3


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


LEGEND = (f"<span style='color:{_hex(TP_COLOR)}'>■</span> true positive · "
          f"<span style='color:{_hex(FP_COLOR)}'>■</span> false positive · "
          f"<span style='color:{_hex(FN_COLOR)}'>■</span> false negative (missed)")


def _path_input(label: str, name: str, placeholder: str) -> tuple[gr.Textbox, gr.UploadButton]:
    """A server-path textbox with an upload button below it (``#rvos-inspect-<name>``)."""
    with gr.Column(scale=3, min_width=240):
        box = gr.Textbox(label=label, placeholder=placeholder, elem_id=f"rvos-inspect-{name}")
        button = gr.UploadButton("Upload .zip…", file_types=[".zip"], size="sm",
                                 elem_id=f"rvos-inspect-{name}-upload")
    return box, button


def _clean_path(text: str | None, what: str, required: bool) -> str | None:
    """A server path typed by the user (quotes and blanks stripped), or None when left empty.

    Raises:
        ValueError: empty and ``required``.
    """
    value = (text or "").strip().strip("'\"").strip()
    if not value:
        if required:
            raise ValueError(f"enter the {what} (a server folder or .zip path), or upload a .zip")
        return None
    return str(Path(value).expanduser())


class InspectService:
    """Per-user inspections (no gradio here; :func:`build_inspect_tab` wires it to widgets).

    Args:
        store: the app's per-user workspace store (private folders for uploads and CSV files; an
            inspection is dropped once its user's workspace is gone).
        workers: evaluation worker processes per load.
    """

    def __init__(self, store: SessionStore, workers: int = 1):
        self.store = store
        self.workers = int(workers)
        self._lock = threading.Lock()
        self._items: dict[str, Inspection] = {}

    def _prune(self) -> None:
        """Close inspections whose workspace was freed (tab closed or evicted when idle)."""
        with self._lock:
            gone = [k for k in self._items if k not in self.store]
            dropped = [self._items.pop(k) for k in gone]
        for ins in dropped:
            ins.close()

    def _put(self, session_hash: str, inspection: Inspection) -> None:
        with self._lock:
            old = self._items.get(session_hash)
            self._items[session_hash] = inspection
        if old is not None and old is not inspection:
            old.close()

    def get(self, session_hash: str) -> Inspection | None:
        """This user's open inspection, or None before the first load."""
        with self._lock:
            return self._items.get(session_hash)

    def require(self, session_hash: str) -> Inspection:
        """This user's open inspection.

        Raises:
            LookupError: nothing loaded yet (or the session expired).
        """
        ins = self.get(session_hash)
        if ins is None:
            raise LookupError("no evaluation loaded; enter a ground-truth split and predictions, then press Load")
        return ins

    def close(self, session_hash: str) -> None:
        """Close and forget this user's inspection (tab closed)."""
        with self._lock:
            ins = self._items.pop(session_hash, None)
        if ins is not None:
            ins.close()

    def clear(self) -> None:
        """Close every inspection (app shutdown)."""
        with self._lock:
            items, self._items = list(self._items.values()), {}
        for ins in items:
            ins.close()

    def upload(self, session_hash: str, file: str | None) -> str:
        """Copy an uploaded ``.zip`` (split or predictions) into the user's folder; returns its server path.

        Raises:
            ValueError: no file or not a ``.zip``. FileNotFoundError: the upload vanished.
        """
        if not file:
            raise ValueError("no file received; upload a .zip of a split or of predictions")
        src = Path(file)
        if src.suffix.lower() != ".zip":
            raise ValueError(f"{src.name}: expected a .zip (a MeViS-layout split or <video>/<exp_id>/<frame>.png "
                             "predictions); folders can be given as server paths")
        if not src.is_file():
            raise FileNotFoundError(f"uploaded file {src.name} is missing on the server; upload it again")
        ws = self.store.get_or_create(session_hash)
        folder = ws.tmp_dir / "inspect" / uuid.uuid4().hex[:8]
        folder.mkdir(parents=True)
        return str(shutil.copy2(src, folder / src.name))

    def load(self, session_hash: str, gt: str | None, pred_a: str | None, pred_b: str | None,
             progress: Callable[[int, int, str], None] | None = None) -> Inspection:
        """Evaluate one or two prediction sets on a ground-truth split and make it this user's inspection.

        Raises:
            ValueError / FileNotFoundError: empty or missing paths, a malformed split (the message
                names the file and field) or an unsafe prediction zip.
        """
        self._prune()
        self.store.get_or_create(session_hash)
        gt_path = _clean_path(gt, "ground-truth split", required=True)
        preds = [p for p in (_clean_path(pred_a, "predictions A", required=True),
                             _clean_path(pred_b, "predictions B", required=False)) if p]
        try:
            inspection = open_inspection(gt_path, preds, workers=self.workers, progress=progress)
        except EvaluationError as e:  # a worker process died: say so instead of a bare "Error"
            raise ValueError(f"the evaluation failed: {e}") from None
        self._put(session_hash, inspection)
        return inspection

    def rows(self, session_hash: str, row_filter: RowFilter, sort_by: str | None,
             descending: bool) -> tuple[Inspection | None, list[InspectionRow]]:
        """This user's filtered and sorted rows (``(None, [])`` before a load).

        Raises:
            ValueError: a bad filter or sort column.
        """
        ins = self.get(session_hash)
        if ins is None:
            return None, []
        return ins, sort_rows(filter_rows(ins.rows, row_filter), sort_by or None, bool(descending))

    def export_csv(self, session_hash: str, rows: list[InspectionRow]) -> Path:
        """Write ``rows`` as CSV into the user's folder, under a fresh unique name."""
        ins = self.require(session_hash)
        ws = self.store.get_or_create(session_hash)
        stem = f"{Path(str(ins.split.path)).stem}-inspection"
        return write_csv(ws.export_path(stem, ".csv"), rows)


# ----------------------------------------------------------------------------- rendering


def _summary(ins: Inspection, preds: list[str]) -> str:
    """Markdown: per model J, F, J&F, time and problems; with two models the difference."""
    lines = [f"**Ground truth** `{ins.split.path}` — {len(ins.rows)} expressions in {len(ins.videos)} videos."]
    for label, name, res in zip(ins.labels, preds, ins.results):
        probs = f", {len(res.problems)} problems (first: {res.problems[0]})" if res.problems else ""
        lines.append(f"**{label}** `{name}`: J {res.J:.3f} · F {res.F:.3f} · **J&F {res.JF:.3f}** "
                     f"(evaluated in {res.seconds:.1f} s{probs})")
    if ins.pair:
        lines.append(f"**Δ J&F (B − A)**: {ins.results[1].JF - ins.results[0].JF:+.3f}")
    return "  \n".join(lines)


def _table(rows: list[InspectionRow], pair: bool) -> pd.DataFrame:
    columns = list(table_columns(pair))
    data = [[round(v, SHOWN_DECIMALS) if isinstance(v, float) else v for v in row_values(r)] for r in rows]
    return pd.DataFrame(data, columns=columns)


def _datatypes(pair: bool) -> list[str]:
    return ["str" if c in ("video", "exp_id", "expression") else "number" for c in table_columns(pair)]


def _histogram(rows: list[InspectionRow], column: str | None) -> tuple[pd.DataFrame, list[str]]:
    hist = score_histogram(rows, column)
    labels = hist.labels()
    return pd.DataFrame({"bin": labels, "expressions": hist.counts.astype(int)}), labels


def _range_sliders(score: str | None) -> tuple[gr.Slider, gr.Slider]:
    """The two range sliders reset to the full range of ``score`` ([-1, 1] for Δ, else [0, 1])."""
    low = -1.0 if score == "Δ" else 0.0
    return gr.Slider(minimum=low, maximum=1, value=low), gr.Slider(minimum=low, maximum=1, value=1)


def _frame_markdown(ins: Inspection, shown: ExpressionFrame) -> str:
    """Markdown: the frame's name, then per model J and TP / FP / FN pixel counts (and any read problem)."""
    parts = [f"Frame {shown.index} (`{shown.frame_name}`)"]
    for label, j, counts, problem in zip(ins.labels, shown.j, shown.pixel_counts(), shown.problems):
        text = f"**{label}** J {j:.3f} · TP {counts['tp']} · FP {counts['fp']} · FN {counts['fn']} px"
        parts.append(text + (f" — ⚠ {problem}" if problem else ""))
    return "  \n".join(parts)


# ----------------------------------------------------------------------------- wiring


def build_inspect_tab(app: gr.Blocks, store: SessionStore, workers: int = 1,
                      concurrency_limit: int = 1) -> InspectService:
    """Create the Inspect tab's widgets in the current layout context and wire their events.

    Call inside ``with app:`` (typically inside a ``gr.Tab``).

    Args:
        app: the Blocks (an ``unload`` handler is registered on it to free the user's inspection).
        store: the app's per-user workspace store.
        workers: evaluation worker processes per load.
        concurrency_limit: evaluations that may run at once across all users.

    Returns:
        The :class:`InspectService` (tests read a user's inspection from it).
    """
    from demo.ui import _user_errors  # lazy: demo.ui imports this module

    service = InspectService(store, workers=workers)
    load_events = {"concurrency_id": INSPECT_CONCURRENCY_ID, "concurrency_limit": concurrency_limit}

    with gr.Row(equal_height=False):
        gt_box, gt_up = _path_input("Ground-truth split (folder or .zip with mask_dict.json)", "gt",
                                    "/data/mevis/valid_u")
        pred_a_box, pred_a_up = _path_input("Predictions A (folder or .zip)", "pred-a", "<video>/<exp_id>/<frame>.png")
        pred_b_box, pred_b_up = _path_input("Predictions B (optional, to compare with A)", "pred-b", "")
        load_btn = gr.Button("Load", variant="primary", scale=0, min_width=110, elem_id="rvos-inspect-load")
    summary = gr.Markdown("Enter a ground-truth split and one or two prediction sets, then press Load.",
                          elem_id="rvos-inspect-summary")
    with gr.Row(equal_height=True):
        video_dd = gr.Dropdown(choices=[("All videos", ALL_VIDEOS)], value=ALL_VIDEOS, label="Video", scale=2,
                               elem_id="rvos-inspect-video")
        words = gr.Textbox(label="Words in the expression (all must appear)", scale=2, elem_id="rvos-inspect-words")
        objects = gr.Radio(OBJECT_CHOICES, value="all", label="Objects", scale=3, elem_id="rvos-inspect-objects")
    with gr.Row(equal_height=True):
        score_dd = gr.Dropdown(choices=["J&F"], value="J&F", label="Score (range and histogram)", scale=1,
                               elem_id="rvos-inspect-score")
        low = gr.Slider(0, 1, value=0, step=0.01, label="Score ≥", scale=2, elem_id="rvos-inspect-min")
        high = gr.Slider(0, 1, value=1, step=0.01, label="Score ≤", scale=2, elem_id="rvos-inspect-max")
        sort_dd = gr.Dropdown(choices=["J&F"], value="J&F", label="Sort by (default: worst J&F first)", scale=1,
                              elem_id="rvos-inspect-sort")
        descending = gr.Checkbox(value=False, label="Descending", scale=0, min_width=130, elem_id="rvos-inspect-desc")
    count = gr.Markdown("", elem_id="rvos-inspect-count")
    table = gr.Dataframe(headers=list(table_columns(False)), datatype=_datatypes(False), interactive=False,
                         max_height=420, wrap=True, label="Expressions (click a row to inspect it)",
                         elem_id="rvos-inspect-table")
    with gr.Row(equal_height=False):
        csv_btn = gr.Button("Download table as CSV", size="sm", scale=0, min_width=220, elem_id="rvos-inspect-csv")
        csv_file = gr.File(label="CSV", interactive=False, visible=False, height=60, elem_id="rvos-inspect-download")
    with gr.Row(equal_height=True):
        hist = gr.BarPlot(None, x="bin", y="expressions", title="Histogram of the shown rows", y_title="expressions",
                          x_label_angle=-40, height=260, elem_id="rvos-inspect-hist")
        curve = gr.LinePlot(None, x="frame", y="J", color="model", title="Per-frame J of the shown expression",
                            y_lim=[0, 1], height=260, elem_id="rvos-inspect-curve")
    with gr.Row(equal_height=True):
        key_box = gr.Textbox(label="Expression (<video>/<exp_id>; Enter to show)", scale=1,
                             elem_id="rvos-inspect-key")
        info = gr.Markdown("", elem_id="rvos-inspect-info")
    frame = gr.Slider(0, 1, value=0, step=1, label="Frame (starts at the frame with the lowest J)",
                      elem_id="rvos-inspect-frame")
    with gr.Row(equal_height=True):
        frame_info = gr.Markdown("", elem_id="rvos-inspect-frame-info")
        gr.Markdown(LEGEND, elem_id="rvos-inspect-legend")
    with gr.Row(equal_height=False):
        image_a = gr.Image(type="numpy", format="jpeg", interactive=False, label="A vs ground truth",
                           buttons=["fullscreen"], elem_id="rvos-inspect-image-a")
        image_b = gr.Image(type="numpy", format="jpeg", interactive=False, label="B vs ground truth",
                           buttons=["fullscreen"], visible=False, elem_id="rvos-inspect-image-b")

    filter_in = [video_dd, words, objects, score_dd, low, high, sort_dd, descending]

    def _rows(request: gr.Request, video, text, objs, score, lo, hi, sort_by, desc):
        row_filter = RowFilter(video=video or None, words=text or "", objects=objs or "all",
                               score_range=(float(lo), float(hi)), score_column=score or None)
        return service.rows(request.session_hash, row_filter, sort_by, desc)

    @_user_errors
    def on_upload(file: str | None, request: gr.Request):
        return service.upload(request.session_hash, file)

    @_user_errors
    def on_load(gt: str, pred_a: str, pred_b: str, request: gr.Request, progress=gr.Progress()):
        def report(done: int, total: int, message: str) -> None:
            progress((int(done), int(total) or None), desc=message)

        progress(0.0, desc="Reading the ground truth…")
        ins = service.load(request.session_hash, gt, pred_a, pred_b, report)
        score_cols = [c for c in table_columns(ins.pair) if c in SCORE_COLUMNS]
        primary = "J&F_A" if ins.pair else "J&F"
        names = [p for p in (pred_a, pred_b) if (p or "").strip()]
        worst = sort_rows(ins.rows)[0].key if ins.rows else ""
        return (_summary(ins, names),
                gr.Dropdown(choices=[("All videos", ALL_VIDEOS)] + [(v, v) for v in ins.videos], value=ALL_VIDEOS),
                gr.Dropdown(choices=score_cols, value=primary),
                gr.Dropdown(choices=list(table_columns(ins.pair)), value=primary),
                *_range_sliders(primary),
                gr.Dataframe(headers=list(table_columns(ins.pair)), datatype=_datatypes(ins.pair)),
                gr.Image(value=None, visible=ins.pair, label=f"{ins.labels[-1]} vs ground truth"),
                worst)

    @_user_errors
    def on_filter(video, text, objs, score, lo, hi, sort_by, desc, request: gr.Request):
        ins, rows = _rows(request, video, text, objs, score, lo, hi, sort_by, desc)
        if ins is None:
            return _table([], False), None, "No evaluation loaded."
        score = score or ("J&F_A" if ins.pair else "J&F")
        data, labels = _histogram(rows, score)
        shown = f" — mean {score} of shown rows {np.mean([r.value(score) for r in rows]):.3f}" if rows else ""
        return (_table(rows, ins.pair), gr.BarPlot(value=data, sort=labels, x_title=score),
                f"Showing {len(rows)} of {len(ins.rows)} expressions{shown}.")

    def on_score(score: str):
        return _range_sliders(score)

    def on_select(evt: gr.SelectData):
        row = evt.row_value or []
        if len(row) < 2:
            raise gr.Error("click a row of the table")
        return f"{row[0]}/{row[1]}"

    @_user_errors
    def on_pick(key: str, request: gr.Request):
        ins = service.require(request.session_hash)
        key = (key or "").strip()
        try:
            scores = ins.scores(key)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        row = next(r for r in ins.rows if r.key == key)
        text = f"**{key}** — “{row.expression}” — {row.num_objects} object(s) — " + " · ".join(
            f"{label}: J {s.J:.3f}, F {s.F:.3f}, J&F {s.JF:.3f}" for label, s in zip(ins.labels, scores))
        t = ins.num_frames(key)
        slider = gr.Slider(minimum=0, maximum=max(t - 1, 1), value=worst_frame(*scores), step=1,
                           interactive=t > 1)
        return key, text, slider, pd.DataFrame(frame_curve(list(zip(ins.labels, scores))))

    @_user_errors
    def on_frame(key: str, index: float, request: gr.Request):
        ins = service.require(request.session_hash)
        try:
            shown = ins.read_frame((key or "").strip(), int(index))
        except (KeyError, IndexError) as e:
            raise ValueError(e.args[0]) from None
        overlays = shown.overlays()
        return overlays[0], (overlays[1] if len(overlays) > 1 else None), _frame_markdown(ins, shown)

    @_user_errors
    def on_csv(video, text, objs, score, lo, hi, sort_by, desc, request: gr.Request):
        _, rows = _rows(request, video, text, objs, score, lo, hi, sort_by, desc)
        path = service.export_csv(request.session_hash, rows)
        return gr.File(value=str(path), visible=True)

    def on_unload(request: gr.Request):
        service.close(request.session_hash)

    for box, button, api in ((gt_box, gt_up, "inspect_upload"), (pred_a_box, pred_a_up, None),
                             (pred_b_box, pred_b_up, None)):
        button.upload(on_upload, inputs=button, outputs=box, api_name=api,
                      api_visibility="public" if api else "private")
    view_out = [key_box, info, frame, curve]
    frame_out = [image_a, image_b, frame_info]
    table_out = [table, hist, count]
    load_out = [summary, video_dd, score_dd, sort_dd, low, high, table, image_b, key_box]
    loaded = load_btn.click(on_load, inputs=[gt_box, pred_a_box, pred_b_box], outputs=load_out,
                            api_name="inspect_load", **load_events)
    loaded.success(on_filter, inputs=filter_in, outputs=table_out, api_visibility="private") \
        .success(on_pick, inputs=key_box, outputs=view_out, api_visibility="private") \
        .success(on_frame, inputs=[key_box, frame], outputs=frame_out, api_visibility="private")
    score_dd.input(on_score, inputs=score_dd, outputs=[low, high], api_visibility="private", queue=False) \
        .then(on_filter, inputs=filter_in, outputs=table_out, api_visibility="private")
    gr.on([video_dd.input, words.change, objects.input, low.input, high.input, sort_dd.input,
           descending.input], on_filter, inputs=filter_in, outputs=table_out, api_name="inspect_filter",
          trigger_mode="always_last", show_progress="minimal")
    picked = key_box.submit(on_pick, inputs=key_box, outputs=view_out, api_name="inspect_pick")
    picked.success(on_frame, inputs=[key_box, frame], outputs=frame_out, api_visibility="private")
    table.select(on_select, outputs=key_box, api_visibility="private") \
        .success(on_pick, inputs=key_box, outputs=view_out, api_visibility="private") \
        .success(on_frame, inputs=[key_box, frame], outputs=frame_out, api_visibility="private")
    frame.input(on_frame, inputs=[key_box, frame], outputs=frame_out, api_name="inspect_frame",
                trigger_mode="always_last", show_progress="hidden")
    csv_btn.click(on_csv, inputs=filter_in, outputs=csv_file, api_name="inspect_csv")
    app.unload(on_unload)
    return service
