"""Engine registry: name → engine.

- clip-rvos model configs (``rvos_core/configs/*.json``, e.g. ``"clip-rvos-tiny"``) or a config JSON
  path: a shared, lazily built engine (built once per (name, checkpoint, device), thread-safe).
- ``"predictions"`` (:data:`PREDICTIONS`): precomputed masks
  (:class:`rvos_core.engines.predictions.PredictionsEngine`); ``checkpoint`` is the prediction folder
  or ``.zip`` (``<video>/<exp_id>/<frame>.png`` with the split's ``meta_expressions.json`` inside),
  e.g. ``segment clip.mp4 --model predictions --checkpoint preds.zip --expression "…"``. Built fresh
  on every call (the files may change between calls; indexing a folder or zip is cheap), never cached.
  :func:`load_predictions_engine` also takes a separate ``meta_expressions.json`` or a mapping.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

from rvos_core.engines.base import Engine

#: Engine name of precomputed predictions (see the module docstring).
PREDICTIONS = "predictions"

_LOCK = threading.Lock()
_ENGINES: dict[tuple[str, str, str], Engine] = {}


def list_engines() -> list[str]:
    """Engine names: the clip-rvos model configs shipped in ``rvos_core/configs``, then ``"predictions"``."""
    from rvos_core.engines.clip_rvos import list_configs

    return [*list_configs(), PREDICTIONS]


def load_predictions_engine(predictions: str | Path, meta_expressions: str | Path | None = None,
                            expressions: Mapping[str, Mapping[str, str]] | None = None) -> Engine:
    """A fresh :class:`~rvos_core.engines.predictions.PredictionsEngine` over a prediction folder or zip.

    Args:
        predictions: folder or ``.zip`` of ``<video>/<exp_id>/<frame>.png``.
        meta_expressions: the split's ``meta_expressions.json`` when it is not inside ``predictions``.
        expressions: or an explicit mapping ``video → {exp_id: expression text}``.

    Raises:
        FileNotFoundError, ValueError (PredictionFormatError, MevisFormatError, PredictionMatchError):
            as :class:`~rvos_core.engines.predictions.PredictionsEngine`.
    """
    from rvos_core.engines.predictions import PredictionsEngine

    return PredictionsEngine(predictions, meta_expressions=meta_expressions, expressions=expressions)


def get_engine(name: str = "clip-rvos-tiny", checkpoint: str | Path | None = None, device: str = "cpu") -> Engine:
    """The engine for ``name``: a model config name / JSON path (built on first use, then shared by
    every user), or ``"predictions"`` with ``checkpoint`` = the prediction folder or zip (a fresh
    engine each call; ``device`` is ignored).

    Raises:
        ValueError: unknown engine name (lists the valid ones); ``"predictions"`` without a checkpoint.
        FileNotFoundError: checkpoint / weights not installed (the message says how to get them).
    """
    if name == PREDICTIONS:
        if checkpoint is None:
            raise ValueError(f"engine {PREDICTIONS!r} needs the prediction folder or .zip as its checkpoint "
                             "(e.g. --checkpoint preds.zip, with meta_expressions.json inside)")
        return load_predictions_engine(checkpoint)
    _check_engine_name(name)
    key = (name, str(checkpoint), device)
    with _LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            from rvos_core.engines.clip_rvos import load_clip_rvos

            eng = load_clip_rvos(name, checkpoint=checkpoint, device=device)
            _ENGINES[key] = eng
        return eng


def _check_engine_name(name: str) -> None:
    """Raise ValueError listing the valid engines for a name that is neither a config nor a ``.json`` path."""
    if Path(str(name)).suffix == ".json":
        return
    valid = list_engines()
    if name not in valid:
        raise ValueError(f"unknown engine {name!r}; valid engines: {', '.join(valid)} (or a model config .json path)")


def engine_status(name: str = "clip-rvos-tiny") -> str:
    """One sentence for the UI: what the engine is and whether it is ready to run."""
    if name == PREDICTIONS:
        return (f"{PREDICTIONS}: precomputed masks read from a <video>/<exp_id>/<frame>.png folder or zip, "
                "matched by video name and expression text (meta_expressions.json).")
    from rvos_core.engines.clip_rvos import _resolve_checkpoint, load_config

    try:
        cfg = load_config(name)
    except ValueError as e:
        return str(e)
    try:
        if cfg.clip.get("source") == "open_clip":
            from rvos_core.weights import require

            require(cfg.clip["weight"])
        _resolve_checkpoint(str(cfg.checkpoint), cfg.name)
    except FileNotFoundError as e:
        return f"{name}: not installed — {e}"
    backbone = cfg.clip.get("model") or cfg.clip.get("vision_cfg", {}).get("timm_model_name", "?")
    return (f"{name}: CLIP ConvNeXt backbone ({backbone}), {cfg.num_frames} globally sampled frames per pass, "
            f"input short side {cfg.input_size}px.")
