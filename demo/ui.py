"""The Gradio app: layout and event wiring only (widgets → :class:`demo.service.Workbench` → widgets).

Left column: the shown frame (original size, overlay of every object with its clicks), the frame
slider and the click controls. Right column: the expression and Run, the object selector,
exports and status lines. Per-user heavy state lives in :class:`demo.store.SessionStore`
(keyed by ``request.session_hash``); models are shared through the registries and all model
work goes through one ``concurrency_id``.

Named API endpoints (for ``gradio_client``): ``/load_sample``, ``/open_clip``, ``/run``,
``/show_frame``, ``/add_object``, ``/add_click``, ``/add_box``, ``/undo``, ``/redo``, ``/clear_clicks``,
``/export_zip``, ``/export_mp4``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from demo.service import CLIP_EXTENSIONS, FrameView, Workbench
from demo.store import SessionStore

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLE = REPO_ROOT / "assets" / "samples" / "sam2_dog.mp4"
DEFAULT_EXPRESSION = "the small dog running around the woman"

#: Concurrency group shared by every event that runs a model (engine or refiner).
MODEL_CONCURRENCY_ID = "rvos-model"
EXPORT_CONCURRENCY_ID = "rvos-export"

POSITIVE, NEGATIVE, BOX = "Positive click", "Negative click", "Box"

CSS = """
#rvos-frame img { object-fit: contain; cursor: crosshair; }
#rvos-status { min-height: 2.5em; }
.rvos-small { font-size: 0.85em; opacity: 0.85; }
.rvos-tools { align-items: center; }
"""


def _user_errors(fn: Callable) -> Callable:
    """Turn the service's user-facing exceptions into ``gr.Error`` (message shown, no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except (ValueError, FileNotFoundError, LookupError) as e:
            raise gr.Error(str(e), print_exception=False) from None

    return wrapper


def _gr_progress(progress: gr.Progress) -> Callable[[int, int, str], None]:
    """Adapt ``gr.Progress`` to the library's ``progress(done, total, message)``."""

    def report(done: int, total: int, message: str) -> None:
        progress((int(done), int(total) if total else None), desc=message)

    return report


def _view_updates(view: FrameView, current_obj: Any = None) -> tuple:
    """The 5 outputs ``[image, frame, clip_info, objects, status]`` for a :class:`FrameView`.

    The object selector keeps ``current_obj`` when the view selects nothing and it still exists.
    """
    ids = [oid for _, oid in view.objects]
    selected = view.selected
    if selected is None:
        try:
            selected = int(current_obj) if current_obj is not None and int(current_obj) in ids else None
        except (TypeError, ValueError):
            selected = None
    if selected is None and ids:
        selected = ids[-1]
    # gr.Slider needs minimum < maximum: a one-frame clip gets a locked 0..1 slider.
    slider = gr.Slider(minimum=0, maximum=max(view.num_frames - 1, 1), value=view.frame, step=1,
                       interactive=view.num_frames > 1)
    dropdown = gr.Dropdown(choices=view.objects, value=selected)
    return view.image, slider, view.clip_info, dropdown, view.status


