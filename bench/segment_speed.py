"""CPU time of the `segment` pipeline (decode → clip-rvos → 0/255 PNGs) on a real clip.

Usage: python bench/segment_speed.py [VIDEO] [--model clip-rvos-tiny] [--threads 2] [--random-init]
Prints wall seconds, process CPU seconds, frames per second and peak RSS.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("video", nargs="?", default=str(ROOT.parent / "shared/data/davis2016_blackswan/blackswan.mp4"))
    ap.add_argument("--model", default="clip-rvos-tiny")
    ap.add_argument("--expression", default="the black swan swimming in the pond")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--random-init", action="store_true", help="random weights (speed does not depend on them)")
    ap.add_argument("--refiner", default=None)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    from rvos_core.engines import registry
    from rvos_core.engines.clip_rvos import load_clip_rvos
    from rvos_core.pipeline import segment_video

    if a.random_init:  # put a random-init engine in the shared registry under the model's name
        registry._ENGINES[(a.model, "None", "cpu")] = load_clip_rvos(a.model, random_init=True)
    t_load = time.perf_counter()
    registry.get_engine(a.model)
    t_load = time.perf_counter() - t_load
    with tempfile.TemporaryDirectory() as out:
        w0, c0 = time.perf_counter(), time.process_time()
        res = segment_video(a.video, a.expression, out, model=a.model, refiner=a.refiner)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"video: {a.video}")
    print(f"model: {a.model} (random init: {a.random_init}), threads: {a.threads}, refiner: {a.refiner}")
    print(f"frames: {res.num_frames} at {res.width}x{res.height}; model load {t_load:.2f} s")
    print(f"segment wall: {wall:.2f} s  CPU: {cpu:.2f} s  ({res.num_frames / wall:.1f} frames/s wall)")
    print(f"peak RSS: {rss:.0f} MB")


if __name__ == "__main__":
    main()
