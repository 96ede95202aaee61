"""Ablation of the seed-component options of clip-rvos on the synthetic benchmark.

Each variant is the base config (default ``clip-rvos-tiny``) with one option changed (see
``docs/ablation.md`` and :class:`rvos_core.engines.clip_rvos_model.ClipRvosConfig`). Every variant is
trained from scratch with the same seed for the same wall-time budget on on-the-fly synthetic clips
(:func:`rvos_core.training.train.train`), then scored on a held-out MeViS-layout split with masks
(:func:`rvos_core.training.evaluate.evaluate_engine`: J, F, J&F overall, per expression kind, multi-object).

Writes ``OUT/<variant>/{config.json, final.pt, metrics.jsonl, result.json}`` and the markdown table
``OUT/ablation.md`` (also printed). A variant whose ``result.json`` exists for the same budget is not
trained again (``--force`` retrains it); an interrupted variant resumes from its ``last.pt``.

Usage:
    python -m rvos_core synth --out /tmp/heldout --videos 40 --seed 1000 --frames 24
    python bench/ablation.py --heldout /tmp/heldout --out runs/ablation [--minutes 20] [--variants a,b] [--list]
        [--vocabulary full|basic] [--seed N] [--image-size 128] [--input-size 128]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: expression kinds of the synthetic benchmark, in table order (rvos_core.synthetic.KINDS)
KINDS = ("motion", "appearance", "mixed")
#: an upper bound on steps: the wall-time budget ends every run first
MAX_STEPS = 1_000_000


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: ``config(base)`` gives the overrides of the base config's fields,
    ``train`` those of :class:`rvos_core.training.train.TrainOptions`; ``source`` names the seed and section."""

    name: str
    source: str
    config: Callable[[Any], dict[str, Any]] = lambda base: {}
    train: dict[str, Any] = field(default_factory=dict)


def _roberta_like(base) -> dict[str, Any]:
    """A RoBERTa text encoder of the base config's CLIP text-tower size (random init over the same BPE ids),
    or pretrained ``roberta-base`` when the base uses a pretrained open_clip backbone."""
    if base.clip.get("source") != "config":
        return {"text_encoder": "roberta", "roberta": {"source": "pretrained", "weight": "roberta-base"}}
    t = base.clip["text_cfg"]
    spec = {"source": "config", "hidden_size": t["width"], "num_hidden_layers": t["layers"],
            "num_attention_heads": t["heads"], "intermediate_size": 4 * t["width"]}
    return {"text_encoder": "roberta", "roberta": spec}


VARIANTS: tuple[Variant, ...] = (
    Variant("baseline", "seed 000 design (all defaults)"),
    Variant("text_encoder=roberta", "seed 002 (SOC: RoBERTa text backbone)", _roberta_like),
    Variant("fusion=bidirectional", "seed 004 VLMG / seed 000 more fusion", lambda base: {"fusion": "bidirectional"}),
    Variant("temporal=none", "(no temporal module)", lambda base: {"temporal": "none", "st_layers": 1}),
    Variant("temporal=cube", "seed 001 (VLP-RVOS cube-frame attention)", lambda base: {"temporal": "cube", "st_layers": 1}),
    Variant("temporal=dynamic_filter", "seed 004 (DITS LMDF)", lambda base: {"temporal": "dynamic_filter", "st_layers": 1}),
    Variant("query_init=pooled_mask", "seed 003 §2.3 (instance-mask queries)", lambda base: {"query_init": "pooled_mask"}),
    Variant("sampling=local", "seed 003 §3.2 (local vs global sampling)", train={"sampling": "local"}),
)


def select_variants(names: str | None) -> list[Variant]:
    """Variants by comma-separated name (None or "all" → all, in table order).

    Raises:
        ValueError: an unknown name (lists the valid ones).
    """
    by_name = {v.name: v for v in VARIANTS}
    if not names or names == "all":
        return list(VARIANTS)
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in by_name]
    if unknown:
        raise ValueError(f"--variants: unknown {unknown}; valid names: {', '.join(by_name)}")
    return [by_name[n] for n in chosen]


def _write_text(path: Path, text: str) -> None:
    from rvos_core.fileio import atomic_output_path

    with atomic_output_path(path) as tmp:
        tmp.write_text(text)


def _write_json(path: Path, data: object) -> None:
    _write_text(path, json.dumps(data, indent=2))


