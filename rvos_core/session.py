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

Workspace (autosave; :meth:`AnnotationSession.attach_workspace`, :meth:`AnnotationSession.resume`):
the folder layout and its crash safety are described in :mod:`rvos_core.workspace`.

The parts live in sibling modules and are re-exported here (this is the public import path):
:mod:`rvos_core.session_types` (data types, undo history, errors) and :mod:`rvos_core.workspace`
(workspace files).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rvos_core.engines.base import ProgressFn, SegmentResult
from rvos_core.refiners.base import Refiner
from rvos_core.session_types import (
    DEFAULT_MAX_UNDO,
    HAND_ORIGINS,
    ORIGINS,
    CompactMask,
    EditHistory,
    ExpressionEntry,
    MaskProposal,
    Origin,
    Prompt,
    PromptKind,
    SessionKeyError,
    SessionState,
    TrackedObject,
    UnknownExpressionError,
    UnknownObjectError,
    WorkspaceError,
    WorkspaceMismatchError,
    _as_float,
    _check_color,
    _encode_or_none,
    _LazyObjectMasks,
)
from rvos_core.video import VideoSource
from rvos_core.workspace import (
    _WORKSPACE_OBJECTS,
    WORKSPACE_MANIFEST,
    VideoIdentity,
    _last_revision,
    _mismatch_message,
    _object_from_json,
    _read_json,
    _read_manifest,
    _Workspace,
)

__all__ = [
    "ORIGINS",
    "HAND_ORIGINS",
    "Origin",
    "PromptKind",
    "WORKSPACE_MANIFEST",
    "SessionKeyError",
    "UnknownObjectError",
    "UnknownExpressionError",
    "WorkspaceError",
    "WorkspaceMismatchError",
    "VideoIdentity",
    "CompactMask",
    "Prompt",
    "MaskProposal",
    "TrackedObject",
    "ExpressionEntry",
    "SessionState",
    "EditHistory",
    "AnnotationSession",
]

_POSITIVE_RGB = (0, 200, 0)
_NEGATIVE_RGB = (220, 0, 0)
_OUTLINE_RGB = (255, 255, 255)


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


def _unpack_step(step: object, k: int) -> tuple[object, object]:
    """``(frame, mask)`` of a propagation step: an object with ``.frame`` and ``.mask`` or a pair."""
    if hasattr(step, "frame") and hasattr(step, "mask"):
        return step.frame, step.mask  # type: ignore[attr-defined]
    try:
        frame, mask = step  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError(f"propagation step {k}: expected a (frame, mask) pair or an object with .frame and "
                         f".mask (e.g. rvos_core.propagation.PropagationStep), got {type(step).__name__}") from None
    return frame, mask


def _default_color(obj_id: int) -> tuple[int, int, int]:
    """:func:`rvos_core.masks.object_color` of ``obj_id % 255`` (255 palette colours; ids are never reused)."""
    from rvos_core.masks import object_color

    return object_color(obj_id % 255)


def _split_video(split_path: Path, video_name: str) -> VideoSource:
    """The frames of ``video_name`` in a MeViS split folder: ``<split>/JPEGImages/<video_name>``."""
    from rvos_core.video import open_video

    if not Path(split_path).is_dir():
        raise ValueError(f"{split_path} is a zip; pass the video's frames (a VideoSource) as `video`")
    return open_video(Path(split_path) / "JPEGImages" / video_name)


def _mevis_size(split: Any, video_name: str) -> tuple[int, int] | None:
    """``(H, W)`` of a split's video, or None when the split holds neither a JPEG nor a mask of it."""
    from rvos_core.formats.mevis import MevisFormatError

    try:
        return split.frame_size(video_name)
    except MevisFormatError:
        return None


def _mevis_object_annos(expressions: dict[str, Any], where: str) -> dict[int, int]:
    """obj_id → anno_id over a video's MeViS expressions; ValueError for an obj_id with two anno_ids."""
    out: dict[int, int] = {}
    for exp_id, e in expressions.items():
        for obj_id, anno in zip(e.obj_id, e.anno_id):
            if out.setdefault(obj_id, anno) != anno:
                raise ValueError(f"{where}: obj_id {obj_id} has anno_id {out[obj_id]} and {anno} (expression "
                                 f"{exp_id!r}); expected one anno_id per object")
    return out


