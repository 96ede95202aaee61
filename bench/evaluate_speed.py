"""Wall time of the `evaluate` J&F scorer on a split the size of MeViS valid_u (50 videos, ~800 expressions).

Usage: python bench/evaluate_speed.py [--workdir DIR] [--videos 50] [--expressions 16] [--frames 30]
                                      [--size 480x854] [--workers 1,2] [--start-method fork]

Builds, in ``--workdir`` (default: a temporary folder, deleted afterwards):

* ``split/``: ``--videos`` synthetic clips (:func:`rvos_core.synthetic.write_split`) of ``--frames``
  frames at ``--size``; each video's 2–5 generated expressions are repeated (same objects, ids
  ``0 … n-1``) to ``--expressions`` per video, so 50 × 16 = 800 expressions as in MeViS valid_u
  (50 videos, 793 expressions). MeViS frames are larger (mostly 720p) and videos longer (~70
  frames on average); the defaults are smaller so the data can be generated in a few minutes on
  2 CPU cores — scale ``--frames`` / ``--size`` up for a faithful run (time grows ~linearly in
  frames × pixels);
* ``pred/``: perturbed ground truth: every expression's masks shifted by a random (dy, dx) in
  [-6, 6] px, 5 % of the frames emptied, and one PNG deleted (so one problem is reported).

Then times ``evaluate_predictions`` once per ``--workers`` value (workers > 1: a process pool with
``--start-method``, default forkserver; the pool start-up is included) and prints wall seconds,
expressions/s and frames/s; the scores must agree across worker counts.

Measured on the 2-core dev machine, shared with a training run (defaults: 50 videos, 800
expressions, 30 frames at 480x854, 24,000 frames): split 10 s, predictions 57–82 s; evaluation
42 s (workers=1) / 31 s (workers=2) at load 2.2, and 75 s / 91 s at load 3.9–5.9.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _repeat_expressions(split_dir: Path, per_video: int) -> int:
    """Repeat each video's expressions in ``meta_expressions.json`` up to ``per_video``; returns the total."""
    from rvos_core.fileio import atomic_output_path

    meta_path = split_dir / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    total = 0
    for video in meta["videos"].values():
        base = list(video["expressions"].values())
        n = max(per_video, len(base))
        video["expressions"] = {str(i): dict(base[i % len(base)]) for i in range(n)}
        total += n
    with atomic_output_path(meta_path) as tmp:
        tmp.write_text(json.dumps(meta, separators=(",", ":")))
    return total


def _write_predictions(split_dir: Path, pred_dir: Path, seed: int) -> int:
    """Perturbed ground truth in the prediction layout; returns the number of PNGs written."""
    from rvos_core.formats.mevis import read_mevis_split, write_prediction_pngs

    rng = np.random.default_rng(seed)
    count = 0
    with read_mevis_split(split_dir) as split:
        for video in split.videos:
            names = split.frame_names(video)
            for exp_id in split.expressions(video):
                gt = split.expression_masks(video, exp_id)
                dy, dx = (int(v) for v in rng.integers(-6, 7, size=2))
                pred = np.roll(gt, (dy, dx), axis=(1, 2))
                pred[rng.random(len(names)) < 0.05] = False
                count += len(write_prediction_pngs(pred_dir, video, exp_id, pred, names))
    victim = sorted(pred_dir.rglob("*.png"))[0]
    victim.unlink()
    return count - 1


def _parse_size(s: str) -> tuple[int, int]:
    h, w = (int(v) for v in s.lower().split("x"))
    return h, w


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=None, help="keep the generated data here (default: a temp dir, deleted)")
    ap.add_argument("--videos", type=int, default=50)
    ap.add_argument("--expressions", type=int, default=16, help="expressions per video")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--size", default="480x854", help="HxW")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts to time")
    ap.add_argument("--start-method", default=None, help="fork | spawn | forkserver (default: platform)")
    a = ap.parse_args()

    from rvos_core.evaluation import evaluate_predictions
    from rvos_core.synthetic import write_split

    own_tmp = a.workdir is None
    work = Path(tempfile.mkdtemp(prefix="rvos_eval_bench_")) if own_tmp else Path(a.workdir)
    h, w = _parse_size(a.size)
    try:
        split, pred = work / "split", work / "pred"
        t0 = time.perf_counter()
        if not (split / "meta_expressions.json").exists():
            write_split(split, videos=a.videos, seed=a.seed, frames=a.frames, size=(h, w), progress=False)
        n_exp = _repeat_expressions(split, a.expressions)
        t_split = time.perf_counter() - t0
        t0 = time.perf_counter()
        if pred.exists():
            shutil.rmtree(pred)
        n_png = _write_predictions(split, pred, a.seed)
        t_pred = time.perf_counter() - t0
        print(f"data: {a.videos} videos, {n_exp} expressions, {a.frames} frames/video at {h}x{w} (HxW); "
              f"{n_png} prediction PNGs; split {t_split:.1f} s, predictions {t_pred:.1f} s; in {work}")
        print(f"cpu cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}")
        ref = None
        for workers in (int(v) for v in a.workers.split(",")):
            t0 = time.perf_counter()
            res = evaluate_predictions(split, pred, workers=workers, mp_context=a.start_method)
            wall = time.perf_counter() - t0
            n_frames = res.num_frames
            print(f"workers={workers}: {wall:.1f} s wall, {n_exp / wall:.1f} expressions/s, "
                  f"{n_frames / wall:.0f} frames/s; J={res.J:.4f} F={res.F:.4f} J&F={res.JF:.4f}, "
                  f"problems={len(res.problems)}")
            if ref is not None and (res.J, res.F) != ref:
                raise SystemExit(f"scores differ between worker counts: {ref} vs {(res.J, res.F)}")
            ref = (res.J, res.F)
    finally:
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