def variant_config(base, variant: Variant, run_dir: Path, input_size: int) -> Path:
    """Write the variant's config JSON (base fields + overrides, name ``<base>+<variant>``, evaluation short
    side ``input_size`` px) and return its path."""
    from rvos_core.engines.clip_rvos_model import ClipRvosConfig

    d = {**base.to_dict(), **variant.config(base), "name": f"{base.name}+{variant.name}", "checkpoint": None,
         "input_size": int(input_size)}
    ClipRvosConfig.from_dict(d)  # validate before training
    path = run_dir / "config.json"
    _write_json(path, d)
    return path


def train_variant(variant: Variant, cfg_path: Path, run_dir: Path, a: argparse.Namespace, image_size: int) -> Path:
    """Train one variant for ``a.minutes`` of wall time; returns its ``final.pt``."""
    from rvos_core.training.train import TrainOptions, train

    opts = TrainOptions(config=str(cfg_path), out_dir=str(run_dir), data="synthetic", steps=MAX_STEPS,
                        batch_size=a.batch_size, seed=a.seed, image_size=image_size, device=a.device,
                        threads=a.threads, time_budget_min=a.minutes, synthetic_frames=a.synthetic_frames,
                        vocabulary=a.vocabulary, **variant.train)
    return train(opts, progress=not a.quiet)


def evaluate_variant(cfg_path: Path, checkpoint: Path, heldout: str, device: str, limit: int | None,
                     progress: bool) -> dict[str, Any]:
    """Score a trained variant on the held-out split (J, F, J&F, per_kind, multi_object, per_expression)."""
    from rvos_core.engines.clip_rvos import ClipRvosEngine, build_net, load_config
    from rvos_core.engines.clip_rvos_model import make_text_tokenizer
    from rvos_core.training.evaluate import evaluate_engine

    cfg = load_config(cfg_path)
    engine = ClipRvosEngine(cfg, build_net(cfg, checkpoint=checkpoint), device=device)
    engine.tokenizer = make_text_tokenizer(cfg)  # a pretrained RoBERTa needs its own tokenizer
    return evaluate_engine(engine, heldout, limit=limit, progress=progress)


def run_variant(variant: Variant, base, a: argparse.Namespace) -> dict[str, Any]:
    """Train (unless a result for this budget exists) and evaluate one variant; returns its result record."""
    from rvos_core.engines.clip_rvos import read_checkpoint

    run_dir = Path(a.out) / variant.name.replace("=", "-")
    result_path = run_dir / "result.json"
    protocol = {"base": base.name, "budget_min": a.minutes, "seed": a.seed, "batch_size": a.batch_size,
                "synthetic_frames": a.synthetic_frames, "vocabulary": a.vocabulary, "heldout": str(a.heldout),
                "limit": a.limit, "image_size": a.image_size, "input_size": a.input_size}
    if result_path.exists() and not a.force:
        cached = json.loads(result_path.read_text())
        if cached.get("protocol") == protocol:
            return cached
    if a.force or result_path.exists():
        for name in ("last.pt", "final.pt", "metrics.jsonl", "result.json"):
            (run_dir / name).unlink(missing_ok=True)
    cfg_path = variant_config(base, variant, run_dir, a.input_size)
    t0 = time.perf_counter()
    final = train_variant(variant, cfg_path, run_dir, a, a.image_size)
    info = read_checkpoint(final)["train_info"]
    scores = evaluate_variant(cfg_path, final, a.heldout, a.device, a.limit, progress=not a.quiet)
    record = {"variant": variant.name, "source": variant.source, "config_overrides": variant.config(base),
              "train_overrides": variant.train, "protocol": protocol, "steps": int(info["step"]), "train_minutes": float(info["wall_seconds"]) / 60.0,
              "total_minutes": (time.perf_counter() - t0) / 60.0, **scores}
    _write_json(result_path, record)
    return record


def _fmt(x: float | None) -> str:
    return "—" if x is None or x != x else f"{x:.3f}"


def paired_delta_ci(record: dict[str, Any], baseline: dict[str, Any], n_boot: int = 2000,
                    seed: int = 0) -> tuple[float, float, float]:
    """Mean per-expression J&F difference ``record − baseline`` over the expressions both scored, with a
    95 % paired bootstrap interval (``n_boot`` resamples of the expressions, percentile method).

    Pairing by expression removes the between-expression variance that dominates a small split, so the
    interval shows whether a difference is larger than what the choice of expressions explains. It does
    not cover training noise: compare with a second seed of the baseline for that.

    Returns:
        ``(mean, low, high)`` as fractions of J&F.
    """
    import numpy as np

    keys = sorted(set(record["per_expression"]) & set(baseline["per_expression"]))
    if not keys:
        return float("nan"), float("nan"), float("nan")
    d = np.array([record["per_expression"][k]["J&F"] - baseline["per_expression"][k]["J&F"] for k in keys])
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(axis=1)
    low, high = np.percentile(boots, [2.5, 97.5])
    return float(d.mean()), float(low), float(high)


