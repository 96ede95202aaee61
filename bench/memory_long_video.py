"""Peak memory and frame-display latency of the workbench on a long 1080p clip (issue 4, part 6).

Usage: python bench/memory_long_video.py [--workdir DIR] [--minutes 10] [--fps 30] [--size 1080x1920]
                                         [--gop 250 30] [--preset veryfast] [--crf 20] [--scrub 200]
                                         [--annotate 5] [--steps 30] [--seed 0] [--idle 3] [--encode-samples 10]
                                         [--rss-cap-mb 6000] [--scrub-copy wait|off]

1. **Clip.** In ``--workdir`` (default ``<system temp>/rvos-bench-memory``, kept and reused: a clip is
   regenerated only when its file or its ``.json`` sidecar is missing or the parameters differ) one
   H.264 clip per ``--gop`` value (libx264 ``-g GOP``, ``--preset``, ``--crf``, yuv420p, +faststart),
   written with imageio-ffmpeg. All clips come from one frame loop: a textured colour gradient
   (static fine texture + smooth waves) panning slowly like a camera, five saturated rectangles and
   discs moving on Lissajous paths over it, and the frame index as a 16-bit block code in the top-left
   corner (read back to check that random access returns the asked-for frame). x264's default keyint
   is 250 (~8 s at 30 fps); phones and action cameras use about 1 s (30 frames at 30 fps).
2. **Measurement**, per clip in a fresh ``python`` subprocess (its RSS is the workbench's only; it
   imports ``demo.service`` and ``rvos_core``, not gradio and not torch): the app's service layer
   (:class:`demo.service.Workbench`, refiner ``grabcut``) opens the clip as the app does
   (``open_video(path)`` with the default frame cache, an ``AnnotationSession``, frame 0 rendered), then

   * *idle*: ``--idle`` seconds of doing nothing (a user looking at the frame), after opening and
     again after the drag; RSS before and after is reported;
   * *scrub*: ``--scrub`` random frames (fixed ``--seed``); display = ``Workbench.show`` (what the
     slider's ``show_frame`` handler runs: ``VideoSource.get_frame`` + ``AnnotationSession.render``,
     full size, no downscaling) + the JPEG encode Gradio does for the app's ``gr.Image(format="jpeg")``
     (``PIL.Image.save(…, "jpeg")`` as in ``gradio.processing_utils.encode_pil_to_bytes``, + sha256 of
     the bytes as ``save_pil_to_cache``); "show CPU" is the process CPU time of ``Workbench.show``
     (all threads), i.e. roughly its cost on an unloaded core;
   * *drag*: the slider dragged one frame at a time, ``--steps`` frames backwards from a random frame,
     then ``--steps`` forwards from another;
   * *annotate*: one ``add_object``, then on ``--annotate`` random frames: show the frame, one
     positive click (``Workbench.click``: GrabCut refine + mask stored + overlay render) on the centre
     of the top-most moving shape; the mask's IoU with the shape's true region is reported;
   * *encode options*: the first ``--encode-samples`` scrub frames encoded as PNG (the app), PNG at
     compress level 1, WebP (Gradio's default format), JPEG q90, and JPEG after downscaling to 1280 px.

   Peak RSS = ``VmHWM`` from ``/proc/self/status`` (kernel-tracked peak) after each phase, the
   ``ru_maxrss`` of ``getrusage`` and the maximum of ``VmRSS`` sampled every 5 ms by a thread, which
   also ends the measurement if RSS passes ``--rss-cap-mb`` (default 6000), so a runaway decoder cannot
   push the shared machine into the OOM killer. ``os.getloadavg()`` is recorded before and after: the
   dev machine's 2 cores are shared with a training run, so timings are taken under that load.

Prints one table per clip and a summary against the issue's targets (peak RSS ≤ 2 GB, display p95
≤ 200 ms).

Measured on the 2-core dev machine (defaults: 10 min, 18 000 frames at 1920×1080, libx264 veryfast
crf 20; both clips generated together in 808 s at load 3.5–14: 206 MB / 2.75 Mbit/s with -g 250,
593 MB / 7.9 Mbit/s with -g 30). Two runs, at load average ~4 (training run active) / ~1 (idle):

* peak RSS (VmHWM): 772 / 756 MB (-g 250) and 933 / 933 MB (-g 30). Before ``rvos_core.video`` reset
  decord after each read, both clips passed 6 GB and were stopped (VmHWM 4.9 / 3.4 GB after the
  scrub): decord 0.6's decoder thread keeps decoding ahead into RGB frames (dmlc/decord#157).
* random-frame ``Workbench.show`` p50 / p95: -g 250: 354 / 592 ms (load 4), 245 / 403 ms (load 1);
  -g 30: 142 / 252 ms, 83 / 148 ms — nearly all of it decoding from the keyframe before the frame.
* the app used to send frames as PNG (``gr.Image(format="png")``): 380–700 ms p50 per 1080p frame (3 MB). Since
  2026-11-21 it sends JPEG (PIL quality 75): 4.5–5.3 ms p50, 294 KB.
* one GrabCut click (refine + store + render) before the 2026-11-21 refiner changes: p50 464–1152 ms, IoU with the
  shape 0.25.

Run of 2026-11-21 (JPEG display, new GrabCut; load 0.0 → 2.1 for the -g 250 clip, a model evaluation ran
beside it; 2.1 → 1.8 for -g 30):

* peak RSS (VmHWM): 764 MB (-g 250), 919 MB (-g 30): **≤ 2 GB met**.
* random-frame display (show + JPEG encode) p50 / p95: -g 250: 294 / 608 ms (**missed**: decoding from the
  keyframe up to 250 frames back); -g 30: 89 / 154 ms (**met**). ``python -m rvos_core reencode`` (keyframe every
  15 frames) turns a long-interval clip into the second kind; the app's clip line suggests it when keyframes are
  more than 60 frames apart.
* one GrabCut click: p50 90 ms, p95 255–280 ms; IoU with the shape 0.70 (min 0.15).

Run of 2026-11-21, the app's background fast-scrubbing copy (``--scrub-copy wait``, the default; ``demo.scrub``:
x264 ultrafast crf 20, keyframe every 15 frames, ffmpeg at nice 10), -g 250 clip, load 7.9 → 11.3 (a training run
and an ablation run beside it):

* the copy: 652 s for 18 000 frames while the clip was already open and usable, 1 841 MB, ffmpeg peak RSS 386 MB.
* random-frame display on the copy p50 / p95: 106 / **166 ms (met)** (on the original: 294 / 608 ms above);
  dragging backwards p95 165 ms, forwards p95 407 ms (a decoded run per cache miss).
* peak RSS (VmHWM) **1 306 MB (met)**: higher than on the original (764 MB) because the copy decodes faster, so
  decord's decoder thread gets further ahead between resets.
* GrabCut click p50 249 ms at that load.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULT_MARK = "RESULT-JSON "
#: Bits of the frame-index code (18 000 frames < 2**16).
CODE_BITS = 16
#: Side of one code block in pixels; the code sits at (CODE_ORIGIN, CODE_ORIGIN).
CODE_BLOCK = 16
CODE_ORIGIN = 8
#: Extra border of the background texture, so the "camera" can pan this many pixels.
PAN_PX = 256
TARGETS = {"peak_rss_mb": 2048.0, "display_p95_ms": 200.0}


# ----------------------------------------------------------------------------- the synthetic clip


@dataclass(frozen=True)
class ClipSpec:
    """One generated clip: geometry, timing and x264 settings."""

    width: int
    height: int
    fps: float
    frames: int
    gop: int
    preset: str
    crf: int

    @property
    def name(self) -> str:
        return (f"clip_{self.width}x{self.height}_{self.fps:g}fps_{self.frames}f_"
                f"gop{self.gop}_{self.preset}_crf{self.crf}.mp4")


@dataclass(frozen=True)
class Shape:
    """A moving shape on frame t: ``kind`` "rect" (half sizes) or "disc" (radius = half_w)."""

    kind: str
    cx: int
    cy: int
    half_w: int
    half_h: int
    color: tuple[int, int, int]


_COLORS = ((40, 200, 90), (210, 50, 50), (240, 200, 30), (50, 90, 220), (200, 60, 200))


def make_background(height: int, width: int, seed: int = 0) -> np.ndarray:
    """``(height + PAN_PX, width + PAN_PX, 3)`` uint8 RGB: colour gradient + smooth waves + fine texture."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = height + PAN_PX, width + PAN_PX
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    blobs = cv2.resize(rng.random((h // 8, w // 8), dtype=np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    fine = rng.random((h, w), dtype=np.float32)
    red = 60 + 110 * xx / w + 40 * blobs + 25 * fine
    green = 50 + 90 * yy / h + 45 * np.sin(xx / 37.0) * np.sin(yy / 53.0) + 25 * fine
    blue = 150 - 70 * xx / w + 30 * blobs + 25 * fine
    return np.clip(np.stack([red, green, blue], -1), 0, 255).astype(np.uint8)


def shapes_at(t: int, width: int, height: int, fps: float) -> list[Shape]:
    """The five moving shapes on frame ``t``, in drawing order (later ones cover earlier ones)."""
    s = t / fps
    scale = min(width, height) / 1080
    out = []
    for k, color in enumerate(_COLORS):
        half_w, half_h = int((70 + 12 * k) * scale), int((50 + 8 * k) * scale)
        margin = half_w + 4
        cx = width / 2 + (width / 2 - margin) * np.sin(2 * np.pi * s / (9 + 4 * k) + k)
        cy = height / 2 + (height / 2 - margin) * np.cos(2 * np.pi * s / (13 + 3 * k) + 2 * k)
        out.append(Shape("disc" if k % 2 else "rect", int(cx), int(cy), half_w, half_h, color))
    return out


def _draw_shape(canvas: np.ndarray, shape: Shape, value: Any) -> None:
    import cv2

    if shape.kind == "disc":
        cv2.circle(canvas, (shape.cx, shape.cy), shape.half_w, value, -1, cv2.LINE_8)
    else:
        cv2.rectangle(canvas, (shape.cx - shape.half_w, shape.cy - shape.half_h),
                      (shape.cx + shape.half_w, shape.cy + shape.half_h), value, -1, cv2.LINE_8)


def _code_box(bit: int) -> tuple[int, int, int, int]:
    x0 = CODE_ORIGIN + bit * CODE_BLOCK
    return x0, CODE_ORIGIN, x0 + CODE_BLOCK, CODE_ORIGIN + CODE_BLOCK


def render_frame(background: np.ndarray, t: int, width: int, height: int, fps: float) -> np.ndarray:
    """Frame ``t`` as ``(height, width, 3)`` uint8 RGB: panned background, shapes, index code."""
    s = t / fps
    half = PAN_PX // 2
    dx = int(half + (half - 1) * np.sin(2 * np.pi * s / 23.0))
    dy = int(half + (half - 1) * np.sin(2 * np.pi * s / 31.0))
    frame = background[dy:dy + height, dx:dx + width].copy()
    for shape in shapes_at(t, width, height, fps):
        _draw_shape(frame, shape, shape.color)
    for bit in range(CODE_BITS):
        x0, y0, x1, y1 = _code_box(bit)
        frame[y0:y1, x0:x1] = 255 if (t >> bit) & 1 else 0
    return frame


def read_frame_index(frame: np.ndarray) -> int:
    """The frame index written by :func:`render_frame` (the mean of each block's inner half)."""
    q = CODE_BLOCK // 4
    value = 0
    for bit in range(CODE_BITS):
        x0, y0, x1, y1 = _code_box(bit)
        if frame[y0 + q:y1 - q, x0 + q:x1 - q].mean() > 127:
            value |= 1 << bit
    return value


def topmost_shape(t: int, width: int, height: int, fps: float) -> tuple[tuple[int, int], np.ndarray]:
    """A click point ``(x, y)`` on a visible shape of frame ``t`` and that shape's ``(H, W)`` bool region.

    The shape is the first one (in drawing order) whose centre is not covered by a later shape.
    """
    shapes = shapes_at(t, width, height, fps)
    labels = np.full((height, width), 255, np.uint8)
    for k, shape in enumerate(shapes):
        _draw_shape(labels, shape, k)
    labels[: CODE_ORIGIN + CODE_BLOCK, : CODE_ORIGIN + CODE_BITS * CODE_BLOCK] = 255
    for k, shape in enumerate(shapes):
        x, y = min(max(shape.cx, 0), width - 1), min(max(shape.cy, 0), height - 1)
        if labels[y, x] == k:
            return (x, y), labels == k
    raise RuntimeError(f"frame {t}: every shape centre is covered")  # cannot happen with 5 shapes


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def _clip_ready(path: Path, spec: ClipSpec) -> dict[str, Any] | None:
    try:
        info = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return None
    return info if path.is_file() and info.get("spec") == asdict(spec) else None


def _keyframe_stats(path: Path) -> dict[str, Any]:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
    keys = [int(k) for k in reader.get_key_indices()]
    gaps = np.diff(keys + [len(reader)])  # frames from each keyframe to the next one (or the end)
    return {"keyframes": len(keys), "max_gap": int(gaps.max()), "mean_gap": float(gaps.mean())}


def generate_clips(specs: list[ClipSpec], workdir: Path) -> dict[str, dict[str, Any]]:
    """Write every missing clip of ``specs`` (same geometry) from one frame loop; returns sidecar info by name."""
    import imageio_ffmpeg
    from tqdm import tqdm

    from rvos_core.fileio import atomic_output_path

    infos = {s.name: info for s in specs if (info := _clip_ready(workdir / s.name, s)) is not None}
    todo = [s for s in specs if s.name not in infos]
    if not todo:
        return infos
    first = todo[0]
    background = make_background(first.height, first.width)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    with ExitStack() as stack:
        writers = []
        for spec in todo:
            tmp = stack.enter_context(atomic_output_path(workdir / spec.name))
            writer = imageio_ffmpeg.write_frames(
                str(tmp), (spec.width, spec.height), fps=spec.fps, codec="libx264", pix_fmt_out="yuv420p",
                quality=None, macro_block_size=1, ffmpeg_log_level="error",
                output_params=["-preset", spec.preset, "-crf", str(spec.crf), "-g", str(spec.gop),
                               "-movflags", "+faststart"],
            )
            writer.send(None)
            stack.callback(writer.close)
            writers.append(writer)
        for t in tqdm(range(first.frames), desc=f"encoding {len(todo)} clip(s)", unit="frame", mininterval=5):
            frame = render_frame(background, t, first.width, first.height, first.fps)
            for writer in writers:
                writer.send(frame)
    seconds = time.perf_counter() - t0
    for spec in todo:
        path = workdir / spec.name
        info = {"spec": asdict(spec), "generation_s": seconds, "clips_in_loop": len(todo),
                "load_during": [load_before, os.getloadavg()], "bytes": path.stat().st_size,
                **_keyframe_stats(path)}
        with atomic_output_path(_sidecar(path)) as tmp:
            tmp.write_text(json.dumps(info, indent=1))
        infos[spec.name] = info
    return infos


# ----------------------------------------------------------------------------- measuring (child process)


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class RssSampler:
    """Samples ``VmRSS`` every ``interval`` s in a daemon thread; ``peak_kb`` and the phase it happened in.

    If ``VmRSS`` passes ``cap_mb`` the process prints a result line saying so and exits (status 3), so
    a runaway decoder cannot push the shared machine into the OOM killer.
    """

    def __init__(self, cap_mb: float, interval: float = 0.005) -> None:
        self.interval = interval
        self.cap_kb = cap_mb * 1024
        self.phase = "start"
        self.peak_kb = 0
        self.peak_phase = "start"
        self.marks: dict[str, float] = {}  # phase → VmHWM (MB) at its end
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = _proc_status_kb("VmRSS")
            if rss > self.peak_kb:
                self.peak_kb, self.peak_phase = rss, self.phase
            if rss > self.cap_kb:
                print(RESULT_MARK + json.dumps({"aborted": f"VmRSS {rss / 1024:.0f} MB passed the cap of "
                                                           f"{self.cap_kb / 1024:.0f} MB in phase {self.phase}",
                                                "vmhwm_after_mb": self.marks, "load": [os.getloadavg()]}),
                      flush=True)
                os._exit(3)
            self._stop.wait(self.interval)

    @contextmanager
    def during(self, phase: str) -> Iterator[None]:
        """Label samples with ``phase``; on exit record ``VmHWM`` (MB) in ``marks[phase]``."""
        self.phase = phase
        try:
            yield
        finally:
            self.marks[phase] = _proc_status_kb("VmHWM") / 1024

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _idle(seconds: float) -> dict[str, float]:
    """Sleep ``seconds`` (a user looking at the frame) and report how RSS moved meanwhile (MB)."""
    before = _proc_status_kb("VmRSS") / 1024
    time.sleep(seconds)
    return {"seconds": seconds, "rss_before_mb": before, "rss_after_mb": _proc_status_kb("VmRSS") / 1024}


def encode_like_gradio(image: np.ndarray) -> int:
    """Encode as Gradio 6 does for the app's ``gr.Image(type="numpy", format="jpeg")``; returns the byte count.

    As ``gradio.processing_utils.save_img_array_to_cache``: ``PIL.Image.save(…, "jpeg")`` with PIL's
    default quality (75) into memory, then a sha256 of the bytes names the cache file.
    """
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "jpeg")
    data = buf.getvalue()
    hashlib.sha256(data).hexdigest()
    return len(data)


def _pil_bytes(image: np.ndarray, fmt: str, **params: Any) -> int:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, fmt, **params)
    return len(buf.getvalue())


def _fit_width(image: np.ndarray, width: int) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    return cv2.resize(image, (width, round(h * width / w)), interpolation=cv2.INTER_AREA) if w > width else image


#: Encodings the app could send instead of PNG (``gr.Image(format=…)``, or a display-size copy first).
ENCODE_OPTIONS: dict[str, Any] = {
    "png (app before 2026-11-21)": lambda im: _pil_bytes(im, "png"),
    "png compress_level=1": lambda im: _pil_bytes(im, "png", compress_level=1),
    "webp (Gradio default)": lambda im: _pil_bytes(im, "webp"),
    "jpeg q75 (app: format='jpeg')": lambda im: _pil_bytes(im, "jpeg"),
    "jpeg q90": lambda im: _pil_bytes(im, "jpeg", quality=90),
    "1280 px wide + jpeg q90": lambda im: _pil_bytes(_fit_width(im, 1280), "jpeg", quality=90),
}


def encode_options(image: np.ndarray) -> dict[str, list[float]]:
    """``{option: [milliseconds, bytes]}`` for each of :data:`ENCODE_OPTIONS` on one displayed image."""
    out = {}
    for name, encode in ENCODE_OPTIONS.items():
        t0 = time.perf_counter()
        size = encode(image)
        out[name] = [(time.perf_counter() - t0) * 1000, float(size)]
    return out


class _TimedVideo:
    """Wraps ``video.get_frame`` on the instance to record the decode time of each call (ms)."""

    def __init__(self, video: Any) -> None:
        self.last_ms = 0.0
        self._inner = video.get_frame
        video.get_frame = self._get_frame

    def _get_frame(self, index: int) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return self._inner(index)
        finally:
            self.last_ms = (time.perf_counter() - t0) * 1000


def _display(wb: Any, sid: str, frame: int, timer: _TimedVideo) -> dict[str, Any]:
    c0, t0 = time.process_time(), time.perf_counter()
    view = wb.show(sid, frame)
    c1, t1 = time.process_time(), time.perf_counter()
    enc_bytes = encode_like_gradio(view.image)
    t2 = time.perf_counter()
    return {"frame": frame, "decode_ms": timer.last_ms, "show_ms": (t1 - t0) * 1000, "show_cpu_ms": (c1 - c0) * 1000,
            "encode_ms": (t2 - t1) * 1000, "display_ms": (t2 - t0) * 1000, "encode_bytes": enc_bytes,
            "index_ok": read_frame_index(view.image) == frame}


def _annotate(wb: Any, sid: str, frames: list[int], timer: _TimedVideo, fps: float) -> list[dict[str, Any]]:
    meta = wb.store.get(sid).video.meta
    obj_id = wb.add_object(sid, frames[0]).selected
    rows = []
    for f in frames:
        shown = _display(wb, sid, f, timer)
        (x, y), truth = topmost_shape(f, meta.width, meta.height, fps)
        t0 = time.perf_counter()
        view = wb.click(sid, f, obj_id, x, y, True)
        click_ms = (time.perf_counter() - t0) * 1000
        mask = wb.store.get(sid).session.mask(obj_id, f)
        iou = float((mask & truth).sum() / max((mask | truth).sum(), 1))
        rows.append({**shown, "click_ms": click_ms, "click_xy": [x, y], "mask_px": int(mask.sum()), "iou": iou,
                     "click_view_ok": read_frame_index(view.image) == f})
    return rows


def _wait_for_scrub_copy(ws: Any) -> dict[str, Any]:
    """Wait for the workspace's background fast-scrubbing copy (``demo.scrub``) and describe it."""
    job = ws.scrub
    if job is None:
        return {"made": False}
    t0 = time.perf_counter()
    job.join()
    return {"made": True, "state": job.state, "error": job.error, "encode_s": job.seconds,
            "waited_s": time.perf_counter() - t0, "gap_before": job.gap, "gap_after": ws.video.max_keyframe_gap,
            "bytes": job.dst.stat().st_size if job.dst.exists() else 0,
            "ffmpeg_maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def measure(clip: Path, scrub: int, annotate: int, steps: int, seed: int, idle: float,
            rss_cap_mb: float, encode_samples: int, scrub_copy: str = "wait") -> dict[str, Any]:
    """Open ``clip`` through the app's service layer, (``scrub_copy="wait"``: wait for the app's background
    fast-scrubbing copy of a long-GOP clip; ``"off"``: no copy, the app's ``scrub_copies=False``), idle, scrub,
    drag, idle, annotate; returns all figures."""
    load_start = os.getloadavg()
    with RssSampler(rss_cap_mb) as sampler:
        with sampler.during("imports"):
            from demo.service import Workbench
            from demo.store import SessionStore
        with tempfile.TemporaryDirectory() as store_root:
            store = SessionStore(root=store_root)
            wb = Workbench(store, clip, refiner="grabcut", scrub_copies=scrub_copy == "wait")
            sid = "bench"
            with sampler.during("open"):
                t0 = time.perf_counter()
                wb.open_sample(sid)
                open_s = time.perf_counter() - t0
            with sampler.during("fast-scrubbing copy"):
                copy = _wait_for_scrub_copy(store.get(sid))
            video = store.get(sid).video
            timer = _TimedVideo(video)
            n = len(video)
            with sampler.during("idle after open"):
                idles = [_idle(idle)]
            rng = np.random.default_rng(seed)
            with sampler.during("scrub"):
                scrub_rows = [_display(wb, sid, int(f), timer) for f in rng.integers(0, n, scrub)]
            start_back, start_fwd = (int(v) for v in rng.integers(steps, n - steps, 2))
            with sampler.during("drag"):
                back = [_display(wb, sid, start_back - k, timer) for k in range(steps)]
                fwd = [_display(wb, sid, start_fwd + k, timer) for k in range(steps)]
            with sampler.during("idle after drag"):
                idles.append(_idle(idle))
            with sampler.during("annotate"):
                ann_frames = [int(f) for f in rng.choice(n, annotate, replace=False)]
                ann_rows = _annotate(wb, sid, ann_frames, timer, video.meta.fps)
            with sampler.during("encode options"):
                encodings = [encode_options(wb.show(sid, r["frame"]).image) for r in scrub_rows[:encode_samples]]
            cache = video.cache_info()
            stored = store.get(sid).session.stored_bytes()
            wb.close(sid)
    return {
        "clip": str(clip), "num_frames": n, "open_s": open_s, "scrub_copy": copy, "cache": cache,
        "stored_mask_bytes": stored,
        "idle": idles, "scrub": scrub_rows, "steps_back": back, "steps_fwd": fwd, "annotate": ann_rows,
        "encodings": encodings, "vmhwm_after_mb": sampler.marks, "vmhwm_mb": _proc_status_kb("VmHWM") / 1024,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sampled_peak_mb": sampler.peak_kb / 1024, "sampled_peak_phase": sampler.peak_phase,
        "load": [load_start, os.getloadavg()], "cpus": os.cpu_count(),
    }


# ----------------------------------------------------------------------------- report


def _pct(rows: list[dict[str, Any]], key: str) -> tuple[float, float, float]:
    values = np.array([r[key] for r in rows], float)
    return float(np.percentile(values, 50)), float(np.percentile(values, 95)), float(values.max())


def _fmt(rows: list[dict[str, Any]], key: str) -> str:
    p50, p95, mx = _pct(rows, key)
    return f"{p50:7.1f} {p95:7.1f} {mx:7.1f}"


def print_report(info: dict[str, Any], res: dict[str, Any]) -> None:
    spec = info["spec"]
    print(f"\n== {Path(res['clip']).name}")
    print(f"clip: {spec['width']}x{spec['height']} @ {spec['fps']:g} fps, {res['num_frames']} frames "
          f"({res['num_frames'] / spec['fps'] / 60:.1f} min), libx264 -preset {spec['preset']} -crf {spec['crf']} "
          f"-g {spec['gop']}: {info['keyframes']} keyframes (mean gap {info['mean_gap']:.1f}, max {info['max_gap']}), "
          f"{info['bytes'] / 1e6:.0f} MB = {info['bytes'] * 8 / (res['num_frames'] / spec['fps']) / 1e6:.2f} Mbit/s")
    print(f"generation: {info['generation_s']:.0f} s for {info['clips_in_loop']} clip(s) in one loop "
          f"(load {info['load_during'][0][0]:.1f} → {info['load_during'][1][0]:.1f})")
    print(f"load average (1 min) during measurement: {res['load'][0][0]:.1f} → {res['load'][1][0]:.1f} "
          f"on {res['cpus']} CPUs; open {res['open_s'] * 1000:.0f} ms; cache {res['cache']}")
    copy = res.get("scrub_copy", {"made": False})
    if copy["made"]:
        print(f"fast-scrubbing copy (app, background ffmpeg at nice 10): {copy['state']}"
              f"{' (' + str(copy['error']) + ')' if copy['error'] else ''}; encoded in {copy['encode_s'] or 0:.0f} s, "
              f"{copy['bytes'] / 1e6:.0f} MB; keyframe gap {copy['gap_before']} → {copy['gap_after']} frames; "
              f"ffmpeg peak RSS {copy['ffmpeg_maxrss_mb']:.0f} MB; measured below on the copy")
    else:
        print("fast-scrubbing copy: none (keyframes close enough, or --scrub-copy off)")
    print(f"{'ms (p50 / p95 / max)':24} {'decode':>23} {'show':>23} {'show CPU':>23} {'encode':>23} {'display':>23}")
    for label, rows in (("scrub random", res["scrub"]), ("drag backwards", res["steps_back"]),
                        ("drag forwards", res["steps_fwd"]), ("annotated frames", res["annotate"])):
        cols = "  ".join(_fmt(rows, k) for k in ("decode_ms", "show_ms", "show_cpu_ms", "encode_ms", "display_ms"))
        print(f"{label + f' (n={len(rows)})':24} {cols}")
    shown = res["scrub"] + res["steps_back"] + res["steps_fwd"] + res["annotate"]
    bad = [r["frame"] for r in shown if not r["index_ok"]]
    print(f"frame-index code check: {'all frames correct' if not bad else f'WRONG frames {bad[:10]}'}")
    ann = res["annotate"]
    p50, p95, mx = _pct(ann, "click_ms")
    print(f"annotate: {len(ann)} positive clicks (GrabCut): click p50 {p50:.0f} / p95 {p95:.0f} / max {mx:.0f} ms; "
          f"IoU with the true shape {np.mean([r['iou'] for r in ann]):.3f} (min {min(r['iou'] for r in ann):.3f}); "
          f"stored masks {res['stored_mask_bytes'] / 1024:.1f} KiB")
    idles = ", ".join(f"{r['rss_before_mb']:.0f} → {r['rss_after_mb']:.0f} MB" for r in res["idle"])
    print(f"RSS while idling {res['idle'][0]['seconds']:g} s after opening / after the drag: {idles}")
    marks = "  ".join(f"{k} {v:.0f}" for k, v in res["vmhwm_after_mb"].items())
    print(f"peak RSS: VmHWM {res['vmhwm_mb']:.0f} MB, ru_maxrss {res['ru_maxrss_mb']:.0f} MB, sampled VmRSS "
          f"{res['sampled_peak_mb']:.0f} MB (in phase {res['sampled_peak_phase']}); VmHWM after: {marks}")
    if res["encodings"]:
        print(f"encoding the displayed frame ({len(res['encodings'])} scrub frames): ms p50 / p95, KB p50")
        for name in res["encodings"][0]:
            ms = np.array([e[name][0] for e in res["encodings"]])
            kb = np.array([e[name][1] for e in res["encodings"]]) / 1024
            ms50, ms95, kb50 = np.percentile(ms, 50), np.percentile(ms, 95), np.percentile(kb, 50)
            print(f"  {name:26} {ms50:7.1f} {ms95:7.1f}   {kb50:7.0f}")
    p95_display = _pct(res["scrub"], "display_ms")[1]
    p95_show = _pct(res["scrub"], "show_ms")[1]
    print(f"targets: peak RSS {res['vmhwm_mb']:.0f} MB ≤ {TARGETS['peak_rss_mb']:.0f}: "
          f"{'PASS' if res['vmhwm_mb'] <= TARGETS['peak_rss_mb'] else 'FAIL'}; scrub display p95 "
          f"{p95_display:.0f} ms (show only {p95_show:.0f} ms) ≤ {TARGETS['display_p95_ms']:.0f}: "
          f"{'PASS' if p95_display <= TARGETS['display_p95_ms'] else 'FAIL'}")


# ----------------------------------------------------------------------------- driver


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must be HxW, e.g. 1080x1920; got {text!r}") from None
    if h < 64 or w < 64 or h % 2 or w % 2:
        raise argparse.ArgumentTypeError(f"--size needs even sides >= 64, got {text!r}")
    return h, w


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "rvos-bench-memory")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--size", type=_parse_size, default=(1080, 1920), help="HxW")
    ap.add_argument("--gop", type=int, nargs="+", default=[250, 30], help="libx264 -g per clip")
    ap.add_argument("--preset", default="veryfast")
    ap.add_argument("--crf", type=int, default=20)
    ap.add_argument("--scrub", type=int, default=200)
    ap.add_argument("--annotate", type=int, default=5)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--encode-samples", type=int, default=10, help="scrub frames re-encoded in other formats")
    ap.add_argument("--idle", type=float, default=3.0, help="seconds of idling after opening and after the drag")
    ap.add_argument("--rss-cap-mb", type=float, default=6000.0, help="abort a measurement whose RSS passes this")
    ap.add_argument("--scrub-copy", choices=("wait", "off"), default="wait",
                    help="wait for the app's background fast-scrubbing copy of a long-GOP clip and measure on it "
                         "(default), or measure the original clip (the app with scrub_copies=False)")
    ap.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)  # child mode
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.fps <= 0 or args.scrub < 1 or args.annotate < 1 or args.steps < 1:
        ap.error("--minutes, --fps, --scrub, --annotate and --steps must be positive")
    if any(g < 1 for g in args.gop):
        ap.error(f"--gop values must be >= 1, got {args.gop}")
    return args


