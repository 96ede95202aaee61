"""The app's Annotate tab: layout and event wiring only (widgets → :class:`demo.service.Workbench` → widgets).

Left column: the shown frame (original size, overlay of every object with its clicks), frame
browsing (slider, ◀ / ▶), click modes, undo / redo, the per-object timeline and the keyboard
shortcuts. Right column: expressions (run the engine, add / edit / delete, tick the objects each
refers to), objects (select, new, rename, colour, delete), refine and propagate (with Stop), exports,
the autosaved workspace (resume) and status lines.

Every action that changes what is shown returns the same 10 view outputs (see
:func:`view_updates`; the first five are the ones the app had before: image, frame, clip info,
object selector, status); user mistakes raise ``gr.Error`` (a message, never a traceback).
Propagation streams one frame at a time (its image and a progress line) and is stopped by the
Stop button or Esc: the button cancels the Gradio event (``cancels=[...]``) AND sets the user's
:class:`rvos_core.propagation.CancelToken`; the frames done are committed as one undoable edit
(:mod:`demo.service`).

Named API endpoints (``gradio_client``): ``/load_sample``, ``/open_clip``, ``/run``, ``/show_frame``,
``/add_object``, ``/rename_object``, ``/set_color``, ``/delete_object``, ``/add_expression``,
``/set_expression_text``, ``/set_expression_objects``, ``/delete_expression``, ``/add_click``,
``/add_box``, ``/undo``, ``/redo``, ``/clear_clicks``, ``/refine``, ``/propagate``, ``/stop``,
``/export_zip``, ``/export_mp4``, ``/export_davis``, ``/export_pred``, ``/list_workspaces``, ``/resume``.
"""

from __future__ import annotations

import functools
import html
import inspect
from typing import Any, Callable, Sequence

import gradio as gr

from demo.service import CLIP_EXTENSIONS, DIRECTIONS, FrameView, ObjectInfo, PropagationProgress, Workbench

POSITIVE, NEGATIVE, BOX = "Positive click", "Negative click", "Box"
REFINE_CHOICES = [("This frame", "frame"), ("All frames with a mask", "all")]
#: Most cells a timeline row has; longer clips put several frames in one cell.
TIMELINE_MAX_CELLS = 240

#: (keys, action) pairs shown in the page and in the README.
SHORTCUTS = [
    ("Ctrl+Z", "undo"),
    ("Ctrl+Shift+Z / Ctrl+Y", "redo"),
    ("P / N / B", "positive click / negative click / box mode"),
    ("← / →", "previous / next frame"),
    ("Esc", "stop a running propagation"),
]

#: Installed once per page by ``app.load(js=...)``: keys → clicks on the page's own buttons, so a
#: shortcut does exactly what its button does. Ignored while typing in a text field, and while
#: another tab than Annotate is shown. ``⌘`` counts as Ctrl on macOS.
SHORTCUTS_JS = """
() => {
  if (window.__rvosShortcuts) { return; }
  window.__rvosShortcuts = true;
  const press = (id) => { const el = document.getElementById(id); if (el) { el.click(); } };
  const mode = (text) => {
    for (const label of document.querySelectorAll('#rvos-click-mode label')) {
      if (label.textContent.trim() === text) { label.click(); return; }
    }
  };
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    const tag = t && t.tagName ? t.tagName.toLowerCase() : '';
    if (tag === 'textarea' || tag === 'select' || (t && t.isContentEditable)) { return; }
    if (tag === 'input' && !['radio', 'checkbox', 'button'].includes(t.type)) { return; }
    const frame = document.getElementById('rvos-frame');
    if (!frame || frame.offsetParent === null) { return; }
    const key = e.key.toLowerCase();
    const ctrl = e.ctrlKey || e.metaKey;
    let action = null;
    if (ctrl && !e.altKey) {
      if (key === 'z' && !e.shiftKey) { action = () => press('rvos-undo'); }
      else if ((key === 'z' && e.shiftKey) || key === 'y') { action = () => press('rvos-redo'); }
    } else if (!e.altKey) {
      if (key === 'p') { action = () => mode('%s'); }
      else if (key === 'n') { action = () => mode('%s'); }
      else if (key === 'b') { action = () => mode('%s'); }
      else if (e.key === 'ArrowLeft') { action = () => press('rvos-prev'); }
      else if (e.key === 'ArrowRight') { action = () => press('rvos-next'); }
      else if (e.key === 'Escape') { action = () => press('rvos-stop'); }
    }
    if (action) { e.preventDefault(); action(); }
  });
}
""" % (POSITIVE, NEGATIVE, BOX)

