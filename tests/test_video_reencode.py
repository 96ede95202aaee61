"""Tests for rvos_core.video.reencode_for_scrubbing / VideoSource.max_keyframe_gap (long-GOP clips, issue 4 part 6)."""

from __future__ import annotations

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

    wb = Workbench(SessionStore(root=tmp_path), SWAN_MP4, refiner="grabcut")
    assert "reencode" not in wb.open_sample("a").clip_info  # blackswan.mp4: keyframes ≤ 50 frames apart
    monkeypatch.setattr(service, "SLOW_SCRUB_GAP", 20)
    view = wb.open_clip("b", long_gop_clip)
    assert "keyframes up to 50 frames apart" in view.clip_info and "python -m rvos_core reencode" in view.clip_info
