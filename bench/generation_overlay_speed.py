"""Speed of two per-frame building blocks that used to be timed inside tests (tests assert behaviour only).

Usage: python bench/generation_overlay_speed.py [--repeats 40]

* ``rvos_core.synthetic.generate_video``: one 128×128, 8-frame clip, basic and full vocabulary (median ms);
  budgets 10 ms (basic, one idle core) and 60 ms (full).
* ``rvos_core.masks.overlay`` on a real 854×480 DAVIS frame: the blackswan mask and a mask covering most of the
  frame (best of 7 ms); budget 15 ms.
Prints the load average: the dev machine's 2 cores are shared.

Measured 2026-11-21 (2-core dev machine, load 0.4, 1 thread): generate_video basic median 2.3 ms (p95 3.3),
full 6.5 ms (p95 10.5); overlay 1.2 ms (blackswan mask) / 2.8 ms (large mask).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _ms(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "davis2016_blackswan"))
    a = ap.parse_args()
    import cv2

    from rvos_core import masks as M
    from rvos_core.synthetic import generate_video

    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for vocabulary, budget in (("basic", 10.0), ("full", 60.0)):
        rng = np.random.default_rng(1)
        generate_video(rng, vocabulary=vocabulary)  # warm-up
        times = [_ms(lambda: generate_video(rng, vocabulary=vocabulary)) for _ in range(a.repeats)]
        print(f"generate_video 128x128x8 {vocabulary:<5}: median {np.median(times):6.1f} ms, "
              f"p95 {np.percentile(times, 95):6.1f} ms (budget {budget:.0f} ms)")
    data = Path(a.data)
    mask = M.read_mask_png(data / "Annotations" / "00000.png")
    frame = cv2.cvtColor(cv2.imread(str(data / "JPEGImages" / "00000.jpg")), cv2.COLOR_BGR2RGB)
    big = np.zeros_like(mask)
    big[60:420, 100:750] = True
    for label, m in (("blackswan mask", mask), ("large mask", big)):
        M.overlay(frame, [m])
        best = min(_ms(lambda: M.overlay(frame, [m])) for _ in range(7))
        print(f"overlay 854x480 {label:<14}: best of 7 {best:6.1f} ms (budget 15 ms)")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
