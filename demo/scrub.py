"""Background "fast-scrubbing copy" of a clip whose keyframes are far apart (issue 4, part 6).

A random frame of an H.264 file is decoded from the keyframe before it: with x264's default interval
of 250 frames a slider jump on a 1080p clip costs 0.3–0.6 s. When the app opens such a clip it shows
it at once and starts :class:`ScrubCopyJob`, which re-encodes it in a background thread with a keyframe
every 15 frames (:func:`rvos_core.video.reencode_for_scrubbing`, x264 ``ultrafast``, ffmpeg at lower CPU
priority). When the
copy is ready the workbench swaps it in (:meth:`rvos_core.session.AnnotationSession.replace_video`:
same frame count, size and content fingerprint; masks, clicks, undo history and autosave are kept).
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

#: Niceness of the background ffmpeg (interactive clicks keep priority).
SCRUB_NICE = 10
#: x264 settings of the copy. ``ultrafast`` (no CABAC, no B-frames, no deblocking) encodes ~2.5× faster than
#: ``veryfast`` and decodes ~2.5× faster (1080p random frame with keyframes every 15: p50 62 / p95 118 ms vs
#: 173 / 310 ms at load ~3); crf 20 keeps 43 dB PSNR to the source, at ~1.6× the bytes of veryfast crf 18
#: (measured on the noisy synthetic 1080p clip of bench/memory_long_video.py, 450 frames).
SCRUB_PRESET, SCRUB_CRF = "ultrafast", 20


class ScrubCopyJob:
    """Re-encode ``src`` to ``dst`` in a daemon thread; poll :attr:`state`.

    Args:
        src: the open clip's file.
        dst: where the copy goes (``.mp4``; written atomically).
        num_frames: the clip's frame count (progress denominator).
        gap: the clip's largest keyframe gap in frames (shown in the clip line).
        owned_dir: a folder created for the copy alone, removed by :meth:`discard` (None: keep folders).
        on_ready: called (in the job's thread) once the copy is complete, e.g. to swap it in.

    Attributes:
        state: ``"running"``, ``"ready"`` (copy complete and opened as :attr:`video`, not in use yet),
            ``"in use"``, ``"failed"`` or ``"cancelled"``.
        done / total: frames encoded so far / frame count.
        seconds: encode wall time once ready.
        error: the reason when ``state == "failed"``.
    """

    def __init__(self, src: Path, dst: Path, num_frames: int, gap: int, owned_dir: Path | None = None,
                 on_ready=None) -> None:
        self.src, self.dst, self.owned_dir, self.gap = Path(src), Path(dst), owned_dir, int(gap)
        self.total, self.done = int(num_frames), 0
        self.state = "running"
        self.seconds: float | None = None
        self.error: str | None = None
        self.video = None  # the copy, opened by the job's thread once complete (a VideoSource)
        self._cancel = threading.Event()
        self._on_ready = on_ready
        self._thread = threading.Thread(target=self._run, name=f"scrub-copy-{self.src.name}", daemon=True)

    def start(self) -> ScrubCopyJob:
        """Start the encode thread; returns self."""
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread (and its ``on_ready`` call); True when it has ended."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def cancel(self) -> None:
        """Stop the encode (ffmpeg is killed within about half a second); a finished copy is kept."""
        self._cancel.set()

    def discard(self, wait: float = 5.0) -> None:
        """Cancel, wait up to ``wait`` seconds for ffmpeg to stop (so that the caller may then delete
        the folders it writes in), and delete the copy and its own folder unless the copy is in use."""
        self.cancel()
        if wait > 0 and self._thread.ident is not None and threading.current_thread() is not self._thread:
            self._thread.join(wait)
        if self.state != "in use":
            if self.video is not None:
                self.video.close()
            self.dst.unlink(missing_ok=True)
            if self.owned_dir is not None:
                shutil.rmtree(self.owned_dir, ignore_errors=True)

    def fail(self, reason: str) -> None:
        """Mark the copy unusable (e.g. the swap found other content) and delete it."""
        self.error, self.state = reason, "failed"
        self.discard(wait=0)  # may run under the workspace lock that the job's own thread waits for

    def describe(self) -> str:
        """A clause for the app's clip line."""
        gap = self.gap
        if self.state == "running":
            pct = 100.0 * self.done / max(1, self.total)
            return (f"keyframes up to {gap} frames apart, so the slider is slow: making a fast-scrubbing copy "
                    f"in the background ({pct:.0f} %)")
        if self.state == "ready":
            return "fast-scrubbing copy ready; it is used from the next action"
        if self.state == "in use":
            return f"fast-scrubbing copy in use (re-encoded in {self.seconds:.0f} s; the original had keyframes " \
                   f"up to {gap} frames apart)"
        if self.state == "failed":
            return (f"keyframes up to {gap} frames apart; the fast-scrubbing copy failed ({self.error}); "
                    f"`python -m rvos_core reencode IN.mp4 OUT.mp4` makes one by hand")
        return f"keyframes up to {gap} frames apart (fast-scrubbing copy cancelled)"

    def _progress(self, done: int, total: int) -> None:
        self.done = done

    def _run(self) -> None:
        from rvos_core.video import ReencodeCancelled, open_video, reencode_for_scrubbing

        t0 = time.perf_counter()
        try:
            reencode_for_scrubbing(self.src, self.dst, crf=SCRUB_CRF, preset=SCRUB_PRESET, progress=self._progress,
                                   cancel=self._cancel, nice=SCRUB_NICE)
        except ReencodeCancelled:
            self.state = "cancelled"
            self.discard()
            return
        except Exception as e:  # noqa: BLE001 - shown in the clip line; the original clip stays in use
            self.fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
            return
        self.seconds, self.done = time.perf_counter() - t0, self.total
        try:  # opened here, not under the workspace lock: reading a long file's index takes a while
            self.video = open_video(self.dst)
        except (OSError, ValueError) as e:
            self.fail(f"cannot open the copy: {str(e).splitlines()[0]}")
            return
        if self._cancel.is_set():  # cancelled after ffmpeg finished: nobody wants the copy
            self.state = "cancelled"
            self.discard()
            return
        self.state = "ready"
        if self._on_ready is not None:
            self._on_ready(self)
