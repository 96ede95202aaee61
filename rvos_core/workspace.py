"""Workspace files: autosave of an :class:`~rvos_core.session.AnnotationSession` to a folder, and reading it back.

Holds :class:`VideoIdentity` (what ties a workspace to its video), the JSON (de)serialisation of
objects, prompts and masks, the manifest reader and :class:`_Workspace`, the autosave target.

Workspace (autosave; :meth:`~rvos_core.session.AnnotationSession.attach_workspace`,
:meth:`~rvos_core.session.AnnotationSession.resume`).
After every edit (and every undo/redo) the changed state is written to a folder::

    <folder>/workspace.json              the manifest (the commit point; rewritten atomically)
    <folder>/objects/obj<ID>-r<REV>.json  one file per object, written only when the object changed

The manifest holds ``format``/``version``, ``revision`` (a counter, +1 per save), the video's
identity (absolute ``path``, ``num_frames``, ``height``, ``width`` and a content fingerprint: 16×16
RGB thumbnails of frames 0, T // 2 and T − 1), ``video_name``, ``next_obj_id``, ``next_exp_id``,
``objects`` (``obj_id`` → object file name) and ``expressions`` (``exp_id``, ``exp``, ``obj_id``, as
MeViS spells them). An object file holds the object's ``name``, ``color`` and, per frame, its mask
as pycocotools compressed RLE (``null`` for none), its origin, its prompt log and its
:class:`~rvos_core.session_types.MaskProposal`. A save writes the changed object files under new
names first (each atomic), then replaces the manifest atomically, then deletes object files the
manifest no longer names; so a crash (even ``kill -9``) at any point leaves the manifest of the
previous or of the new state, never a mix: at most the edit in progress is lost. Undo history is
not saved.
"""

from __future__ import annotations

import base64
import json
import os
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rvos_core.fileio import atomic_output_path
from rvos_core.session_types import (
    ORIGINS,
    CompactMask,
    ExpressionEntry,
    MaskProposal,
    Origin,
    Prompt,
    TrackedObject,
    WorkspaceError,
    _as_float,
    _check_color,
    _encode_or_none,
)
from rvos_core.video import VideoSource

if TYPE_CHECKING:
    from rvos_core.session import AnnotationSession

__all__ = ["WORKSPACE_MANIFEST", "VideoIdentity"]

#: The workspace manifest's file name (see the module docstring for the layout).
WORKSPACE_MANIFEST = "workspace.json"
_WORKSPACE_OBJECTS = "objects"
_WORKSPACE_FORMAT = "rvos-workbench-workspace"
_WORKSPACE_VERSION = 1
_OBJECT_FILE = re.compile(r"^obj(\d+)-r(\d+)\.json$")
#: Temp names that rvos_core.fileio.atomic_output_path gives the manifest and object files.
_TEMP_FILE = re.compile(r"^\.(workspace\.json|obj\d+-r\d+\.json)\.tmp-[0-9a-f]+\.json$")
#: Side of the square RGB thumbnails that fingerprint a video's content.
_THUMB_SIDE = 16
#: Largest mean absolute thumbnail difference (0..255 levels) still taken as the same video
#: (room for decoder differences between machines; another clip differs by far more).
_THUMB_TOLERANCE = 6.0