def markdown_table(records: Sequence[dict[str, Any]], header: dict[str, Any]) -> str:
    """The ablation table: one row per variant with J&F overall, J, F, J&F per kind (motion first),
    multi-object J&F, and the difference to the baseline's J&F with its 95 % paired bootstrap interval
    over expressions (:func:`paired_delta_ci`; fractions in [0, 1])."""
    base = next((r for r in records if r["variant"] == "baseline"), None)
    lines = [f"Base config `{header['base']}`, {header['minutes']} min training per variant (seed {header['seed']}, "
             f"batch {header['batch_size']}, synthetic clips of {header['synthetic_frames']} frames at "
             f"{header['image_size']} px, evaluated at {header['input_size']} px short side, "
             f"`{header['vocabulary']}` motion vocabulary, {header['device']}), "
             f"held-out split `{header['heldout']}` ({header['expressions']} expressions).", "",
             "| variant | source | steps | J&F | Δ J&F [95 % CI] | J | F | "
             + " | ".join(f"J&F {k}" for k in KINDS) + " | J&F multi-object |",
             "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(KINDS) + "---:|"]
    for r in records:
        if base is None or r is base:
            delta = "—"
        else:
            mean, low, high = paired_delta_ci(r, base)
            delta = f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"
        kinds = [_fmt(r["per_kind"].get(k, {}).get("J&F")) for k in KINDS]
        lines.append(f"| {r['variant']} | {r['source']} | {r['steps']} | {_fmt(r['J&F'])} | {delta} | "
                     f"{_fmt(r['J'])} | {_fmt(r['F'])} | " + " | ".join(kinds)
                     + f" | {_fmt(r.get('multi_object', {}).get('J&F'))} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heldout", help="held-out MeViS-layout split with mask_dict.json (e.g. from `synth`)")
    ap.add_argument("--out", default="runs/ablation", help="run folder: one sub-folder per variant + ablation.md")
    ap.add_argument("--minutes", type=float, default=20.0, help="training wall time per variant (default 20)")
    ap.add_argument("--variants", default="all", help="comma-separated variant names (see --list); default all")
    ap.add_argument("--base", default="clip-rvos-tiny", help="base config name or JSON path")
    ap.add_argument("--seed", type=int, default=0, help="training seed, the same for every variant")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--synthetic-frames", type=int, default=24,
                    help="frames per generated training clip; T of them are sampled (default 24)")
    ap.add_argument("--vocabulary", default="full", choices=("basic", "full"),
                    help="synthetic motion vocabulary of the training clips (default full, as `synth`'s default)")
    ap.add_argument("--image-size", type=int, default=128,
                    help="training clip size in px (square synthetic clips; default 128, as the shipped model)")
    ap.add_argument("--input-size", type=int, default=None,
                    help="evaluation short side in px (default: the base config's input_size)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--limit", type=int, default=None, help="score only the first N held-out videos")
    ap.add_argument("--force", action="store_true", help="retrain variants that already have a result")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--list", action="store_true", help="list the variants and exit")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.list:
        for v in VARIANTS:
            print(f"{v.name:<26} {v.source}")
        return 0
    from rvos_core.engines.clip_rvos import load_config
    from rvos_core.formats.mevis import read_mevis_split

    try:
        if not a.heldout:
            raise ValueError("--heldout: required (a MeViS-layout split with mask_dict.json)")
        if a.minutes <= 0:
            raise ValueError(f"--minutes: expected a positive number, got {a.minutes}")
        variants = select_variants(a.variants)
        if not read_mevis_split(a.heldout).has_masks:
            raise ValueError(f"--heldout {a.heldout}: split has no mask_dict.json (needs ground truth)")
        base = load_config(a.base)
        a.input_size = a.input_size or base.input_size
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    records = []
    for v in variants:
        print(f"== {v.name}: training {a.minutes} min, then evaluating on {a.heldout}", flush=True)
        records.append(run_variant(v, base, a))
        print(f"   J&F {records[-1]['J&F']:.3f} after {records[-1]['steps']} steps", flush=True)
    header = {"base": base.name, "minutes": a.minutes, "seed": a.seed, "batch_size": a.batch_size,
              "synthetic_frames": a.synthetic_frames, "vocabulary": a.vocabulary, "device": a.device,
              "heldout": a.heldout, "image_size": a.image_size, "input_size": a.input_size,
              "expressions": records[0]["num_expressions"]}
    table = markdown_table(records, header)
    out = Path(a.out) / "ablation.md"
    _write_text(out, table)
    print(table)
    print(f"table: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
