"""The per-user, UI-free state of one video being annotated: objects, expressions, masks, prompts, undo.

One :class:`AnnotationSession` wraps one :class:`~rvos_core.video.VideoSource` and composes small parts,
each with one job (after Cutie's object manager / memory manager split and SAM 2's explicit
per-video inference state):

- :class:`CompactMask` — how one frame's mask is stored (packed bits, zlib-compressed, immutable);
- :class:`TrackedObject` — one object: its masks, their origin and the prompt log, per frame;
- :class:`ExpressionEntry` — one referring expression and the objects it refers to;
- :class:`SessionState` — all objects and expressions (the thing undo restores);
- :class:`EditHistory` — snapshot-based undo/redo over every edit;
- a refiner (:class:`~rvos_core.refiners.base.Refiner`) passed per call, so it stays replaceable.

Id semantics (written down once):

- ``obj_id``: int ≥ 0, unique within the session, assigned in creation order and **never reused**
  (deleting object 1 leaves a gap), so undo/redo and exported files always agree on ids.
- ``exp_id``: ``"0"``, ``"1"``, … (strings, as MeViS spells them), assigned in creation order, never reused.
- On export (MeViS), ``anno_id = obj_id``: a session holds one video, so the per-video object index
  is also a unique key of ``mask_dict.json``.

Conventions: frames are indexed ``0 … num_frames − 1``; masks are ``(H, W)`` bool at the video's
original size; points are ``(x, y)`` in pixels with ``0 ≤ x < W``, ``0 ≤ y < H``; boxes are XYXY
in pixels inside ``[0, W] × [0, H]``; click labels are 1 positive / 0 negative (SAM's conventions).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from rvos_core.engines.base import ProgressFn, SegmentResult
from rvos_core.refiners.base import Refiner
from rvos_core.video import VideoSource

__all__ = [
    "ORIGINS",
    "Origin",
    "PromptKind",
    "SessionKeyError",
    "UnknownObjectError",
    "UnknownExpressionError",
    "CompactMask",
    "Prompt",
    "MaskProposal",
    "TrackedObject",
    "ExpressionEntry",
    "SessionState",
    "EditHistory",
    "AnnotationSession",
]

#: Who produced a frame's current mask: the engine (or propagation), the user's prompts, or an import.
Origin = Literal["engine", "click", "import"]
ORIGINS: tuple[str, ...] = ("engine", "click", "import")
PromptKind = Literal["point", "box"]

#: Default bound on the number of undoable edits kept.
DEFAULT_MAX_UNDO = 200

_POSITIVE_RGB = (0, 200, 0)
_NEGATIVE_RGB = (220, 0, 0)
_OUTLINE_RGB = (255, 255, 255)


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
# the session
# ----------------------------------------------------------------------------------------------


def _default_video_name(path: str) -> str:
    """``clip.mp4`` → ``clip``; ``…/blackswan/JPEGImages`` → ``blackswan``; a frame folder → its name."""
    p = Path(path)
    name = p.stem if p.suffix else p.name
    if name == "JPEGImages" and p.parent.name:
        name = p.parent.name
    return name or "video"


def _check_video_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip() or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"video_name must be a non-empty name without path separators, got {name!r}")
    return name


def _check_text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")
    return value.strip()


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


class AnnotationSession:
    """The annotation state of one video: objects with per-frame masks, referring expressions, prompt
    logs and undo/redo — no UI, no model (refiners are passed per call).

    Every edit (:meth:`accept_result`, :meth:`add_object`, :meth:`rename_object`,
    :meth:`delete_object`, :meth:`add_click`, :meth:`add_box`, :meth:`clear_prompts`,
    :meth:`set_mask`) is atomic: it either completes and becomes one undo step, or raises and leaves
    the state unchanged. Not thread-safe: one session belongs to one user.

    Args:
        video: the video (frames ``(H, W, 3)`` uint8 RGB, read lazily).
        video_name: the name used in exports (MeViS video folder); default: the file stem, or for a
            ``…/<name>/JPEGImages`` frame folder ``<name>``. Must contain no path separator.
        max_undo: how many edits :meth:`undo` can step back (≥ 1).

    Attributes:
        video: the :class:`~rvos_core.video.VideoSource`.
        video_name: export name.
        state: the :class:`SessionState` (read it; change it only through the methods).
        history: the :class:`EditHistory`.

    Raises:
        ValueError: bad ``video_name`` or ``max_undo``.
    """

    def __init__(self, video: VideoSource, video_name: str | None = None, max_undo: int = DEFAULT_MAX_UNDO) -> None:
        self.video: VideoSource = video
        self.video_name: str = _check_video_name(
            _default_video_name(video.meta.path) if video_name is None else video_name
        )
        self.state: SessionState = SessionState()
        self.history: EditHistory = EditHistory(max_undo)

    # ----- geometry ------------------------------------------------------------------------

    @property
    def num_frames(self) -> int:
        """Number of frames T."""
        return self.video.meta.num_frames

    @property
    def height(self) -> int:
        """Frame height H in pixels."""
        return self.video.meta.height

    @property
    def width(self) -> int:
        """Frame width W in pixels."""
        return self.video.meta.width

    @property
    def frame_names(self) -> list[str]:
        """The T frame names used in exports (from the video's metadata)."""
        return list(self.video.meta.frame_names)

    # ----- read access ---------------------------------------------------------------------

    @property
    def objects(self) -> list[TrackedObject]:
        """Copies of all objects, in creation order (edit through the session's methods)."""
        return [o.copy() for o in self.state.objects.values()]

    @property
    def expressions(self) -> list[ExpressionEntry]:
        """Copies of all expressions, in creation order."""
        return [e.copy() for e in self.state.expressions.values()]

    def get_object(self, obj_id: int) -> TrackedObject:
        """A copy of object ``obj_id``. Raises :class:`UnknownObjectError`."""
        return self._object(obj_id).copy()

    def get_expression(self, exp_id: str) -> ExpressionEntry:
        """A copy of expression ``exp_id``. Raises :class:`UnknownExpressionError`."""
        return self._expression(exp_id).copy()

    def mask(self, obj_id: int, frame: int) -> np.ndarray:
        """``(H, W)`` bool mask of one object on one frame (all False when it has none; a fresh array).

        Raises:
            UnknownObjectError: unknown ``obj_id``. IndexError: ``frame`` out of range.
        """
        obj = self._object(obj_id)
        frame = self._check_frame(frame)
        stored = obj.masks.get(frame)
        return stored.decode() if stored is not None else np.zeros((self.height, self.width), bool)

    def has_mask(self, obj_id: int, frame: int) -> bool:
        """True when the object has a non-empty mask on ``frame``."""
        return self._check_frame(frame) in self._object(obj_id).masks

    def union_mask(self, frame: int, obj_ids: Sequence[int] | None = None) -> np.ndarray:
        """``(H, W)`` bool union of the objects' masks on ``frame`` (all objects when ``obj_ids`` is None).

        Raises:
            UnknownObjectError: an unknown id in ``obj_ids``. IndexError: ``frame`` out of range.
        """
        frame = self._check_frame(frame)
        out = np.zeros((self.height, self.width), bool)
        for obj in self._objects(obj_ids):
            stored = obj.masks.get(frame)
            if stored is not None:
                out |= stored.decode()
        return out

    def prompts(self, obj_id: int, frame: int) -> list[Prompt]:
        """The prompt log of one object on one frame, oldest first (a copy)."""
        frame = self._check_frame(frame)
        return list(self._object(obj_id).prompts.get(frame, []))

    def stored_bytes(self) -> int:
        """Bytes of mask payload held by the current state (all objects' masks and proposals)."""
        return sum(o.nbytes() for o in self.state.objects.values())

    # ----- objects and expressions ---------------------------------------------------------

    def add_object(self, name: str | None = None, exp_id: str | None = None) -> int:
        """Create an empty object and return its new ``obj_id``.

        Args:
            name: display name; default ``"object <obj_id>"``.
            exp_id: if given, the new object is also added to that expression's ``obj_ids``.

        Raises:
            ValueError: an empty name. UnknownExpressionError: unknown ``exp_id``.
        """
        if name is not None:
            name = _check_text(name, "object name")
        if exp_id is not None:
            self._expression(exp_id)
        with self._edit("add object"):
            obj_id = self._new_object(name)
            if exp_id is not None:
                self.state.expressions[exp_id].obj_ids.append(obj_id)
        return obj_id

    def rename_object(self, obj_id: int, name: str) -> None:
        """Rename an object. Raises :class:`UnknownObjectError`, ValueError (empty name)."""
        name = _check_text(name, "object name")
        self._object(obj_id)
        with self._edit("rename object"):
            self.state.objects[obj_id].name = name

    def delete_object(self, obj_id: int) -> None:
        """Delete an object and remove it from every expression. Raises :class:`UnknownObjectError`."""
        self._object(obj_id)
        with self._edit("delete object"):
            del self.state.objects[obj_id]
            for entry in self.state.expressions.values():
                entry.obj_ids = [i for i in entry.obj_ids if i != obj_id]

    def accept_result(self, expression: str, result: SegmentResult) -> ExpressionEntry:
        """Record an engine's answer to a referring expression.

        Each masklet becomes a new object named after the expression (``"<expression> #k"`` when
        there are several) with origin ``"engine"`` on every frame; the expression is recorded with
        those obj_ids. An empty result still records the expression, with ``obj_ids == []``.

        Args:
            expression: the referring expression (leading/trailing spaces dropped).
            result: masks ``(T, H, W)`` bool per masklet, matching this video's geometry.

        Returns:
            A copy of the new :class:`ExpressionEntry`.

        Raises:
            ValueError: empty expression; result geometry or a masklet's shape differs from the video.
        """
        text = _check_text(expression, "expression")
        stacks = self._check_result(result)
        with self._edit("accept result"):
            obj_ids = []
            for k, masks in enumerate(stacks):
                name = text if len(stacks) == 1 else f"{text} #{k + 1}"
                obj = self.state.objects[self._new_object(name)]
                for t in range(self.num_frames):
                    self._store(obj, t, masks[t], "engine")
                obj_ids.append(obj.obj_id)
            entry = self._new_expression(text, obj_ids)
        return entry.copy()

    # ----- mask edits ------------------------------------------------------------------------

    def set_mask(self, obj_id: int, frame: int, mask: np.ndarray, origin: Origin) -> None:
        """Replace an object's mask on one frame (e.g. propagation or an import).

        The frame's prompt log is cleared and the new mask becomes the base that later prompts
        refine (and :meth:`clear_prompts` returns to).

        Args:
            mask: ``(H, W)`` bool (or 0/non-zero numbers); all False means "no mask".
            origin: ``"engine"``, ``"click"`` or ``"import"``.

        Raises:
            UnknownObjectError, IndexError (frame), ValueError (shape, dtype or origin).
        """
        self._object(obj_id)
        frame = self._check_frame(frame)
        arr = self._check_mask(mask, "mask")
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
        with self._edit("set mask"):
            obj = self.state.objects[obj_id]
            obj.prompts.pop(frame, None)
            obj.proposals.pop(frame, None)
            self._store(obj, frame, arr, origin)

    def add_click(self, obj_id: int, frame: int, x: float, y: float, positive: bool, refiner: Refiner) -> np.ndarray:
        """Add a positive or negative click and re-segment the object on that frame.

        The refiner is called with **all** clicks of this object on this frame
        (``points`` ``(N, 2)`` float32 (x, y), ``labels`` ``(N,)`` int64 1/0), the frame's latest box
        prompt if any (else None), ``mask_prior`` = the frame's mask from before its first prompt
        (the engine / propagated proposal; None when there was none) and
        ``frame_key = "<video_id>:<frame>"``. Its mask is stored with origin ``"click"``.

        Args:
            x, y: click position in pixels, ``0 <= x < W``, ``0 <= y < H``.
            positive: True for a positive click (label 1), False for a negative one (label 0).
            refiner: a :class:`~rvos_core.refiners.base.Refiner`.

        Returns:
            The new ``(H, W)`` bool mask.

        Raises:
            ValueError: the click is outside the frame (the message gives the value and the frame size),
                or the refiner rejects the prompts (e.g. only negative clicks and no prior) or returns a
                mask of the wrong shape. UnknownObjectError. IndexError (frame).
            Nothing is changed when an error is raised.
        """
        obj = self._object(obj_id)
        frame = self._check_frame(frame)
        xy = self._check_point(x, y, frame)
        prompt = Prompt(frame, "point", xy=xy, label=1 if positive else 0)
        return self._apply_prompt(obj, prompt, refiner, "positive click" if positive else "negative click")

    def add_box(self, obj_id: int, frame: int, box_xyxy: Sequence[float], refiner: Refiner) -> np.ndarray:
        """Add a box prompt and re-segment the object on that frame.

        The refiner gets this box together with all clicks already on the frame (see
        :meth:`add_click`); a later box replaces an earlier one as the refiner's box, though both stay
        in the prompt log.

        Args:
            box_xyxy: ``(x0, y0, x1, y1)`` pixels with ``0 <= x0 < x1 <= W`` and ``0 <= y0 < y1 <= H``.

        Returns:
            The new ``(H, W)`` bool mask.

        Raises:
            ValueError: malformed box or outside the frame; refiner errors as in :meth:`add_click`.
            UnknownObjectError. IndexError (frame). Nothing is changed when an error is raised.
        """
        obj = self._object(obj_id)
        frame = self._check_frame(frame)
        prompt = Prompt(frame, "box", box=self._check_box(box_xyxy, frame))
        return self._apply_prompt(obj, prompt, refiner, "box")

    def clear_prompts(self, obj_id: int, frame: int) -> np.ndarray:
        """Drop the prompts of one object on one frame and restore the mask from before them.

        A frame without prompts is left as it is (and no undo step is recorded).

        Returns:
            The frame's ``(H, W)`` bool mask afterwards.

        Raises:
            UnknownObjectError. IndexError (frame).
        """
        obj = self._object(obj_id)
        frame = self._check_frame(frame)
        if frame in obj.prompts:
            with self._edit("clear prompts"):
                obj = self.state.objects[obj_id]
                del obj.prompts[frame]
                base = obj.proposals.pop(frame)
                self._restore(obj, frame, base)
        return self.mask(obj_id, frame)

    # ----- undo ---------------------------------------------------------------------------------

    @property
    def can_undo(self) -> bool:
        """True when :meth:`undo` has an edit to undo."""
        return self.history.can_undo

    @property
    def can_redo(self) -> bool:
        """True when :meth:`redo` has an edit to redo."""
        return self.history.can_redo

    def undo(self) -> str:
        """Undo the latest edit; returns its label (e.g. ``"positive click"``).

        Raises:
            IndexError: nothing to undo.
        """
        label, state = self.history.undo(self.state)
        self.state = state
        return label

    def redo(self) -> str:
        """Redo the latest undone edit; returns its label.

        Raises:
            IndexError: nothing to redo.
        """
        label, state = self.history.redo(self.state)
        self.state = state
        return label

    # ----- rendering ----------------------------------------------------------------------------

    def render(self, frame: int, obj_ids: Sequence[int] | None = None, alpha: float = 0.5,
               show_prompts: bool = True) -> np.ndarray:
        """The frame with the objects' masks overlaid, each in its colour, plus prompt markers.

        Markers (when ``show_prompts``): a filled green circle per positive click, a filled red circle
        per negative click (white outline), and each box prompt as a rectangle in its object's colour.

        Args:
            frame: frame index.
            obj_ids: objects to draw; None for all.
            alpha: mask opacity in [0, 1].
            show_prompts: draw the prompt markers.

        Returns:
            ``(H, W, 3)`` uint8 RGB.

        Raises:
            UnknownObjectError, IndexError (frame), ValueError (alpha outside [0, 1]).
        """
        from rvos_core.masks import overlay

        frame = self._check_frame(frame)
        alpha = _as_float(alpha, "alpha")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        objs = self._objects(obj_ids)
        drawn = [o for o in objs if frame in o.masks]
        image = self.video.get_frame(frame)
        if drawn:
            image = overlay(image, [o.masks[frame].decode() for o in drawn], colors=[o.color for o in drawn],
                            alpha=alpha)
        if show_prompts:
            self._draw_prompts(image, frame, objs)
        return image

    def _draw_prompts(self, image: np.ndarray, frame: int, objs: list[TrackedObject]) -> None:
        import cv2

        radius = max(3, round(min(self.height, self.width) / 100))
        for obj in objs:
            for p in obj.prompts.get(frame, []):
                if p.kind == "box" and p.box is not None:
                    x0, y0, x1, y1 = (int(round(v)) for v in p.box)
                    cv2.rectangle(image, (x0, y0), (x1, y1), tuple(int(c) for c in obj.color), 2, cv2.LINE_AA)
                elif p.xy is not None:
                    centre = (int(round(p.xy[0])), int(round(p.xy[1])))
                    fill = _POSITIVE_RGB if p.label == 1 else _NEGATIVE_RGB
                    cv2.circle(image, centre, radius, fill, -1, cv2.LINE_AA)
                    cv2.circle(image, centre, radius, _OUTLINE_RGB, 1, cv2.LINE_AA)

    # ----- exports ------------------------------------------------------------------------------

    def export_mevis_zip(self, path: str | os.PathLike[str], progress: ProgressFn | None = None,
                         overwrite: bool = False, jpeg_quality: int = 95) -> Path:
        """Write this video as a one-video MeViS-layout split inside a zip, atomically.

        Contents: ``JPEGImages/<video_name>/<frame>.jpg`` (every frame), ``meta_expressions.json``
        (every expression with ``obj_id`` and ``anno_id`` lists; ``anno_id = obj_id``, see the module
        docstring) and ``mask_dict.json`` (every object: compressed RLE per frame, ``null`` where the
        object has no mask). Frame names are the video's (``video.meta.frame_names``).

        Args:
            path: the ``.zip`` to write.
            progress: optional ``progress(done, total, message)``, called once per frame and at the end.
            overwrite: replace an existing zip.
            jpeg_quality: 1..100.

        Returns:
            ``Path(path)``.

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is false.
            ValueError: as :func:`rvos_core.formats.mevis.write_mevis_zip`.
        """
        from rvos_core.formats.mevis import MevisExpression, MevisVideo, write_mevis_zip

        total = self.num_frames
        frames = self._progress_frames(progress, "export MeViS zip")
        expressions = {
            e.exp_id: MevisExpression(exp=e.text, obj_id=list(e.obj_ids), anno_id=list(e.obj_ids))
            for e in self.state.expressions.values()
        }
        masks = {o.obj_id: _LazyObjectMasks(o, total) for o in self.state.objects.values()}
        video = MevisVideo(self.frame_names, frames, expressions, masks)  # type: ignore[arg-type]
        out = write_mevis_zip(path, {self.video_name: video}, jpeg_quality=jpeg_quality, overwrite=overwrite)
        if progress is not None:
            progress(total, total, "export MeViS zip: done")
        return out

    def export_overlay_mp4(self, path: str | os.PathLike[str], progress: ProgressFn | None = None,
                           alpha: float = 0.5) -> Path:
        """Write every frame's overlay (all objects, no prompt markers) as an H.264 mp4 at the video's fps.

        Args:
            path: output ``.mp4`` (written atomically by :func:`rvos_core.video.write_video_mp4`).
            progress: optional ``progress(done, total, message)``, once per frame.
            alpha: mask opacity in [0, 1].

        Returns:
            ``Path(path)``.

        Raises:
            ValueError: path not ending in ``.mp4``; bad alpha.
        """
        from rvos_core.video import write_video_mp4

        def frames() -> Iterator[np.ndarray]:
            for t in range(self.num_frames):
                yield self.render(t, alpha=alpha, show_prompts=False)
                if progress is not None:
                    progress(t + 1, self.num_frames, "export overlay mp4")

        write_video_mp4(path, frames(), fps=self.video.meta.fps)
        return Path(path)

    def export_prediction_pngs(self, out_dir: str | os.PathLike[str], exp_id: str) -> list[Path]:
        """Write one expression's masks in the MeViS prediction layout.

        Files: ``out_dir/<video_name>/<exp_id>/<frame>.png``, 8-bit greyscale, 0 background / 255 the
        union of the expression's objects, original frame size, one per frame.

        Returns:
            The written paths, in frame order.

        Raises:
            UnknownExpressionError: unknown ``exp_id``.
        """
        from rvos_core.formats.mevis import write_prediction_pngs

        entry = self._expression(exp_id)
        union = np.stack([self.union_mask(t, entry.obj_ids) for t in range(self.num_frames)])
        return write_prediction_pngs(out_dir, self.video_name, entry.exp_id, union, self.frame_names)

    # ----- internals: lookup and validation -------------------------------------------------

    def _object(self, obj_id: int) -> TrackedObject:
        obj = self.state.objects.get(obj_id) if isinstance(obj_id, (int, np.integer)) else None
        if obj is None or isinstance(obj_id, bool):
            raise UnknownObjectError(f"unknown obj_id {obj_id!r}; valid obj_ids: {list(self.state.objects)}")
        return obj

    def _objects(self, obj_ids: Sequence[int] | None) -> list[TrackedObject]:
        if obj_ids is None:
            return list(self.state.objects.values())
        return [self._object(i) for i in obj_ids]

    def _expression(self, exp_id: str) -> ExpressionEntry:
        entry = self.state.expressions.get(exp_id) if isinstance(exp_id, str) else None
        if entry is None:
            raise UnknownExpressionError(
                f"unknown exp_id {exp_id!r}; valid exp_ids: {list(self.state.expressions)}"
            )
        return entry

    def _check_frame(self, frame: int) -> int:
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
            raise IndexError(f"frame must be an int in [0, {self.num_frames - 1}], got {frame!r}")
        if not 0 <= frame < self.num_frames:
            raise IndexError(f"frame {frame} out of range [0, {self.num_frames - 1}] ({self.num_frames} frames)")
        return int(frame)

    def _check_point(self, x: float, y: float, frame: int) -> tuple[float, float]:
        fx, fy = _as_float(x, "click x"), _as_float(y, "click y")
        if not (0 <= fx < self.width and 0 <= fy < self.height):
            raise ValueError(
                f"click (x, y) = ({fx:g}, {fy:g}) on frame {frame} is outside the {self.width}x{self.height} "
                f"frame; expected 0 <= x < {self.width} and 0 <= y < {self.height}"
            )
        return fx, fy

    def _check_box(self, box: Sequence[float], frame: int) -> tuple[float, float, float, float]:
        try:
            values = list(box)
        except TypeError:
            raise ValueError(f"box must be (x0, y0, x1, y1) in pixels, got {box!r}") from None
        if len(values) != 4:
            raise ValueError(f"box must have 4 values (x0, y0, x1, y1), got {len(values)}: {box!r}")
        x0, y0, x1, y1 = (_as_float(v, "box coordinate") for v in values)
        if not (0 <= x0 < x1 <= self.width and 0 <= y0 < y1 <= self.height):
            raise ValueError(
                f"box (x0, y0, x1, y1) = ({x0:g}, {y0:g}, {x1:g}, {y1:g}) on frame {frame} is not a box inside "
                f"the {self.width}x{self.height} frame; expected 0 <= x0 < x1 <= {self.width} and "
                f"0 <= y0 < y1 <= {self.height}"
            )
        return x0, y0, x1, y1

    def _check_mask(self, mask: np.ndarray, what: str) -> np.ndarray:
        arr = np.asarray(mask)
        if arr.shape != (self.height, self.width):
            raise ValueError(f"{what} must have shape (H, W) = ({self.height}, {self.width}), got {arr.shape}")
        if arr.dtype != bool:
            if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
                raise ValueError(f"{what} must be bool (or 0/non-zero numbers), got dtype {arr.dtype}")
            arr = arr != 0
        return arr

    def _check_result(self, result: SegmentResult) -> list[np.ndarray]:
        expected = (self.num_frames, self.height, self.width)
        got = (result.num_frames, result.height, result.width)
        if got != expected:
            raise ValueError(f"result geometry (T, H, W) = {got} does not match the video's {expected}")
        stacks = []
        for k, masklet in enumerate(result.masklets):
            arr = np.asarray(masklet.masks)
            if arr.shape != expected:
                raise ValueError(f"masklet {k} masks have shape {arr.shape}, expected (T, H, W) = {expected}")
            stacks.append(arr if arr.dtype == bool else arr != 0)
        return stacks

    # ----- internals: edits ------------------------------------------------------------------

    @contextmanager
    def _edit(self, label: str) -> Iterator[None]:
        """Run one edit as an undo step; on any error restore the state from before it."""
        before = self.state.snapshot()
        try:
            yield
        except BaseException:
            self.state = before
            raise
        self.history.record(label, before)

    def _new_object(self, name: str | None) -> int:
        from rvos_core.masks import object_color

        obj_id = self.state.next_obj_id
        self.state.next_obj_id += 1
        color = object_color(obj_id % 255)  # the palette has 255 object colours; ids are never reused
        self.state.objects[obj_id] = TrackedObject(obj_id, name or f"object {obj_id}", color)
        return obj_id

    def _new_expression(self, text: str, obj_ids: list[int]) -> ExpressionEntry:
        exp_id = str(self.state.next_exp_id)
        self.state.next_exp_id += 1
        entry = ExpressionEntry(exp_id, text, list(obj_ids))
        self.state.expressions[exp_id] = entry
        return entry

    @staticmethod
    def _store(obj: TrackedObject, frame: int, mask: np.ndarray, origin: Origin) -> None:
        """Set one frame's mask (an all-False mask removes it) and its origin."""
        if mask.any():
            obj.masks[frame] = CompactMask.encode(mask)
        else:
            obj.masks.pop(frame, None)
        obj.origin[frame] = origin

    @staticmethod
    def _restore(obj: TrackedObject, frame: int, base: MaskProposal) -> None:
        """Put a frame back to a recorded :class:`MaskProposal`."""
        if base.mask is None:
            obj.masks.pop(frame, None)
        else:
            obj.masks[frame] = base.mask
        if base.origin is None:
            obj.origin.pop(frame, None)
        else:
            obj.origin[frame] = base.origin

    def _apply_prompt(self, obj: TrackedObject, prompt: Prompt, refiner: Refiner, label: str) -> np.ndarray:
        """Refine with the frame's prompts + ``prompt``; commit only once the refiner succeeded."""
        frame = prompt.frame
        prompts = [*obj.prompts.get(frame, []), prompt]
        base = obj.proposals.get(frame)
        if base is None:  # first prompt on this frame: its current mask is the proposal
            base = MaskProposal(obj.masks.get(frame), obj.origin.get(frame))
        mask = self._run_refiner(refiner, frame, prompts, base)
        with self._edit(label):
            live = self.state.objects[obj.obj_id]
            live.prompts[frame] = prompts
            live.proposals[frame] = base
            self._store(live, frame, mask, "click")
        return mask.copy()

    def _run_refiner(self, refiner: Refiner, frame: int, prompts: list[Prompt], base: MaskProposal) -> np.ndarray:
        clicks = [p for p in prompts if p.kind == "point"]
        boxes = [p for p in prompts if p.kind == "box"]
        points = np.array([p.xy for p in clicks], dtype=np.float32).reshape(-1, 2) if clicks else None
        labels = np.array([p.label for p in clicks], dtype=np.int64) if clicks else None
        box = np.array(boxes[-1].box, dtype=np.float32) if boxes else None
        prior = base.mask.decode() if base.mask is not None else None
        result = refiner.refine(
            self.video.get_frame(frame), points, labels, box=box, mask_prior=prior,
            frame_key=f"{self.video.video_id}:{frame}",
        )
        mask = np.asarray(result.mask)
        name = getattr(refiner, "name", type(refiner).__name__)
        if mask.shape != (self.height, self.width):
            raise ValueError(
                f"refiner {name!r} returned a mask of shape {mask.shape}; expected ({self.height}, {self.width})"
            )
        return mask if mask.dtype == bool else mask != 0

    def _progress_frames(self, progress: ProgressFn | None, message: str) -> Callable[[int], np.ndarray]:
        """``i -> frame i`` that also reports ``progress(i, T, message)`` before reading each frame."""

        def get(i: int) -> np.ndarray:
            if progress is not None:
                progress(i, self.num_frames, message)
            return self.video.get_frame(i)

        return get
