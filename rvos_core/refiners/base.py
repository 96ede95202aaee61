"""The refiner protocol: one frame + prompts → one mask.

Prompts follow SAM's conventions: points are ``(x, y)`` in pixels of the original frame,
labels 1 = positive click, 0 = negative click; boxes are XYXY in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass
class RefineResult:
    """A refined mask.

    Attributes:
        mask: ``(H, W)`` bool at the frame's size.
        score: the refiner's own quality estimate in [0, 1] (HQ-SAM's predicted IoU; GrabCut: 1.0).
    """

    mask: np.ndarray
    score: float


@runtime_checkable
class Refiner(Protocol):
    """A promptable segmenter.

    Attributes:
        name: ``"hq_sam:vit_b"``, ``"grabcut"``, …
    """

    name: str

    def refine(
        self,
        frame: np.ndarray,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_prior: np.ndarray | None = None,
        frame_key: str | None = None,
    ) -> RefineResult:
        """Segment one object in ``frame``.

        Args:
            frame: ``(H, W, 3)`` uint8 RGB.
            points: ``(N, 2)`` float, (x, y) pixels; may be None or empty.
            labels: ``(N,)`` int, 1 positive / 0 negative; required with ``points``.
            box: ``(4,)`` float XYXY pixels, or None.
            mask_prior: ``(H, W)`` bool, the current mask of the object (e.g. the engine's proposal), or None.
            frame_key: cache key for per-frame work (e.g. ``"<video-id>:<frame-index>"``); None disables caching.

        Raises:
            ValueError: no prompt at all, a point outside the frame, mismatched points/labels,
                a box or prior of the wrong shape.
        """
        ...
