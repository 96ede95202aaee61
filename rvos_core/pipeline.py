"""End-to-end operations composed from the library parts (used by the CLI and the app)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from rvos_core.engines.base import ProgressFn, SegmentResult


def refine_mask_seed003(refiner, frame: np.ndarray, mask: np.ndarray, n_pos: int = 10, n_neg: int = 5,
                        rng: np.random.Generator | None = None, frame_key: str | None = None) -> np.ndarray:
    """Seed 003's HQ-SAM refinement of one mask: prompt the refiner with the mask's box (extreme
    coordinates) + ``n_pos`` positive points sampled uniformly inside the mask + ``n_neg`` negative
    points inside the box and outside the mask (2nd place MeViS track, CVPR 2024 PVUW).

    Args:
        refiner: a :class:`rvos_core.refiners.base.Refiner`.
        frame: ``(H, W, 3)`` uint8 RGB. mask: ``(H, W)`` bool proposal.

    Returns:
        ``(H, W)`` bool refined mask; an empty proposal is returned unchanged (nothing to prompt with).
    """
    from rvos_core.masks import sample_prompt_points

    if not mask.any():
        return mask.copy()
    pts, labels, box = sample_prompt_points(mask, n_pos=n_pos, n_neg=n_neg, rng=rng)
    return refiner.refine(frame, pts, labels, box=box, mask_prior=mask, frame_key=frame_key).mask


def refine_result(result: SegmentResult, video, refiner, progress: ProgressFn | None = None) -> np.ndarray:
    """Refine every masklet of an engine result on every frame with seed 003's recipe, then take the union.

    Each masklet's mask on frame ``t`` is refined on its own (:func:`refine_mask_seed003`: box + 10
    positive + 5 negative points from that mask; an empty mask stays empty and costs no refiner call),
    so the refiner sees one object at a time; the frame's result is the union of the refined masks.
    The prompt points come from one ``numpy.random.default_rng(0)`` per call, so a call is deterministic.

    Args:
        result: the engine's :class:`SegmentResult` (masklets of ``(T, H, W)`` bool at the video's size).
        video: the same clip: an object with ``get_frame(t)`` → ``(H, W, 3)`` uint8 RGB and ``video_id``
            (a :class:`rvos_core.video.VideoSource`); frames are read once each, in order.
        refiner: a :class:`rvos_core.refiners.base.Refiner` (already loaded); its ``frame_key`` is
            ``"<video_id>:<t>"`` so embedding caches are shared between the masklets of a frame.
        progress: ``progress(t + 1, T, "refine: frame t+1/T")`` after each frame.

    Returns:
        ``(T, H, W)`` bool: per frame, the union of the refined masklet masks (all False where the
        result has no masklet).
    """
    n = result.num_frames
    union = np.zeros((n, result.height, result.width), dtype=bool)
    rng = np.random.default_rng(0)
    for t in range(n):
        frame = video.get_frame(t)
        key = f"{video.video_id}:{t}"
        for m in result.masklets:
            union[t] |= refine_mask_seed003(refiner, frame, m.masks[t], rng=rng, frame_key=key)
        if progress is not None:
            progress(t + 1, n, f"refine: frame {t + 1}/{n}")
    return union


def segment_video(video_path: str | Path, expression: str, out_dir: str | Path, model: str = "clip-rvos-tiny",
                  refiner: str | None = None, overlay: str | Path | None = None, checkpoint: str | None = None,
                  device: str = "cpu", progress: ProgressFn | None = None) -> SegmentResult:
    """Segment ``expression`` in a video and write ``out_dir/00000.png …`` (8-bit 0/255, union of the
    referred objects, original size, one per frame) — the ``segment`` CLI contract.

    Args:
        video_path: video file or folder of frames.
        refiner: None for the engine's masks as they are, or a refiner name ("grabcut", "hq_sam:vit_b",
            "auto") to refine each object's mask on each frame with seed 003's recipe before the union
            (:func:`refine_result`).
        overlay: optional path of an overlay mp4 to write as well.

    Returns:
        The engine's :class:`SegmentResult` (before refinement).
    """
    from rvos_core.engines.registry import get_engine
    from rvos_core.masks import overlay as draw_overlay
    from rvos_core.masks import write_mask_png
    from rvos_core.video import open_video, write_video_mp4

    video = open_video(video_path)
    engine = get_engine(model, checkpoint=checkpoint, device=device)
    result = engine.segment(video, expression, progress=progress)
    if refiner:
        from rvos_core.refiners.registry import load_refiner

        union = refine_result(result, video, load_refiner(refiner), progress=progress)
    else:
        union = result.union()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(result.num_frames):
        write_mask_png(out / f"{i:05d}.png", union[i])
    if overlay is not None:
        frames = (draw_overlay(video.get_frame(i), [union[i]]) for i in range(result.num_frames))
        write_video_mp4(overlay, frames, fps=video.meta.fps)
    return result
