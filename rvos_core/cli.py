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


def _tqdm_progress(desc: str, unit: str = "frame") -> tuple[Callable[[int, int, str], None], Callable[[], None]]:
    """A tqdm bar created on the first update (so errors before any work print only the error line)."""
    from tqdm import tqdm

    state: dict[str, tqdm] = {}

    def update(done: int, total: int, message: str) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc=desc, unit=unit)
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
    from rvos_core.synthetic import MOTION_ONLY_FILE, write_split

    h, w = _parse_size(a.size)
    write_split(a.out, videos=a.videos, seed=a.seed, frames=a.frames, size=(h, w), progress=True,
                vocabulary=a.vocabulary, motion_only=a.motion_only)
    print(f"wrote {a.videos} synthetic videos ({a.vocabulary} vocabulary) to {a.out}")
    if a.motion_only:
        print(f"motion-only subset: {Path(a.out) / MOTION_ONLY_FILE}")
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
                        compile=a.compile, time_budget_min=a.time_budget_min, init_from=a.init_from,
                        sampling=a.sampling, synthetic_frames=a.synthetic_frames, vocabulary=a.vocabulary)
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


def cmd_predict(a: argparse.Namespace) -> int:
    from rvos_core.engines.predictions import predict_split
    from rvos_core.engines.registry import get_engine

    if a.threads < 0:
        raise ValueError(f"--threads must be >= 0 (0 = the torch default), got {a.threads}")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    update, close = _tqdm_progress("predict", unit="expression")
    try:
        report = predict_split(a.dataset, a.out, lambda: get_engine(a.model, checkpoint=a.checkpoint, device=a.device),
                               refiner=a.refiner, zip_path=a.zip, progress=update)
    finally:
        close()
    print(report.summary())
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from rvos_core.evaluation import EvaluationError, evaluate_predictions, format_summary

    out = Path(a.out)
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; expected a .json file path")
    update, close = _tqdm_progress("evaluate", unit="expression")
    try:
        res = evaluate_predictions(a.gt, a.pred, workers=a.workers, bound_th=a.bound_th,
                                   progress=lambda done, total: update(done, total, ""), mp_context=a.start_method)
    except EvaluationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        close()
    res.write_json(out)
    print(format_summary(res))
    print(f"wrote {out}")
    if a.strict and res.problems:
        print(f"error: --strict: {len(res.problems)} problem(s) in the predictions, first: {res.problems[0]}",
              file=sys.stderr)
        return 1
    return 0


def cmd_reencode(a: argparse.Namespace) -> int:
    from tqdm import tqdm

    from rvos_core.video import open_video, reencode_for_scrubbing

    with open_video(a.video) as v:
        before = v.max_keyframe_gap
    with tqdm(desc="re-encode", unit="frame") as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        out = reencode_for_scrubbing(a.video, a.out, keyframe_interval=a.keyframe_interval, crf=a.crf,
                                     preset=a.preset, progress=progress)
    with open_video(out) as v:
        print(f"wrote {out}: max keyframe gap {before} → {v.max_keyframe_gap} frames")
    return 0


def cmd_convert(a: argparse.Namespace) -> int:
    from rvos_core.formats.convert import mevis_to_ytvos, ytvos_to_mevis

    pair = (a.from_format, a.to_format)
    if pair == ("mevis", "ytvos"):
        report = mevis_to_ytvos(a.src, a.dst, on_overlap=a.on_overlap, category=a.category, overwrite=a.overwrite,
                                progress=True)
    elif pair == ("ytvos", "mevis"):
        report = ytvos_to_mevis(a.src, a.dst, meta_expressions=a.meta_expressions, overwrite=a.overwrite, progress=True)
    else:
        raise ValueError(f"convert: --from {a.from_format} --to {a.to_format} is not supported; "
                         "use --from mevis --to ytvos or --from ytvos --to mevis")
    print(report.summary())
    return 0