def _child_command(args: argparse.Namespace, clip: Path) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", str(clip), "--scrub", str(args.scrub),
           "--annotate", str(args.annotate), "--steps", str(args.steps), "--seed", str(args.seed),
           "--idle", str(args.idle), "--rss-cap-mb", str(args.rss_cap_mb), "--scrub-copy", args.scrub_copy]
    return cmd + ["--encode-samples", str(args.encode_samples)]


def _run_child(args: argparse.Namespace, clip: Path) -> dict[str, Any]:
    proc = subprocess.run(_child_command(args, clip), capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    raise RuntimeError(f"measurement of {clip} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def _specs(args: argparse.Namespace) -> Iterator[ClipSpec]:
    h, w = args.size
    frames = int(round(args.minutes * 60 * args.fps))
    for gop in args.gop:
        yield ClipSpec(w, h, args.fps, frames, gop, args.preset, args.crf)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from rvos_core.fileio import atomic_output_path

    if args.measure is not None:
        res = measure(args.measure, args.scrub, args.annotate, args.steps, args.seed, args.idle,
                      args.rss_cap_mb, args.encode_samples, args.scrub_copy)
        print(RESULT_MARK + json.dumps(res))
        return
    specs = list(_specs(args))
    infos = generate_clips(specs, args.workdir)
    for spec in specs:
        clip = args.workdir / spec.name
        res = _run_child(args, clip)
        if "aborted" in res:
            marks = "  ".join(f"{k} {v:.0f}" for k, v in res["vmhwm_after_mb"].items())
            print(f"\n== {spec.name}\nmeasurement ABORTED: {res['aborted']} (load {res['load'][0][0]:.1f}); "
                  f"VmHWM (MB) after: {marks}")
            continue
        print_report(infos[spec.name], res)
        with atomic_output_path(args.workdir / (spec.name + f".{args.scrub_copy}.result.json")) as tmp:
            tmp.write_text(json.dumps(res))


if __name__ == "__main__":
    main()
