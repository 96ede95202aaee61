"""The engine protocol: video + referring expression → per-frame masks.

Every engine returns a :class:`SegmentResult` whose masks cover *every* frame of the video
at the video's original size, whatever frames the model looked at internally.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import numpy as np

#: ``progress(done, total, message)`` — called by long operations; ``done``/``total`` are counts.
ProgressFn = Callable[[int, int, str], None]


@dataclass
class Masklet:
    """One referred object tracked through the clip.

    Attributes:
        obj_id: object index within the result, 0-based.
        masks: ``(T, H, W)`` bool, one mask per video frame at original size.
        score: confidence in [0, 1] that this object is referred by the expression.
    """

    obj_id: int
    masks: np.ndarray
    score: float


@dataclass
class SegmentResult:
    """What an engine returns for one (video, expression).

    Attributes:
        masklets: the objects the engine believes are referred (possibly several for a
            multi-object expression; possibly none).
        num_frames, height, width: the video's geometry; masks are ``(num_frames, height, width)``.
        sampled_frames: indices of the frames the model ran on (others are filled in).
        engine: engine name, e.g. ``"clip-rvos-tiny"``.
        seconds: wall time of the call in seconds.
    """

    masklets: list[Masklet]
    num_frames: int
    height: int
    width: int
    sampled_frames: list[int] = field(default_factory=list)
    engine: str = ""
    seconds: float = 0.0

    def union(self) -> np.ndarray:
        """``(T, H, W)`` bool: union of all masklets (the MeViS target of a multi-object expression)."""
        out = np.zeros((self.num_frames, self.height, self.width), dtype=bool)
        for m in self.masklets:
            out |= m.masks
        return out


@runtime_checkable
class Engine(Protocol):
    """An RVOS engine. ``segment`` is thread-safe to call from several users (engines guard their model)."""

    name: str

    def segment(self, video, expression: str, progress: ProgressFn | None = None) -> SegmentResult:
        """Segment the object(s) referred by ``expression`` in ``video`` (a :class:`rvos_core.video.VideoSource`).

        Raises:
            ValueError: empty expression.
        """
        ...
