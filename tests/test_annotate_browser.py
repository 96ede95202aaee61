"""The Annotate tab in a real browser: headless Debian Chromium driven by Playwright (no browser download).

Builds two objects by clicking on the shown frame (the dog, then a new object on the woman), renames
one, adds a multi-object expression (the text box + "Add as expression", then a tick on the other
object's checkbox), propagates with progress, undoes / redoes it with the keyboard (Ctrl+Z,
Ctrl+Shift+Z), starts a propagation to the clip's end and stops it with Esc (the frames done stay, as
one edit), checks the other shortcuts (←/→, B/P) and the timeline (cells filled where masks are,
a click on a cell jumps there), and downloads the DAVIS and MeViS exports through the page; every
step is checked against the user's library session. A screenshot is saved to
``test-output/annotate_browser.png``.

The engine is an injected stub (never called: no checkpoint needed); the refiner is the real offline
GrabCut. Browser launch and the missing-browser rule come from ``test_app_browser.py``: skipped only
when ``/usr/bin/chromium`` is missing and ``CI`` is unset; under ``CI`` a missing browser fails.
"""

from __future__ import annotations

import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

# Browser launch, the `page` fixture and the missing-browser skip/fail are the app browser test's.
from test_app_browser import OUTPUT, SAMPLE, _click_frame_pixel, _wait_shown, page, serve_app, until  # noqa: F401

#: Pixels (x, y) on the dog's back and on the woman's jeans in frame 7 of the sample (read off the frame by eye).
DOG7, WOMAN7 = (400, 270), (225, 255)


def _no_engine(name: str):
    raise RuntimeError(f"the Annotate browser test runs no engine (asked for {name!r})")


@pytest.fixture(scope="module")
def served():
    """The app (stub engine, real GrabCut) on a free port (see ``test_app_browser.serve_app``)."""
    with serve_app(sample=SAMPLE, engine_factory=_no_engine, refiner="grabcut") as served_app:
        yield served_app


def _status(page, text: str, timeout_s: float = 60.0) -> str:
    """Wait until the status line contains ``text``; returns the whole line."""
    try:
        page.locator("#rvos-status").get_by_text(text).wait_for(timeout=timeout_s * 1000)
    except Exception as exc:  # say what the status line showed instead
        raise AssertionError(f"status never showed {text!r}; it shows "
                             f"{page.locator('#rvos-status').inner_text()!r}") from exc
    return page.locator("#rvos-status").inner_text()


def _key(page, key: str) -> None:
    """Press a shortcut on the page itself (shortcuts are ignored while a text field has the focus)."""
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.keyboard.press(key)


def _shown_frame(page) -> int:
    return int(page.locator("#rvos-slider input[type=number]").input_value())


def _propagated(session, oid: int) -> list[int]:
    return sorted(t for t, o in session.state.objects[oid].origin.items() if o == "propagated")


def _download(page, button: str, tmp_path: Path) -> Path:
    """Click an export button, then download the file its status line names through the page's link."""
    def exported() -> str | None:
        found = re.search(r"Exported (\S+\.(?:zip|mp4)) ", page.locator("#rvos-status").inner_text())
        return found.group(1) if found else None

    before = exported()
    page.click(f"#{button}")
    until(lambda: exported() not in (None, before), f"{button} to finish", 60)
    name = exported()
    link = page.locator(f"#rvos-download a[href*='{name}']").first
    link.wait_for(timeout=30_000)
    # The export's progress overlay on the file component hides a moment after the status line updates.
    page.locator("#rvos-download [data-testid=status-tracker].hide").wait_for(state="attached", timeout=30_000)
    with page.expect_download(timeout=30_000) as info:
        link.click()
    saved = tmp_path / info.value.suggested_filename
    info.value.save_as(saved)
    assert saved.name == name
    return saved