def cmd_bench_clicks(a: argparse.Namespace) -> int:
    from rvos_core.robot_user import run_click_benchmark

    out = Path(a.out)
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; expected a .json file path")
    update, close = _tqdm_progress("bench-clicks")
    try:
        res = run_click_benchmark(a.frames, a.masks, refiner=a.refiner, max_clicks=a.max_clicks,
                                  clip_budget=a.clip_budget, checkpoint=a.checkpoint, device=a.device,
                                  progress=update)
    finally:
        close()
    res.write_json(out)
    print(res.summary())
    print(f"wrote {out}")
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
    s.add_argument("--vocabulary", default="full", metavar="full|basic",
                   help="'full' (default): the MeViS motion vocabulary, camera motion, occlusion, 2-6 objects; "
                        "'basic': the first generator, on which the shipped clip-rvos-tiny was trained - its "
                        "held-out split is made with --vocabulary basic")
    s.add_argument("--motion-only", action="store_true",
                   help="also write meta_expressions_motion_only.json: only the expressions of kind 'motion'")
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
    s.add_argument("--init-from", default="", help="warm start: seed a new run with this checkpoint's weights "
                                                  "(modules the config adds start as zero-initialised residuals)")
    s.add_argument("--sampling", default="global", choices=["global", "local"],
                   help="how a sample's T frames are picked from a longer clip (seed 003): 'global' (default) "
                        "one frame per segment over the whole clip, 'local' a window of T consecutive frames")
    s.add_argument("--synthetic-frames", type=int, default=0, metavar="N",
                   help="--data synthetic: length of each generated clip that the T frames are sampled from "
                        "(default 0 = the config's T, every frame used; --sampling then has no effect)")
    s.add_argument("--vocabulary", default="basic", choices=["basic", "full"],
                   help="synthetic motion vocabulary of the training clips (see `synth --vocabulary`; default basic, "
                        "what the shipped clip-rvos-tiny was trained on)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="score predicted masks (<video>/<exp_id>/<frame>.png folder or zip) "
                                        "against a split's ground truth → J, F, J&F JSON")
    s.add_argument("--gt", required=True, help="MeViS-layout split folder or zip with mask_dict.json (train / valid_u)")
    s.add_argument("--pred", required=True, help="predictions: folder or zip of <video>/<exp_id>/<frame>.png "
                                                  "(8-bit greyscale 0/255; a zip may wrap them in Annotations/)")
    s.add_argument("--out", required=True, help="result JSON: J, F, J&F, per_expression, problems")
    s.add_argument("--strict", action="store_true",
                   help="exit with status 1 (after writing the JSON) when any prediction problem was found")
    s.add_argument("--workers", type=int, default=1,
                   help="processes scoring expressions in parallel (default 1 = this process only)")
    s.add_argument("--bound-th", type=float, default=0.008,
                   help="F boundary tolerance: fraction of the image diagonal (< 1) or pixels (default 0.008)")
    s.add_argument("--start-method", default=None, choices=["fork", "spawn", "forkserver"],
                   help="multiprocessing start method for --workers > 1 (default: forkserver where available, else spawn)")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("reencode", help="re-encode a video with a short keyframe interval (fast random frame access)")
    s.add_argument("video")
    s.add_argument("out", help="output .mp4")
    s.add_argument("--keyframe-interval", type=int, default=15)
    s.add_argument("--crf", type=int, default=18)
    s.add_argument("--preset", default="veryfast")
    s.set_defaults(func=cmd_reencode)

    s = sub.add_parser("convert", help="convert a split between the MeViS and Ref-YouTube-VOS layouts")
    s.add_argument("src", help="source split folder (or zip)")
    s.add_argument("dst", help="destination folder (a MeViS destination ending in .zip writes a zip)")
    s.add_argument("--from", dest="from_format", required=True, choices=["mevis", "ytvos"])
    s.add_argument("--to", dest="to_format", required=True, choices=["mevis", "ytvos"])
    s.add_argument("--on-overlap", default="error", choices=["error", "last"],
                   help="mevis→ytvos: objects overlapping on a pixel cannot share a palette PNG; 'error' stops "
                        "(default), 'last' gives the pixel to the higher palette id and counts it")
    s.add_argument("--category", default=None, help="mevis→ytvos: category written in meta.json (default none)")
    s.add_argument("--meta-expressions", default=None, help="ytvos→mevis: meta_expressions.json if not in the split")
    s.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("bench-clicks", help="robot-user benchmark on a clip with ground-truth masks → NoC@85/90, "
                                            "mean J after k clicks, whole-clip clicks, click latency (JSON)")
    s.add_argument("--frames", required=True, help="folder of frames (or a video file)")
    s.add_argument("--masks", required=True, help="folder of ground-truth masks <frame name>.png (0 / non-zero)")
    s.add_argument("--out", required=True, help="result JSON")
    s.add_argument("--refiner", default="grabcut", help="grabcut | hq_sam:vit_tiny | hq_sam:vit_b | … | auto "
                                                        "(default grabcut)")
    s.add_argument("--max-clicks", type=int, default=20, help="clicks per frame (default 20)")
    s.add_argument("--clip-budget", type=int, default=100,
                   help="click budget of the whole-clip protocol with propagation (default 100)")
    s.add_argument("--checkpoint", default=None, help="HQ-SAM checkpoint path overriding the registry weight")
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_bench_clicks)

    s = sub.add_parser("evaluate-model", help="run an engine on a MeViS-layout split with masks and print J&F")
    s.add_argument("split")
    s.add_argument("--model", default="clip-rvos-tiny")
    s.add_argument("--checkpoint", default=None)
    s.add_argument("--limit", type=int, default=None)
    s.add_argument("--out", default=None, help="write the full JSON (with per-expression scores) here")
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_evaluate_model)

    s = sub.add_parser("predict", help="run an engine on every expression of a MeViS-layout split → "
                                       "<video>/<exp_id>/<frame>.png (0/255), resumable")
    s.add_argument("--dataset", required=True, help="split folder: JPEGImages/ + meta_expressions.json "
                                                   "(train / valid_u / valid; masks not needed)")
    s.add_argument("--out", required=True, help="prediction folder; expressions already complete there are skipped")
    s.add_argument("--model", default="clip-rvos-tiny", help="engine name or model config .json (default clip-rvos-tiny)")
    s.add_argument("--checkpoint", default=None, help="checkpoint path overriding the model's default")
    s.add_argument("--refiner", default=None, help="refine each frame with seed 003's recipe: grabcut | hq_sam:vit_b | auto")
    s.add_argument("--zip", default=None, help="also write a submission zip here (video folders at its root)")
    s.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0 = torch's default)")
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_predict)
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
