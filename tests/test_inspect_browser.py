"""The Inspect tab in a real browser: headless Debian Chromium driven by Playwright (no browser download).

Opens the app, switches to the Inspect tab, checks that a bad server path gives a visible error
naming it, loads a small generated split from a server path with two prediction sets (A = ground
truth from a server path, B = perturbed, uploaded as a zip through the page), then checks each
step against the user's library :class:`~rvos_core.inspection.Inspection`: the table (worst first),
a words filter and a sort on Δ, picking an expression by clicking its row (the shown TP / FP / FN
overlays equal :func:`~rvos_core.inspection.error_overlay` of the library's frame, pixel for pixel),
browsing to another frame, downloading the table as CSV, and closing the tab (the inspection and
the upload are freed). A screenshot is saved to ``test-output/inspect_browser.png``. A second test
drives :class:`demo.inspect_tab.InspectService` directly (uploads, per-session CSV names, pruning).

The annotate tab's engine and refiner are injected stubs (never called here), so no checkpoint is
needed. Browser launch and the missing-browser rule come from ``test_app_browser.py``: skipped only
when ``/usr/bin/chromium`` is missing and ``CI`` is unset; under ``CI`` a missing browser fails.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _frames import as_sent

# Browser launch, the `page` fixture and the missing-browser skip/fail are the annotate browser test's.
from test_app_browser import OUTPUT, page, serve_app  # noqa: F401  (page: a pytest fixture)
from test_app_browser import until as _until
from test_inspection import EMPTY_KEY, write_inspection_data

from rvos_core.formats.predictions import write_prediction_zip
from rvos_core.inspection import RowFilter, filter_rows, read_csv, sort_rows, worst_frame


def _no_model(name: str):
    raise RuntimeError(f"the Inspect test runs no model (asked for {name!r})")


@pytest.fixture(scope="module")
def served():
    """The app with stub models (see test_app_browser.serve_app); also frees the inspections afterwards."""
    with serve_app(engine_factory=_no_model, refiner_factory=_no_model, refiner="grabcut") as (app, url):
        try:
            yield app, url
        finally:
            app.inspector.clear()


def _fill(page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id}").locator("textarea, input").first.fill(text)


def _shows(page, elem_id: str, expected: np.ndarray) -> bool:
    """Whether the ``gr.Image`` ``#elem_id`` shows exactly ``expected`` as the app sends it (fetched from its
    ``src``; JPEG, see :func:`_frames.as_sent`)."""
    img = page.locator(f"#{elem_id} img")
    if img.count() == 0:
        return False
    shown = np.asarray(Image.open(io.BytesIO(page.request.get(img.first.get_attribute("src")).body())).convert("RGB"))
    return shown.shape == expected.shape and bool(np.array_equal(shown, as_sent(expected)))


def _cell(page, row: int, col: int):
    """A body cell of the table (Gradio 6 renders rows as virtual ``gridcell`` divs)."""
    return page.locator(f"#rvos-inspect-table [data-testid='cell-{row}-{col}']")


def _table_keys(page) -> list[str]:
    """``video/exp_id`` of the table's rows, as shown (the table is tall enough to render them all)."""
    n = page.locator("#rvos-inspect-table [role=row].virtual-row").count()
    return [f"{_cell(page, i, 0).inner_text().strip()}/{_cell(page, i, 1).inner_text().strip()}" for i in range(n)]


