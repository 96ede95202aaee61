"""Optical-flow motion input of the clip-rvos network (the ``motion_input`` config option).

Motion expressions ("the circle moving slowly to the left") are decided by displacements that can be
smaller than one stride-16 feature cell; a CLIP image backbone sees each frame alone. With
``motion_input`` the network also receives, for every sampled frame ``i``, the dense optical flow from
frame ``i`` to its successor ``i + 1`` in the *video* (for the last frame: from ``i − 1`` to ``i``), so
speed and direction are explicit inputs. Flow: OpenCV's DIS optical flow (Kroeger et al., "Fast Optical
Flow using Dense Inverse Search", ECCV 2016), ULTRAFAST preset, on greyscale frames at the model's input
size. Values are pixels per frame at that size (x right, y down), divided by :data:`FLOW_SCALE`.
"""

from __future__ import annotations

import numpy as np

#: flow channels are ``(dx, dy) / FLOW_SCALE`` (pixels per frame at the model input size)
FLOW_SCALE = 4.0


def flow_field(prev_rgb: np.ndarray, next_rgb: np.ndarray) -> np.ndarray:
    """Dense DIS optical flow from ``prev_rgb`` to ``next_rgb``.

    Args:
        prev_rgb, next_rgb: ``(H, W, 3)`` uint8 RGB frames of the same size.

    Returns:
        ``(2, H, W)`` float32: ``(dx, dy)`` in pixels (x right, y down) such that pixel ``(x, y)`` of
        ``prev_rgb`` moves to ``(x + dx, y + dy)`` in ``next_rgb``.

    Raises:
        ValueError: the frames differ in shape or are not ``(H, W, 3)`` uint8.
    """
    import cv2

    a, b = np.asarray(prev_rgb), np.asarray(next_rgb)
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"flow_field expects two (H, W, 3) uint8 frames of one size, got {a.shape} {a.dtype} "
                         f"and {b.shape} {b.dtype}")
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    flow = dis.calc(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY), None)
    return np.ascontiguousarray(flow.transpose(2, 0, 1), dtype=np.float32)


def successor_pairs(indices: list[int] | np.ndarray, num_frames: int) -> list[tuple[int, int]]:
    """For each frame index ``i`` of a video of ``num_frames`` frames, the pair whose flow describes its
    motion: ``(i, i + 1)``, or ``(i − 1, i)`` for the last frame; ``(0, 0)`` for a one-frame video."""
    pairs = []
    for i in (int(v) for v in indices):
        if not 0 <= i < num_frames:
            raise ValueError(f"frame index {i} out of range for {num_frames} frames")
        pairs.append((i, i + 1) if i + 1 < num_frames else (max(i - 1, 0), i))
    return pairs


def clip_flow(frames: np.ndarray) -> np.ndarray:
    """Motion input of consecutive frames ``(T, H, W, 3)`` uint8 → ``(T, 2, H, W)`` float32 (scaled by
    :data:`FLOW_SCALE`), frame ``t`` paired as in :func:`successor_pairs`."""
    frames = np.asarray(frames)
    return np.stack([flow_field(frames[a], frames[b]) for a, b in successor_pairs(range(len(frames)), len(frames))]) / FLOW_SCALE
