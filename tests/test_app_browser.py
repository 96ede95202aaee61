"""The app in a real browser: headless Debian Chromium driven by Playwright (no browser download).

Opens the page (sample clip loaded), runs the suggested expression, browses to another frame,
corrects the mask with a negative click on the shown image, exports the MeViS zip through the
page's download link, and checks each step against the user's library session; closing the tab
frees the user's workspace. A screenshot is saved under ``test-output/`` (path printed).

Skipped only when ``/usr/bin/chromium`` is missing and ``CI`` is unset; under ``CI`` a missing
browser fails.
"""

from __future__ import annotations

import io
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from PIL import Image

from _frames import as_sent

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "assets" / "samples" / "sam2_dog.mp4"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OUTPUT = REPO / "test-output"
#: A pixel (x, y) on the dog's back in frame 12 of the sample (read off the frame by eye).
DOG_FRAME12 = (400, 275)

if not CHROMIUM.exists():
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(f"{CHROMIUM} is missing under CI; install it with apt-get install -y chromium", pytrace=False)
    pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)", allow_module_level=True)

from playwright import sync_api  # noqa: E402  (after the browser check: the skip reason comes first)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_app(**build_kwargs: Any) -> Iterator[tuple[Any, str]]:
    """``demo.build_app(**build_kwargs)`` launched on a free port with a 1 s heartbeat (so a closed tab
    unloads fast); yields ``(app, url)`` and closes the app (and frees every workspace) afterwards."""
    import demo

    old = os.environ.get("GRADIO_HEARTBEAT_INTERVAL")
    os.environ["GRADIO_HEARTBEAT_INTERVAL"] = "1"
    app = demo.build_app(**build_kwargs)
    _, url, _ = demo.launch(app, server_name="127.0.0.1", server_port=_free_port(),
                            prevent_thread_lock=True, quiet=True)
    try:
        yield app, url
    finally:
        app.close()
        app.workbench.store.clear()
        if old is None:
            os.environ.pop("GRADIO_HEARTBEAT_INTERVAL", None)
        else:
            os.environ["GRADIO_HEARTBEAT_INTERVAL"] = old


def until(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll ``check`` every 100 ms until it is true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def served():
    """The app (real engine + GrabCut) on a free port (see :func:`serve_app`)."""
    from rvos_core.engines.registry import engine_status

    status = engine_status("clip-rvos-tiny")
    if "not installed" in status:
        pytest.fail(f"the browser test runs the real default engine, but {status}", pytrace=False)
    with serve_app(sample=SAMPLE, model="clip-rvos-tiny", refiner="grabcut") as served_app:
        yield served_app


@pytest.fixture()
def page():
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        try:
            yield context.new_page()
        finally:
            context.close()
            browser.close()


def _shown_image(page) -> np.ndarray:
    """The frame image the page currently shows, fetched from its ``src`` and decoded (the app sends JPEG)."""
    src = page.locator("#rvos-frame img").get_attribute("src")
    body = page.request.get(src).body()
    return np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))


def _wait_shown(page, expected: np.ndarray, timeout_s: float = 30.0) -> np.ndarray:
    """Poll until the page shows exactly ``expected`` (``(H, W, 3)`` uint8) as the app sends it (JPEG, see
    :func:`_frames.as_sent`); returns what it shows."""
    expected = as_sent(expected)
    deadline = time.monotonic() + timeout_s
    while True:
        shown = _shown_image(page)
        if shown.shape == expected.shape and np.array_equal(shown, expected):
            return shown
        if time.monotonic() > deadline:
            raise AssertionError("the page does not show the session's overlay of the current frame")
        page.wait_for_timeout(150)


def _click_frame_pixel(page, x: int, y: int) -> None:
    """Click the shown image at frame pixel (x, y), inverting the page's contain-fit scaling."""
    img = page.locator("#rvos-frame img")
    box = img.bounding_box()
    nat_w, nat_h = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    r = min(box["width"] / nat_w, box["height"] / nat_h, 1.0)
    ox, oy = (box["width"] - nat_w * r) / 2, (box["height"] - nat_h * r) / 2
    page.mouse.click(box["x"] + ox + (x + 0.5) * r, box["y"] + oy + (y + 0.5) * r)


