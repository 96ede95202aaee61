"""Tests for rvos_core.video.reencode_for_scrubbing / VideoSource.max_keyframe_gap (long-GOP clips, issue 4 part 6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rvos_core import video as V
from rvos_core.cli import main as cli_main

from _paths import SHARED_DATA as DATA
SWAN_MP4 = DATA / "davis2016_blackswan" / "blackswan.mp4"
SWAN_JPG = DATA / "davis2016_blackswan" / "JPEGImages"


@pytest.fixture(scope="module")
def long_gop_clip(tmp_path_factory):
    """The 50 blackswan frames with one keyframe only (``-g 250``), odd width (853 px)."""
    import imageio_ffmpeg

    path = tmp_path_factory.mktemp("gop") / "swan_gop250.mp4"
    with V.open_video(SWAN_JPG) as src:
        frames = [f[:, :853] for f in src.iter_frames()]
    writer = imageio_ffmpeg.write_frames(str(path), (853, 480), fps=24, codec="libx264", pix_fmt_out="yuv420p",
                                         quality=None, macro_block_size=1, ffmpeg_log_level="error",
                                         output_params=["-crf", "12", "-g", "250", "-vf", "pad=854:480"])
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()
    return path


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))


def test_reencode_shortens_keyframe_gap_and_keeps_every_frame(long_gop_clip, tmp_path):
    with V.open_video(long_gop_clip) as before:
        assert before.max_keyframe_gap == 50 and before.keyframe_indices == (0,)
        original = np.stack(list(before.iter_frames()))
    seen: list[tuple[int, int]] = []
    out = V.reencode_for_scrubbing(long_gop_clip, tmp_path / "fast.mp4", keyframe_interval=10,
                                   progress=lambda done, total: seen.append((done, total)))
    assert out == tmp_path / "fast.mp4" and [p.name for p in tmp_path.iterdir()] == ["fast.mp4"]
    with V.open_video(out) as after:
        assert after.keyframe_indices == (0, 10, 20, 30, 40) and after.max_keyframe_gap == 10
        assert (after.meta.num_frames, after.meta.width, after.meta.height) == (50, 854, 480)
        assert after.meta.fps == pytest.approx(24.0)
        # same frames in the same order (lossy re-compression only): each is closest to its own original
        for i in (0, 17, 49):
            frame = after.get_frame(i)
            assert _psnr(frame, original[i]) > 35
            assert all(_psnr(frame, original[i]) > _psnr(frame, original[j]) for j in (i - 3, i + 3) if 0 <= j < 50)
    assert seen and seen[-1][1] == 50 and all(0 <= d <= 50 for d, _ in seen)


def test_frame_folder_gap_is_one_and_cannot_be_reencoded(tmp_path):
    with V.open_video(SWAN_JPG) as folder:
        assert folder.max_keyframe_gap == 1
    with pytest.raises(V.VideoError, match="frame folder"):
        V.reencode_for_scrubbing(SWAN_JPG, tmp_path / "x.mp4")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kwargs, match", [
    ({"dst": "x.avi"}, r"\.mp4"),
    ({"keyframe_interval": 0}, "keyframe_interval"),
    ({"keyframe_interval": 601}, "keyframe_interval"),
    ({"crf": 60}, "crf"),
    ({"preset": "warp"}, "preset"),
    ({"nice": 20}, "nice"),
])
def test_bad_arguments_name_the_value(tmp_path, kwargs, match):
    args = {"src": SWAN_MP4, "dst": tmp_path / "x.mp4", **kwargs}
    if isinstance(args["dst"], str):
        args["dst"] = tmp_path / args["dst"]
    with pytest.raises(ValueError, match=match):
        V.reencode_for_scrubbing(**args)
    assert not list(tmp_path.iterdir())


def test_not_a_video_errors_and_writes_nothing(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    with pytest.raises(V.VideoError, match="notes.mp4"):
        V.reencode_for_scrubbing(bad, tmp_path / "out.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.mp4"]


def test_cli_reencode(long_gop_clip, tmp_path, capsys):
    out = tmp_path / "cli.mp4"
    assert cli_main(["reencode", str(long_gop_clip), str(out), "--keyframe-interval", "25"]) == 0
    with V.open_video(out) as v:
        assert v.keyframe_indices == (0, 25)
    assert "max keyframe gap 50 → 25" in capsys.readouterr().out
    assert cli_main(["reencode", str(tmp_path / "missing.mp4"), str(tmp_path / "o.mp4")]) == 2


def test_app_clip_line_suggests_reencoding_only_for_long_keyframe_gaps(long_gop_clip, tmp_path, monkeypatch):
    from demo import service
    from demo.service import Workbench
    from demo.store import SessionStore

    wb = Workbench(SessionStore(root=tmp_path), SWAN_MP4, refiner="grabcut", scrub_copies=False)
    assert "reencode" not in wb.open_sample("a").clip_info  # blackswan.mp4: keyframes ≤ 50 frames apart
    monkeypatch.setattr(service, "SLOW_SCRUB_GAP", 20)
    view = wb.open_clip("b", long_gop_clip)
    assert "keyframes up to 50 frames apart" in view.clip_info and "python -m rvos_core reencode" in view.clip_info


def test_reencode_cancel_kills_ffmpeg_and_writes_nothing(long_gop_clip, tmp_path):
    import threading

    flag = threading.Event()
    seen: list[int] = []

    def progress(done: int, total: int) -> None:
        seen.append(done)
        flag.set()  # cancel at the first progress report

    with pytest.raises(V.ReencodeCancelled, match="swan_gop250.mp4"):
        V.reencode_for_scrubbing(long_gop_clip, tmp_path / "fast.mp4", progress=progress, cancel=flag, nice=10)
    assert seen and not list(tmp_path.iterdir())  # no output, no temp file


# ---- the app's background fast-scrubbing copy (demo.scrub) --------------------------------------


@pytest.fixture()
def scrub_bench(tmp_path, monkeypatch):
    from demo import service
    from demo.service import Workbench
    from demo.store import SessionStore

    monkeypatch.setattr(service, "SLOW_SCRUB_GAP", 20)
    store = SessionStore(root=tmp_path)
    return Workbench(store, SWAN_MP4, refiner="grabcut"), store


def test_long_gop_clip_gets_a_fast_copy_swapped_in_keeping_edits(long_gop_clip, scrub_bench):
    wb, store = scrub_bench
    view = wb.open_clip("u", long_gop_clip)
    ws = store.get("u")
    job = ws.scrub
    assert job is not None and job.gap == 50
    with ws.lock:
        ws.readers += 1  # a Run reads the clip outside the lock: the swap must wait for it
    before = wb.click("u", 10, None, 400, 240, positive=True)
    mask_before = ws.session.mask(before.selected, 10).copy()
    original = ws.video.get_frame(33)
    assert job.join(timeout=120) and job.state == "ready"
    assert ws.video.path.endswith("swan_gop250.mp4") and "making a fast-scrubbing copy" in view.clip_info
    assert "fast-scrubbing copy ready" in wb.show("u", 10).clip_info and ws.video.max_keyframe_gap == 50
    with ws.lock:
        ws.readers -= 1
    after = wb.show("u", 10)  # the next view swaps the copy in
    assert job.state == "in use" and Path(ws.video.path) == job.dst and job.dst.name == "swan_gop250.scrub.mp4"
    assert ws.session.video is ws.video and ws.video.max_keyframe_gap == V.SCRUB_KEYFRAME_INTERVAL
    assert "fast-scrubbing copy in use" in after.clip_info and "50 frames apart" in after.clip_info
    assert np.array_equal(ws.session.mask(before.selected, 10), mask_before)  # the edit survived the swap
    assert _psnr(ws.video.get_frame(33), original) > 35
    wb.undo("u", 10)  # undo history survived too: the click's mask goes away
    assert not ws.session.state.objects[before.selected].masks
    # opening another clip removes the upload together with its copy
    wb.open_sample("u")
    assert not job.dst.exists() and not job.dst.parent.exists() and ws.scrub is not job


def test_copy_of_a_server_clip_lives_in_its_own_folder_and_goes_when_the_user_leaves(long_gop_clip, tmp_path,
                                                                                      monkeypatch):
    from demo import service
    from demo.service import Workbench
    from demo.store import SessionStore

    monkeypatch.setattr(service, "SLOW_SCRUB_GAP", 20)
    store = SessionStore(root=tmp_path)
    wb = Workbench(store, long_gop_clip, refiner="grabcut")
    wb.open_sample("u")
    ws = store.get("u")
    job = ws.scrub
    assert job.owned_dir is not None and job.owned_dir.parent == ws.tmp_dir / "clips"
    assert job.join(timeout=120) and job.state == "in use" and ws.video.path == str(job.dst)  # no reader: at once
    assert long_gop_clip.exists()  # the server's file is never touched
    wb.close("u")
    assert not job.owned_dir.exists() and not ws.tmp_dir.exists()


def test_opening_another_clip_cancels_a_running_copy(long_gop_clip, scrub_bench):
    wb, store = scrub_bench
    wb.open_clip("u", long_gop_clip)
    ws = store.get("u")
    job = ws.scrub
    wb.open_clip("u", SWAN_MP4)  # gap 50 > 20: gets its own copy job
    assert job.join(timeout=60) and job.state in ("cancelled", "ready")  # "ready": finished before the cancel
    assert not job.dst.exists() and not job.dst.parent.exists()
    assert ws.scrub is not job and ws.scrub.src.name == "blackswan.mp4"
    assert ws.scrub.join(timeout=120) and ws.scrub.state == "in use"


def test_a_copy_that_is_not_the_same_video_is_refused_and_deleted(long_gop_clip, scrub_bench, monkeypatch):
    wb, store = scrub_bench
    real = V.reencode_for_scrubbing

    def wrong_clip(src, dst, **kwargs):  # an encoder that writes other content: the frames upside down
        upside_down = tmp_path_of(dst) / "flipped.mp4"
        with V.open_video(src) as v:
            V.write_video_mp4(upside_down, (f[::-1] for f in v.iter_frames()), fps=24)
        return real(upside_down, dst, **kwargs)

    monkeypatch.setattr(V, "reencode_for_scrubbing", wrong_clip)
    wb.open_clip("u", long_gop_clip)
    ws = store.get("u")
    job = ws.scrub
    assert job.join(timeout=120) and job.state == "failed", job.state
    assert "not another encoding" in job.error and not job.dst.exists()
    assert ws.video.path.endswith("swan_gop250.mp4") and ws.session.video is ws.video
    assert "fast-scrubbing copy failed" in wb.show("u", 0).clip_info


def tmp_path_of(dst) -> Path:
    return Path(dst).parent


def test_session_replace_video_accepts_another_encoding_only(long_gop_clip, tmp_path):
    from rvos_core.session import AnnotationSession, WorkspaceMismatchError

    copy = V.reencode_for_scrubbing(long_gop_clip, tmp_path / "copy.mp4")
    with V.open_video(long_gop_clip) as original:
        V.write_video_mp4(tmp_path / "flipped.mp4", (f[::-1] for f in original.iter_frames()), fps=24)
    bmx = DATA / "davis2016_bmx-trees" / "JPEGImages"
    with V.open_video(long_gop_clip) as original, V.open_video(copy) as fast, \
            V.open_video(tmp_path / "flipped.mp4") as flipped, V.open_video(bmx) as longer:
        session = AnnotationSession(original, video_name="swan")
        assert session.replace_video(fast) is original and session.video is fast
        assert not original.closed  # the caller closes the old source
        with pytest.raises(WorkspaceMismatchError, match=r"flipped\.mp4.*not another encoding.*copy\.mp4.*"
                                                         r"frame 0 shows other content"):
            session.replace_video(flipped)
        with pytest.raises(WorkspaceMismatchError, match="50 vs 60 frames"):
            session.replace_video(longer)
        assert session.video is fast
