"""CPU speed of the clip-rvos engine's ``segment``, per stage, on a real clip.

Usage:
    python bench/engine_speed.py [VIDEO] [--model clip-rvos-tiny] [--expression TEXT]
                                 [--repeats 3] [--threads N [N ...]]

VIDEO defaults to the DAVIS 2016 blackswan clip (854×480, 50 frames) in the shared data. The shipped
engine is loaded through ``rvos_core.engines.registry.get_engine`` (``assets/clip-rvos-tiny.pt``).
For each thread count (default: ``torch.get_num_threads()`` and 1) one warm-up run, then
``--repeats`` timed runs, each on a freshly opened video (nothing cached between runs). Printed per
stage, mean per run, wall and process-CPU milliseconds (CPU time counts every thread of the process:
decord's decoder thread, OpenCV's and torch's workers): video decode (opening included), resize to the
model's input size, optical flow, text encoding (tokenising + the network's text encoder), network
forward (text encoder excluded), upsampling/thresholding to the original size, masklet linking; then
frames per second (wall, and per CPU-second), ``os.getloadavg()`` before and after, and peak RSS.
On a machine shared with other jobs, wall time depends on the load; CPU time much less so.

Measured 2026-11-21 on the team's 2-core AMD EPYC (Zen 5, AVX-512) VM, one core taken by a training
run at nice −19 and other engineers' tests running too (load average 8.5–9.5, so wall times are ~2.5×
the CPU times); blackswan (854×480, 50 frames), shipped clip-rvos-tiny, 3 repeats after a warm-up.
"before" is the engine as it was (commit 7c36db8), timed with the same stage split by wrapping its
functions; its "upsample" is the rest of its ``segment`` (mostly ``torch.argmax`` over the queries).
CPU ms per run (wall ms in brackets):

    stage                          1 thread: before      after          2 threads: before       after
    video decode (incl. open)       1405 (2494)    181 (372)           1413 (2609)     176 (351)
    resize to model input            149 (279)      63 (149)            158 (283)       65 (144)
    optical flow (DIS)                19 (84)       14 (19)              29 (59)        25 (74)
    text encoding                     11 (43)        9 (14)             525 (1585)     138 (278)
    network forward (excl. text)     955 (2795)   1015 (2825)          9757 (28890)   5589 (12999)
    upsample + threshold            1698 (4595)    149 (410)           2198 (6208)     425 (1012)
    masklet linking                   75 (209)      23 (62)             110 (371)       41 (68)
    total                           4313 (10498)  1489 (4041)         14190 (40006)   6504 (15066)
    frames per CPU-second             11.6          33.6                  3.5             7.7
    frames per second (wall)           4.8          12.4                  1.2             3.3
    peak RSS                         1260 MB       1132 MB              1292 MB         1129 MB

A second 1-thread run of the final code a few minutes later (load 8.3): 1264 ms CPU (1984 ms wall), i.e.
39.6 frames per CPU-second and 25.2 frames/s wall; CPU figures vary by ~±10 % with the machine's load.
(Peak RSS is the whole process: importing torch takes ~510 MB, the engine ~390 MB more, a segment
run ~220 MB more.) Masks are bit-identical to the old path (``tests/test_engine_speed_equivalence.py``).

Those figures are at the config's former 128 px input (224×128 for 854×480). Since the shipped config runs
at 160 px (288×160, 1.6× the pixels; measured with the stage-5 weights, speed does not depend on them), 1 thread, load 3.6–3.7, 3 repeats: 1974 ms CPU
(1966 ms wall) per run, 25.3 frames per CPU-second; network forward 1547 ms (32.3 frames per CPU-second
for the forward alone); peak RSS 1161 MB. The same run at 128 px just before: 1328 ms CPU, 37.7 frames
per CPU-second.

What remains: the network forward is ~68 % of the CPU time with 1 thread (~20 ms per frame, ~50
frames per CPU-second alone; its convolutions are ~75 % of it, the stride-4 3×3 FPN convolution alone
~11 %), then decode (12 %), upsampling (10 %), resize (4 %). With 2 torch threads on this machine the
second thread competes with the training run and OpenMP barriers wait for it: the forward costs 5–10×
more CPU. Run with 1 thread here (``OMP_NUM_THREADS=1`` or ``torch.set_num_threads(1)``).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: (label, how to get its seconds from a StageTimer dict) in print order
STAGES = (
    ("video decode (incl. open)", "decode"),
    ("resize to model input", "resize"),
    ("optical flow (DIS)", "flow"),
    ("text encoding", "text+"),
    ("network forward (excl. text)", "forward-"),
    ("upsample + threshold", "upsample"),
    ("masklet linking", "link"),
)


def _default_video() -> str:
    sys.path.insert(0, str(ROOT / "tests"))
    from _paths import SHARED_DATA

    return str(SHARED_DATA / "davis2016_blackswan" / "blackswan.mp4")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("video", nargs="?", default=None, help="video file or frame folder (default: DAVIS blackswan)")
    ap.add_argument("--model", default="clip-rvos-tiny")
    ap.add_argument("--expression", default="the black swan swimming in the pond")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per thread count (after one warm-up)")
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="torch thread counts to measure (default: torch.get_num_threads() and 1)")
    a = ap.parse_args(argv)
    if a.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {a.repeats}")
    if a.threads is not None and min(a.threads) < 1:
        ap.error(f"--threads must be >= 1, got {a.threads}")
    return a


@contextmanager
def timed_text_encoder(net, timer) -> Iterator[None]:
    """Time the network's text encoder (called inside its forward) as the stage ``text_encoder``."""
    original = net.encode_text

    def encode_text(tokens):
        with timer.stage("text_encoder"):
            return original(tokens)

    net.encode_text = encode_text
    try:
        yield
    finally:
        del net.encode_text  # back to the class method


