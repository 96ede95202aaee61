"""The Gradio app driven over HTTP with ``gradio_client``, as a script or a second program would.

The app runs in this process (``prevent_thread_lock=True``) with the real default engine
(``clip-rvos-tiny`` from ``assets/``) and the real offline GrabCut refiner; the test reads the
user's :class:`~rvos_core.session.AnnotationSession` from the app's store (keyed by the client's
``session_hash``) to compare what the UI did with the library state, mask for mask.

Covered: the engine flow (Run → masks → click corrections → exports) and the Annotate endpoints:
objects (rename, colour, delete), a multi-object expression, propagation (one undo step; Stop keeps
the frames done, as one edit), refine, DAVIS / MeViS / prediction exports read back, autosave and
resume (also of a workspace of another video), and the messages for bad input.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from _frames import as_sent

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "assets" / "samples" / "sam2_dog.mp4"
EXPRESSION = "the small dog running around the woman"
#: A pixel (x, y) on the dog's back in some frames of the sample (read off the frames by eye).
DOG = {3: (400, 275), 7: (400, 270), 12: (400, 275), 20: (480, 280)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require_demo_checkpoint() -> None:
    """Fail (not skip) with the reason when the shipped demo checkpoint is missing."""
    from rvos_core.engines.registry import engine_status

    status = engine_status("clip-rvos-tiny")
    if "not installed" in status:
        pytest.fail(f"the app tests run the real default engine, but {status}", pytrace=False)


@pytest.fixture(scope="module")
def served():
    """The app with the real engine + GrabCut, launched on a free port; closed after the module."""
    import demo

    app = demo.build_app(sample=SAMPLE, model="clip-rvos-tiny", refiner="grabcut")
    _, url, _ = demo.launch(app, server_name="127.0.0.1", server_port=_free_port(),
                            prevent_thread_lock=True, quiet=True)
    try:
        yield app, url
    finally:
        app.close()
        app.workbench.store.clear()


@pytest.fixture(scope="module")
def annotated(served):
    """One client that loaded the sample and ran the suggested expression (shared by the flow tests)."""
    require_demo_checkpoint()
    app, url = served
    client = Client(url, verbose=False)
    loaded = client.predict(api_name="/load_sample")
    ran = client.predict(EXPRESSION, 0, None, api_name="/run")
    ws = app.workbench.store.get(client.session_hash)
    return client, ws.session, loaded, ran, ws


def _file_path(payload) -> Path:
    """The local path of a file output (a path, a FileData dict, or a component update holding one)."""
    if isinstance(payload, dict) and payload.get("__type__") == "update":
        payload = payload["value"]
    return Path(payload["path"] if isinstance(payload, dict) else payload)


def _png(path_or_payload) -> np.ndarray:
    path = path_or_payload["path"] if isinstance(path_or_payload, dict) else path_or_payload
    return np.asarray(Image.open(path).convert("RGB"))


def test_load_sample_shows_frame0_and_clip_info(annotated):
    _, session, loaded, _, _ = annotated
    image, slider, info, objects, status = loaded[:5]
    assert "sam2_dog" in info and "60 frames" in info and "854×480" in info and "14.99 fps" in info
    assert slider["maximum"] == 59 and slider["value"] == 0
    shown = _png(image)
    assert shown.shape == (480, 854, 3)  # shown at original size, so click pixels are frame pixels
    # Before Run nothing is overlaid: frame 0 of the clip as decoded (PNG transport is lossless).
    np.testing.assert_array_equal(shown, as_sent(session.video.get_frame(0)))
    assert objects["choices"] == [] and "Opened sam2_dog" in status


def test_run_puts_an_engine_mask_on_every_frame(annotated):
    _, session, _, ran, _ = annotated
    image, _, _, objects, status = ran[:5]
    entry = session.expressions[-1]
    assert entry.text == EXPRESSION and entry.obj_ids, "the engine referred no object"
    assert [c[1] for c in objects["choices"]] == entry.obj_ids and objects["value"] == entry.obj_ids[0]
    assert f"{len(entry.obj_ids)} object" in status and " s (60 frames" in status
    # Every frame of every referred object holds the engine's mask (how good it is, is the model's business).
    for oid in entry.obj_ids:
        obj = session.state.objects[oid]
        assert sorted(obj.origin) == list(range(60)) and set(obj.origin.values()) == {"engine"}
    # The returned image is the session's overlay of frame 0: every masked pixel is tinted.
    shown = _png(image)
    rendered = session.render(0)
    np.testing.assert_array_equal(shown, as_sent(rendered))
    changed = np.abs(rendered.astype(int) - session.video.get_frame(0).astype(int)).sum(axis=2) > 0
    union0 = session.union_mask(0)
    assert changed[union0].all() and changed.sum() >= union0.sum()


def test_clicks_correct_the_mask_on_that_frame_only(annotated):
    client, session, _, _, _ = annotated
    oid, frame = session.expressions[-1].obj_ids[0], 7
    before = [session.mask(oid, t) for t in range(60)]
    # A positive click on the dog's back: the refiner puts that pixel into the object's mask.
    out = client.predict(frame=frame, x=DOG[frame][0], y=DOG[frame][1], positive=True, obj_id=oid,
                         api_name="/add_click")
    assert out["obj_id"] == oid and out["frame"] == frame and "positive click" in out["status"]
    grown = session.mask(oid, frame)
    assert grown[DOG[frame][1], DOG[frame][0]] and grown.sum() > 500
    # A negative click inside that mask, away from the positive one, takes its region out.
    ys, xs = np.nonzero(grown)
    far = np.hypot(xs - DOG[frame][0], ys - DOG[frame][1]) > 25
    x, y = int(xs[far][far.sum() // 2]), int(ys[far][far.sum() // 2])
    client.predict(frame=frame, x=x, y=y, positive=False, obj_id=oid, api_name="/add_click")
    after = session.mask(oid, frame)
    assert not after[y, x] and after.sum() < grown.sum()
    assert [(p.xy, p.label) for p in session.prompts(oid, frame)] == [
        ((float(DOG[frame][0]), float(DOG[frame][1])), 1), ((float(x), float(y)), 0)]
    for t in range(60):  # no other frame moved
        if t != frame:
            np.testing.assert_array_equal(session.mask(oid, t), before[t])
    # The shown frame follows the session: a red click marker is drawn at (x, y).
    shown = _png(client.predict(frame, api_name="/show_frame"))
    np.testing.assert_array_equal(shown, as_sent(session.render(frame)))
    assert shown[y, x, 0] > 150 and shown[y, x, 1] < 80


def test_undo_redo_clear_round_trip(annotated):
    client, session, _, _, _ = annotated
    oid, frame = session.expressions[-1].obj_ids[0], 20
    engine_mask = session.mask(oid, frame)
    client.predict(frame=frame, x=DOG[frame][0], y=DOG[frame][1], positive=True, obj_id=oid, api_name="/add_click")
    clicked = session.mask(oid, frame)
    assert not np.array_equal(clicked, engine_mask)
    out = client.predict(frame, oid, api_name="/undo")
    assert "Undo: positive click" in out[4]
    np.testing.assert_array_equal(session.mask(oid, frame), engine_mask)
    assert session.prompts(oid, frame) == []
    out = client.predict(frame, oid, api_name="/redo")
    assert "Redo: positive click" in out[4]
    np.testing.assert_array_equal(session.mask(oid, frame), clicked)
    out = client.predict(frame, oid, api_name="/clear_clicks")
    assert f"Cleared the clicks of object #{oid} on frame {frame}" in out[4]
    np.testing.assert_array_equal(session.mask(oid, frame), engine_mask)
    assert session.prompts(oid, frame) == []


def test_export_zip_reads_back_equal_to_the_session(annotated):
    from rvos_core.formats.mevis import read_mevis_split

    client, session, _, _, ws = annotated
    payload, status = client.predict(api_name="/export_zip")
    path = _file_path(payload)
    assert path.suffix == ".zip" and path.name.startswith("sam2_dog-") and "Exported" in status
    assert any(p.suffix == ".zip" for p in ws.tmp_dir.iterdir()), "export not written in the user's folder"
    with read_mevis_split(path) as split:
        assert split.frame_names("sam2_dog") == [f"{i:05d}" for i in range(60)]
        exps = split.expressions("sam2_dog")
        assert [(e.exp, e.obj_id) for e in exps.values()] == [(x.text, x.obj_ids) for x in session.expressions]
        for oid in session.state.objects:
            masks = split.object_masks(oid)
            for t in range(60):
                got = masks[t] if masks[t] is not None else np.zeros((480, 854), bool)
                np.testing.assert_array_equal(got, session.mask(oid, t), err_msg=f"obj {oid} frame {t}")
    # Two exports never share a file name.
    second, _ = client.predict(api_name="/export_zip")
    assert _file_path(second).name != path.name


def test_export_overlay_mp4(annotated):
    from rvos_core.video import open_video

    client, session, _, _, _ = annotated
    payload, _ = client.predict(api_name="/export_mp4")
    path = _file_path(payload)
    video = open_video(path)
    assert (len(video), video.meta.width, video.meta.height) == (60, 854, 480)
    video.close()


def test_two_clients_keep_separate_state(served, annotated):
    app, url = served
    first, first_session, _, _, _ = annotated
    n_objects = len(first_session.state.objects)
    other = Client(url, verbose=False)
    assert other.session_hash != first.session_hash
    _, _, _, objects, _ = other.predict(api_name="/load_sample")[:5]
    assert objects["choices"] == []
    out = other.predict(frame=3, x=DOG[3][0], y=DOG[3][1], positive=True, obj_id=None, api_name="/add_click")
    other_session = app.workbench.store.get(other.session_hash).session
    assert other_session is not first_session
    assert list(other_session.state.objects) == [out["obj_id"]] == [0]  # its own ids start at 0
    assert other_session.mask(0, 3)[DOG[3][1], DOG[3][0]]
    assert len(first_session.state.objects) == n_objects  # the first user's session is untouched
    fresh = Client(url, verbose=False)
    fresh.predict(api_name="/load_sample")
    with pytest.raises(AppError, match="nothing to export"):
        fresh.predict(api_name="/export_zip")


def test_box_prompt_creates_an_object_inside_the_box(served):
    app, url = served
    client = Client(url, verbose=False)
    client.predict(api_name="/load_sample")
    out = client.predict(frame=5, x0=330, y0=180, x1=520, y1=400, obj_id=None, api_name="/add_box")
    session = app.workbench.store.get(client.session_hash).session
    mask = session.mask(out["obj_id"], 5)
    assert mask.sum() > 1000 and not mask[:180].any() and not mask[:, :330].any() and not mask[400:].any()
    (prompt,) = session.prompts(out["obj_id"], 5)
    assert prompt.kind == "box" and prompt.box == (330.0, 180.0, 520.0, 400.0)


def test_engine_errors_reach_the_user_as_messages(tmp_path):
    """Error path only: an engine whose checkpoint is missing (injected) → a clear message, not a crash."""
    import demo

    def missing(name: str):
        raise FileNotFoundError(f"model checkpoint not found: {tmp_path / 'nope.pt'}")

    app = demo.build_app(sample=SAMPLE, engine_factory=missing, refiner="grabcut")
    _, url, _ = demo.launch(app, server_name="127.0.0.1", server_port=_free_port(), prevent_thread_lock=True,
                            quiet=True)
    try:
        client = Client(url, verbose=False)
        client.predict(api_name="/load_sample")
        with pytest.raises(AppError, match="model checkpoint not found: .*nope.pt"):
            client.predict(EXPRESSION, 0, None, api_name="/run")
        assert client.predict(3, api_name="/show_frame")  # the session survives the failed run
    finally:
        app.close()
        app.workbench.store.clear()


def test_bad_uploads_give_the_library_message_and_the_app_keeps_working(served, tmp_path):
    app, url = served
    client = Client(url, verbose=False)
    client.predict(api_name="/load_sample")
    fake = tmp_path / "broken.mp4"
    fake.write_bytes(os.urandom(4096))
    with pytest.raises(AppError, match="cannot open as a video"):
        client.predict(handle_file(str(fake)), api_name="/open_clip")
    notes = tmp_path / "notes.zip"
    notes.write_bytes(b"not a zip at all")
    with pytest.raises(AppError, match="not a readable zip"):
        client.predict(handle_file(str(notes)), api_name="/open_clip")
    with pytest.raises(AppError, match="type an expression"):
        client.predict("   ", 0, None, api_name="/run")
    with pytest.raises(AppError, match="outside the 854x480 frame"):
        client.predict(frame=0, x=900, y=10, positive=True, obj_id=None, api_name="/add_click")
    with pytest.raises(AppError, match="negative click removes from an object"):
        client.predict(frame=0, x=10, y=10, positive=False, obj_id=None, api_name="/add_click")
    with pytest.raises(AppError, match="object #7 does not exist"):
        client.predict(frame=0, x=10, y=10, positive=True, obj_id=7, api_name="/add_click")
    assert app.workbench.store.get(client.session_hash).session.state.objects == {}  # no half-made object
    # Still usable, still the sample.
    _, _, info, _, _ = client.predict(0, None, api_name="/undo")[:5]
    assert "sam2_dog" in info


def test_zip_of_frames_upload(served, tmp_path):
    app, url = served
    from rvos_core.video import open_video

    archive = tmp_path / "swan.zip"
    with open_video(SAMPLE) as video, zipfile.ZipFile(archive, "w") as zf:
        for i in range(5):  # five real frames as JPEGs in one folder of the zip
            Image.fromarray(video.get_frame(i * 10)).save(tmp_path / f"{i:05d}.jpg", quality=90)
            zf.write(tmp_path / f"{i:05d}.jpg", f"frames/{i:05d}.jpg")
        zf.writestr("frames/notes.txt", "ignored: not a frame")
    client = Client(url, verbose=False)
    client.predict(api_name="/load_sample")
    image, slider, info, _, _ = client.predict(handle_file(str(archive)), api_name="/open_clip")[:5]
    assert "**swan** · 5 frames" in info and "854×480" in info and slider["maximum"] == 4
    np.testing.assert_array_equal(_png(image).shape, (480, 854, 3))
    ws = app.workbench.store.get(client.session_hash)
    assert ws.session.video_name == "swan" and len(ws.session.video) == 5
    (copy,) = list((ws.tmp_dir / "clips").iterdir())  # the upload is the user's own copy …
    assert sorted(p.name for p in copy.iterdir()) == [f"{i:05d}.jpg" for i in range(5)]
    client.predict(api_name="/load_sample")  # … deleted once another clip replaces it
    assert list((ws.tmp_dir / "clips").iterdir()) == [] and ws.session.video_name == "sam2_dog"


def test_import_loads_nothing_and_help_is_instant():
    code = ("import sys, app, demo; "
            "heavy = [m for m in ('torch', 'gradio', 'rvos_core.engines.clip_rvos', 'cv2') if m in sys.modules]; "
            "print(heavy); assert not heavy")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run([sys.executable, "app.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--sample" in done.stdout and "--refiner" in done.stdout


def test_store_evicts_idle_and_least_recently_used_workspaces(tmp_path):
    from demo.store import SessionStore

    store = SessionStore(idle_seconds=3600, max_sessions=2, root=tmp_path)
    a, b = store.get_or_create("a"), store.get_or_create("b")
    assert store.get_or_create("a") is a and a.tmp_dir.parent == tmp_path and a.tmp_dir != b.tmp_dir
    names = {a.export_path("sam2 dog/../x", ".zip").name for _ in range(20)}
    assert len(names) == 20 and all(n.startswith("sam2_dog____x-") and n.endswith(".zip") for n in names)
    store.get("a")  # "b" is now the least recently used
    c = store.get_or_create("c")
    assert "b" not in store and not b.tmp_dir.exists() and "a" in store and "c" in store
    a.last_used -= 7200  # idle for two hours
    store.get_or_create("d")
    assert "a" not in store and not a.tmp_dir.exists() and "c" in store
    with pytest.raises(LookupError, match="reload the page"):
        store.get("a")
    assert store.drop("c") and not c.tmp_dir.exists() and not store.drop("c")
    store.clear()
    assert len(store) == 0 and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="max_sessions"):
        SessionStore(max_sessions=0)


# ---- Annotate: objects, expressions, propagation, stop, exports, autosave --------------------------------

#: A pixel (x, y) on the woman's jeans in frame 7 of the sample (read off the frame by eye).
WOMAN7 = (225, 255)
#: Outputs of every view endpoint: image, frame slider, clip info, object selector, status, timeline,
#: expression selector, the expression's object checkboxes, object name, object colour.
VIEW_OUTPUTS = 10


def _update_value(payload):
    """The ``value`` of a component update (or the payload itself)."""
    return payload["value"] if isinstance(payload, dict) and "value" in payload else payload


def _stored_frames(session, oid: int, origin: str) -> list[int]:
    return sorted(t for t, o in session.state.objects[oid].origin.items() if o == origin)


@pytest.fixture(scope="module")
def two_objects(served):
    """A fresh client with two objects clicked on frame 7, the dog (A) and the woman (B), and one
    expression referring to both (added for A, then linked to A and B).

    Returns ``(client, workspace, A, B, /add_expression outputs, /set_expression_objects output)``.
    """
    app, url = served
    client = Client(url, verbose=False)
    client.predict(api_name="/load_sample")
    a = client.predict(frame=7, x=DOG[7][0], y=DOG[7][1], positive=True, obj_id=None, api_name="/add_click")
    b = client.predict(frame=7, x=WOMAN7[0], y=WOMAN7[1], positive=True, obj_id=None, api_name="/add_click")
    a, b = a["obj_id"], b["obj_id"]
    added = client.predict(text="the dog and the woman", frame_idx=7, obj_id=a, api_name="/add_expression")
    linked = client.predict(exp_id="0", obj_ids=[a, b], api_name="/set_expression_objects")
    return client, app.workbench.store.get(client.session_hash), a, b, added, linked


def test_objects_and_a_multi_object_expression(two_objects):
    client, ws, a, b, added, linked = two_objects
    session = ws.session
    assert (a, b) == (0, 1) and session.mask(a, 7)[DOG[7][1], DOG[7][0]] and session.mask(b, 7)[WOMAN7[1], WOMAN7[0]]
    # The expression (no engine) was added for the selected object, then linked to both.
    assert len(added) == VIEW_OUTPUTS and "Expression 0" in added[4]
    assert _update_value(added[6]) == "0" and _update_value(added[7]) == [a]
    assert linked["obj_ids"] == [a, b] and [(e.text, e.obj_ids) for e in session.expressions] == [
        ("the dog and the woman", [a, b])]
    out = client.predict(name="dog", frame_idx=7, obj_id=a, api_name="/rename_object")
    assert len(out) == VIEW_OUTPUTS and session.state.objects[a].name == "dog" and _update_value(out[8]) == "dog"
    out = client.predict(color="#00ff00", frame_idx=7, obj_id=b, api_name="/set_color")
    assert session.state.objects[b].color == (0, 255, 0) and _update_value(out[9]) == "#00ff00"
    # The timeline: one row per object, a click marker on frame 7, the mask frames filled in the object colour.
    timeline = out[5]
    assert "#0 dog" in timeline and "#1 object 1" in timeline
    assert re.search(r"class='c k cur' data-frame='7' data-obj='1' title='frame 7: mask, clicks' "
                     r"style='background:rgba\(0,255,0,1.00\)'", timeline)
    assert re.search(r"class='c' data-frame='8' data-obj='1' title='frame 8: no mask'>", timeline)
    # Colour and name changes are undoable edits like any other.
    out = client.predict(7, b, "0", api_name="/undo")
    assert "Undo: set object colour" in out[4] and session.state.objects[b].color != (0, 255, 0)
    client.predict(7, b, "0", api_name="/redo")
    assert session.state.objects[b].color == (0, 255, 0)
    # Deleting an object unlinks it; undo restores both.
    client.predict(frame_idx=7, obj_id=b, api_name="/delete_object")
    assert b not in session.state.objects and session.get_expression("0").obj_ids == [a]
    client.predict(7, a, "0", api_name="/undo")
    assert b in session.state.objects and session.get_expression("0").obj_ids == [a, b]


def test_propagate_is_one_undo_step_and_exports_read_back(two_objects, tmp_path):
    from rvos_core.formats.davis import read_davis_annotations
    from rvos_core.formats.mevis import read_mevis_split
    from rvos_core.formats.predictions import open_predictions
    from rvos_core.masks import mask_iou

    client, ws, a, b, _, _ = two_objects
    session = ws.session
    start = session.mask(a, 7)
    out = client.predict(direction="forward", window=4, refit=True, frame_idx=7, obj_id=a, api_name="/propagate")
    assert "Propagated object #0 forward from frame 7 over 4 frames" in out[4] and "4 frames written" in out[4]
    assert _stored_frames(session, a, "propagated") == [8, 9, 10, 11]
    assert session.state.objects[a].origin[7] == "click"  # the start frame is left as it was
    assert mask_iou(session.mask(a, 8), start) > 0.5  # the dog moves little between two frames
    out = client.predict(7, a, api_name="/undo")
    assert "Undo: propagate" in out[4] and all(not session.has_mask(a, t) for t in range(8, 12))
    client.predict(7, a, api_name="/redo")
    assert _stored_frames(session, a, "propagated") == [8, 9, 10, 11]
    # Both directions, optical flow only, for the other object.
    out = client.predict(direction="both", window=2, refit=False, frame_idx=7, obj_id=b, api_name="/propagate")
    assert _stored_frames(session, b, "propagated") == [5, 6, 8, 9] and "(4 warped)" in out[4]

    # DAVIS palette PNGs: pixel value obj_id + 1, the higher obj_id where objects overlap.
    payload, status = client.predict(api_name="/export_davis")
    assert "DAVIS" in status
    with zipfile.ZipFile(_file_path(payload)) as zf:
        zf.extractall(tmp_path / "davis")
    ann = read_davis_annotations(tmp_path / "davis" / "sam2_dog")
    assert ann.frame_names == [f"{i:05d}" for i in range(60)]
    for t in (5, 7, 8, 11, 30):
        expected = np.zeros((480, 854), np.uint8)
        for oid in sorted(session.state.objects):
            expected[session.mask(oid, t)] = oid + 1
        np.testing.assert_array_equal(ann.ids[t], expected, err_msg=f"frame {t}")
    # MeViS zip: the multi-object expression and every object's masks.
    payload, _ = client.predict(api_name="/export_zip")
    with read_mevis_split(_file_path(payload)) as split:
        (exp,) = split.expressions("sam2_dog").values()
        assert (exp.exp, exp.obj_id, exp.anno_id) == ("the dog and the woman", [a, b], [a, b])
        for oid in (a, b):
            masks = split.object_masks(oid)
            for t in range(4, 13):
                got = masks[t] if masks[t] is not None else np.zeros((480, 854), bool)
                np.testing.assert_array_equal(got, session.mask(oid, t), err_msg=f"obj {oid} frame {t}")
    # Prediction PNGs: the union of the expression's objects.
    payload, _ = client.predict(api_name="/export_pred")
    with open_predictions(_file_path(payload)) as preds:
        stack, problems = preds.read_expression("sam2_dog", "0", session.frame_names, (480, 854))
    assert problems == []
    for t in (6, 7, 9):
        np.testing.assert_array_equal(stack[t], session.union_mask(t, [a, b]))

    # Refine (seed 003's prompts from the mask) on the shown frame: one undo step back to the clicks.
    clicked, prompts = session.mask(a, 7), session.prompts(a, 7)
    out = client.predict(scope="frame", frame_idx=7, obj_id=a, api_name="/refine")
    assert "Refined object #0 on 1 frame" in out[4] and session.state.objects[a].origin[7] == "refined"
    assert session.prompts(a, 7) == [] and mask_iou(session.mask(a, 7), clicked) > 0.5
    client.predict(7, a, api_name="/undo")
    assert session.state.objects[a].origin[7] == "click" and session.prompts(a, 7) == prompts


def test_stop_keeps_the_frames_done_as_one_edit(served):
    app, url = served
    client = Client(url, verbose=False)
    client.predict(api_name="/load_sample")
    oid = client.predict(frame=7, x=DOG[7][0], y=DOG[7][1], positive=True, obj_id=None, api_name="/add_click")["obj_id"]
    ws = app.workbench.store.get(client.session_hash)
    assert ws.job is None
    job = client.submit(direction="forward", window=0, refit=True, frame_idx=7, obj_id=oid, api_name="/propagate")
    deadline = time.monotonic() + 60
    while (ws.job is None or ws.job.done < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ws.job is not None and ws.job.done >= 2, "the propagation did not start"
    t0 = time.monotonic()
    stopped = client.predict(7, oid, api_name="/stop")
    assert time.monotonic() - t0 < 10
    written = _stored_frames(ws.session, oid, "propagated")
    assert "Stopped after" in stopped[4] and f"{len(written)} frames written as one edit" in stopped[4]
    assert 2 <= len(written) < 52 and written == list(range(8, 8 + len(written)))
    final = job.result(timeout=60)  # the stream ends with the same commit (it happened once)
    assert "Stopped after" in final[4] and _stored_frames(ws.session, oid, "propagated") == written
    assert ws.job.finished and ws.job.cancelled
    out = client.predict(7, oid, api_name="/undo")
    assert "Undo: propagate" in out[4] and _stored_frames(ws.session, oid, "propagated") == []
    assert "Nothing to stop" in client.predict(7, oid, api_name="/stop")[4]


def test_autosave_resume_and_a_workspace_of_another_video(served, tmp_path):
    from rvos_core.session import AnnotationSession
    from rvos_core.video import open_video

    app, url = served
    first = Client(url, verbose=False)
    loaded = first.predict(api_name="/load_sample")
    ws = app.workbench.store.get(first.session_hash)
    folder = ws.session.workspace
    assert folder is not None and folder.parent == ws.tmp_dir / "workspaces" and "Autosaving" in loaded[-1]
    oid = first.predict(frame=3, x=DOG[3][0], y=DOG[3][1], positive=True, obj_id=None, api_name="/add_click")["obj_id"]
    first.predict(text="the dog", frame_idx=3, obj_id=oid, api_name="/add_expression")
    (label, listed), = first.predict(api_name="/list_workspaces")
    assert listed == str(folder) and "(open)" in label
    # Another session resumes that folder (a server path): same objects, masks and expressions.
    second = Client(url, verbose=False)
    second.predict(api_name="/load_sample")
    out = second.predict(str(folder), api_name="/resume")
    resumed = app.workbench.store.get(second.session_hash).session
    assert "Resumed" in out[4] and resumed.workspace == folder
    assert [(e.text, e.obj_ids) for e in resumed.expressions] == [("the dog", [oid])]
    np.testing.assert_array_equal(resumed.mask(oid, 3), ws.session.mask(oid, 3))
    # A workspace of another video is refused with a message naming both; a missing folder too.
    frames = tmp_path / "other"
    frames.mkdir()
    with open_video(SAMPLE) as video:
        for i in range(4):
            Image.fromarray(video.get_frame(i)).save(frames / f"{i:05d}.jpg", quality=90)
    with open_video(frames) as video:
        AnnotationSession(video).attach_workspace(tmp_path / "other-ws")
    with pytest.raises(AppError, match="belongs to the video .*other.*4 frames"):
        second.predict(str(tmp_path / "other-ws"), api_name="/resume")
    with pytest.raises(AppError, match="does not exist"):
        second.predict(str(tmp_path / "nope"), api_name="/resume")
    with pytest.raises(AppError, match="pick an autosaved workspace"):
        second.predict("", api_name="/resume")
    assert app.workbench.store.get(second.session_hash).session is resumed  # still the resumed one


def test_annotate_bad_input_gives_clear_messages(served):
    app, url = served
    client = Client(url, verbose=False)
    client.predict(api_name="/load_sample")
    session = app.workbench.store.get(client.session_hash).session
    cases = [
        (dict(text="   ", api_name="/add_expression"), "type an expression"),
        (dict(name="x", obj_id=42, api_name="/rename_object"), "unknown obj_id 42"),
        (dict(color="#00ff00", obj_id=None, api_name="/set_color"), "select an object first"),
        (dict(exp_id="5", obj_ids=[0], api_name="/set_expression_objects"), "unknown exp_id '5'"),
        (dict(frame_idx=3, obj_id=None, api_name="/propagate"), "select an object first"),
        (dict(frame_idx=3, obj_id=7, api_name="/propagate"), "unknown obj_id 7"),
        (dict(frame_idx=3, obj_id=None, api_name="/delete_object"), "select an object first"),
        (dict(api_name="/export_pred"), "no expression to export"),
        (dict(api_name="/export_davis"), "nothing to export"),
    ]
    for kwargs, message in cases:
        with pytest.raises(AppError, match=message):
            client.predict(**kwargs)
    oid = client.predict(frame=3, x=DOG[3][0], y=DOG[3][1], positive=True, obj_id=None, api_name="/add_click")["obj_id"]
    client.predict(text="the dog", frame_idx=3, obj_id=oid, api_name="/add_expression")
    for kwargs, message in [
        (dict(exp_id="0", obj_ids=[oid, 99], api_name="/set_expression_objects"), "unknown obj_id 99"),
        (dict(color="blue-ish", obj_id=oid, api_name="/set_color"), "is not #rrggbb"),
        (dict(frame_idx=40, obj_id=oid, api_name="/propagate"), "has no mask on frame 40"),
        (dict(scope="frame", frame_idx=40, obj_id=oid, api_name="/refine"), r"has no mask on frame\(s\) \[40\]"),
        (dict(exp_id="0", text="", api_name="/set_expression_text"), "type an expression"),
    ]:
        with pytest.raises(AppError, match=message):
            client.predict(**kwargs)
    # Nothing half-done: one object, one expression, as before the mistakes.
    assert list(session.state.objects) == [oid] and [e.obj_ids for e in session.expressions] == [[oid]]
    out = client.predict(exp_id="0", text="the small dog", frame_idx=3, obj_id=oid, api_name="/set_expression_text")
    assert session.get_expression("0").text == "the small dog" and "now reads" in out[4]
    out = client.predict(exp_id="0", frame_idx=3, obj_id=oid, api_name="/delete_expression")
    assert session.expressions == [] and list(session.state.objects) == [oid] and _update_value(out[6]) is None
    client.predict(3, oid, api_name="/undo")
    assert [(e.text, e.obj_ids) for e in session.expressions] == [("the small dog", [oid])]


def test_store_autosave_folders_job_cancelled_and_engine_closed_when_freed(tmp_path):
    from demo.store import SessionStore
    from rvos_core.propagation import CancelToken

    store = SessionStore(root=tmp_path)
    ws = store.get_or_create("a")
    first, second = ws.new_autosave_dir("sam2 dog"), ws.new_autosave_dir("sam2 dog")
    assert first != second and first.parent == ws.autosave_root == ws.tmp_dir / "workspaces"
    assert first.name.startswith("sam2_dog-") and ws.autosave_dirs() == []  # nothing saved yet
    for folder in (first, second):
        folder.mkdir(parents=True)
    (first / "workspace.json").write_text("{}")
    assert ws.autosave_dirs() == [first]  # only folders holding a manifest
    ws.job = token = CancelToken()

    class _Engine:  # stands for the user's precomputed-predictions engine
        closed = False

        def close(self) -> None:
            self.closed = True

    ws.engine = engine = _Engine()
    assert store.drop("a") and token.cancelled and engine.closed and not ws.tmp_dir.exists()
    assert ws.engine is None


# ---- Engine choice: precomputed predictions -------------------------------------------------------------


def _sample_predictions(root: Path) -> dict[str, np.ndarray]:
    """A prediction folder for the sample (``sam2_dog/<exp_id>/<frame>.png``, meta_expressions.json inside):
    expression "0" a box sliding right, "1" a fixed box. Returns ``{text: (60, 480, 854) bool}``."""
    import json

    from rvos_core.formats.mevis import write_prediction_pngs

    frames = [f"{i:05d}" for i in range(60)]
    slide, fixed = np.zeros((60, 480, 854), bool), np.zeros((60, 480, 854), bool)
    for t in range(60):
        slide[t, 200:330, 300 + 2 * t:460 + 2 * t] = True
    fixed[:, 150:400, 150:300] = True
    texts = {"0": "the small dog", "1": "the woman walking"}
    for exp_id, masks in (("0", slide), ("1", fixed)):
        write_prediction_pngs(root, "sam2_dog", exp_id, masks, frames)
    meta = {"videos": {"sam2_dog": {"expressions": {k: {"exp": v} for k, v in texts.items()}, "frames": frames}}}
    (root / "meta_expressions.json").write_text(json.dumps(meta))
    return {texts["0"]: slide, texts["1"]: fixed}


def _masks_of(session, oid: int) -> np.ndarray:
    return np.stack([session.mask(oid, t) for t in range(60)])


def test_precomputed_predictions_run_and_are_corrected_with_clicks(served, tmp_path):
    from rvos_core.formats.predictions import write_prediction_zip

    app, url = served
    folder = tmp_path / "preds"
    expected = _sample_predictions(folder)
    client = Client(url, verbose=False)
    client.predict(api_name="/load_sample")
    ws = app.workbench.store.get(client.session_hash)
    # A server folder with meta_expressions.json inside.
    status = client.predict("predictions", str(folder), None, "", None, api_name="/set_engine")
    assert status.startswith("Run uses precomputed predictions") and "1 videos, 2 expression folders" in status
    assert "'sam2_dog' has 2 predicted expressions" in status and "“the small dog”" in status
    ran = client.predict("The small   DOG", 0, None, api_name="/run")  # matched despite case and spaces
    assert len(ran) == VIEW_OUTPUTS and "1 object found" in ran[4] and "predictions" in ran[4]
    (oid,) = ws.session.expressions[-1].obj_ids
    assert ws.session.expressions[-1].text == "The small   DOG".strip()
    np.testing.assert_array_equal(_masks_of(ws.session, oid), expected["the small dog"])
    # Corrected with clicks like the model's masks: a negative click inside the box on frame 7 only.
    x, y = 320, 210
    assert ws.session.mask(oid, 7)[y, x]
    out = client.predict(frame=7, x=x, y=y, positive=False, obj_id=oid, api_name="/add_click")
    assert out["obj_id"] == oid and "negative click" in out["status"]
    corrected = _masks_of(ws.session, oid)
    assert not corrected[7, y, x] and corrected[7].sum() < expected["the small dog"][7].sum()
    np.testing.assert_array_equal(np.delete(corrected, 7, axis=0), np.delete(expected["the small dog"], 7, axis=0))
    # Not among the predictions: a message naming the video and the known expressions, nothing added.
    n_objects = len(ws.session.state.objects)
    with pytest.raises(AppError, match=r"expression 'the red car' not found for video 'sam2_dog'"):
        client.predict("the red car", 0, None, api_name="/run")
    assert len(ws.session.state.objects) == n_objects

    # An uploaded zip of PNGs only: it needs the meta file, then works the same.
    archive = tmp_path / "upload" / "my-preds.zip"
    write_prediction_zip(archive, folder)
    with pytest.raises(AppError, match="no meta_expressions.json inside"):
        client.predict("predictions", "", handle_file(str(archive)), "", None, api_name="/set_engine")
    status = client.predict("predictions", "", handle_file(str(archive)), "",
                            handle_file(str(folder / "meta_expressions.json")), api_name="/set_engine")
    assert "my-preds.zip (1 videos, 2 expression folders; texts from meta_expressions.json)" in status
    (copy,) = ws.tmp_dir.glob("predictions-*")  # the user's own copy; the earlier choice's folder is gone
    assert sorted(p.name for p in copy.iterdir()) == ["meta_expressions.json", "predictions.zip"]
    client.predict("the woman walking", 0, None, api_name="/run")
    (oid2,) = ws.session.expressions[-1].obj_ids
    np.testing.assert_array_equal(_masks_of(ws.session, oid2), expected["the woman walking"])

    # Bad input → messages; the choice in place stays. (Gradio itself checks the radio value and file types.)
    meta = str(folder / "meta_expressions.json")
    for args, message in [
        ((str(tmp_path / "nope"), None), "nope does not exist on the server"),
        (("", None), "give the server path of the predictions"),
        ((meta, None), "expected a prediction folder or a readable .zip"),
        (("", handle_file(meta)), r"formats: \['.zip'\]"),
    ]:
        with pytest.raises(AppError, match=message):
            client.predict("predictions", *args, "", None, api_name="/set_engine")
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict("robot", api_name="/set_engine")
    with pytest.raises(ValueError, match="engine must be one of model, predictions"):  # API-independent check
        app.workbench.set_engine(client.session_hash, "robot")
    client.predict("the small dog", 0, None, api_name="/run")
    np.testing.assert_array_equal(_masks_of(ws.session, ws.session.expressions[-1].obj_ids[0]), expected["the small dog"])
    # Back to the model: the predictions are closed and their uploaded copy deleted.
    assert client.predict("model", api_name="/set_engine") == "Run uses the model (clip-rvos-tiny)."
    assert list(ws.tmp_dir.glob("predictions-*")) == []
