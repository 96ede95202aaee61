"""Engine registry: name → shared, lazily built engine (built once per (name, checkpoint, device), thread-safe)."""

from __future__ import annotations

import threading
from pathlib import Path

from rvos_core.engines.base import Engine

_LOCK = threading.Lock()
_ENGINES: dict[tuple[str, str, str], Engine] = {}


def list_engines() -> list[str]:
    """Engine names: the clip-rvos model configs shipped in ``rvos_core/configs``."""
    from rvos_core.engines.clip_rvos import list_configs

    return list_configs()


def get_engine(name: str = "clip-rvos-tiny", checkpoint: str | Path | None = None, device: str = "cpu") -> Engine:
    """The shared engine for ``name`` (built on first use, then cached for every user).

    Raises:
        ValueError: unknown engine name (lists the valid ones).
        FileNotFoundError: checkpoint / weights not installed (the message says how to get them).
    """
    key = (name, str(checkpoint), device)
    with _LOCK:
        eng = _ENGINES.get(key)
        if eng is None:
            from rvos_core.engines.clip_rvos import load_clip_rvos

            eng = load_clip_rvos(name, checkpoint=checkpoint, device=device)
            _ENGINES[key] = eng
        return eng


def engine_status(name: str = "clip-rvos-tiny") -> str:
    """One sentence for the UI: what the engine is and whether it is ready to run."""
    from rvos_core.engines.clip_rvos import _resolve_checkpoint, load_config

    try:
        cfg = load_config(name)
    except ValueError as e:
        return str(e)
    try:
        _resolve_checkpoint(str(cfg.checkpoint))
    except FileNotFoundError as e:
        return f"{name}: not installed — {e}"
    backbone = cfg.clip.get("model") or cfg.clip.get("vision_cfg", {}).get("timm_model_name", "?")
    return (f"{name}: CLIP ConvNeXt backbone ({backbone}), {cfg.num_frames} globally sampled frames per pass, "
            f"input short side {cfg.input_size}px.")