#: Timeline cells carry ``data-frame`` / ``data-obj``; a click on one triggers the component's click
#: event with ``{frame, obj}`` (event delegation, so it survives re-renders).
TIMELINE_JS = """
element.addEventListener('click', (e) => {
  const cell = e.target.closest('[data-frame]');
  if (cell) { trigger('click', {frame: Number(cell.dataset.frame), obj: Number(cell.dataset.obj)}); }
});
"""

TIMELINE_CSS = """
.rvos-tl { font-size: 12px; line-height: 1.2; }
.rvos-tl-row { display: flex; align-items: center; gap: 6px; margin: 3px 0; }
.rvos-tl-name { width: 140px; flex: none; overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
    cursor: pointer; }
.rvos-tl-row.sel .rvos-tl-name { font-weight: 700; }
.rvos-tl-name i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px;
    vertical-align: -1px; }
.rvos-tl-strip { display: flex; flex: 1; height: 16px; border: 1px solid rgba(128,128,128,.5); border-radius: 3px; }
.rvos-tl-strip .c { flex: 1 1 0; min-width: 1px; position: relative; cursor: pointer; }
.rvos-tl-strip .c.k::after { content: ""; position: absolute; left: 50%; top: 50%; width: 6px; height: 6px;
    margin: -3px 0 0 -3px; border-radius: 50%; background: #fff; border: 1px solid #000; z-index: 1; }
.rvos-tl-strip .c.cur { box-shadow: inset 0 0 0 2px currentColor; }
.rvos-tl-count { width: 60px; flex: none; text-align: right; opacity: .7; }
.rvos-tl-axis { display: flex; justify-content: space-between; margin-left: 146px; margin-right: 66px; opacity: .7; }
.rvos-tl-empty { opacity: .7; }
"""

CSS = """
#rvos-frame img { object-fit: contain; cursor: crosshair; }
#rvos-status { min-height: 2.5em; }
.rvos-small { font-size: 0.85em; opacity: 0.85; }
.rvos-tools { align-items: center; }
"""