def build_app(sample: str | Path = DEFAULT_SAMPLE, model: str = "clip-rvos-tiny", refiner: str = "auto",
              expression: str = DEFAULT_EXPRESSION, engine_factory: Callable | None = None,
              refiner_factory: Callable | None = None, model_concurrency: int = 1,
              store: SessionStore | None = None) -> gr.Blocks:
    """Build (not launch) the RVOS Workbench app. Nothing is loaded until a user opens the page.

    Args:
        sample: clip opened when a page loads (video file or folder of frames).
        model: engine name (see ``rvos_core.engines.registry.list_engines()``).
        refiner: refiner name for ``rvos_core.refiners.registry.load_refiner`` (``"auto"``: HQ-SAM if
            installed, else GrabCut).
        expression: expression prefilled in the textbox.
        engine_factory: ``name → Engine`` override (tests); default the shared registry.
        refiner_factory: ``name → Refiner`` override (tests); default the shared registry.
        model_concurrency: how many model events (Run, clicks) may run at once across all users.
        store: the per-user workspace store (a fresh one by default).

    Returns:
        The ``gr.Blocks``; its ``workbench`` attribute is the :class:`~demo.service.Workbench`
        (tests read ``app.workbench.store`` to check a user's session).
    """
    wb = Workbench(store or SessionStore(), sample, model=model, refiner=refiner,
                   engine_factory=engine_factory, refiner_factory=refiner_factory)
    model_events = {"concurrency_id": MODEL_CONCURRENCY_ID, "concurrency_limit": model_concurrency}
    export_events = {"concurrency_id": EXPORT_CONCURRENCY_ID, "concurrency_limit": 2}

    with gr.Blocks(title="RVOS Workbench", delete_cache=(1800, 6 * 3600)) as app:
        gr.Markdown("### RVOS Workbench — referring video object segmentation")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=480):
                with gr.Row(equal_height=True):
                    clip_info = gr.Markdown("Loading the sample clip…", label="Clip", elem_id="rvos-clip-info")
                    upload = gr.UploadButton("Open clip…", file_types=list(CLIP_EXTENSIONS), size="sm",
                                            scale=0, min_width=120, elem_id="rvos-upload")
                image = gr.Image(type="numpy", format="png", interactive=False, label="Overlay", show_label=False,
                                 buttons=["fullscreen"], elem_id="rvos-frame")
                frame = gr.Slider(minimum=0, maximum=1, value=0, step=1, label="Frame", elem_id="rvos-slider")
                with gr.Row(equal_height=False, elem_classes="rvos-tools"):
                    click_mode = gr.Radio([POSITIVE, NEGATIVE, BOX], value=POSITIVE, show_label=False,
                                          container=False, scale=4, min_width=380, elem_id="rvos-click-mode")
                    undo_btn = gr.Button("Undo", size="sm", scale=0, min_width=64, elem_id="rvos-undo")
                    redo_btn = gr.Button("Redo", size="sm", scale=0, min_width=64, elem_id="rvos-redo")
                    clear_btn = gr.Button("Clear clicks on frame", size="sm", scale=0, min_width=150,
                                          elem_id="rvos-clear")
            with gr.Column(scale=2, min_width=320):
                expr_box = gr.Textbox(value=expression, label="Expression", lines=2, max_lines=4,
                                      placeholder="e.g. the dog running around the woman", elem_id="rvos-expression")
                run_btn = gr.Button("Run", variant="primary", elem_id="rvos-run")
                with gr.Row(equal_height=False, elem_classes="rvos-tools"):
                    obj_sel = gr.Dropdown(choices=[], value=None, label="Object (clicks edit it)", scale=3,
                                          elem_id="rvos-object")
                    new_obj_btn = gr.Button("New object", size="sm", scale=0, min_width=110, elem_id="rvos-new-object")
                with gr.Row():
                    zip_btn = gr.Button("Export MeViS zip", size="sm", elem_id="rvos-export-zip")
                    mp4_btn = gr.Button("Export overlay mp4", size="sm", elem_id="rvos-export-mp4")
                download = gr.File(label="Download", interactive=False, visible=False, elem_id="rvos-download")
                status = gr.Markdown("", label="Status", elem_id="rvos-status")
                models = gr.Markdown("", label="Models", elem_classes="rvos-small", elem_id="rvos-models")
        pending_box = gr.State(None)

        view_out = [image, frame, clip_info, obj_sel, status]

        @_user_errors
        def on_load(request: gr.Request):
            return _view_updates(wb.open_sample(request.session_hash))

        @_user_errors
        def on_upload(file: str | None, request: gr.Request):
            return _view_updates(wb.open_clip(request.session_hash, file))

        @_user_errors
        def on_run(expression: str, frame_idx: int, obj_id: Any, request: gr.Request, progress=gr.Progress()):
            return _view_updates(wb.run(request.session_hash, expression, frame_idx, _gr_progress(progress)), obj_id)

        @_user_errors
        def on_show(frame_idx: int, request: gr.Request):
            return wb.show(request.session_hash, frame_idx).image

        @_user_errors
        def on_new_object(frame_idx: int, request: gr.Request):
            return _view_updates(wb.add_object(request.session_hash, frame_idx))

        @_user_errors
        def on_select(frame_idx: int, obj_id: Any, mode: str, pending: Any, evt: gr.SelectData, request: gr.Request):
            if evt.index is None:
                raise gr.Error("click inside the frame")
            x, y = int(evt.index[0]), int(evt.index[1])
            if mode != BOX:
                view = wb.click(request.session_hash, frame_idx, obj_id, x, y, positive=(mode == POSITIVE))
                return *_view_updates(view, obj_id), None
            if not pending or pending[0] != int(frame_idx):
                view = wb.show(request.session_hash, frame_idx, f"Box: first corner ({x}, {y}); click the opposite corner.")
                return *_view_updates(view, obj_id), (int(frame_idx), x, y)
            view = wb.box(request.session_hash, frame_idx, obj_id, (pending[1], pending[2], x, y))
            return *_view_updates(view, obj_id), None

        def on_mode(mode: str):
            hint = {POSITIVE: "Click on the frame to add to the selected object (a new one if none).",
                    NEGATIVE: "Click on the frame to remove a region from the selected object.",
                    BOX: "Click two opposite corners of the object's box on the frame."}[mode]
            return hint, None

        @_user_errors
        def on_undo(frame_idx: int, obj_id: Any, request: gr.Request):
            return _view_updates(wb.undo(request.session_hash, frame_idx), obj_id)

        @_user_errors
        def on_redo(frame_idx: int, obj_id: Any, request: gr.Request):
            return _view_updates(wb.redo(request.session_hash, frame_idx), obj_id)

        @_user_errors
        def on_clear(frame_idx: int, obj_id: Any, request: gr.Request):
            return _view_updates(wb.clear_clicks(request.session_hash, frame_idx, obj_id), obj_id)

        @_user_errors
        def on_export_zip(request: gr.Request, progress=gr.Progress()):
            path = wb.export_zip(request.session_hash, _gr_progress(progress))
            return gr.File(value=str(path), visible=True), f"Exported {path.name} (MeViS layout)."

        @_user_errors
        def on_export_mp4(request: gr.Request, progress=gr.Progress()):
            path = wb.export_mp4(request.session_hash, _gr_progress(progress))
            return gr.File(value=str(path), visible=True), f"Exported {path.name}."

        @_user_errors
        def add_click(frame: int, x: int, y: int, positive: bool = True, obj_id: int | None = None,
                      request: gr.Request = None) -> dict:
            """API-only positive/negative click at (x, y) pixels (for scripts; the page uses image selection).

            Returns ``{"obj_id", "frame", "status"}`` (the object clicked, a new one when ``obj_id`` is None).
            """
            view = wb.click(request.session_hash, frame, obj_id, x, y, positive)
            return {"obj_id": view.selected, "frame": view.frame, "status": view.status}

        @_user_errors
        def add_box(frame: int, x0: int, y0: int, x1: int, y1: int, obj_id: int | None = None,
                    request: gr.Request = None) -> dict:
            """API-only box prompt, XYXY pixels (for scripts; the page uses two clicks in Box mode).

            Returns ``{"obj_id", "frame", "status"}`` like ``/add_click``.
            """
            view = wb.box(request.session_hash, frame, obj_id, (x0, y0, x1, y1))
            return {"obj_id": view.selected, "frame": view.frame, "status": view.status}

        def on_unload(request: gr.Request):
            wb.close(request.session_hash)

        app.load(on_load, outputs=view_out, api_name="load_sample")
        # Re-read on every page load, so a checkpoint or HQ-SAM installed later shows up.
        app.load(lambda: f"{wb.engine_status()}  \n{wb.refiner_status()}", outputs=models,
                 api_visibility="private", queue=False)
        upload.upload(on_upload, inputs=upload, outputs=view_out, api_name="open_clip")
        run_btn.click(on_run, inputs=[expr_box, frame, obj_sel], outputs=view_out, api_name="run", **model_events)
        expr_box.submit(on_run, inputs=[expr_box, frame, obj_sel], outputs=view_out, api_visibility="private",
                        **model_events)
        frame.change(on_show, inputs=frame, outputs=image, api_name="show_frame", show_progress="hidden",
                     trigger_mode="always_last")
        new_obj_btn.click(on_new_object, inputs=frame, outputs=view_out, api_name="add_object")
        image.select(on_select, inputs=[frame, obj_sel, click_mode, pending_box], outputs=[*view_out, pending_box],
                     api_visibility="private", show_progress="minimal", **model_events)
        gr.api(add_click, api_name="add_click", **model_events)
        gr.api(add_box, api_name="add_box", **model_events)
        click_mode.change(on_mode, inputs=click_mode, outputs=[status, pending_box], api_visibility="private",
                          queue=False)
        undo_btn.click(on_undo, inputs=[frame, obj_sel], outputs=view_out, api_name="undo")
        redo_btn.click(on_redo, inputs=[frame, obj_sel], outputs=view_out, api_name="redo")
        clear_btn.click(on_clear, inputs=[frame, obj_sel], outputs=view_out, api_name="clear_clicks")
        zip_btn.click(on_export_zip, outputs=[download, status], api_name="export_zip", **export_events)
        mp4_btn.click(on_export_mp4, outputs=[download, status], api_name="export_mp4", **export_events)
        app.unload(on_unload)
    # Light events (frame browsing, undo, exports) may run for several users at once; model events
    # keep their own limit through MODEL_CONCURRENCY_ID.
    app.queue(default_concurrency_limit=4, max_size=128)

    app.workbench = wb
    return app


def launch(app: gr.Blocks, **kwargs: Any) -> tuple:
    """Launch ``app`` with the workbench's CSS (Gradio 6 takes css/theme in ``launch``, not ``Blocks``).

    Args:
        kwargs: passed to ``gr.Blocks.launch`` (``server_name``, ``server_port``, ``share``,
            ``prevent_thread_lock``, …).

    Returns:
        What ``launch`` returns: ``(app, local_url, share_url)``.
    """
    kwargs.setdefault("css", CSS)
    kwargs.setdefault("theme", gr.themes.Soft())
    kwargs.setdefault("show_error", True)
    return app.launch(**kwargs)