class AnnotationSession:
    """The annotation state of one video: objects with per-frame masks, referring expressions, prompt
    logs and undo/redo — no UI, no model (refiners are passed per call).

    Every edit is atomic: it either completes and becomes one undo step, or raises and leaves the
    state unchanged. Edits: objects (:meth:`add_object` on any frame, :meth:`rename_object`,
    :meth:`set_object_color`, :meth:`delete_object`), expressions (:meth:`accept_result`,
    :meth:`accept_masklets`, :meth:`add_expression`, :meth:`set_expression_text`,
    :meth:`set_expression_objects`, :meth:`link_object`, :meth:`unlink_object`,
    :meth:`delete_expression`), masks (:meth:`add_click`, :meth:`add_box`, :meth:`clear_prompts`,
    :meth:`set_mask`, :meth:`refine_seed003`, :meth:`apply_propagation`) and imports
    (:meth:`import_davis`, :meth:`import_prediction_pngs`). With a workspace attached
    (:meth:`attach_workspace`, :meth:`open_workspace`, :meth:`resume`), each edit, undo and redo is
    saved before the call returns; if that save fails, the edit is rolled back and the error raised.
    Not thread-safe: one session belongs to one user.

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
        self._workspace: _Workspace | None = None

    def replace_video(self, video: VideoSource) -> VideoSource:
        """Read frames from ``video`` from now on: another encoding of the same clip, e.g. the
        :func:`rvos_core.video.reencode_for_scrubbing` copy of a clip with far-apart keyframes.

        Masks, prompts, expressions, undo history and the autosave folder are kept (the workspace
        manifest still names the clip it was started on; :class:`VideoIdentity` treats both as
        the same video). Caches keyed by ``video.video_id`` (HQ-SAM embeddings) start empty for the
        new source.

        Args:
            video: an open source with the same frame count, frame size and content (the
                :class:`VideoIdentity` fingerprint: mean thumbnail difference ≤ 6 grey levels).

        Returns:
            The previous source, still open: the caller closes it once no other thread reads it.

        Raises:
            WorkspaceMismatchError: ``video`` has another frame count, size or content (the message
                names both videos and the difference); nothing changes.
        """
        # the autosave manifest already fingerprints the clip: no decoding of the (slow to seek) current source
        ours = self._workspace.identity if self._workspace is not None else VideoIdentity.of(self.video)
        theirs = VideoIdentity.of(video)
        reason = ours.difference(theirs)
        if reason is not None:
            raise WorkspaceMismatchError(f"{theirs.describe()} is not another encoding of {ours.describe()}: {reason}")
        old, self.video = self.video, video
        return old

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

    def hand_edited_frames(self, obj_id: int) -> set[int]:
        """Frames of an object edited by hand: frames with prompts (clicks, boxes) or whose mask has
        origin ``"click"`` or ``"manual"`` (:data:`HAND_ORIGINS`). Propagation keeps these by default.

        Raises:
            UnknownObjectError.
        """
        obj = self._object(obj_id)
        return set(obj.prompts) | {t for t, origin in obj.origin.items() if origin in HAND_ORIGINS}

    # ----- objects and expressions ---------------------------------------------------------

    def add_object(self, name: str | None = None, exp_id: str | None = None, *,
                   color: Sequence[int] | None = None, frame: int | None = None,
                   mask: np.ndarray | None = None) -> int:
        """Create an object and return its new ``obj_id`` (no cap on the number of objects).

        Args:
            name: display name; default ``"object <obj_id>"``.
            exp_id: if given, the new object is also added to that expression's ``obj_ids``.
            color: ``(R, G, B)`` ints in 0..255; default :func:`rvos_core.masks.object_color` of
                ``obj_id % 255``.
            frame, mask: optionally the object's first mask, on any frame: ``mask`` ``(H, W)`` bool
                (or 0/non-zero) on frame ``frame``, stored with origin ``"manual"``. Give both or neither;
                without them the object starts empty (e.g. for a first click on any frame).

        Raises:
            ValueError: an empty name, a bad colour, only one of frame/mask, a mask of the wrong shape.
            UnknownExpressionError: unknown ``exp_id``. IndexError: ``frame`` out of range.
        """
        if name is not None:
            name = _check_text(name, "object name")
        if exp_id is not None:
            self._expression(exp_id)
        rgb = None if color is None else _check_color(color)
        if (frame is None) != (mask is None):
            raise ValueError(f"add_object: give both frame and mask (the first mask) or neither; got "
                             f"frame={frame!r} and mask={'None' if mask is None else 'an array'}")
        first = None if frame is None else (self._check_frame(frame), self._check_mask(mask, "first mask"))
        with self._edit("add object"):
            obj_id = self._new_object(name, rgb)
            if exp_id is not None:
                self.state.expressions[exp_id].obj_ids.append(obj_id)
            if first is not None:
                self._store(self.state.objects[obj_id], first[0], first[1], "manual")
        return obj_id

    def set_object_color(self, obj_id: int, color: Sequence[int]) -> None:
        """Set an object's display colour ``(R, G, B)``, ints in 0..255.

        Raises:
            UnknownObjectError. ValueError: not three ints in 0..255.
        """
        rgb = _check_color(color)
        self._object(obj_id)
        with self._edit("set object colour"):
            self.state.objects[obj_id].color = rgb

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
            entry = self._new_expression(text, self._add_masklet_objects(text, stacks))
        return entry.copy()

    def accept_masklets(self, exp_id: str, result: SegmentResult, indices: Sequence[int] | None = None) -> list[int]:
        """Accept an engine's answer to an existing expression as one or more new objects.

        Each chosen masklet becomes a new object (origin ``"engine"`` on every frame, named after the
        expression as in :meth:`accept_result`) appended to the expression's ``obj_ids``.

        Args:
            exp_id: the expression the engine answered.
            result: masks ``(T, H, W)`` bool per masklet, matching this video's geometry.
            indices: which masklets to accept (positions in ``result.masklets``); None for all.

        Returns:
            The new obj_ids, in the order of ``indices``.

        Raises:
            UnknownExpressionError. ValueError: result geometry, or an index that is not a distinct
            int in ``[0, len(result.masklets) − 1]``.
        """
        entry = self._expression(exp_id)
        stacks = self._check_result(result)
        chosen = list(range(len(stacks))) if indices is None else list(indices)
        valid = all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) and 0 <= i < len(stacks)
                    for i in chosen)
        if not valid or len(set(chosen)) != len(chosen):
            raise ValueError(f"indices must be distinct masklet positions in [0, {len(stacks) - 1}], got {indices!r}")
        with self._edit("accept masklets"):
            obj_ids = self._add_masklet_objects(entry.text, [stacks[i] for i in chosen])
            self.state.expressions[exp_id].obj_ids.extend(obj_ids)
        return obj_ids

    def add_expression(self, text: str, obj_ids: Sequence[int] = ()) -> ExpressionEntry:
        """Record a referring expression, optionally linked to existing objects.

        Args:
            text: the expression (leading/trailing spaces dropped); must not be empty.
            obj_ids: distinct ids of existing objects it refers to (may be empty, e.g. before the
                engine answers it).

        Returns:
            A copy of the new :class:`ExpressionEntry` (``exp_id`` ``"0"``, ``"1"``, …).

        Raises:
            ValueError: empty text, repeated obj_ids. UnknownObjectError: an unknown obj_id.
        """
        text = _check_text(text, "expression")
        ids = self._check_obj_ids(obj_ids)
        with self._edit("add expression"):
            entry = self._new_expression(text, ids)
        return entry.copy()

    def set_expression_text(self, exp_id: str, text: str) -> None:
        """Edit an expression's text. Raises :class:`UnknownExpressionError`, ValueError (empty text)."""
        text = _check_text(text, "expression")
        self._expression(exp_id)
        with self._edit("edit expression"):
            self.state.expressions[exp_id].text = text

    def set_expression_objects(self, exp_id: str, obj_ids: Sequence[int]) -> None:
        """Set the objects an expression refers to (replaces the list; may be empty).

        Raises:
            UnknownExpressionError. UnknownObjectError: an unknown obj_id. ValueError: repeated ids.
        """
        self._expression(exp_id)
        ids = self._check_obj_ids(obj_ids)
        with self._edit("set expression objects"):
            self.state.expressions[exp_id].obj_ids = ids

    def link_object(self, exp_id: str, obj_id: int) -> None:
        """Add an existing object to an expression's ``obj_ids``.

        Raises:
            UnknownExpressionError, UnknownObjectError. ValueError: already linked.
        """
        entry = self._expression(exp_id)
        self._object(obj_id)
        if obj_id in entry.obj_ids:
            raise ValueError(f"object {obj_id} is already linked to expression {exp_id!r} (obj_ids {entry.obj_ids})")
        with self._edit("link object"):
            self.state.expressions[exp_id].obj_ids.append(int(obj_id))

    def unlink_object(self, exp_id: str, obj_id: int) -> None:
        """Remove an object from an expression's ``obj_ids`` (the object itself stays).

        Raises:
            UnknownExpressionError, UnknownObjectError. ValueError: not linked to that expression.
        """
        entry = self._expression(exp_id)
        self._object(obj_id)
        if obj_id not in entry.obj_ids:
            raise ValueError(f"object {obj_id} is not linked to expression {exp_id!r} (obj_ids {entry.obj_ids})")
        with self._edit("unlink object"):
            self.state.expressions[exp_id].obj_ids.remove(obj_id)

    def delete_expression(self, exp_id: str) -> None:
        """Delete an expression (its objects stay; exp_ids are never reused). Raises :class:`UnknownExpressionError`."""
        self._expression(exp_id)
        with self._edit("delete expression"):
            del self.state.expressions[exp_id]

    # ----- mask edits ------------------------------------------------------------------------

    def set_mask(self, obj_id: int, frame: int, mask: np.ndarray, origin: Origin) -> None:
        """Replace an object's mask on one frame (e.g. propagation or an import).

        The frame's prompt log is cleared and the new mask becomes the base that later prompts
        refine (and :meth:`clear_prompts` returns to).

        Args:
            mask: ``(H, W)`` bool (or 0/non-zero numbers); all False means "no mask".
            origin: one of :data:`ORIGINS`; ``"manual"`` for a mask drawn by hand.

        Raises:
            UnknownObjectError, IndexError (frame), ValueError (shape, dtype or origin).
        """
        self._object(obj_id)
        frame = self._check_frame(frame)
        arr = self._check_mask(mask, "mask")
        if origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
        with self._edit("set mask"):
            self._replace_mask(self.state.objects[obj_id], frame, _encode_or_none(arr), origin)

    def refine_seed003(self, obj_id: int, frames: int | Sequence[int] | None, refiner: Refiner,
                       n_pos: int = 10, n_neg: int = 5, seed: int = 0,
                       progress: ProgressFn | None = None) -> list[int]:
        """Refine an object's masks with seed 003's recipe, as one undo step.

        Per frame (:func:`rvos_core.pipeline.refine_mask_seed003`; 2nd place, MeViS track, CVPR 2024
        PVUW): the refiner is prompted with the box spanning the mask's extreme coordinates,
        ``n_pos`` positive points sampled uniformly inside the mask and ``n_neg`` negative points
        inside the box but outside the mask, with the mask as ``mask_prior``. Points are drawn with
        ``np.random.default_rng([seed, frame])``, so a frame gets the same points whether refined
        alone or with the others. Each refined frame gets origin ``"refined"``; its prompt log is
        cleared and the refined mask becomes its base (as :meth:`set_mask`). All frames are refined
        before anything is stored, so a refiner error changes nothing.

        Args:
            obj_id: the object.
            frames: one frame, a sequence of frames, or None for every frame where the object has a mask.
            refiner: a :class:`~rvos_core.refiners.base.Refiner`.
            n_pos, n_neg: numbers of positive / negative points (ints ≥ 0; fewer when the mask or the
                box background has fewer pixels).
            seed: int ≥ 0.
            progress: optional ``progress(done, total, message)``, once per refined frame.

        Returns:
            The refined frames, ascending.

        Raises:
            UnknownObjectError. IndexError: a frame out of range. ValueError: a named frame where the
            object has no mask (or no mask at all with ``frames=None``), bad counts or seed, or a
            refiner error / a refined mask of the wrong shape.
        """
        from rvos_core.pipeline import refine_mask_seed003

        obj = self._object(obj_id)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        targets = self._refine_targets(obj, frames)
        refined: dict[int, CompactMask | None] = {}
        for done, t in enumerate(targets, start=1):
            mask = refine_mask_seed003(refiner, self.video.get_frame(t), obj.masks[t].decode(), n_pos=n_pos,
                                       n_neg=n_neg, rng=np.random.default_rng([int(seed), t]),
                                       frame_key=f"{self.video.video_id}:{t}")
            refined[t] = _encode_or_none(self._refined_mask(mask, refiner))
            if progress is not None:
                progress(done, len(targets), f"refine object {obj_id}: frame {t}")
        with self._edit("refine (seed 003)"):
            live = self.state.objects[obj_id]
            for t, stored in refined.items():
                self._replace_mask(live, t, stored, "refined")
        return targets

    def apply_propagation(self, obj_id: int, steps: Iterable[Any], overwrite_hand_edits: bool = False) -> list[int]:
        """Write many frames' masks of one object (e.g. from propagation) as ONE undo step.

        Each written frame gets origin ``"propagated"``, its prompt log is cleared and the mask becomes
        its base (as :meth:`set_mask`). Frames edited by hand (:meth:`hand_edited_frames`) are kept
        unless ``overwrite_hand_edits``. The steps are consumed completely before anything is stored
        (masks are compressed as they arrive), so an error — from validation or from the iterable
        itself — changes nothing; an iterable that stops early (cancelled) commits what it yielded.
        A later step for the same frame replaces an earlier one. Nothing to write → no undo step.

        Args:
            obj_id: the object.
            steps: ``(frame, mask)`` pairs, or objects with ``.frame`` and ``.mask`` attributes (such as
                :class:`rvos_core.propagation.PropagationStep`); ``mask`` ``(H, W)`` bool (or 0/non-zero),
                all False meaning "no mask".
            overwrite_hand_edits: also overwrite hand-edited frames.

        Returns:
            The frames written, ascending (hand-edited frames that were kept are not in it).

        Raises:
            UnknownObjectError. IndexError: a frame out of range. ValueError: a malformed step or a mask
            of the wrong shape (the message names the step).
        """
        self._object(obj_id)
        keep = set() if overwrite_hand_edits else self.hand_edited_frames(obj_id)
        pending: dict[int, CompactMask | None] = {}
        for k, step in enumerate(steps):
            raw_frame, raw_mask = _unpack_step(step, k)
            frame = self._check_frame(raw_frame)  # type: ignore[arg-type]
            arr = self._check_mask(raw_mask, f"propagation step {k} (frame {frame}) mask")  # type: ignore[arg-type]
            if frame not in keep:
                pending[frame] = _encode_or_none(arr)
        if pending:
            with self._edit("propagate"):
                live = self.state.objects[obj_id]
                for t, stored in pending.items():
                    self._replace_mask(live, t, stored, "propagated")
        return sorted(pending)

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
        """Undo the latest edit; returns its label (e.g. ``"positive click"``). Autosaved like an edit.

        Raises:
            IndexError: nothing to undo. OSError: the autosave failed (the undo is then reverted).
        """
        return self._travel(self.history.undo, self.history.redo)

    def redo(self) -> str:
        """Redo the latest undone edit; returns its label. Autosaved like an edit.

        Raises:
            IndexError: nothing to redo. OSError: the autosave failed (the redo is then reverted).
        """
        return self._travel(self.history.redo, self.history.undo)

    def _travel(self, step: Callable[[SessionState], tuple[str, SessionState]],
                back: Callable[[SessionState], tuple[str, SessionState]]) -> str:
        """Move through the history with ``step`` and autosave; if the save fails, ``back`` restores
        both stacks and the state, and the error is raised."""
        label, state = step(self.state)
        previous, self.state = self.state, state
        try:
            self._autosave()
        except BaseException:
            back(state)
            self.state = previous
            raise
        return label

    # ----- workspace (autosave) -------------------------------------------------------------

    @property
    def workspace(self) -> Path | None:
        """The folder this session autosaves to, or None when none is attached."""
        return None if self._workspace is None else self._workspace.folder

    def attach_workspace(self, folder: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Autosave this session to ``folder`` from now on; the whole current state is written at once.

        Layout and crash safety: see :mod:`rvos_core.workspace`. The folder (and parents) is created
        when missing; files other than the workspace's own are left alone.

        Args:
            folder: the workspace folder.
            overwrite: replace a workspace already in ``folder`` (of any video).

        Returns:
            ``Path(folder)``.

        Raises:
            WorkspaceMismatchError: ``folder`` holds a workspace of another video (names both).
            FileExistsError: ``folder`` holds a workspace of this video (resume it instead).
            WorkspaceError: ``folder`` holds a malformed manifest. OSError: the first save failed
            (the session is then left without a workspace).
        """
        path = Path(folder)
        identity = VideoIdentity.of(self.video)
        if (path / WORKSPACE_MANIFEST).exists() and not overwrite:
            stored = _read_manifest(path).identity
            reason = stored.difference(identity)
            if reason is not None:
                raise WorkspaceMismatchError(_mismatch_message(path, stored, identity, reason))
            raise FileExistsError(f"{path}: already holds a workspace of this video; resume it with "
                                  "AnnotationSession.resume(folder, video), or pass overwrite=True to replace it")
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"{path}: not a folder; expected a workspace folder")
        workspace = _Workspace(path, identity, _last_revision(path))
        workspace.save(self)
        self._workspace = workspace
        return path

    def detach_workspace(self) -> None:
        """Stop autosaving (the files stay as last saved)."""
        self._workspace = None

    @classmethod
    def resume(cls, folder: str | os.PathLike[str], video: VideoSource,
               max_undo: int = DEFAULT_MAX_UNDO) -> AnnotationSession:
        """Reopen a workspace after a restart or a crash: objects, masks, prompt logs and expressions
        as last saved (undo history starts empty), autosaving to the same folder again.

        Leftovers of an interrupted save (temp files, object files the manifest does not name) are
        deleted.

        Args:
            folder: a workspace folder written by :meth:`attach_workspace`.
            video: the same video (matched by frame count, size and content; the path may differ).

        Raises:
            FileNotFoundError: no manifest, or an object file it names is missing.
            WorkspaceMismatchError: the workspace belongs to another video (names both).
            WorkspaceError: malformed files (the message names the file and field).
        """
        path = Path(folder)
        manifest = _read_manifest(path)
        identity = VideoIdentity.of(video)
        reason = manifest.identity.difference(identity)
        if reason is not None:
            raise WorkspaceMismatchError(_mismatch_message(path, manifest.identity, identity, reason))
        size_hw = (identity.height, identity.width)
        objects = {}
        for obj_id, name in manifest.object_files.items():
            file = path / _WORKSPACE_OBJECTS / name
            objects[obj_id] = _object_from_json(_read_json(file), str(file), obj_id, size_hw, identity.num_frames)
        session = cls(video, video_name=manifest.video_name, max_undo=max_undo)
        session.state = SessionState(objects, manifest.expressions, manifest.next_obj_id, manifest.next_exp_id)
        saved = {obj_id: (obj.copy(), manifest.object_files[obj_id]) for obj_id, obj in objects.items()}
        session._workspace = _Workspace(path, identity, manifest.revision, saved)
        session._workspace.remove_stale_files()
        return session

    @classmethod
    def open_workspace(cls, folder: str | os.PathLike[str], video: VideoSource, video_name: str | None = None,
                       max_undo: int = DEFAULT_MAX_UNDO) -> AnnotationSession:
        """:meth:`resume` the workspace in ``folder`` when there is one, else start a new session on
        ``video`` (named ``video_name``) autosaving there. Raises as those two."""
        if (Path(folder) / WORKSPACE_MANIFEST).exists():
            return cls.resume(folder, video, max_undo=max_undo)
        session = cls(video, video_name=video_name, max_undo=max_undo)
        session.attach_workspace(folder)
        return session

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

    def export_davis_pngs(self, out_dir: str | os.PathLike[str], obj_ids: Sequence[int] | None = None,
                          on_overlap: str = "error", overwrite: bool = False) -> list[Path]:
        """Write the objects' masks as DAVIS-2017 palette PNGs, ``out_dir/<frame>.png``, one per frame.

        Pixel value = ``obj_id + 1`` (0 background), so an object shows in its default colour
        (:func:`rvos_core.masks.object_color` is the VOC palette entry ``obj_id + 1``); written with
        :func:`rvos_core.formats.davis.write_davis_annotations` (each file atomic).

        Args:
            out_dir: the annotation folder.
            obj_ids: objects to write; None for all.
            on_overlap: ``"error"`` or ``"last"`` (the higher obj_id wins where objects overlap), as
                :func:`rvos_core.formats.davis.ids_from_masks`.
            overwrite: replace existing PNGs of the same names.

        Returns:
            The written paths, in frame order.

        Raises:
            UnknownObjectError. ValueError: an obj_id above 254 (no palette id left).
            MaskOverlapError: overlapping objects with ``on_overlap="error"`` (names the frame and objects).
            FileExistsError: a PNG exists and ``overwrite`` is false.
        """
        from rvos_core.formats.davis import ids_from_masks, write_davis_annotations

        objs = self._objects(obj_ids)
        too_big = [o.obj_id for o in objs if o.obj_id > 254]
        if too_big:
            raise ValueError(f"obj_ids {too_big} do not fit a DAVIS palette PNG (pixel value obj_id + 1 <= 255)")
        ids = np.zeros((self.num_frames, self.height, self.width), np.uint8)
        for t, name in enumerate(self.frame_names):
            masks = {o.obj_id + 1: o.masks[t].decode() for o in objs if t in o.masks}
            ids[t], _ = ids_from_masks(masks, (self.height, self.width), on_overlap=on_overlap,
                                       where=f"video {self.video_name!r} frame {name!r}")
        return write_davis_annotations(out_dir, ids, self.frame_names, overwrite=overwrite)

    # ----- imports ------------------------------------------------------------------------------

    @classmethod
    def from_mevis(cls, split_path: str | os.PathLike[str], video_name: str, video: VideoSource | None = None,
                   max_undo: int = DEFAULT_MAX_UNDO) -> AnnotationSession:
        """A session holding one video of a MeViS-layout split (folder or zip), read with
        :func:`rvos_core.formats.mevis.read_mevis_split`.

        Objects: one per ``obj_id`` that the video's expressions refer to, keeping it as the session's
        obj_id (named ``"object <obj_id>"``, default colour); its masks are its ``anno_id``'s RLEs
        from ``mask_dict.json`` (origin ``"import"`` on every frame; ``null`` → no mask; no masks at
        all when the split has no ``mask_dict.json``, e.g. ``valid``). Expressions keep their ids,
        ``exp`` text and ``obj_id`` lists. Undo history starts empty. With :meth:`export_mevis_zip`
        this round-trips masks and expressions exactly.

        Args:
            split_path: the split folder or zip.
            video_name: the video's name in ``meta_expressions.json``.
            video: its frames; default ``<split>/JPEGImages/<video_name>`` (folder splits only).

        Raises:
            FileNotFoundError: no split / no frames. MevisFormatError: malformed split files.
            ValueError: unknown video (lists the split's videos), a zip without ``video``, a video
                whose frame count or size differs from the split's, an empty expression, or an
                obj_id with two anno_ids.
        """
        from rvos_core.formats.mevis import read_mevis_split

        with read_mevis_split(split_path) as split:
            if video_name not in split.videos:
                raise ValueError(f"video {video_name!r} is not in the split {split_path}; its videos: "
                                 f"{split.videos[:20]}{' ...' if len(split.videos) > 20 else ''}")
            frames = video if video is not None else _split_video(split.path, video_name)
            session = cls(frames, video_name=video_name, max_undo=max_undo)
            where = f"{split_path} video {video_name!r}"
            session._check_import_geometry(where, len(split.frame_names(video_name)), _mevis_size(split, video_name))
            expressions = split.expressions(video_name)
            for obj_id, anno in sorted(_mevis_object_annos(expressions, where).items()):
                masks = (split.object_mask(anno, t) if split.has_masks else None for t in range(session.num_frames))
                session.state.objects[obj_id] = session._imported_object(obj_id, None, masks)
            for exp_id, e in expressions.items():
                _check_text(e.exp, f"{where} expression {exp_id!r}")  # kept verbatim, but not empty
                session.state.expressions[exp_id] = ExpressionEntry(exp_id, e.exp, list(e.obj_id))
        session.state.next_obj_id = max(session.state.objects, default=-1) + 1
        session.state.next_exp_id = max((int(k) + 1 for k in session.state.expressions if k.isdigit()), default=0)
        return session

    @classmethod
    def from_davis(cls, path: str | os.PathLike[str], video: VideoSource, video_name: str | None = None,
                   max_undo: int = DEFAULT_MAX_UNDO) -> AnnotationSession:
        """A session whose objects are read from DAVIS annotation PNGs (palette or 0/255), with
        :func:`rvos_core.formats.davis.read_davis_annotations`.

        Palette id ``k`` becomes ``obj_id = k − 1`` (the inverse of :meth:`export_davis_pngs`; a
        DAVIS-2016 0/255 mask is id 1 → object 0), named ``"object <obj_id>"``, default colour, origin
        ``"import"`` on every frame. No expressions; undo history starts empty.

        Raises:
            FileNotFoundError: no annotation PNGs. DavisFormatError: unreadable / colour PNGs.
            ValueError: frame count or size differs from ``video``'s.
        """
        session = cls(video, video_name=video_name, max_undo=max_undo)
        ids = session._read_davis(path)
        for pid in (int(v) for v in np.unique(ids) if v != 0):
            session.state.objects[pid - 1] = session._imported_object(pid - 1, None, ids == pid)
        session.state.next_obj_id = max(session.state.objects, default=-1) + 1
        return session

    def import_davis(self, path: str | os.PathLike[str]) -> dict[int, int]:
        """Add the objects of DAVIS annotation PNGs (palette or 0/255) as new objects, one undo step.

        Each palette id present becomes a new object (next free obj_id, origin ``"import"`` on every frame).

        Returns:
            Palette id → new obj_id.

        Raises:
            As :meth:`from_davis`.
        """
        ids = self._read_davis(path)
        mapping: dict[int, int] = {}
        with self._edit("import DAVIS"):
            for pid in (int(v) for v in np.unique(ids) if v != 0):
                obj_id = self.state.next_obj_id
                self.state.objects[obj_id] = self._imported_object(obj_id, None, ids == pid)
                self.state.next_obj_id += 1
                mapping[pid] = obj_id
        return mapping

    def import_prediction_pngs(self, path: str | os.PathLike[str], exp_id: str, video_name: str | None = None) -> int:
        """Import one expression's predicted masks (MeViS prediction layout
        ``<video>/<exp_id>/<frame>.png``, 8-bit 0/255, folder or zip; read with
        :func:`rvos_core.formats.predictions.open_predictions`) as a new object linked to that
        expression, one undo step.

        A prediction is the union of the referred objects, so it becomes ONE object (named after the
        expression, origin ``"import"`` on every frame).

        Args:
            path: the prediction folder or zip.
            exp_id: an expression of this session; also the folder name read.
            video_name: the video folder to read; default :attr:`video_name`.

        Returns:
            The new obj_id.

        Raises:
            UnknownExpressionError. FileNotFoundError: no such folder / zip. ValueError: a missing,
            unreadable or malformed PNG (the message names it; nothing is imported).
        """
        from rvos_core.formats.predictions import open_predictions

        entry = self._expression(exp_id)
        name = self.video_name if video_name is None else _check_video_name(video_name)
        with open_predictions(path) as source:
            stack, problems = source.read_expression(name, exp_id, self.frame_names, (self.height, self.width))
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ValueError(f"{path}: cannot import the predictions of expression {exp_id!r}: {problems[0]}{more}")
        with self._edit("import predictions"):
            obj_id = self.state.next_obj_id
            self.state.objects[obj_id] = self._imported_object(obj_id, entry.text, stack)
            self.state.next_obj_id += 1
            self.state.expressions[exp_id].obj_ids.append(obj_id)
        return obj_id

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

    def _check_obj_ids(self, obj_ids: Sequence[int]) -> list[int]:
        if isinstance(obj_ids, (str, bytes)) or not isinstance(obj_ids, (Sequence, np.ndarray)):
            raise ValueError(f"obj_ids must be a sequence of object ids, got {obj_ids!r}")
        ids = [self._object(i).obj_id for i in obj_ids]
        if len(set(ids)) != len(ids):
            raise ValueError(f"obj_ids must be distinct, got {list(obj_ids)}")
        return ids

    def _refine_targets(self, obj: TrackedObject, frames: int | Sequence[int] | None) -> list[int]:
        """The frames :meth:`refine_seed003` refines; each must hold a mask of ``obj``."""
        if frames is None:
            if not obj.masks:
                raise ValueError(f"object {obj.obj_id} has no mask on any frame; seed 003's refinement "
                                 "prompts from an existing mask")
            return sorted(obj.masks)
        listed = [frames] if isinstance(frames, (int, np.integer)) else list(frames)
        targets = sorted({self._check_frame(t) for t in listed})
        missing = [t for t in targets if t not in obj.masks]
        if missing or not targets:
            raise ValueError(f"object {obj.obj_id} has no mask on frame(s) {missing or listed}; seed 003's "
                             f"refinement prompts from an existing mask (frames with a mask: {sorted(obj.masks)})")
        return targets

    def _check_import_geometry(self, where: str, num_frames: int, size_hw: tuple[int, int] | None) -> None:
        """ValueError when imported data has another frame count or ``(H, W)`` than the video."""
        size_ok = size_hw is None or tuple(size_hw) == (self.height, self.width)
        if num_frames != self.num_frames or not size_ok:
            shown = "?" if size_hw is None else f"{size_hw[1]}x{size_hw[0]}"
            raise ValueError(f"{where}: {num_frames} frames of {shown}, but the video {self.video.meta.path} has "
                             f"{self.num_frames} frames of {self.width}x{self.height}")

    def _read_davis(self, path: str | os.PathLike[str]) -> np.ndarray:
        """``(T, H, W)`` uint8 palette ids of a DAVIS annotation folder, checked against the video."""
        from rvos_core.formats.davis import read_davis_annotations

        ann = read_davis_annotations(path)
        self._check_import_geometry(str(ann.folder), len(ann.frame_names), ann.ids.shape[1:])
        return ann.ids

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
        """Run one edit as an undo step, autosaved; on any error (autosave included) restore the
        state from before it."""
        before = self.state.snapshot()
        try:
            yield
            self._autosave()
        except BaseException:
            self.state = before
            raise
        self.history.record(label, before)

    def _autosave(self) -> None:
        if self._workspace is not None:
            self._workspace.save(self)

    def _new_object(self, name: str | None, color: tuple[int, int, int] | None = None) -> int:
        obj_id = self.state.next_obj_id
        self.state.next_obj_id += 1
        self.state.objects[obj_id] = TrackedObject(obj_id, name or f"object {obj_id}", color or _default_color(obj_id))
        return obj_id

    def _add_masklet_objects(self, text: str, stacks: list[np.ndarray]) -> list[int]:
        """New objects, one per ``(T, H, W)`` stack, origin ``"engine"``, named after ``text``."""
        obj_ids = []
        for k, masks in enumerate(stacks):
            name = text if len(stacks) == 1 else f"{text} #{k + 1}"
            obj = self.state.objects[self._new_object(name)]
            for t in range(self.num_frames):
                self._store(obj, t, masks[t], "engine")
            obj_ids.append(obj.obj_id)
        return obj_ids

    def _imported_object(self, obj_id: int, name: str | None,
                         masks: Iterable[np.ndarray | None]) -> TrackedObject:
        """A new object with one imported mask (or None) per frame, origin ``"import"`` on every frame."""
        obj = TrackedObject(obj_id, name or f"object {obj_id}", _default_color(obj_id))
        for t, mask in enumerate(masks):
            self._put(obj, t, None if mask is None else _encode_or_none(mask), "import")
        return obj

    def _new_expression(self, text: str, obj_ids: list[int]) -> ExpressionEntry:
        exp_id = str(self.state.next_exp_id)
        self.state.next_exp_id += 1
        entry = ExpressionEntry(exp_id, text, list(obj_ids))
        self.state.expressions[exp_id] = entry
        return entry

    @staticmethod
    def _store(obj: TrackedObject, frame: int, mask: np.ndarray, origin: Origin) -> None:
        """Set one frame's mask (an all-False mask removes it) and its origin."""
        AnnotationSession._put(obj, frame, _encode_or_none(mask), origin)

    @staticmethod
    def _put(obj: TrackedObject, frame: int, stored: CompactMask | None, origin: Origin) -> None:
        """Set one frame's compressed mask (None removes it) and its origin."""
        if stored is None:
            obj.masks.pop(frame, None)
        else:
            obj.masks[frame] = stored
        obj.origin[frame] = origin

    @staticmethod
    def _replace_mask(obj: TrackedObject, frame: int, stored: CompactMask | None, origin: Origin) -> None:
        """Replace a frame's mask and make it the frame's new base: its prompt log is dropped."""
        obj.prompts.pop(frame, None)
        obj.proposals.pop(frame, None)
        AnnotationSession._put(obj, frame, stored, origin)

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
        return self._refined_mask(result.mask, refiner)

    def _refined_mask(self, mask: Any, refiner: Refiner) -> np.ndarray:
        """A refiner's output as ``(H, W)`` bool; ValueError naming the refiner for another shape."""
        arr = np.asarray(mask)
        name = getattr(refiner, "name", type(refiner).__name__)
        if arr.shape != (self.height, self.width):
            raise ValueError(
                f"refiner {name!r} returned a mask of shape {arr.shape}; expected ({self.height}, {self.width})"
            )
        return arr if arr.dtype == bool else arr != 0

    def _progress_frames(self, progress: ProgressFn | None, message: str) -> Callable[[int], np.ndarray]:
        """``i -> frame i`` that also reports ``progress(i, T, message)`` before reading each frame."""

        def get(i: int) -> np.ndarray:
            if progress is not None:
                progress(i, self.num_frames, message)
            return self.video.get_frame(i)

        return get