def user_errors(fn: Callable) -> Callable:
    """Turn the service's user-facing exceptions into ``gr.Error`` (message shown, no traceback).

    Works for plain handlers and for generator handlers (errors raised while streaming too).
    """
    caught = (ValueError, LookupError, OSError)

    def as_gr_error(e: BaseException) -> gr.Error:
        return gr.Error(str(e), print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from fn(*args, **kwargs)
            except gr.Error:
                raise
            except caught as e:
                raise as_gr_error(e) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except caught as e:
            raise as_gr_error(e) from None

    return wrapper


def gr_progress(progress: gr.Progress) -> Callable[[int, int, str], None]:
    """Adapt ``gr.Progress`` to the library's ``progress(done, total, message)``."""

    def report(done: int, total: int, message: str) -> None:
        progress((int(done), int(total) if total else None), desc=message)

    return report


# ---- rendering of service data ----------------------------------------------------------------


def timeline_html(objects: Sequence[ObjectInfo], num_frames: int, frame: int, selected: int | None) -> str:
    """One strip per object: cells filled in the object's colour where it has a mask, a dot where it
    has clicks / a box, the shown frame outlined. A clip longer than :data:`TIMELINE_MAX_CELLS` frames
    puts several frames in a cell (opacity = the fraction of them with a mask).

    Args:
        objects: the objects, in list order. num_frames: T >= 1. frame: the shown frame.
        selected: the selected obj_id (its row in bold), or None.

    Returns:
        HTML (names escaped); each cell has ``data-frame`` (its first frame) and ``data-obj``.
    """
    if not objects:
        return ("<div class='rvos-tl rvos-tl-empty'>Timeline: no objects yet. Run an expression or click on "
                "the frame.</div>")
    n = max(1, min(num_frames, TIMELINE_MAX_CELLS))
    edges = [c * num_frames // n for c in range(n + 1)]
    current = max(c for c in range(n) if edges[c] <= frame)
    rows = [_timeline_row(o, edges, current, frame, num_frames, o.obj_id == selected) for o in objects]
    axis = (f"<div class='rvos-tl-axis'><span>0</span><span>frame {frame}</span><span>{num_frames - 1}</span></div>")
    return f"<div class='rvos-tl'>{''.join(rows)}{axis}</div>"


def _timeline_row(obj: ObjectInfo, edges: list[int], current: int, frame: int, num_frames: int,
                  selected: bool) -> str:
    masks, prompts = set(obj.mask_frames), set(obj.prompt_frames)
    r, g, b = obj.color
    cells = []
    for c in range(len(edges) - 1):
        lo, hi = edges[c], edges[c + 1]
        covered = sum(1 for t in range(lo, hi) if t in masks) / (hi - lo)
        clicked = any(t in prompts for t in range(lo, hi))
        style = f" style='background:rgba({r},{g},{b},{0.35 + 0.65 * covered:.2f})'" if covered else ""
        span = f"frame {lo}" if hi - lo == 1 else f"frames {lo}–{hi - 1}"
        title = f"{span}: {'mask' if covered else 'no mask'}{', clicks' if clicked else ''}"
        cls = "c" + (" k" if clicked else "") + (" cur" if c == current else "")
        cells.append(f"<span class='{cls}' data-frame='{lo}' data-obj='{obj.obj_id}' title='{title}'{style}></span>")
    name = html.escape(f"#{obj.obj_id} {obj.name}")
    return (f"<div class='rvos-tl-row{' sel' if selected else ''}'>"
            f"<span class='rvos-tl-name' data-frame='{frame}' data-obj='{obj.obj_id}' title='{name}'>"
            f"<i style='background:{obj.hex_color}'></i>{name}</span>"
            f"<div class='rvos-tl-strip'>{''.join(cells)}</div>"
            f"<span class='rvos-tl-count'>{len(masks)}/{num_frames}</span></div>")


def shortcuts_markdown() -> str:
    """The keyboard shortcuts as one Markdown line."""
    return "**Keys:** " + " · ".join(f"`{keys}` {action}" for keys, action in SHORTCUTS) + " (not while typing)."


def _pick(wanted: Any, current: Any, valid: Sequence[Any], cast: Callable[[Any], Any]) -> Any:
    """``wanted`` if given, else ``current`` if still valid, else the last valid value (None if none)."""
    if wanted is not None:
        return wanted
    try:
        kept = cast(current) if current not in (None, "") else None
    except (TypeError, ValueError):
        kept = None
    if kept in valid:
        return kept
    return valid[-1] if valid else None


def view_updates(view: FrameView, current_obj: Any = None, current_exp: Any = None) -> tuple:
    """The 10 values of the view outputs for a :class:`~demo.service.FrameView`, in this order:
    ``(image, frame slider, clip info, object selector, status, timeline, expression selector,
    expression's object checkboxes, object name, object colour)``.

    The selectors keep ``current_obj`` / ``current_exp`` when the view selects nothing and they still exist.
    """
    ids = [o.obj_id for o in view.object_info]
    selected = _pick(view.selected, current_obj, ids, int)
    exp_ids = [e.exp_id for e in view.expressions]
    selected_exp = _pick(view.selected_exp, current_exp, exp_ids, str)
    linked = next((list(e.obj_ids) for e in view.expressions if e.exp_id == selected_exp), [])
    obj = next((o for o in view.object_info if o.obj_id == selected), None)
    # gr.Slider needs minimum < maximum: a one-frame clip gets a locked 0..1 slider.
    slider = gr.Slider(minimum=0, maximum=max(view.num_frames - 1, 1), value=view.frame, step=1,
                       interactive=view.num_frames > 1)
    exp_choices = [(f"{e.exp_id}: {e.text}", e.exp_id) for e in view.expressions]
    return (view.image, slider, view.clip_info, gr.Dropdown(choices=view.objects, value=selected), view.status,
            timeline_html(view.object_info, view.num_frames, view.frame, selected),
            gr.Dropdown(choices=exp_choices, value=selected_exp),
            gr.CheckboxGroup(choices=view.objects, value=linked, interactive=selected_exp is not None),
            gr.Textbox(value=obj.name if obj else ""),
            gr.ColorPicker(value=obj.hex_color if obj else "#808080"))


def _workspace_updates(wb: Workbench, session_hash: str, view: FrameView) -> tuple:
    """``(workspace list, workspace line)`` after a clip was opened or a workspace resumed."""
    line = (f"Autosaving every edit to `{view.workspace}` (kept while this tab is open; "
            "resume it or another workspace below)." if view.workspace else "No autosave.")
    return gr.Dropdown(choices=wb.workspaces(session_hash), value=None), line


# ---- layout and wiring ------------------------------------------------------------------------


def build_annotate_tab(app: gr.Blocks, wb: Workbench, expression: str, model_events: dict,
                       export_events: dict) -> None:
    """Lay out the Annotate tab inside the current ``gr.Tab`` and wire its events (including page load).

    Args:
        app: the enclosing ``gr.Blocks`` (for ``app.load``).
        wb: the service.
        expression: expression prefilled in the textbox.
        model_events: event kwargs of model work (engine, refiner, propagation): one ``concurrency_id``.
        export_events: event kwargs of exports.
    """
    with gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=480):
            with gr.Row(equal_height=True):
                clip_info = gr.Markdown("Loading the sample clip…", label="Clip", elem_id="rvos-clip-info")
                upload = gr.UploadButton("Open clip…", file_types=list(CLIP_EXTENSIONS), size="sm",
                                         scale=0, min_width=120, elem_id="rvos-upload")
            image = gr.Image(type="numpy", format="jpeg", interactive=False, label="Overlay", show_label=False,
                             buttons=["fullscreen"], elem_id="rvos-frame")
            with gr.Row(equal_height=True, elem_classes="rvos-tools"):
                prev_btn = gr.Button("◀", size="sm", scale=0, min_width=40, elem_id="rvos-prev")
                frame = gr.Slider(minimum=0, maximum=1, value=0, step=1, label="Frame", scale=8,
                                  elem_id="rvos-slider")
                next_btn = gr.Button("▶", size="sm", scale=0, min_width=40, elem_id="rvos-next")
            with gr.Row(equal_height=False, elem_classes="rvos-tools"):
                click_mode = gr.Radio([POSITIVE, NEGATIVE, BOX], value=POSITIVE, show_label=False,
                                      container=False, scale=4, min_width=380, elem_id="rvos-click-mode")
                undo_btn = gr.Button("Undo", size="sm", scale=0, min_width=64, elem_id="rvos-undo")
                redo_btn = gr.Button("Redo", size="sm", scale=0, min_width=64, elem_id="rvos-redo")
                clear_btn = gr.Button("Clear clicks on frame", size="sm", scale=0, min_width=150,
                                      elem_id="rvos-clear")
            timeline = gr.HTML(timeline_html([], 1, 0, None), js_on_load=TIMELINE_JS, css_template=TIMELINE_CSS,
                               elem_id="rvos-timeline")
            gr.Markdown("Timeline: filled = mask, dot = clicks / box, outlined = shown frame; click a cell to go "
                        "there.  \n" + shortcuts_markdown(), elem_classes="rvos-small", elem_id="rvos-shortcuts")
        with gr.Column(scale=2, min_width=320):
            expr_box = gr.Textbox(value=expression, label="Expression", lines=2, max_lines=4,
                                  placeholder="e.g. the dog running around the woman", elem_id="rvos-expression")
            with gr.Row():
                run_btn = gr.Button("Run", variant="primary", elem_id="rvos-run")
                add_exp_btn = gr.Button("Add as expression", elem_id="rvos-add-expression")
            with gr.Row(equal_height=False, elem_classes="rvos-tools"):
                exp_sel = gr.Dropdown(choices=[], value=None, label="Expressions", scale=3, allow_custom_value=True,
                                      elem_id="rvos-expressions")
                save_exp_btn = gr.Button("Save text", size="sm", scale=0, min_width=90, elem_id="rvos-save-expression")
                del_exp_btn = gr.Button("Delete", size="sm", scale=0, min_width=70, elem_id="rvos-delete-expression")
            exp_objs = gr.CheckboxGroup(choices=[], value=[], label="Objects the expression refers to",
                                        interactive=False, elem_id="rvos-expression-objects")
            with gr.Row(equal_height=False, elem_classes="rvos-tools"):
                obj_sel = gr.Dropdown(choices=[], value=None, label="Object (clicks edit it)", scale=3,
                                      allow_custom_value=True, elem_id="rvos-object")
                new_obj_btn = gr.Button("New object", size="sm", scale=0, min_width=110, elem_id="rvos-new-object")
            with gr.Row(equal_height=False, elem_classes="rvos-tools"):
                obj_name = gr.Textbox(label="Name", scale=3, max_lines=1, elem_id="rvos-object-name")
                rename_btn = gr.Button("Rename", size="sm", scale=0, min_width=80, elem_id="rvos-rename")
                obj_color = gr.ColorPicker(value="#808080", label="Colour", scale=1, min_width=80,
                                           elem_id="rvos-object-color")
                del_obj_btn = gr.Button("Delete", size="sm", scale=0, min_width=70, variant="stop",
                                        elem_id="rvos-delete-object")
            with gr.Row(equal_height=False, elem_classes="rvos-tools"):
                refine_scope = gr.Radio(REFINE_CHOICES, value="frame", label="Refine (seed 003 prompts)", scale=3,
                                        elem_id="rvos-refine-scope")
                refine_btn = gr.Button("Refine", size="sm", scale=0, min_width=80, elem_id="rvos-refine")
            with gr.Row(equal_height=False, elem_classes="rvos-tools"):
                direction = gr.Radio(list(DIRECTIONS), value="forward", label="Propagate", scale=3,
                                     elem_id="rvos-direction")
                window = gr.Number(value=0, precision=0, minimum=0, label="Window (0 = to the end)", scale=1,
                                   min_width=110, elem_id="rvos-window")
            with gr.Row(equal_height=False, elem_classes="rvos-tools"):
                refit = gr.Checkbox(value=True, label="Re-fit with the refiner", elem_id="rvos-refit")
                overwrite = gr.Checkbox(value=False, label="Overwrite hand edits", elem_id="rvos-overwrite")
            with gr.Row():
                prop_btn = gr.Button("Propagate", variant="primary", elem_id="rvos-propagate")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="rvos-stop")
            with gr.Row():
                zip_btn = gr.Button("Export MeViS zip", size="sm", elem_id="rvos-export-zip")
                davis_btn = gr.Button("Export DAVIS PNGs", size="sm", elem_id="rvos-export-davis")
            with gr.Row():
                pred_btn = gr.Button("Export prediction PNGs", size="sm", elem_id="rvos-export-pred")
                mp4_btn = gr.Button("Export overlay mp4", size="sm", elem_id="rvos-export-mp4")
            download = gr.File(label="Download", interactive=False, visible=False, elem_id="rvos-download")
            status = gr.Markdown("", label="Status", elem_id="rvos-status")
            with gr.Accordion("Workspace (autosave)", open=False, elem_id="rvos-workspace"):
                ws_info = gr.Markdown("", elem_classes="rvos-small", elem_id="rvos-workspace-info")
                with gr.Row(equal_height=False, elem_classes="rvos-tools"):
                    ws_sel = gr.Dropdown(choices=[], value=None, allow_custom_value=True, scale=3,
                                         label="Workspace folder (autosaved, or a server path)",
                                         elem_id="rvos-workspaces")
                    resume_btn = gr.Button("Resume", size="sm", scale=0, min_width=90, elem_id="rvos-resume")
            models = gr.Markdown("", label="Models", elem_classes="rvos-small", elem_id="rvos-models")
    pending_box = gr.State(None)

    view_out = [image, frame, clip_info, obj_sel, status, timeline, exp_sel, exp_objs, obj_name, obj_color]
    clip_out = [*view_out, ws_sel, ws_info]
    keep = [frame, obj_sel, exp_sel]  # the context inputs every view handler gets last

    def clip_updates(view: FrameView, session_hash: str) -> tuple:
        return *view_updates(view), *_workspace_updates(wb, session_hash, view)

    # ---- clip ---------------------------------------------------------------------------------

    @user_errors
    def on_load(request: gr.Request):
        return clip_updates(wb.open_sample(request.session_hash), request.session_hash)

    @user_errors
    def on_upload(file: str | None, request: gr.Request):
        return clip_updates(wb.open_clip(request.session_hash, file), request.session_hash)

    @user_errors
    def on_resume(folder: str, request: gr.Request):
        return clip_updates(wb.resume(request.session_hash, folder), request.session_hash)

    @user_errors
    def list_workspaces(request: gr.Request) -> list[list[str]]:
        """``[[label, folder], …]``: this session's autosaved workspaces, newest first."""
        return [list(item) for item in wb.workspaces(request.session_hash)]

    # ---- frames -------------------------------------------------------------------------------

    @user_errors
    def on_show(frame_idx: int, request: gr.Request):
        return wb.show(request.session_hash, frame_idx).image

    @user_errors
    def on_timeline(frame_idx: int, obj_id: Any = None, request: gr.Request = None):
        objects, num_frames = wb.overview(request.session_hash)
        return timeline_html(objects, num_frames, wb.step_frame(request.session_hash, frame_idx, 0),
                             _int_or_none(obj_id))

    @user_errors
    def on_timeline_click(obj_id: Any, exp_id: Any, evt: gr.EventData, request: gr.Request):
        data = getattr(evt, "_data", None) or {}
        target = data.get("obj", obj_id)
        view = wb.show(request.session_hash, data.get("frame", 0), selected=target)
        view.status = f"Frame {view.frame}, object #{view.selected}."
        return view_updates(view, target, exp_id)

    def stepper(delta: int) -> Callable:
        @user_errors
        def step(frame_idx: int, request: gr.Request):
            return wb.step_frame(request.session_hash, frame_idx, delta)

        return step

    # ---- engine, expressions ------------------------------------------------------------------

    @user_errors
    def on_run(expression: str, frame_idx: int, obj_id: Any = None, exp_id: Any = None, request: gr.Request = None,
               progress=gr.Progress()):
        return view_updates(wb.run(request.session_hash, expression, frame_idx, gr_progress(progress)), obj_id, exp_id)

    @user_errors
    def on_add_expression(text: str, frame_idx: int = 0, obj_id: Any = None, exp_id: Any = None,
                          request: gr.Request = None):
        linked = [] if _int_or_none(obj_id) is None else [obj_id]
        return view_updates(wb.add_expression(request.session_hash, frame_idx, text, linked), obj_id, exp_id)

    @user_errors
    def on_set_text(exp_id: Any, text: str, frame_idx: int = 0, obj_id: Any = None, request: gr.Request = None):
        return view_updates(wb.set_expression_text(request.session_hash, frame_idx, exp_id, text), obj_id, exp_id)

    @user_errors
    def on_set_objects(exp_id: Any, obj_ids: list | None, frame_idx: int = 0, obj_id: Any = None,
                       request: gr.Request = None):
        ids = sorted(obj_ids or [], key=lambda v: _int_or_none(v) or 0)  # tick order does not matter
        return view_updates(wb.set_expression_objects(request.session_hash, frame_idx, exp_id, ids), obj_id, exp_id)

    @user_errors
    def set_expression_objects(exp_id: str, obj_ids: list[int], request: gr.Request = None) -> dict:
        """Set the objects an expression refers to (API; the page uses the checkboxes).

        Returns ``{"exp_id", "obj_ids", "status"}``.
        """
        view = wb.set_expression_objects(request.session_hash, 0, exp_id, obj_ids)
        entry = next(e for e in view.expressions if e.exp_id == view.selected_exp)
        return {"exp_id": entry.exp_id, "obj_ids": list(entry.obj_ids), "status": view.status}

    @user_errors
    def on_delete_expression(exp_id: Any, frame_idx: int = 0, obj_id: Any = None, request: gr.Request = None):
        return view_updates(wb.delete_expression(request.session_hash, frame_idx, exp_id), obj_id)

    @user_errors
    def on_pick_expression(frame_idx: int, obj_id: Any = None, exp_id: Any = None, request: gr.Request = None):
        view = wb.show(request.session_hash, frame_idx)
        text = next((e.text for e in view.expressions if e.exp_id == str(exp_id)), gr.skip())
        return *view_updates(view, obj_id, exp_id), text

    # ---- objects ------------------------------------------------------------------------------

    @user_errors
    def on_new_object(frame_idx: int, obj_id: Any = None, exp_id: Any = None, request: gr.Request = None):
        return view_updates(wb.add_object(request.session_hash, frame_idx), obj_id, exp_id)

    @user_errors
    def on_pick_object(frame_idx: int, obj_id: Any = None, exp_id: Any = None, request: gr.Request = None):
        return view_updates(wb.show(request.session_hash, frame_idx, selected=obj_id), obj_id, exp_id)

    @user_errors
    def on_rename(name: str, frame_idx: int, obj_id: Any = None, exp_id: Any = None, request: gr.Request = None):
        return view_updates(wb.rename_object(request.session_hash, frame_idx, obj_id, name), obj_id, exp_id)

    @user_errors
    def on_color(color: str, frame_idx: int, obj_id: Any = None, exp_id: Any = None, request: gr.Request = None):
        return view_updates(wb.set_color(request.session_hash, frame_idx, obj_id, color), obj_id, exp_id)

    @user_errors
    def on_delete_object(frame_idx: int, obj_id: Any = None, exp_id: Any = None, request: gr.Request = None):
        return view_updates(wb.delete_object(request.session_hash, frame_idx, obj_id), None, exp_id)

    # ---- prompts, history ---------------------------------------------------------------------

    @user_errors
    def on_select(frame_idx: int, obj_id: Any, exp_id: Any, mode: str, pending: Any, evt: gr.SelectData,
                  request: gr.Request):
        if evt.index is None:
            raise gr.Error("click inside the frame")
        x, y = int(evt.index[0]), int(evt.index[1])
        if mode != BOX:
            view = wb.click(request.session_hash, frame_idx, obj_id, x, y, positive=(mode == POSITIVE))
            return *view_updates(view, obj_id, exp_id), None
        if not pending or pending[0] != int(frame_idx):
            view = wb.show(request.session_hash, frame_idx, f"Box: first corner ({x}, {y}); click the opposite corner.")
            return *view_updates(view, obj_id, exp_id), (int(frame_idx), x, y)
        view = wb.box(request.session_hash, frame_idx, obj_id, (pending[1], pending[2], x, y))
        return *view_updates(view, obj_id, exp_id), None

    def on_mode(mode: str):
        hint = {POSITIVE: "Click on the frame to add to the selected object (a new one if none).",
                NEGATIVE: "Click on the frame to remove a region from the selected object.",
                BOX: "Click two opposite corners of the object's box on the frame."}[mode]
        return hint, None

    @user_errors
    def add_click(frame: int, x: int, y: int, positive: bool = True, obj_id: int | None = None,
                  request: gr.Request = None) -> dict:
        """API-only positive/negative click at (x, y) pixels (for scripts; the page uses image selection).

        Returns ``{"obj_id", "frame", "status"}`` (the object clicked, a new one when ``obj_id`` is None).
        """
        view = wb.click(request.session_hash, frame, obj_id, x, y, positive)
        return {"obj_id": view.selected, "frame": view.frame, "status": view.status}

    @user_errors
    def add_box(frame: int, x0: int, y0: int, x1: int, y1: int, obj_id: int | None = None,
                request: gr.Request = None) -> dict:
        """API-only box prompt, XYXY pixels (for scripts; the page uses two clicks in Box mode).

        Returns ``{"obj_id", "frame", "status"}`` like ``/add_click``.
        """
        view = wb.box(request.session_hash, frame, obj_id, (x0, y0, x1, y1))
        return {"obj_id": view.selected, "frame": view.frame, "status": view.status}

    @user_errors
    def on_undo(frame_idx: int, obj_id: Any = None, exp_id: Any = None, request: gr.Request = None):
        return view_updates(wb.undo(request.session_hash, frame_idx), obj_id, exp_id)

    @user_errors
    def on_redo(frame_idx: int, obj_id: Any = None, exp_id: Any = None, request: gr.Request = None):
        return view_updates(wb.redo(request.session_hash, frame_idx), obj_id, exp_id)

    @user_errors
    def on_clear(frame_idx: int, obj_id: Any = None, exp_id: Any = None, request: gr.Request = None):
        return view_updates(wb.clear_clicks(request.session_hash, frame_idx, obj_id), obj_id, exp_id)

    # ---- refine, propagate --------------------------------------------------------------------

    @user_errors
    def on_refine(scope: str, frame_idx: int, obj_id: Any = None, exp_id: Any = None, request: gr.Request = None,
                  progress=gr.Progress()):
        view = wb.refine(request.session_hash, frame_idx, obj_id, scope, gr_progress(progress))
        return view_updates(view, obj_id, exp_id)

    @user_errors
    def on_propagate(direction: str = "forward", window: float | None = 0, refit: bool = True, overwrite: bool = False,
                     frame_idx: int = 0, obj_id: Any = None, exp_id: Any = None, request: gr.Request = None):
        skip = gr.skip()
        for update in wb.propagate(request.session_hash, frame_idx, obj_id, direction, window, overwrite, refit):
            if isinstance(update, PropagationProgress):
                yield update.image, skip, skip, skip, update.status, skip, skip, skip, skip, skip
            else:
                yield view_updates(update, obj_id, exp_id)

    @user_errors
    def on_stop(frame_idx: int, obj_id: Any = None, exp_id: Any = None, request: gr.Request = None):
        return view_updates(wb.stop(request.session_hash, frame_idx), obj_id, exp_id)

    # ---- exports ------------------------------------------------------------------------------

    def exporter(export: Callable[..., Any], what: str, with_progress: bool) -> Callable:
        @user_errors
        def handler(request: gr.Request, progress=gr.Progress()):
            args = (gr_progress(progress),) if with_progress else ()
            path = export(request.session_hash, *args)
            return gr.File(value=str(path), visible=True), f"Exported {path.name} ({what})."

        return handler

    # ---- wiring -------------------------------------------------------------------------------

    app.load(on_load, outputs=clip_out, api_name="load_sample")
    # Re-read on every page load, so a checkpoint or HQ-SAM installed later shows up.
    app.load(lambda: f"{wb.engine_status()}  \n{wb.refiner_status()}", outputs=models,
             api_visibility="private", queue=False)
    app.load(None, js=SHORTCUTS_JS)
    upload.upload(on_upload, inputs=upload, outputs=clip_out, api_name="open_clip")
    resume_btn.click(on_resume, inputs=ws_sel, outputs=clip_out, api_name="resume")
    gr.api(list_workspaces, api_name="list_workspaces")

    frame.change(on_show, inputs=frame, outputs=image, api_name="show_frame", show_progress="hidden",
                 trigger_mode="always_last")
    frame.change(on_timeline, inputs=[frame, obj_sel], outputs=timeline, api_visibility="private",
                 show_progress="hidden", trigger_mode="always_last")
    prev_btn.click(stepper(-1), inputs=frame, outputs=frame, api_visibility="private", show_progress="hidden",
                   trigger_mode="always_last")
    next_btn.click(stepper(+1), inputs=frame, outputs=frame, api_visibility="private", show_progress="hidden",
                   trigger_mode="always_last")
    timeline.click(on_timeline_click, inputs=[obj_sel, exp_sel], outputs=view_out, api_visibility="private",
                   show_progress="hidden")

    run_btn.click(on_run, inputs=[expr_box, *keep], outputs=view_out, api_name="run", **model_events)
    expr_box.submit(on_run, inputs=[expr_box, *keep], outputs=view_out, api_visibility="private", **model_events)
    add_exp_btn.click(on_add_expression, inputs=[expr_box, *keep], outputs=view_out, api_name="add_expression")
    save_exp_btn.click(on_set_text, inputs=[exp_sel, expr_box, frame, obj_sel], outputs=view_out,
                       api_name="set_expression_text")
    exp_objs.input(on_set_objects, inputs=[exp_sel, exp_objs, frame, obj_sel], outputs=view_out,
                   api_visibility="private")
    gr.api(set_expression_objects, api_name="set_expression_objects")
    del_exp_btn.click(on_delete_expression, inputs=[exp_sel, frame, obj_sel], outputs=view_out,
                      api_name="delete_expression")
    exp_sel.input(on_pick_expression, inputs=keep, outputs=[*view_out, expr_box], api_visibility="private")

    new_obj_btn.click(on_new_object, inputs=keep, outputs=view_out, api_name="add_object")
    obj_sel.input(on_pick_object, inputs=keep, outputs=view_out, api_visibility="private")
    rename_btn.click(on_rename, inputs=[obj_name, *keep], outputs=view_out, api_name="rename_object")
    obj_name.submit(on_rename, inputs=[obj_name, *keep], outputs=view_out, api_visibility="private")
    obj_color.release(on_color, inputs=[obj_color, *keep], outputs=view_out, api_name="set_color")
    obj_color.submit(on_color, inputs=[obj_color, *keep], outputs=view_out, api_visibility="private")
    del_obj_btn.click(on_delete_object, inputs=keep, outputs=view_out, api_name="delete_object")

    image.select(on_select, inputs=[*keep, click_mode, pending_box], outputs=[*view_out, pending_box],
                 api_visibility="private", show_progress="minimal", **model_events)
    gr.api(add_click, api_name="add_click", **model_events)
    gr.api(add_box, api_name="add_box", **model_events)
    click_mode.change(on_mode, inputs=click_mode, outputs=[status, pending_box], api_visibility="private",
                      queue=False)
    undo_btn.click(on_undo, inputs=keep, outputs=view_out, api_name="undo")
    redo_btn.click(on_redo, inputs=keep, outputs=view_out, api_name="redo")
    clear_btn.click(on_clear, inputs=keep, outputs=view_out, api_name="clear_clicks")

    refine_btn.click(on_refine, inputs=[refine_scope, *keep], outputs=view_out, api_name="refine", **model_events)
    propagation = prop_btn.click(on_propagate, inputs=[direction, window, refit, overwrite, *keep], outputs=view_out,
                                 api_name="propagate", show_progress="hidden", **model_events)
    # Stop: cancel the streaming event (no further frame shown) AND set the user's CancelToken, then
    # commit what is done; never queued behind model work.
    stop_btn.click(on_stop, inputs=keep, outputs=view_out, api_name="stop", cancels=[propagation],
                   concurrency_limit=None)

    zip_btn.click(exporter(wb.export_zip, "MeViS layout", True), outputs=[download, status],
                  api_name="export_zip", **export_events)
    mp4_btn.click(exporter(wb.export_mp4, "overlay video", True), outputs=[download, status],
                  api_name="export_mp4", **export_events)
    davis_btn.click(exporter(wb.export_davis, "DAVIS palette PNGs, pixel value = obj_id + 1", False),
                    outputs=[download, status], api_name="export_davis", **export_events)
    pred_btn.click(exporter(wb.export_predictions, "MeViS prediction PNGs per expression", False),
                   outputs=[download, status], api_name="export_pred", **export_events)


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None
