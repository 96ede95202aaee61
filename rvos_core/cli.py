"""Command line: ``python -m rvos_core <command>`` (contracts in shared/ARCHITECTURE.md).

Thin shell: parse → library call → print/write. Heavy modules are imported after parsing so
``--help`` is instant. Every error exits non-zero with one clear line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence


def _tqdm_progress(desc: str) -> tuple[Callable[[int, int, str], None], Callable[[], None]]:
    """A tqdm bar created on the first update (so errors before any work print only the error line)."""
    from tqdm import tqdm

    state: dict[str, tqdm] = {}

    def update(done: int, total: int, message: str) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc=desc, unit="frame")
        if bar.total != total:
            bar.reset(total=total)
        bar.n = done
        bar.set_postfix_str(message[:40])
        bar.refresh()

    def close() -> None:
        if "bar" in state:
            state["bar"].close()

    return update, close


def cmd_segment(a: argparse.Namespace) -> int:
    from rvos_core.pipeline import segment_video

    update, close = _tqdm_progress("segment")
    try:
        res = segment_video(a.video, a.expression, a.out, model=a.model, refiner=a.refiner, overlay=a.overlay,
                            checkpoint=a.checkpoint, device=a.device, progress=update)
    finally:
        close()
    print(f"{res.num_frames} masks written to {a.out} ({len(res.masklets)} object(s), engine {res.engine}, {res.seconds:.2f} s)")
    return 0


def cmd_synth(a: argparse.Namespace) -> int:
    from rvos_core.synthetic import write_split

    h, w = _parse_size(a.size)
    write_split(a.out, videos=a.videos, seed=a.seed, frames=a.frames, size=(h, w), progress=True)
    print(f"wrote {a.videos} synthetic videos to {a.out}")
    return 0


def cmd_download(a: argparse.Namespace) -> int:
    from rvos_core import weights

    if a.list or not a.names:
        print(weights.format_weights_table())
        return 0
    for p in weights.download(a.names, progress=True):
        print(p)
    return 0


def cmd_train(a: argparse.Namespace) -> int:
    from rvos_core.training.train import TrainOptions, train

    opts = TrainOptions(config=a.model, out_dir=a.out, data=a.data, steps=a.steps, batch_size=a.batch_size, lr=a.lr,
                        seed=a.seed, image_size=a.image_size, device=a.device, threads=a.threads, amp=a.amp,
                        compile=a.compile, time_budget_min=a.time_budget_min)
    path = train(opts)
    print(f"checkpoint: {path}")
    if a.eval_split:
        from rvos_core.engines.clip_rvos import ClipRvosEngine, build_net, load_config
        from rvos_core.training.evaluate import evaluate_engine

        cfg = load_config(a.model)
        eng = ClipRvosEngine(cfg, build_net(cfg, checkpoint=path), device=a.device)
        res = evaluate_engine(eng, a.eval_split)
        res.pop("per_expression")
        print(json.dumps(res, indent=2))
    return 0


def cmd_evaluate_model(a: argparse.Namespace) -> int:
    from rvos_core.engines.registry import get_engine
    from rvos_core.training.evaluate import evaluate_engine

    eng = get_engine(a.model, checkpoint=a.checkpoint, device=a.device)
    res = evaluate_engine(eng, a.split, limit=a.limit)
    if a.out:
        _atomic_json(Path(a.out), res)
    res.pop("per_expression")
    print(json.dumps(res, indent=2))
    return 0


def _atomic_json(path: Path, data: object) -> None:
    from rvos_core.fileio import atomic_output_path

    with atomic_output_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def _parse_size(s: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in s.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size must look like HxW (e.g. 128x128), got {s!r}") from None
    if h < 32 or w < 32:
        raise ValueError(f"--size must be at least 32x32, got {s!r}")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rvos_core", description="RVOS Workbench command line")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment a referring expression in a video → one 0/255 PNG per frame")
    s.add_argument("video", help="video file (mp4/webm/avi/mov) or folder of frames")
    s.add_argument("--expression", required=True, help="the referring expression, e.g. 'the bird that flies away'")
    s.add_argument("--out", required=True, help="output folder for 00000.png …")
    s.add_argument("--model", default="clip-rvos-tiny", help="engine name (default clip-rvos-tiny)")
    s.add_argument("--checkpoint", default=None, help="checkpoint path overriding the model's default")
    s.add_argument("--refiner", default=None, help="refine each frame with seed 003's recipe: grabcut | hq_sam:vit_b | auto")
    s.add_argument("--overlay", default=None, help="also write an overlay mp4 here")
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_segment)

    s = sub.add_parser("synth", help="write a procedural referring-motion split in the MeViS layout")
    s.add_argument("--out", required=True)
    s.add_argument("--videos", type=int, required=True)
    s.add_argument("--seed", type=int, required=True)
    s.add_argument("--frames", type=int, default=8)
    s.add_argument("--size", default="128x128", help="HxW in pixels")
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("download", help="download model weights (the only command that uses the network)")
    s.add_argument("names", nargs="*", help="weight names; none or --list to list them")
    s.add_argument("--list", action="store_true")
    s.set_defaults(func=cmd_download)

    s = sub.add_parser("train", help="train a clip-rvos model on synthetic clips or a MeViS-layout split")
    s.add_argument("--model", default="clip-rvos-tiny", help="config name or JSON path")
    s.add_argument("--data", default="synthetic", help="'synthetic' or a MeViS split folder (train / valid_u)")
    s.add_argument("--out", required=True, help="run folder (last.pt, final.pt, metrics.jsonl); resumes if last.pt exists")
    s.add_argument("--steps", type=int, default=2000)
    s.add_argument("--batch-size", type=int, default=4)
    s.add_argument("--lr", type=float, default=4e-4)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--image-size", type=int, default=128)
    s.add_argument("--device", default="cpu")
    s.add_argument("--threads", type=int, default=0)
    s.add_argument("--amp", action="store_true", help="bfloat16 autocast (GPU)")
    s.add_argument("--compile", action="store_true", help="torch.compile (GPU)")
    s.add_argument("--time-budget-min", type=float, default=0.0, help="stop after this many minutes; LR schedule follows time")
    s.add_argument("--eval-split", default=None, help="score the final checkpoint on this split")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate-model", help="run an engine on a MeViS-layout split with masks and print J&F")
    s.add_argument("split")
    s.add_argument("--model", default="clip-rvos-tiny")
    s.add_argument("--checkpoint", default=None)
    s.add_argument("--limit", type=int, default=None)
    s.add_argument("--out", default=None, help="write the full JSON (with per-expression scores) here")
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_evaluate_model)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, OSError, KeyError, IndexError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
