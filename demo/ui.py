"""The Gradio app: two tabs and the app-wide wiring (page unload, queue, launch).

- Annotate (:mod:`demo.annotate_tab`): the frame with every object's overlay, click modes,
  objects, expressions, refine, propagate (with Stop), undo / redo, timeline, keyboard shortcuts,
  exports and the autosaved workspace.
- Inspect (:mod:`demo.inspect_tab`): evaluation and error inspection.

Per-user heavy state lives in :class:`demo.store.SessionStore` (keyed by ``request.session_hash``,
freed on ``demo.unload``); models are shared through the registries and all model work goes
through one ``concurrency_id``.

Above the Annotate tab's content, the engine picker (:func:`build_engine_picker`) chooses what this
user's Run uses: the model (default) or precomputed predictions (a folder / zip on the server or an
uploaded zip, + ``meta_expressions.json`` when none is inside); their masks are then corrected with
clicks like the model's. Bad input shows a message (``gr.Error``), never a traceback.

Named API endpoints (for ``gradio_client``): see :mod:`demo.annotate_tab` (``/load_sample``, ``/run``,
``/add_click``, ``/propagate``, ``/stop``, ``/export_zip``, …); ``/set_engine`` (kind, server path,
upload, meta server path, meta upload → status line); the Inspect tab adds ``/inspect_*``
(see :mod:`demo.inspect_tab`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import gradio as gr

from demo.annotate_tab import CSS as ANNOTATE_CSS
from demo.annotate_tab import build_annotate_tab
from demo.annotate_tab import user_errors as _user_errors  # (demo.inspect_tab imports it from here too)
from demo.inspect_tab import CSS as INSPECT_CSS
from demo.inspect_tab import build_inspect_tab
from demo.service import Workbench
from demo.store import SessionStore

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLE = REPO_ROOT / "assets" / "samples" / "sam2_dog.mp4"
DEFAULT_EXPRESSION = "the small dog running around the woman"

#: Concurrency group shared by every event that runs a model (engine, refiner, propagation).
MODEL_CONCURRENCY_ID = "rvos-model"
EXPORT_CONCURRENCY_ID = "rvos-export"

CSS = ANNOTATE_CSS + INSPECT_CSS


def build_app(sample: str | Path = DEFAULT_SAMPLE, model: str = "clip-rvos-tiny", refiner: str = "auto",
              expression: str = DEFAULT_EXPRESSION, engine_factory: Callable | None = None,
              refiner_factory: Callable | None = None, model_concurrency: int = 1,
              store: SessionStore | None = None, inspect_workers: int = 1) -> gr.Blocks:
    """Build (not launch) the RVOS Workbench app. Nothing is loaded until a user opens the page.

    Args:
        sample: clip opened when a page loads (video file or folder of frames).
        model: engine name (see ``rvos_core.engines.registry.list_engines()``).
        refiner: refiner name for ``rvos_core.refiners.registry.load_refiner`` (``"auto"``: HQ-SAM if
            installed, else GrabCut).
        expression: expression prefilled in the textbox.
        engine_factory: ``name → Engine`` override (tests); default the shared registry.
        refiner_factory: ``name → Refiner`` override (tests); default the shared registry.
        model_concurrency: how many model events (Run, clicks, refine, propagate) may run at once across all users.
        store: the per-user workspace store (a fresh one by default).
        inspect_workers: evaluation worker processes of the Inspect tab (see :mod:`demo.inspect_tab`).

    Returns:
        The ``gr.Blocks``; its ``workbench`` attribute is the :class:`~demo.service.Workbench`
        (tests read ``app.workbench.store`` to check a user's session) and its ``inspector`` the
        Inspect tab's :class:`~demo.inspect_tab.InspectService`.
    """
    wb = Workbench(store or SessionStore(), sample, model=model, refiner=refiner,
                   engine_factory=engine_factory, refiner_factory=refiner_factory)
    model_events = {"concurrency_id": MODEL_CONCURRENCY_ID, "concurrency_limit": model_concurrency}
    export_events = {"concurrency_id": EXPORT_CONCURRENCY_ID, "concurrency_limit": 2}

    with gr.Blocks(title="RVOS Workbench", delete_cache=(1800, 6 * 3600)) as app:
        gr.Markdown("### RVOS Workbench — referring video object segmentation")
        with gr.Tabs(elem_id="rvos-tabs"):
            with gr.Tab("Annotate", id="annotate", elem_id="rvos-tab-annotate"):
                build_engine_picker(wb, model)
                build_annotate_tab(app, wb, expression, model_events, export_events)
            with gr.Tab("Inspect", id="inspect", elem_id="rvos-tab-inspect"):
                inspector = build_inspect_tab(app, wb.store, workers=inspect_workers)

        def on_unload(request: gr.Request):
            wb.close(request.session_hash)

        app.unload(on_unload)
    # Light events (frame browsing, undo, exports) may run for several users at once; model events
    # keep their own limit through MODEL_CONCURRENCY_ID.
    app.queue(default_concurrency_limit=4, max_size=128)

    app.workbench = wb
    app.inspector = inspector
    return app


ENGINE_CHOICES = [("Model", "model"), ("Precomputed predictions", "predictions")]


def build_engine_picker(wb: Workbench, model: str) -> None:
    """Lay out the engine picker (a closed accordion) in the current container and wire ``/set_engine``.

    Args:
        wb: the service (:meth:`demo.service.Workbench.set_engine`).
        model: the app's model name, shown on the "Model" choice's status line.
    """
    with gr.Accordion("Engine for Run: the model or precomputed predictions", open=False, elem_id="rvos-engine"):
        kind = gr.Radio(ENGINE_CHOICES, value="model", label="Run uses", elem_id="rvos-engine-kind")
        with gr.Row(equal_height=False):
            path = gr.Textbox(label="Predictions on the server: folder or .zip of <video>/<exp_id>/<frame>.png",
                              max_lines=1, scale=3, elem_id="rvos-pred-path")
            upload = gr.File(label="… or upload a predictions .zip", file_types=[".zip"], type="filepath",
                             height=110, scale=2, elem_id="rvos-pred-upload")
        with gr.Row(equal_height=False):
            meta_path = gr.Textbox(label="meta_expressions.json on the server (when not inside the predictions)",
                                   max_lines=1, scale=3, elem_id="rvos-meta-path")
            meta_upload = gr.File(label="… or upload meta_expressions.json", file_types=[".json"], type="filepath",
                                  height=110, scale=2, elem_id="rvos-meta-upload")
        apply = gr.Button("Use this engine", size="sm", elem_id="rvos-engine-apply")
        info = gr.Markdown(f"Run uses the model ({model}).", elem_classes="rvos-small", elem_id="rvos-engine-info")

    @_user_errors
    def set_engine(kind: str, path: str | None = None, upload: str | None = None, meta_path: str | None = None,
                   meta_upload: str | None = None, request: gr.Request = None) -> str:
        """Choose what Run uses for this session: ``"model"`` or ``"predictions"`` (server path or uploaded
        zip, + meta_expressions.json when not inside). Returns the status line."""
        return wb.set_engine(request.session_hash, kind, path, upload, meta_path, meta_upload)

    @_user_errors
    def on_kind(kind: str, path: str | None, upload: str | None, meta_path: str | None, meta_upload: str | None,
                request: gr.Request):
        if kind == "predictions" and not (upload or str(path or "").strip()):
            return "Give the predictions (a server path or an uploaded zip), then press **Use this engine**."
        return set_engine(kind, path, upload, meta_path, meta_upload, request)

    inputs = [kind, path, upload, meta_path, meta_upload]
    apply.click(set_engine, inputs=inputs, outputs=info, api_name="set_engine")
    kind.input(on_kind, inputs=inputs, outputs=info, api_visibility="private")


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
