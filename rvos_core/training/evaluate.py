"""Score an engine on a MeViS-layout split with masks (J, F, J&F overall and per expression ``kind``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def evaluate_engine(engine, split_dir: str | Path, limit: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Run ``engine.segment`` on every (video, expression) of a split and score it against the ground truth.

    Args:
        engine: an :class:`rvos_core.engines.base.Engine`.
        split_dir: MeViS-layout split with ``mask_dict.json`` (e.g. written by ``synth``).
        limit: score only the first ``limit`` videos (sorted by name).

    Returns:
        ``{"J", "F", "J&F", "num_expressions", "per_kind": {kind: {"J", "F", "J&F", "n"}}, "per_expression": {"video/exp_id": {...}}}``;
        fractions in [0, 1]; expression means over all frames, dataset means over expressions.
    """
    from tqdm import tqdm

    from rvos_core.formats.mevis import read_mevis_split
    from rvos_core.metrics import jf_summary
    from rvos_core.video import open_video

    split = read_mevis_split(split_dir)
    videos = sorted(split.videos)[:limit] if limit else sorted(split.videos)
    per_exp: dict[str, dict[str, Any]] = {}
    jobs = [(v, e) for v in videos for e in split.expressions(v)]
    for video, exp_id in tqdm(jobs, disable=not progress, desc="evaluate"):
        exp = split.expressions(video)[exp_id]
        src = open_video(Path(split_dir) / "JPEGImages" / video)
        res = engine.segment(src, exp.exp)
        pred = res.union()
        gt = split.expression_masks(video, exp_id)
        s = jf_summary(gt, pred)
        per_exp[f"{video}/{exp_id}"] = {**s, "kind": exp.kind or "unknown", "exp": exp.exp, "multi": len(exp.obj_id) > 1}
    def agg(items: list[dict[str, Any]]) -> dict[str, float]:
        j = float(np.mean([i["J"] for i in items])) if items else float("nan")
        f = float(np.mean([i["F"] for i in items])) if items else float("nan")
        return {"J": j, "F": f, "J&F": (j + f) / 2, "n": len(items)}
    vals = list(per_exp.values())
    kinds = sorted({v["kind"] for v in vals})
    out = agg(vals)
    return {"J": out["J"], "F": out["F"], "J&F": out["J&F"], "num_expressions": len(vals),
            "per_kind": {k: agg([v for v in vals if v["kind"] == k]) for k in kinds},
            "multi_object": agg([v for v in vals if v["multi"]]),
            "per_expression": per_exp}