def run_once(engine, video_path: str, expression: str):
    """One timed ``segment`` on a freshly opened video → (StageTimer, wall s, CPU s, num_frames)."""
    from rvos_core.engines.clip_rvos import StageTimer
    from rvos_core.video import open_video

    timer = StageTimer()
    w0, c0 = time.perf_counter(), time.process_time()
    with timer.stage("decode"):
        video = open_video(video_path)
    with timed_text_encoder(engine.net, timer):
        result = engine.segment(video, expression, timer=timer)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    video.close()
    return timer, wall, cpu, result.num_frames


def stage_seconds(values: dict[str, float], key: str) -> float:
    """Seconds of one printed stage: ``text+`` adds the text encoder, ``forward-`` removes it."""
    if key == "text+":
        return values.get("text", 0.0) + values.get("text_encoder", 0.0)
    if key == "forward-":
        return values.get("forward", 0.0) - values.get("text_encoder", 0.0)
    return values.get(key, 0.0)


def report(threads: int, runs: list, load_before: tuple, load_after: tuple) -> None:
    r = len(runs)
    n = runs[0][3]
    wall = sum(x[1] for x in runs) / r
    cpu = sum(x[2] for x in runs) / r
    print(f"\nthreads={threads}  repeats={r}  frames={n}  loadavg before {_load(load_before)}  after {_load(load_after)}")
    print(f"  {'stage':30s} {'wall ms':>9s} {'CPU ms':>9s} {'CPU %':>6s}")
    accounted_w = accounted_c = 0.0
    for label, key in STAGES:
        w = sum(stage_seconds(x[0].wall, key) for x in runs) / r
        c = sum(stage_seconds(x[0].cpu, key) for x in runs) / r
        accounted_w, accounted_c = accounted_w + w, accounted_c + c
        print(f"  {label:30s} {1000 * w:9.1f} {1000 * c:9.1f} {100 * c / cpu:6.1f}")
    print(f"  {'other (bookkeeping)':30s} {1000 * (wall - accounted_w):9.1f} {1000 * (cpu - accounted_c):9.1f}")
    print(f"  {'total':30s} {1000 * wall:9.1f} {1000 * cpu:9.1f}")
    print(f"  fps: {n / wall:.1f} frames/s wall, {n / cpu:.1f} frames per CPU-second")
    forward = sum(stage_seconds(x[0].cpu, "forward-") for x in runs) / r
    print(f"  network forward alone: {n / forward:.1f} frames per CPU-second")
    print(f"  peak RSS so far: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def _load(avg: tuple) -> str:
    return "/".join(f"{v:.2f}" for v in avg)


def main(argv: list[str] | None = None) -> None:
    a = parse_args(argv)
    import torch

    from rvos_core.engines.registry import get_engine

    video = a.video or _default_video()
    if not Path(video).exists():
        raise SystemExit(f"video not found: {video}")
    threads = a.threads or sorted({torch.get_num_threads(), 1}, reverse=True)
    t0 = time.perf_counter()
    engine = get_engine(a.model)
    print(f"video: {video}\nmodel: {a.model} (loaded in {time.perf_counter() - t0:.2f} s); expression: {a.expression!r}")
    print(f"peak RSS after loading: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    for nt in threads:
        torch.set_num_threads(nt)
        run_once(engine, video, a.expression)  # warm-up: oneDNN kernels, decoder start-up
        load_before = os.getloadavg()
        runs = [run_once(engine, video, a.expression) for _ in range(a.repeats)]
        report(nt, runs, load_before, os.getloadavg())


if __name__ == "__main__":
    main()
