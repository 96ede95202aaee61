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
    a, b = np.asarray(prev_rgb), np.asarray(next_rgb)
    if a.shape != b.shape or a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError(f"flow_field expects two (H, W, 3) uint8 frames of one size, got {a.shape} {a.dtype} "
                         f"and {b.shape} {b.dtype}")
    grey = grey_frames(np.stack([a, b]))
    return _grey_flow(_dis_flow(), grey[0], grey[1])


def grey_frames(frames: np.ndarray) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 RGB → ``(T, H, W)`` uint8 greyscale (OpenCV's ``COLOR_RGB2GRAY``, the
    luma weights 0.299 R + 0.587 G + 0.114 B), converted in one call.

    Raises:
        ValueError: not a ``(T, H, W, 3)`` uint8 stack.
    """
    import cv2

    f = np.ascontiguousarray(frames)
    if f.ndim != 4 or f.shape[3] != 3 or f.dtype != np.uint8:
        raise ValueError(f"grey_frames expects (T, H, W, 3) uint8 frames, got {f.shape} {f.dtype}")
    t, h, w, _ = f.shape
    return cv2.cvtColor(f.reshape(t * h, w, 3), cv2.COLOR_RGB2GRAY).reshape(t, h, w)


def successor_flow(grey: np.ndarray, indices: list[int] | range | np.ndarray) -> np.ndarray:
    """The network's motion input for frames ``indices`` of a video given as all its greyscale frames.

    Frame ``i``'s motion is the DIS flow of its :func:`successor_pairs` pair, at the size of ``grey``
    (the model's input size), divided by :data:`FLOW_SCALE`. One DIS instance serves every pair (it
    keeps no state between calls: same result as :func:`flow_field` on the RGB frames).

    Args:
        grey: ``(N, H, W)`` uint8, every frame of the video (see :func:`grey_frames`).
        indices: the ``T`` frame indices, each in ``[0, N − 1]``.

    Returns:
        ``(T, 2, H, W)`` float32, ``(dx, dy) / FLOW_SCALE`` (x right, y down).

    Raises:
        ValueError: ``grey`` is not ``(N, H, W)`` uint8, or an index is out of range.
    """
    g = np.asarray(grey)
    if g.ndim != 3 or g.dtype != np.uint8:
        raise ValueError(f"successor_flow expects (N, H, W) uint8 grey frames, got {g.shape} {g.dtype}")
    dis = _dis_flow()
    return np.stack([_grey_flow(dis, g[a], g[b]) for a, b in successor_pairs(indices, len(g))]) / FLOW_SCALE


def _dis_flow():
    """A DIS optical-flow instance with the ULTRAFAST preset (not thread-safe: one per call site)."""
    import cv2

    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)


def _grey_flow(dis, prev_grey: np.ndarray, next_grey: np.ndarray) -> np.ndarray:
    """``(2, H, W)`` float32 DIS flow between two ``(H, W)`` uint8 greyscale frames (no initial flow)."""
    flow = dis.calc(prev_grey, next_grey, None)
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
    return successor_flow(grey_frames(frames), range(len(frames)))