def test_two_objects_expression_propagate_stop_undo_export(served, page, tmp_path, monkeypatch):
    from rvos_core.formats.davis import read_davis_annotations
    from rvos_core.formats.mevis import read_mevis_split

    app, url = served
    store = app.workbench.store
    page.goto(url)
    page.locator("#rvos-clip-info").get_by_text("60 frames").wait_for(timeout=60_000)
    keys = page.locator("#rvos-shortcuts").inner_text()
    assert all(k in keys for k in ("Ctrl+Z", "Ctrl+Shift+Z", "P / N / B", "← / →", "Esc"))
    (session_hash,) = list(store._items)
    ws = store.get(session_hash)
    session = ws.session
    assert session.workspace is not None and session.workspace.parent == ws.tmp_dir / "workspaces"

    # Frame browsing: the slider's number box, then → and ← (page shortcuts).
    number = page.locator("#rvos-slider input[type=number]")
    number.fill("6")
    number.press("Enter")
    _wait_shown(page, session.render(6))
    _key(page, "ArrowRight")
    until(lambda: _shown_frame(page) == 7, "→ to show frame 7")
    _wait_shown(page, session.render(7))

    # Two objects from clicks on the frame: the dog (a new object), then "New object" + the woman.
    _click_frame_pixel(page, *DOG7)
    _status(page, "New object #0")
    page.click("#rvos-new-object")
    _status(page, "New object #1")
    _click_frame_pixel(page, *WOMAN7)
    _status(page, "positive click")
    assert list(session.state.objects) == [0, 1]
    assert session.mask(0, 7)[DOG7[1], DOG7[0]] and session.mask(1, 7)[WOMAN7[1], WOMAN7[0]]
    page.locator("#rvos-object-name input").fill("woman")
    page.click("#rvos-rename")
    _status(page, "renamed to “woman”")
    assert session.state.objects[1].name == "woman"

    # One expression referring to both: added for the selected object (#1), then #0 ticked.
    page.locator("#rvos-expression textarea").fill("the dog and the woman")
    page.click("#rvos-add-expression")
    _status(page, "Expression 0")
    assert [(e.text, e.obj_ids) for e in session.expressions] == [("the dog and the woman", [1])]
    page.locator("#rvos-expression-objects").get_by_label("#0 object 0").check()
    _status(page, "refers to #0, #1")
    assert session.get_expression("0").obj_ids == [0, 1]

    # Propagate the woman 3 frames forward: one edit, shown in the timeline.
    page.locator("#rvos-window input").fill("3")
    page.click("#rvos-propagate")
    _status(page, "Propagated object #1 forward from frame 7 over 3 frames")
    assert _propagated(session, 1) == [8, 9, 10]
    row = page.locator("#rvos-timeline [data-obj='1'].c")
    until(lambda: "background" in (row.nth(9).get_attribute("style") or ""), "the timeline to fill frame 9")
    assert row.count() == 60 and not row.nth(11).get_attribute("style") and "k" in row.nth(7).get_attribute("class")

    # Undo / redo with the keyboard.
    _key(page, "Control+z")
    _status(page, "Undo: propagate")
    assert _propagated(session, 1) == []
    _key(page, "Control+Shift+z")
    _status(page, "Redo: propagate")
    assert _propagated(session, 1) == [8, 9, 10]

    # Select the dog by its name in the timeline (the frame stays), propagate it to the clip's end and
    # stop with Esc: the frames done stay, as one undoable edit.
    page.locator("#rvos-timeline .rvos-tl-name[data-obj='0']").click()
    until(lambda: page.locator("#rvos-object input").input_value() == "#0 object 0", "object #0 to be selected")
    assert _shown_frame(page) == 7
    page.locator("#rvos-window input").fill("0")
    # Slow the shared refiner to >= 0.3 s a frame for this run, so that Esc lands mid-run however fast
    # the machine propagates (52 frames take ~4 s unslowed, less than the browser's polling needs).
    refiner = app.workbench._get_refiner()
    refine = refiner.refine
    monkeypatch.setattr(refiner, "refine", lambda *a, **k: (time.sleep(0.3), refine(*a, **k))[1])
    page.click("#rvos-propagate")
    _status(page, "Propagating object #0 forward")
    until(lambda: ws.job is not None and ws.job.done >= 2, "two propagated frames")
    _key(page, "Escape")
    stopped = _status(page, "Stopped after")
    job = ws.job
    written = _propagated(session, 0)
    assert job.finished and job.cancelled and 2 <= len(written) < 52
    assert written == list(range(8, 8 + len(written))) and f"{len(written)} frames written" in stopped
    time.sleep(1.5)  # nothing more arrives after the stop
    assert job.done == len(written) and _propagated(session, 0) == written
    monkeypatch.setattr(refiner, "refine", refine)
    _key(page, "Control+z")
    _status(page, "Undo: propagate")
    assert _propagated(session, 0) == [] and _propagated(session, 1) == [8, 9, 10]

    # Click-mode shortcuts.
    _key(page, "b")
    until(lambda: page.get_by_label("Box", exact=True).is_checked(), "B to pick box mode")
    _key(page, "p")
    until(lambda: page.get_by_label("Positive click").is_checked(), "P to pick positive clicks")

    # Exports downloaded through the page and read back.
    davis = _download(page, "rvos-export-davis", tmp_path)
    with zipfile.ZipFile(davis) as zf:
        zf.extractall(tmp_path / "davis")
    ids = read_davis_annotations(tmp_path / "davis" / "sam2_dog").ids
    for t in (7, 9, 20):
        expected = np.zeros((480, 854), np.uint8)
        for oid in (0, 1):
            expected[session.mask(oid, t)] = oid + 1
        np.testing.assert_array_equal(ids[t], expected, err_msg=f"frame {t}")
    mevis = _download(page, "rvos-export-zip", tmp_path)
    with read_mevis_split(mevis) as split:
        (exp,) = split.expressions("sam2_dog").values()
        assert (exp.exp, exp.obj_id) == ("the dog and the woman", [0, 1])
        np.testing.assert_array_equal(split.object_masks(1)[9], session.mask(1, 9))

    # A click on a timeline cell shows that frame and selects that object.
    page.locator("#rvos-timeline [data-obj='0'][data-frame='3']").click()
    until(lambda: _shown_frame(page) == 3, "the timeline click to show frame 3")
    until(lambda: page.locator("#rvos-object input").input_value() == "#0 object 0", "object #0 to be selected")
    _wait_shown(page, session.render(3))

    # Picking from the lists: an object shows its name; an expression puts its text in the box.
    page.locator("#rvos-object input").click()
    page.get_by_role("option", name="#1 woman").click()
    until(lambda: page.locator("#rvos-object-name input").input_value() == "woman", "object #1's name")
    page.locator("#rvos-expression textarea").fill("something else")
    page.locator("#rvos-expressions input").click()
    page.get_by_role("option", name="0: the dog and the woman").click()
    until(lambda: page.locator("#rvos-expression textarea").input_value() == "the dog and the woman",
          "the expression's text in the box")

    OUTPUT.mkdir(exist_ok=True)
    shot = OUTPUT / "annotate_browser.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000