# ----------------------------------------------------------------------------------------------
# workspace files (autosave; layout in the module docstring)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class VideoIdentity:
    """What ties a workspace to its video: path, geometry and a content fingerprint.

    Two identities are the same video when frame count and size are equal and each fingerprint
    thumbnail differs by at most 6 grey levels on average (room for decoder differences between
    machines). The path is informational: a moved or copied clip still matches.

    Attributes:
        path: the video's absolute path when it was identified.
        num_frames: T. height, width: H, W in pixels.
        thumbnails: frame index → ``(16, 16, 3)`` uint8 RGB thumbnail (``cv2.INTER_AREA``) of
            frames 0, T // 2 and T − 1.
    """

    path: str
    num_frames: int
    height: int
    width: int
    thumbnails: dict[int, np.ndarray]

    @classmethod
    def of(cls, video: VideoSource) -> VideoIdentity:
        """Identify ``video`` (decodes three frames)."""
        import cv2

        meta = video.meta
        frames = sorted({0, meta.num_frames // 2, meta.num_frames - 1})
        thumbs = {t: cv2.resize(video.get_frame(t), (_THUMB_SIDE, _THUMB_SIDE), interpolation=cv2.INTER_AREA)
                  for t in frames}
        return cls(os.path.abspath(meta.path), int(meta.num_frames), int(meta.height), int(meta.width), thumbs)

    def describe(self) -> str:
        """``"<path> (T frames of WxH)"``."""
        return f"{self.path} ({self.num_frames} frames of {self.width}x{self.height})"

    def difference(self, other: VideoIdentity) -> str | None:
        """Why ``other`` is another video (frame count, size or content), or None when it is the same."""
        if self.num_frames != other.num_frames:
            return f"{self.num_frames} vs {other.num_frames} frames"
        if (self.height, self.width) != (other.height, other.width):
            return f"frame size {self.width}x{self.height} vs {other.width}x{other.height}"
        for t, thumb in sorted(self.thumbnails.items()):
            theirs = other.thumbnails.get(t)
            if theirs is None:
                return f"no fingerprint of frame {t}"
            diff = float(np.abs(thumb.astype(np.int16) - theirs.astype(np.int16)).mean())
            if diff > _THUMB_TOLERANCE:
                return f"frame {t} shows other content (mean thumbnail difference {diff:.1f} grey levels)"
        return None

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``"video"`` field (thumbnails as base64 of the raw uint8 RGB bytes)."""
        return {
            "path": self.path, "num_frames": self.num_frames, "height": self.height, "width": self.width,
            "thumbnails": {str(t): base64.b64encode(th.tobytes()).decode("ascii")
                           for t, th in sorted(self.thumbnails.items())},
        }

    @classmethod
    def from_json(cls, raw: object, where: str) -> VideoIdentity:
        """Parse :meth:`to_json`'s output. Raises :class:`WorkspaceError` naming ``where`` and the field."""
        path = _field(raw, "path", "str", where)
        t, h, w = (_field(raw, key, "int", where) for key in ("num_frames", "height", "width"))
        thumbs = {}
        for key, text in _field(raw, "thumbnails", "object", where).items():
            try:
                data = base64.b64decode(text, validate=True)
                thumbs[int(key)] = np.frombuffer(data, np.uint8).reshape(_THUMB_SIDE, _THUMB_SIDE, 3)
            except (TypeError, ValueError) as exc:  # binascii.Error is a ValueError
                raise WorkspaceError(f"{where}.thumbnails[{key!r}]: expected base64 of a {_THUMB_SIDE}x"
                                     f"{_THUMB_SIDE} RGB thumbnail ({exc})") from None
        return cls(path, t, h, w, thumbs)


def _mismatch_message(folder: Path, stored: VideoIdentity, current: VideoIdentity, reason: str) -> str:
    return (f"workspace {folder} belongs to the video {stored.describe()}, not to {current.describe()}: "
            f"{reason}; open that video, or attach this one to another folder")


_JSON_KINDS: dict[str, tuple[str, Callable[[object], bool]]] = {
    "int": ("an int >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "str": ("a string", lambda v: isinstance(v, str)),
    "list": ("a list", lambda v: isinstance(v, list)),
    "object": ("a JSON object", lambda v: isinstance(v, dict)),
}


def _field(raw: object, key: str, kind: str, where: str) -> Any:
    """``raw[key]``, checked to be of ``kind`` (a key of ``_JSON_KINDS``); else :class:`WorkspaceError`."""
    if not isinstance(raw, dict):
        raise WorkspaceError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    what, ok = _JSON_KINDS[kind]
    value = raw.get(key)
    if not ok(value):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise WorkspaceError(f"{where}.{key}: expected {what}, got {shown}")
    return value


def _read_json(path: Path) -> Any:
    """Parse a workspace JSON file. Raises FileNotFoundError, or :class:`WorkspaceError` for bad JSON."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such workspace file")
    try:
        return json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkspaceError(f"{path}: not valid JSON ({exc})") from None


def _write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as compact JSON, atomically (:func:`rvos_core.fileio.atomic_output_path`)."""
    data = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
    with atomic_output_path(path) as tmp:
        tmp.write_bytes(data)


def _prompt_json(prompt: Prompt) -> dict[str, Any]:
    if prompt.kind == "point":
        return {"kind": "point", "xy": list(prompt.xy or ()), "label": prompt.label}
    return {"kind": "box", "box": list(prompt.box or ())}


def _prompt_from_json(raw: object, frame: int, where: str) -> Prompt:
    kind = _field(raw, "kind", "str", where)
    values = _field(raw, "xy" if kind == "point" else "box", "list", where)
    try:
        coords = tuple(_as_float(v, "prompt coordinate") for v in values)
        if kind == "point":
            return Prompt(frame, "point", xy=coords, label=raw.get("label"))  # type: ignore[arg-type]
        return Prompt(frame, kind, box=coords)  # type: ignore[arg-type]
    except ValueError as exc:
        raise WorkspaceError(f"{where}: {exc}") from None


def _origin_from_json(value: object, where: str) -> Origin | None:
    if value is not None and value not in ORIGINS:
        raise WorkspaceError(f"{where}: expected null or one of {ORIGINS}, got {value!r}")
    return value  # type: ignore[return-value]


def _mask_from_json(rle: object, where: str, size_hw: tuple[int, int]) -> CompactMask | None:
    from rvos_core.masks import rle_to_mask

    if rle is None:
        return None
    try:
        return _encode_or_none(rle_to_mask(rle, expected_size=size_hw))  # type: ignore[arg-type]
    except (TypeError, ValueError, KeyError) as exc:
        raise WorkspaceError(f"{where}: not an RLE mask of size {list(size_hw)} ({exc})") from None


def _object_json(obj: TrackedObject, rle_of: Callable[[CompactMask | None], dict | None]) -> dict[str, Any]:
    """An object file's content: name, colour, and per frame mask (RLE), origin, prompts, proposal."""
    frames = []
    for t in sorted(set(obj.masks) | set(obj.origin) | set(obj.prompts)):
        item: dict[str, Any] = {"frame": t, "mask": rle_of(obj.masks.get(t)), "origin": obj.origin.get(t)}
        if t in obj.prompts:
            base = obj.proposals[t]
            item["prompts"] = [_prompt_json(p) for p in obj.prompts[t]]
            item["proposal"] = {"mask": rle_of(base.mask), "origin": base.origin}
        frames.append(item)
    return {"obj_id": obj.obj_id, "name": obj.name, "color": list(obj.color), "frames": frames}


def _object_from_json(raw: object, where: str, obj_id: int, size_hw: tuple[int, int],
                      num_frames: int) -> TrackedObject:
    """Parse :func:`_object_json`'s output. Raises :class:`WorkspaceError` naming the field."""
    got = _field(raw, "obj_id", "int", where)
    if got != obj_id:
        raise WorkspaceError(f"{where}.obj_id: {got}, but the manifest names this file for object {obj_id}")
    try:
        color = _check_color(raw.get("color"))
    except ValueError as exc:
        raise WorkspaceError(f"{where}.color: {exc}") from None
    obj = TrackedObject(obj_id, _field(raw, "name", "str", where), color)
    for k, item in enumerate(_field(raw, "frames", "list", where)):
        _load_frame(obj, item, f"{where}.frames[{k}]", size_hw, num_frames)
    return obj


def _load_frame(obj: TrackedObject, raw: object, where: str, size_hw: tuple[int, int], num_frames: int) -> None:
    t = _field(raw, "frame", "int", where)
    if t >= num_frames:
        raise WorkspaceError(f"{where}.frame: {t}; expected < {num_frames} (the video's frame count)")
    mask = _mask_from_json(raw.get("mask"), f"{where}.mask", size_hw)
    origin = _origin_from_json(raw.get("origin"), f"{where}.origin")
    if mask is not None:
        obj.masks[t] = mask
    if origin is not None:
        obj.origin[t] = origin
    if "prompts" in raw:
        items = _field(raw, "prompts", "list", where)
        if not items:
            raise WorkspaceError(f"{where}.prompts: expected at least one prompt (frames without prompts omit it)")
        base = _field(raw, "proposal", "object", where)
        obj.prompts[t] = [_prompt_from_json(p, t, f"{where}.prompts[{i}]") for i, p in enumerate(items)]
        obj.proposals[t] = MaskProposal(_mask_from_json(base.get("mask"), f"{where}.proposal.mask", size_hw),
                                        _origin_from_json(base.get("origin"), f"{where}.proposal.origin"))


@dataclass
class _Manifest:
    """A parsed ``workspace.json``."""

    revision: int
    identity: VideoIdentity
    video_name: str
    next_obj_id: int
    next_exp_id: int
    object_files: dict[int, str]
    expressions: dict[str, ExpressionEntry]


def _read_manifest(folder: Path) -> _Manifest:
    """Read and check ``folder/workspace.json``.

    Raises:
        FileNotFoundError: no manifest. WorkspaceError: malformed; the message names the field.
    """
    path = folder / WORKSPACE_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no workspace manifest; expected a folder written by "
                                "AnnotationSession.attach_workspace")
    raw, where = _read_json(path), str(path)
    if not isinstance(raw, dict) or raw.get("format") != _WORKSPACE_FORMAT:
        raise WorkspaceError(f"{where}: not an RVOS Workbench workspace "
                             f"(expected \"format\": \"{_WORKSPACE_FORMAT}\")")
    if raw.get("version") != _WORKSPACE_VERSION:
        raise WorkspaceError(f"{where}.version: {raw.get('version')!r}; "
                             f"this library reads version {_WORKSPACE_VERSION}")
    next_obj_id = _field(raw, "next_obj_id", "int", where)
    files = _manifest_objects(raw, where, next_obj_id)
    expressions, next_exp_id = _manifest_expressions(raw, where, files)
    identity = VideoIdentity.from_json(raw.get("video"), f"{where}.video")
    return _Manifest(_field(raw, "revision", "int", where), identity, _field(raw, "video_name", "str", where),
                     next_obj_id, next_exp_id, files, expressions)


def _manifest_objects(raw: dict, where: str, next_obj_id: int) -> dict[int, str]:
    """The manifest's ``objects``: obj_id → object file name."""
    files: dict[int, str] = {}
    for k, item in enumerate(_field(raw, "objects", "list", where)):
        at = f"{where}.objects[{k}]"
        obj_id, name = _field(item, "obj_id", "int", at), _field(item, "file", "str", at)
        match = _OBJECT_FILE.match(name)
        if match is None or int(match.group(1)) != obj_id or obj_id >= next_obj_id or obj_id in files:
            raise WorkspaceError(f"{at}: object {obj_id} with file {name!r}; expected a unique obj_id "
                                 f"< next_obj_id ({next_obj_id}) and a file named obj{obj_id}-r<revision>.json")
        files[obj_id] = name
    return files


def _manifest_expressions(raw: dict, where: str, files: dict[int, str]) -> tuple[dict[str, ExpressionEntry], int]:
    """The manifest's ``expressions`` (exp_id → entry) and ``next_exp_id``."""
    next_exp_id = _field(raw, "next_exp_id", "int", where)
    out: dict[str, ExpressionEntry] = {}
    for k, item in enumerate(_field(raw, "expressions", "list", where)):
        at = f"{where}.expressions[{k}]"
        exp_id, text = _field(item, "exp_id", "str", at), _field(item, "exp", "str", at)
        obj_ids = _field(item, "obj_id", "list", at)
        known = all(isinstance(i, int) and not isinstance(i, bool) and i in files for i in obj_ids)
        if not known or len(set(obj_ids)) != len(obj_ids) or not text.strip() or exp_id in out:
            raise WorkspaceError(f"{at}: expression {exp_id!r} ({text!r}) with obj_id {obj_ids}; expected a unique "
                                 "exp_id, non-empty text and distinct ids of the workspace's objects")
        if exp_id.isdigit() and int(exp_id) >= next_exp_id:
            raise WorkspaceError(f"{at}.exp_id: {exp_id!r}; expected below next_exp_id ({next_exp_id})")
        out[exp_id] = ExpressionEntry(exp_id, text, list(obj_ids))
    return out, next_exp_id


def _last_revision(folder: Path) -> int:
    """The highest revision in ``folder/objects`` file names (0 when none), so new names never collide."""
    objects = folder / _WORKSPACE_OBJECTS
    found = [_OBJECT_FILE.match(p.name) for p in objects.iterdir()] if objects.is_dir() else []
    return max((int(m.group(2)) for m in found if m), default=0)


class _Workspace:
    """The autosave target of one session: changed object files first, then the manifest (the commit).

    Keeps the objects as last saved (copies sharing the immutable masks), so a save compares each
    object with its saved copy (cheap: unchanged masks are the same objects) and rewrites only
    changed ones; RLE encodings are cached per :class:`CompactMask`.
    """

    def __init__(self, folder: Path, identity: VideoIdentity, revision: int,
                 saved: dict[int, tuple[TrackedObject, str]] | None = None) -> None:
        self.folder = folder
        self.identity = identity
        self.revision = revision
        self._saved: dict[int, tuple[TrackedObject, str]] = dict(saved or {})
        self._rle: weakref.WeakKeyDictionary[CompactMask, dict] = weakref.WeakKeyDictionary()

    def save(self, session: AnnotationSession) -> None:
        """Write the session's state: changed objects, then the manifest, then drop stale files."""
        revision = self.revision + 1
        saved: dict[int, tuple[TrackedObject, str]] = {}
        for obj_id, obj in session.state.objects.items():
            old = self._saved.get(obj_id)
            if old is not None and old[0] == obj:
                saved[obj_id] = old
            else:
                name = f"obj{obj_id}-r{revision}.json"
                _write_json(self.folder / _WORKSPACE_OBJECTS / name, _object_json(obj, self._rle_of))
                saved[obj_id] = (obj.copy(), name)
        _write_json(self.folder / WORKSPACE_MANIFEST, self._manifest(session, revision, saved))
        self.revision, self._saved = revision, saved
        self.remove_stale_files()

    def _manifest(self, session: AnnotationSession, revision: int,
                  saved: dict[int, tuple[TrackedObject, str]]) -> dict[str, Any]:
        st = session.state
        return {
            "format": _WORKSPACE_FORMAT, "version": _WORKSPACE_VERSION, "revision": revision,
            "video": self.identity.to_json(), "video_name": session.video_name,
            "next_obj_id": st.next_obj_id, "next_exp_id": st.next_exp_id,
            "objects": [{"obj_id": i, "file": saved[i][1]} for i in st.objects],
            "expressions": [{"exp_id": e.exp_id, "exp": e.text, "obj_id": list(e.obj_ids)}
                            for e in st.expressions.values()],
        }

    def _rle_of(self, mask: CompactMask | None) -> dict | None:
        from rvos_core.masks import mask_to_rle

        if mask is None:
            return None
        rle = self._rle.get(mask)
        if rle is None:
            rle = self._rle[mask] = mask_to_rle(mask.decode())
        return rle

    def remove_stale_files(self) -> None:
        """Delete object files the manifest does not name and temp files left by a crash (best effort)."""
        keep = {name for _, name in self._saved.values()}
        objects = self.folder / _WORKSPACE_OBJECTS
        candidates = [*objects.iterdir()] if objects.is_dir() else []
        candidates += [p for p in self.folder.iterdir() if p.name.startswith(f".{WORKSPACE_MANIFEST}.tmp-")]
        for p in candidates:
            stale = _OBJECT_FILE.match(p.name) is not None and p.name not in keep
            if stale or (_TEMP_FILE.match(p.name) is not None and p.is_file()):
                try:
                    p.unlink()
                except OSError:
                    pass  # a leftover is harmless: the manifest never names it