def test_run_browse_click_export_in_chromium(served, page, tmp_path):
    from rvos_core.formats.mevis import read_mevis_split

    app, url = served
    store = app.workbench.store
    page.goto(url)
    page.locator("#rvos-clip-info").get_by_text("60 frames").wait_for(timeout=30_000)
    assert "854×480" in page.locator("#rvos-clip-info").inner_text()
    assert page.locator("#rvos-expression textarea").input_value() == "the small dog running around the woman"
    assert "GrabCut" in page.locator("#rvos-models").inner_text()
    assert len(store) == 1
    (session_hash,) = list(store._items)
    ws = store.get(session_hash)
    session = ws.session
    np.testing.assert_array_equal(_shown_image(page), as_sent(session.video.get_frame(0)))

    # Run: the engine's masks on every frame, status with seconds and the number of objects.
    page.click("#rvos-run")
    page.locator("#rvos-status").get_by_text("found in").wait_for(timeout=120_000)
    status = page.locator("#rvos-status").inner_text()
    entry = session.expressions[-1]
    assert f"{len(entry.obj_ids)} object" in status and entry.obj_ids
    assert all(len(session.state.objects[o].origin) == 60 for o in entry.obj_ids)
    _wait_shown(page, session.render(0))

    # Browse to frame 12 with the slider's number box.
    frame = 12
    number = page.locator("#rvos-slider input[type=number]")
    number.fill(str(frame))
    number.press("Enter")
    before_click = _wait_shown(page, session.render(frame))
    assert not np.array_equal(before_click, session.render(0))

    # A positive click on the dog (the default mode) puts it into the referred object on this frame …
    oid = entry.obj_ids[0]
    engine_mask = session.mask(oid, frame)
    _click_frame_pixel(page, *DOG_FRAME12)
    page.locator("#rvos-status").get_by_text("positive click").wait_for(timeout=30_000)
    (pos,) = session.prompts(oid, frame)
    assert pos.label == 1 and abs(pos.xy[0] - DOG_FRAME12[0]) <= 1 and abs(pos.xy[1] - DOG_FRAME12[1]) <= 1
    grown = session.mask(oid, frame)
    assert grown[int(pos.xy[1]), int(pos.xy[0])] and not np.array_equal(grown, engine_mask)
    after_positive = _wait_shown(page, session.render(frame))
    assert np.abs(after_positive.astype(int) - before_click.astype(int)).sum(axis=2).astype(bool).sum() > 100

    # … and a negative click inside that mask, away from the positive one, takes its region out.
    ys, xs = np.nonzero(grown)
    far = np.hypot(xs - pos.xy[0], ys - pos.xy[1]) > 25
    x, y = int(xs[far][far.sum() // 2]), int(ys[far][far.sum() // 2])
    page.get_by_label("Negative click").check()
    _click_frame_pixel(page, x, y)
    page.locator("#rvos-status").get_by_text("negative click").wait_for(timeout=30_000)
    _, neg = session.prompts(oid, frame)
    assert neg.label == 0 and abs(neg.xy[0] - x) <= 1 and abs(neg.xy[1] - y) <= 1
    mask_after = session.mask(oid, frame)
    assert not mask_after[int(neg.xy[1]), int(neg.xy[0])] and mask_after.sum() < grown.sum()
    _wait_shown(page, session.render(frame))

    # Box mode on a new object: two clicks on opposite corners → a box prompt and a mask inside it.
    page.click("#rvos-new-object")
    page.locator("#rvos-status").get_by_text("New object").wait_for(timeout=30_000)
    new_oid = max(session.state.objects)
    page.get_by_label("Box", exact=True).check()
    page.locator("#rvos-status").get_by_text("two opposite corners").wait_for(timeout=10_000)
    _click_frame_pixel(page, 300, 150)
    page.locator("#rvos-status").get_by_text("first corner").wait_for(timeout=30_000)
    _click_frame_pixel(page, 560, 420)
    page.locator("#rvos-status").get_by_text("px.").wait_for(timeout=30_000)
    (box_prompt,) = session.prompts(new_oid, frame)
    x0, y0, x1, y1 = box_prompt.box
    assert box_prompt.kind == "box" and abs(x0 - 300) <= 1 and abs(y1 - 420) <= 1
    box_mask = session.mask(new_oid, frame)
    assert box_mask.any() and not box_mask[: int(y0)].any() and not box_mask[:, int(x1) + 1:].any()
    _wait_shown(page, session.render(frame))  # the box and the new object's mask are drawn

    # Export the MeViS zip and download it through the page's link.
    page.click("#rvos-export-zip")
    link = page.locator("#rvos-download a").first
    link.wait_for(timeout=60_000)
    with page.expect_download(timeout=30_000) as info:
        link.click()
    download = info.value
    assert download.suggested_filename.startswith("sam2_dog-") and download.suggested_filename.endswith(".zip")
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    with read_mevis_split(saved) as split:
        masks = split.object_masks(oid)
        got = masks[frame] if masks[frame] is not None else np.zeros_like(mask_after)
        np.testing.assert_array_equal(got, mask_after)

    OUTPUT.mkdir(exist_ok=True)
    shot = OUTPUT / "app_browser.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000

    # Closing the tab frees the user's workspace (demo.unload), temp folder included.
    tmp_dir = ws.tmp_dir
    page.close()
    until(lambda: session_hash not in store and not tmp_dir.exists(), "the workspace to be dropped and deleted", 20)
