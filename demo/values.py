"""Plain values passed between the widgets and :mod:`demo.service` (no gradio, no torch here).

What the service returns (:class:`FrameView`, :class:`ObjectInfo`, :class:`ExpressionInfo`) and the
checks that turn widget / API values into object ids, expression ids and texts, pixels, propagation
windows and colours (user mistakes raise ``ValueError`` with a message meant for the user).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    from rvos_core.session import AnnotationSession

#: ``progress(done, total, message)`` as in :mod:`rvos_core.engines.base`.
ProgressFn = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ObjectInfo:
    """One object as the object list and the timeline show it.

    Attributes:
        obj_id: the object's id. name: its display name. color: ``(R, G, B)`` ints in 0..255.
        mask_frames: frames (0-based, ascending) where it has a non-empty mask.
        prompt_frames: frames (ascending) where it has clicks or a box.
    """

    obj_id: int
    name: str
    color: tuple[int, int, int]
    mask_frames: tuple[int, ...]
    prompt_frames: tuple[int, ...]

    @property
    def hex_color(self) -> str:
        """The colour as ``"#rrggbb"``."""
        return "#{:02x}{:02x}{:02x}".format(*self.color)


@dataclass(frozen=True)
class ExpressionInfo:
    """One referring expression: ``exp_id`` (``"0"``, ``"1"``, …), its text and the obj_ids it refers to."""

    exp_id: str
    text: str
    obj_ids: tuple[int, ...]


@dataclass
class FrameView:
    """What the page shows after an action.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB overlay of the shown frame at original size (click markers drawn).
        frame: index of the shown frame, 0-based.
        num_frames: number of frames in the clip (>= 1).
        clip_info: one Markdown line: name, frames, fps, size.
        objects: ``(label, obj_id)`` choices for the object selector.
        selected: obj_id to select, or None (the page keeps its selection).
        status: one line describing the last action.
        object_info: every object with its mask / prompt frames (object list, timeline).
        expressions: every expression, in creation order.
        selected_exp: exp_id to select, or None (the page keeps its selection).
        workspace: the folder the session autosaves to, or None.
    """

    image: np.ndarray
    frame: int
    num_frames: int
    clip_info: str
    objects: list[tuple[str, int]] = field(default_factory=list)
    selected: int | None = None
    status: str = ""
    object_info: list[ObjectInfo] = field(default_factory=list)
    expressions: list[ExpressionInfo] = field(default_factory=list)
    selected_exp: str | None = None
    workspace: str | None = None


def _object_info(session: AnnotationSession) -> list[ObjectInfo]:
    """Every object of ``session`` as :class:`ObjectInfo`, in creation order (caller holds the user's lock)."""
    return [ObjectInfo(o.obj_id, o.name, tuple(o.color), tuple(sorted(o.masks)), tuple(sorted(o.prompts)))
            for o in session.state.objects.values()]


def _as_obj_id(value: int | float | str | None) -> int | None:
    """An object selector value as an obj_id (None when nothing is selected).

    Raises:
        ValueError: a value that is not a whole number.
    """
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"object {value!r} is not an object id; pick one from the list") from None
    if not number.is_integer():
        raise ValueError(f"object {value!r} is not an object id; pick one from the list")
    return int(number)


def _require_obj_id(value: int | float | str | None) -> int:
    """:func:`_as_obj_id`, with ValueError when no object is selected."""
    oid = _as_obj_id(value)
    if oid is None:
        raise ValueError("select an object first (or click on the frame to start one)")
    return oid


def _as_obj_ids(values: Sequence[int | str] | None) -> list[int]:
    """A checkbox / API list of object ids as ints (None → [])."""
    if values is None:
        return []
    if isinstance(values, (str, int, float)):
        values = [values]
    return [_require_obj_id(v) for v in values]


def _require_exp_id(value: str | int | None) -> str:
    """An expression selector value as an exp_id string; ValueError when none is selected."""
    if value is None or str(value).strip() == "":
        raise ValueError("select an expression first (or add one)")
    return str(value).strip()


def _expression_text(text: str | None) -> str:
    """The expression stripped; ValueError when empty."""
    text = (text or "").strip()
    if not text:
        raise ValueError("type an expression first, e.g. “the small dog running around the woman”")
    return text


def _as_pixel(value: int | float | str, what: str) -> int:
    """A pixel coordinate from the page or the API as an int; ValueError naming ``what`` otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of pixels, got {value!r}") from None
    if not np.isfinite(number):
        raise ValueError(f"{what} must be a finite number of pixels, got {value!r}")
    return int(number)


def _as_window(value: int | float | str | None) -> int | None:
    """The propagation window: None / 0 → None (to the clip's end); else an int >= 1."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"window must be a number of frames (0 = to the clip's end), got {value!r}") from None
    if not number.is_integer() or number < 0:
        raise ValueError(f"window must be a whole number of frames >= 0 (0 = to the clip's end), got {value!r}")
    return int(number) or None


_HEX_COLOR = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")
_RGB_COLOR = re.compile(r"rgba?\(\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*(?:,\s*[\d.]+\s*)?\)")


def parse_color(value: str | Sequence[int]) -> tuple[int, int, int]:
    """A colour from the colour picker or the API as ``(R, G, B)`` ints in 0..255.

    Accepts ``"#rrggbb"``, ``"#rgb"``, ``"rgb(r, g, b)"`` / ``"rgba(r, g, b, a)"`` (alpha ignored) and
    a sequence of three ints.

    Raises:
        ValueError: anything else, or a channel outside 0..255.
    """
    if isinstance(value, str):
        text = value.strip()
        if m := _HEX_COLOR.fullmatch(text):
            digits = m.group(1) if len(m.group(1)) == 6 else "".join(c * 2 for c in m.group(1))
            return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)
        if m := _RGB_COLOR.fullmatch(text):
            channels = [round(float(g)) for g in m.groups()]
        else:
            channels = []
    else:
        try:
            channels = [int(v) for v in value]
        except (TypeError, ValueError):
            channels = []
    if len(channels) != 3 or not all(0 <= c <= 255 for c in channels):
        raise ValueError(f"colour {value!r} is not #rrggbb, rgb(r, g, b) or three ints in 0..255")
    return channels[0], channels[1], channels[2]