def test_inspect_tab_in_chromium(served, page, tmp_path):
    app, url = served
    split_dir, pred_a, pred_b = write_inspection_data(tmp_path)
    page.goto(url)
    page.locator("#rvos-clip-info").get_by_text("60 frames").wait_for(timeout=30_000)  # annotate tab still loads
    page.get_by_role("tab", name="Inspect").click()

    # A user mistake: a visible error naming the path, no traceback.
    _fill(page, "rvos-inspect-gt", str(tmp_path / "no_such_split"))
    _fill(page, "rvos-inspect-pred-a", str(pred_a))
    page.click("#rvos-inspect-load")
    toast = page.locator("[data-testid='toast-body']")
    toast.get_by_text(f"{tmp_path / 'no_such_split'}: no such split folder or zip").wait_for(timeout=30_000)
    assert "Traceback" not in page.content()
    page.locator("[data-testid='toast-close']").first.click()  # the toast covers the Load button
    toast.wait_for(state="detached", timeout=10_000)

    # Load the split and A from server paths, B uploaded as a zip (copied into the user's folder).
    _fill(page, "rvos-inspect-gt", str(split_dir))
    zip_b = write_prediction_zip(tmp_path / "pred_b.zip", pred_b)
    with page.expect_file_chooser() as chooser:
        page.click("#rvos-inspect-pred-b-upload")
    chooser.value.set_files(str(zip_b))
    box_b = page.locator("#rvos-inspect-pred-b").locator("textarea, input").first
    _until(lambda: box_b.input_value().endswith("pred_b.zip"), "the uploaded zip's server path")
    (session_hash,) = list(app.workbench.store._items)
    ws_dir = app.workbench.store.get(session_hash).tmp_dir
    uploaded = Path(box_b.input_value())
    assert uploaded.parent.parent == ws_dir / "inspect" and uploaded.read_bytes() == zip_b.read_bytes()
    t0 = time.perf_counter()
    page.click("#rvos-inspect-load")
    page.locator("#rvos-inspect-count").get_by_text("Showing 10 of 10 expressions").wait_for(timeout=60_000)
    print(f"load + table of 10 expressions in the page: {time.perf_counter() - t0:.2f} s")
    ins = app.inspector.get(session_hash)
    assert ins is not None and ins.pair and len(ins.rows) == 10
    summary = page.locator("#rvos-inspect-summary").inner_text()
    assert "J&F 1.000" in summary and f"J&F {ins.results[1].JF:.3f}" in summary and "problems" in summary
    assert _table_keys(page) == [r.key for r in sort_rows(ins.rows)]  # worst first (A ties: split order)

    # Filter by words, then sort by Δ (largest regression of B first).
    _fill(page, "rvos-inspect-words", "Triangle")
    expected = filter_rows(ins.rows, RowFilter(words="triangle"))
    page.locator("#rvos-inspect-count").get_by_text(f"Showing {len(expected)} of 10 expressions").wait_for(
        timeout=30_000)
    assert 0 < len(expected) < 10
    page.locator("#rvos-inspect-sort input").click()
    page.get_by_role("option", name="Δ", exact=True).click()
    expected = sort_rows(expected, "Δ")
    _until(lambda: _table_keys(page) == [r.key for r in expected], "the filtered table sorted by Δ")

    # Pick the worst expression of B by clicking its row: info, J curve and TP/FP/FN frames.
    key = expected[0].key
    assert expected[0].delta < 0
    _cell(page, 0, 2).click()
    page.locator("#rvos-inspect-info").get_by_text(key).wait_for(timeout=30_000)
    score_a, score_b = ins.scores(key)
    index = worst_frame(score_a, score_b)
    assert score_b.j_per_frame[index] == min(score_b.j_per_frame) < 1.0  # A is perfect: B's worst frame
    assert page.locator("#rvos-inspect-key").locator("textarea, input").first.input_value() == key
    shown = ins.read_frame(key, index)
    overlay_a, overlay_b = shown.overlays()
    _until(lambda: _shows(page, "rvos-inspect-image-a", overlay_a), "A's TP/FP/FN overlay")
    _until(lambda: _shows(page, "rvos-inspect-image-b", overlay_b), "B's TP/FP/FN overlay")
    counts_b = shown.pixel_counts()[1]
    assert counts_b["fp"] > 0 and counts_b["fn"] > 0  # B is shifted: both error kinds on screen
    assert f"TP {counts_b['tp']} · FP {counts_b['fp']} · FN {counts_b['fn']}" in \
        page.locator("#rvos-inspect-frame-info").inner_text()

    # Browse to another frame with the slider's number box.
    other = (index + 3) % ins.num_frames(key)
    number = page.locator("#rvos-inspect-frame input[type=number]")
    number.fill(str(other))
    number.press("Enter")
    browsed = ins.read_frame(key, other).overlays()[1]
    _until(lambda: _shows(page, "rvos-inspect-image-b", browsed), f"B's overlay of frame {other}")

    # Download the shown table as CSV: same rows, same order, same scores.
    page.click("#rvos-inspect-csv")
    link = page.locator("#rvos-inspect-download a").first
    link.wait_for(timeout=30_000)
    with page.expect_download(timeout=30_000) as info:
        link.click()
    download = info.value
    name = download.suggested_filename
    assert name.startswith("split-inspection-") and name.endswith(".csv")
    saved = tmp_path / name
    download.save_as(saved)
    rows = read_csv(saved)
    assert [r.key for r in rows] == [r.key for r in expected]
    assert rows[0].delta == pytest.approx(expected[0].delta, abs=1e-6)
    assert EMPTY_KEY not in {r.key for r in rows}  # filtered out ("the three small squares")

    OUTPUT.mkdir(exist_ok=True)
    shot = OUTPUT / "inspect_browser.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    assert shot.stat().st_size > 10_000

    # Closing the tab frees the user's inspection (demo.unload) and its uploaded zip.
    page.close()
    _until(lambda: app.inspector.get(session_hash) is None and not uploaded.exists(), "the tab's resources freed")


def test_service_uploads_csv_names_and_pruning(tmp_path):
    """The service without a browser: upload checks, per-session CSV names, pruning of freed sessions."""
    from demo.inspect_tab import InspectService
    from demo.store import SessionStore

    split_dir, pred_a, _ = write_inspection_data(tmp_path)
    store = SessionStore(root=tmp_path)
    service = InspectService(store)
    with pytest.raises(ValueError, match="notes.txt: expected a .zip"):
        service.upload("s1", str(tmp_path / "notes.txt"))
    with pytest.raises(ValueError, match="no file received"):
        service.upload("s1", None)
    with pytest.raises(LookupError, match="no evaluation loaded"):
        service.export_csv("s1", [])
    with pytest.raises(ValueError, match="enter the predictions A"):
        service.load("s1", str(split_dir), "  ", None)
    for user in ("s1", "s2"):
        service.load(user, f"'{split_dir}' ", str(pred_a), "")  # quotes and blanks around a pasted path
    first, second = service.export_csv("s1", []), service.export_csv("s1", [])
    other = service.export_csv("s2", [])
    assert len({first, second, other}) == 3 and first.parent == second.parent != other.parent
    assert first.name.startswith("split-inspection-") and first.suffix == ".csv"
    ins = service.get("s1")
    _, rows = service.rows("s1", RowFilter(objects="multi"), "J&F", True)
    assert rows and all(r.num_objects > 1 for r in rows)
    closed = []
    real_close = ins.close
    ins.close = lambda: closed.append(True) or real_close()
    store.drop("s1")  # the workspace is freed (tab closed or evicted) …
    service.load("s2", str(split_dir), str(pred_a), None)  # … the next load of anyone prunes its inspection
    assert service.get("s1") is None and service.get("s2") is not None and closed == [True]
    service.clear()
    store.clear()
