"""The parts an :class:`~rvos_core.session.AnnotationSession` is made of: its data types and undo history.

- :class:`CompactMask` — how one frame's mask is stored (packed bits, zlib-compressed, immutable);
- :class:`Prompt` — one point or box prompt on one frame (SAM's conventions);
- :class:`MaskProposal` — what a frame held before its first prompt;
- :class:`TrackedObject` — one object: its masks, their origin and the prompt log, per frame;
- :class:`ExpressionEntry` — one referring expression and the objects it refers to;
- :class:`SessionState` — all objects and expressions (the thing undo restores);
- :class:`EditHistory` — snapshot-based undo/redo over every edit;
- the session's error classes (:class:`SessionKeyError` and its subclasses, :class:`WorkspaceError`,
  :class:`WorkspaceMismatchError`) and a few small validators shared by the session and its
  workspace files.

Id semantics and coordinate conventions are written down in :mod:`rvos_core.session`. Everything
here is re-exported by :mod:`rvos_core.session`, the public import path.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

#: Who produced a frame's current mask: the engine, the user's prompts (``"click"``), an import,
#: propagation from another frame, seed 003's refinement (``"refined"``) or a mask drawn by hand
#: (``"manual"``, e.g. the first mask of an object added on any frame).
Origin = Literal["engine", "click", "import", "propagated", "refined", "manual"]
ORIGINS: tuple[str, ...] = ("engine", "click", "import", "propagated", "refined", "manual")
#: Origins that mark a frame as edited by hand (kept by propagation; see ``hand_edited_frames``).
HAND_ORIGINS: tuple[str, ...] = ("click", "manual")
PromptKind = Literal["point", "box"]

#: Default bound on the number of undoable edits kept.
DEFAULT_MAX_UNDO = 200


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------


class SessionKeyError(KeyError):
    """An unknown id; ``str(err)`` is the plain message (KeyError would otherwise quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownObjectError(SessionKeyError):
    """An ``obj_id`` that is not in the session; the message lists the valid ids."""


class UnknownExpressionError(SessionKeyError):
    """An ``exp_id`` that is not in the session; the message lists the valid ids."""


class WorkspaceError(ValueError):
    """A workspace folder's files are malformed; the message names the file, the field and the value."""


class WorkspaceMismatchError(WorkspaceError):
    """A workspace belongs to another video; the message names both videos and what differs."""


# ----------------------------------------------------------------------------------------------
# stored parts
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CompactMask:
    """One frame's mask, stored compactly and immutably.

    Storage: the ``(H, W)`` bool mask in row-major order, packed 8 pixels per byte
    (``np.packbits``) and then zlib-compressed (level 1). The worst case is bounded by the packed
    size, ``ceil(H·W / 8)`` bytes + a few bytes of zlib framing (51 KB at 854×480, even for pixel
    noise), and object-like masks take about 1–3 KB. (COCO RLE, the export format, is smaller for
    smooth masks but unbounded for noisy ones — a checkerboard needs ~400 KB — so RLE is produced
    only at export.) Instances are never mutated, so undo snapshots share them instead of copying.

    Attributes:
        data: the compressed bytes.
        height, width: the mask's size in pixels.
    """

    data: bytes
    height: int
    width: int

    @classmethod
    def encode(cls, mask: np.ndarray) -> CompactMask:
        """Compress an ``(H, W)`` bool mask (any dtype: non-zero counts as True)."""
        arr = np.asarray(mask)
        packed = np.packbits(arr.astype(bool, copy=False), axis=None)
        return cls(zlib.compress(packed.tobytes(), 1), int(arr.shape[0]), int(arr.shape[1]))

    def decode(self) -> np.ndarray:
        """The ``(H, W)`` bool mask (a fresh array the caller may modify)."""
        packed = np.frombuffer(zlib.decompress(self.data), dtype=np.uint8)
        bits = np.unpackbits(packed, count=self.height * self.width)
        return bits.view(bool).reshape(self.height, self.width)

    @property
    def nbytes(self) -> int:
        """Bytes of compressed payload held by this mask."""
        return len(self.data)


@dataclass(frozen=True)
class Prompt:
    """One user prompt on one frame (SAM's conventions).

    Attributes:
        frame: frame index, 0-based.
        kind: ``"point"`` (a click) or ``"box"``.
        xy: ``(x, y)`` in pixels for a point, else None.
        label: 1 positive click / 0 negative click for a point, else None.
        box: ``(x0, y0, x1, y1)`` XYXY in pixels for a box (``x0 < x1``, ``y0 < y1``), else None.

    Raises:
        ValueError: fields inconsistent with ``kind`` (e.g. a point without ``xy`` or a label not in {0, 1}).
    """

    frame: int
    kind: PromptKind
    xy: tuple[float, float] | None = None
    label: int | None = None
    box: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.kind == "point":
            if self.xy is None or len(self.xy) != 2 or self.label not in (0, 1) or self.box is not None:
                raise ValueError(
                    f"point prompt needs xy=(x, y), label 1 (positive) or 0 (negative) and no box; "
                    f"got xy={self.xy!r}, label={self.label!r}, box={self.box!r}"
                )
        elif self.kind == "box":
            if self.box is None or len(self.box) != 4 or self.xy is not None or self.label is not None:
                raise ValueError(
                    f"box prompt needs box=(x0, y0, x1, y1) and no xy/label; "
                    f"got box={self.box!r}, xy={self.xy!r}, label={self.label!r}"
                )
            x0, y0, x1, y1 = self.box
            if not (x0 < x1 and y0 < y1):
                raise ValueError(f"box must be XYXY with x0 < x1 and y0 < y1, got {self.box!r}")
        else:
            raise ValueError(f"prompt kind must be 'point' or 'box', got {self.kind!r}")


@dataclass(frozen=True)
class MaskProposal:
    """What a frame held before its first prompt: the base that prompts refine and ``clear_prompts`` restores.

    Attributes:
        mask: the engine / propagated / imported mask, or None when the frame had none.
        origin: its origin, or None when the frame had none.
    """

    mask: CompactMask | None
    origin: Origin | None


@dataclass
class TrackedObject:
    """One object tracked through the clip.

    Masks are stored per frame as :class:`CompactMask` (see there for the size bound); a frame
    without an entry, or whose mask is all-False, has no mask (``null`` in MeViS ``mask_dict.json``).

    Attributes:
        obj_id: the object's id (≥ 0, never reused in a session).
        name: display name.
        color: ``(R, G, B)`` uint8 display colour.
        masks: frame index → :class:`CompactMask` (non-empty masks only).
        origin: frame index → who produced that frame's current mask (``"engine"``, ``"click"``,
            ``"import"``); set also where the result was "no mask".
        prompts: frame index → the prompt log of that frame, oldest first (frames with prompts only).
        proposals: frame index → :class:`MaskProposal`, the state before the frame's first prompt;
            present exactly for the frames in ``prompts``.
    """

    obj_id: int
    name: str
    color: tuple[int, int, int]
    masks: dict[int, CompactMask] = field(default_factory=dict)
    origin: dict[int, Origin] = field(default_factory=dict)
    prompts: dict[int, list[Prompt]] = field(default_factory=dict)
    proposals: dict[int, MaskProposal] = field(default_factory=dict)

    def copy(self) -> TrackedObject:
        """An independent copy; the immutable :class:`CompactMask` / :class:`Prompt` values are shared."""
        return TrackedObject(
            self.obj_id, self.name, self.color, dict(self.masks), dict(self.origin),
            {f: list(p) for f, p in self.prompts.items()}, dict(self.proposals),
        )

    def nbytes(self) -> int:
        """Bytes of mask payload held (current masks + proposals; a shared mask counts once)."""
        seen: dict[int, int] = {id(m): m.nbytes for m in self.masks.values()}
        for p in self.proposals.values():
            if p.mask is not None:
                seen[id(p.mask)] = p.mask.nbytes
        return sum(seen.values())


@dataclass
class ExpressionEntry:
    """One referring expression of the video.

    Attributes:
        exp_id: ``"0"``, ``"1"``, … (MeViS spelling).
        text: the expression, non-empty.
        obj_ids: the objects it refers to (its target on a frame is the union of their masks);
            empty until the user adds one.
    """

    exp_id: str
    text: str
    obj_ids: list[int] = field(default_factory=list)

    def copy(self) -> ExpressionEntry:
        """An independent copy."""
        return ExpressionEntry(self.exp_id, self.text, list(self.obj_ids))


@dataclass
class SessionState:
    """Everything an edit can change; what :class:`EditHistory` snapshots and restores.

    Attributes:
        objects: obj_id → :class:`TrackedObject`, in creation order.
        expressions: exp_id → :class:`ExpressionEntry`, in creation order.
        next_obj_id: the id the next new object gets.
        next_exp_id: the number the next new expression id gets.
    """

    objects: dict[int, TrackedObject] = field(default_factory=dict)
    expressions: dict[str, ExpressionEntry] = field(default_factory=dict)
    next_obj_id: int = 0
    next_exp_id: int = 0

    def snapshot(self) -> SessionState:
        """An independent copy (containers copied, immutable masks and prompts shared)."""
        return SessionState(
            {k: o.copy() for k, o in self.objects.items()},
            {k: e.copy() for k, e in self.expressions.items()},
            self.next_obj_id,
            self.next_exp_id,
        )


class EditHistory:
    """Linear, snapshot-based undo/redo: each edit stores the :class:`SessionState` from before it.

    A new edit clears the redo stack. At most ``max_depth`` edits are kept (oldest dropped).
    Snapshots share the immutable masks, so an edit costs only the container copies plus the
    masks it replaced.

    Args:
        max_depth: int ≥ 1.

    Raises:
        ValueError: ``max_depth`` < 1.
    """

    def __init__(self, max_depth: int = DEFAULT_MAX_UNDO) -> None:
        if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
            raise ValueError(f"max_depth must be an int >= 1, got {max_depth!r}")
        self.max_depth = max_depth
        self._undo: list[tuple[str, SessionState]] = []
        self._redo: list[tuple[str, SessionState]] = []

    @property
    def can_undo(self) -> bool:
        """True when an edit can be undone."""
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        """True when an undone edit can be redone."""
        return bool(self._redo)

    def record(self, label: str, before: SessionState) -> None:
        """Remember an edit named ``label`` whose prior state was ``before``; clears redo."""
        self._undo.append((label, before))
        del self._undo[: -self.max_depth]
        self._redo.clear()

    def undo(self, current: SessionState) -> tuple[str, SessionState]:
        """Step back: returns ``(label of the undone edit, state to restore)``.

        Raises:
            IndexError: nothing to undo.
        """
        if not self._undo:
            raise IndexError("nothing to undo")
        label, before = self._undo.pop()
        self._redo.append((label, current))
        return label, before

    def redo(self, current: SessionState) -> tuple[str, SessionState]:
        """Step forward again: returns ``(label of the redone edit, state to restore)``.

        Raises:
            IndexError: nothing to redo.
        """
        if not self._redo:
            raise IndexError("nothing to redo")
        label, after = self._redo.pop()
        self._undo.append((label, current))
        return label, after


class _LazyObjectMasks(Sequence["np.ndarray | None"]):
    """One object's masks as a read-only sequence, decoded one frame at a time (for exports)."""

    def __init__(self, obj: TrackedObject, num_frames: int) -> None:
        self._obj = obj
        self._n = num_frames

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(self._n))]
        if not 0 <= i < self._n:
            raise IndexError(i)
        m = self._obj.masks.get(i)
        return None if m is None else m.decode()


# ----------------------------------------------------------------------------------------------
# validators shared by the session and the workspace files
# ----------------------------------------------------------------------------------------------


def _as_float(value: object, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number in pixels, got {value!r}")
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in pixels, got {value!r}") from None
    if not np.isfinite(out):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return out


def _check_color(color: object) -> tuple[int, int, int]:
    """``color`` as an ``(R, G, B)`` tuple of ints in 0..255; ValueError otherwise."""
    values = list(color) if isinstance(color, (list, tuple, np.ndarray)) else None
    if values is None or len(values) != 3 or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and 0 <= v <= 255
            for v in values):
        raise ValueError(f"color must be (R, G, B) with ints in 0..255, got {color!r}")
    return int(values[0]), int(values[1]), int(values[2])


def _encode_or_none(mask: np.ndarray) -> CompactMask | None:
    """A :class:`CompactMask` of a non-empty ``(H, W)`` bool mask; None for an all-False one ("no mask")."""
    return CompactMask.encode(mask) if mask.any() else None
