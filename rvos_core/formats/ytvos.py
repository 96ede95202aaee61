"""Ref-YouTube-VOS split layout: a lazy reader (folder or zip) and an atomic writer.

Layout (Ref-YouTube-VOS: Seo et al., "URVOS: Unified Referring Video Object Segmentation Network
with a Large-Scale Benchmark", ECCV 2020; files as distributed for the Ref-YouTube-VOS challenge on
top of YouTube-VOS 2019)::

    SPLIT/                                  e.g. train/ or valid/
      JPEGImages/<video>/<frame>.jpg
      Annotations/<video>/<frame>.png       palette PNG, pixel value = object id, 0 = background
                                            (train only; the valid masks are not public)
      meta.json                             optional: {"videos": {VIDEO: {"objects": {"1": {
                                                "category": str, "frames": ["00000", ...]}}}}}
      meta_expressions.json                 {"videos": {VIDEO: {"expressions": {"0": {"exp": str,
                                                "obj_id": "1"}, ...}, "frames": ["00000", ...]}}}

The official download keeps the expressions apart, in ``meta_expressions/<split>/meta_expressions.json``
beside the split folder; :func:`read_ytvos_split` looks there too, or takes the file explicitly.
Frame names are the file stems (Ref-YouTube-VOS: every 5th frame of the 30 fps video, ``00000``,
``00005``, ...; see the shared clip ``refytvos_0c04834d61_truck``).

``obj_id`` spelling. Ref-YouTube-VOS stores one palette id as a *string* (``"obj_id": "1"``); the
``valid`` split has no ``obj_id`` at all. MeViS processed into this layout (SOC / SOC++, seed 002,
which trains on MeViS "in the same format as Ref-YouTubeVOS") refers to several objects per
expression, so the field may also be a *list* (``["1", "3"]``). The reader accepts a digit string,
an int, or a list of either, and always returns a list of ints (palette ids 1..255; empty when the
field is absent). The writer writes a string for one object, a list of strings for several, and
leaves the field out for none. Other expression fields (e.g. MeViS ``anno_id`` / ``kind`` kept by
:mod:`rvos_core.formats.convert`) are preserved verbatim in :attr:`YtvosExpression.extra`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rvos_core.formats.davis import annotation_ids
from rvos_core.formats.mevis import (
    _atomic_dir,
    _check_name,
    _check_video_names,
    _decode_jpeg,
    _dump_json,
    _expressions_field,
    _FolderStore,
    _frame_jpeg,
    _frame_list,
    _indexed_source,
    _is_digits,
    _jpeg_size,
    _load_json,
    _natural_key,
    _open_store,
    _parse_json,
    _short,
    _videos_field,
    _write_entry,
    _ZipStore,
)

META_EXPRESSIONS_FILE = "meta_expressions.json"
META_FILE = "meta.json"
FRAMES_DIR = "JPEGImages"
ANNOTATIONS_DIR = "Annotations"


class YtvosFormatError(ValueError):
    """A Ref-YouTube-VOS-layout file is malformed; the message names the file, the field and the value."""


@dataclass
class YtvosExpression:
    """One referring expression of a video.

    Attributes:
        exp: the expression text.
        obj_id: palette ids (1..255) of the referred objects in ``Annotations/<video>/*.png``; one
            for Ref-YouTube-VOS, several for multi-object (MeViS) expressions, empty when unknown.
        extra: any other fields of the expression, kept in order and written back verbatim.
    """

    exp: str
    obj_id: list[int]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class YtvosObject:
    """One object of ``meta.json``.

    Attributes:
        category: YouTube-VOS category name (e.g. ``"truck"``), or ``None`` when not given.
        frames: names of the frames the object appears on.
        extra: any other fields, kept verbatim.
    """

    category: str | None
    frames: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class YtvosVideo:
    """One video to write.

    Attributes:
        frame_names: frame names without extension.
        frames: a sequence, or a callable ``i -> frame`` called once per frame in order, of
            ``(H, W, 3)`` uint8 RGB arrays (encoded as JPEG) or ``bytes`` of an encoded JPEG
            (written verbatim).
        expressions: expression id (``"0"``, ...) → :class:`YtvosExpression`.
        annotations: ``None`` (no ``Annotations/<video>/``), or a sequence / callable ``i -> ids``
            giving per frame ``(H, W)`` integer object ids in 0..255 at the frame size, or ``None``
            for a frame without an annotation PNG. A callable is called once per frame, in order,
            right after that frame.
        objects: ``meta.json`` entry: palette id → :class:`YtvosObject`; or a zero-argument callable
            returning it, called after all frames and annotations of the video were produced (so a
            generator can fill the frame lists as it goes); ``None`` leaves the video out of ``meta.json``.
    """

    frame_names: list[str]
    frames: Sequence[Any] | Callable[[int], Any]
    expressions: dict[str, YtvosExpression]
    annotations: Sequence[np.ndarray | None] | Callable[[int], np.ndarray | None] | None = None
    objects: Mapping[int, YtvosObject] | Callable[[], Mapping[int, YtvosObject]] | None = None


# ----------------------------------------------------------------------------------------------
# parsing
# ----------------------------------------------------------------------------------------------

def _palette_id(v: object, where: str) -> int:
    if isinstance(v, str) and _is_digits(v):
        n = int(v)
    elif isinstance(v, int) and not isinstance(v, bool):
        n = v
    else:
        raise YtvosFormatError(f"{where}: expected a palette id such as \"1\" (or a list of them), got {_short(v)}")
    if not 1 <= n <= 255:
        raise YtvosFormatError(f"{where}: palette id {n} outside 1..255 (0 is the background)")
    return n


def _parse_obj_ids(value: object, where: str) -> list[int]:
    """``"1"`` / ``1`` / ``["1", "3"]`` → ``[1]`` / ``[1]`` / ``[1, 3]``."""
    ids = [_palette_id(v, where) for v in (value if isinstance(value, list) else [value])]
    if len(set(ids)) != len(ids):
        raise YtvosFormatError(f"{where}: palette ids {ids} contain duplicates")
    return ids


def _parse_expression(raw: object, where: str) -> YtvosExpression:
    if not isinstance(raw, dict):
        raise YtvosFormatError(f"{where}: expected an object, got {_short(raw)}")
    exp = raw.get("exp")
    if not isinstance(exp, str):
        raise YtvosFormatError(f"{where}.exp: expected a string, got {_short(exp)}")
    obj_id = _parse_obj_ids(raw["obj_id"], f"{where}.obj_id") if "obj_id" in raw else []
    extra = {k: v for k, v in raw.items() if k not in ("exp", "obj_id")}
    return YtvosExpression(exp=exp, obj_id=obj_id, extra=extra)


def _parse_meta_expressions(obj: object, where: str) -> dict[str, tuple[list[str], dict[str, YtvosExpression]]]:
    out = {}
    for name, raw in _videos_field(obj, where, YtvosFormatError).items():
        at = f"{where}: videos[{name!r}]"
        if not isinstance(raw, dict):
            raise YtvosFormatError(f"{at}: expected an object, got {_short(raw)}")
        frames = _frame_list(raw.get("frames"), f"{at}.frames", YtvosFormatError)
        exps = _expressions_field(raw.get("expressions"), f"{at}.expressions", YtvosFormatError)
        out[name] = (frames, {k: _parse_expression(exps[k], f"{at}.expressions[{k!r}]")
                              for k in sorted(exps, key=_natural_key)})
    return out


def _parse_object(raw: object, where: str) -> YtvosObject:
    if not isinstance(raw, dict):
        raise YtvosFormatError(f"{where}: expected an object, got {_short(raw)}")
    category = raw.get("category")
    if category is not None and not isinstance(category, str):
        raise YtvosFormatError(f"{where}.category: expected a string, got {_short(category)}")
    frames = _frame_list(raw.get("frames", []), f"{where}.frames", YtvosFormatError)
    extra = {k: v for k, v in raw.items() if k not in ("category", "frames")}
    return YtvosObject(category=category, frames=frames, extra=extra)


def _parse_meta(obj: object, where: str) -> dict[str, dict[int, YtvosObject]]:
    out: dict[str, dict[int, YtvosObject]] = {}
    for name, raw in _videos_field(obj, where, YtvosFormatError).items():
        at = f"{where}: videos[{name!r}]"
        objects = raw.get("objects") if isinstance(raw, dict) else None
        if not isinstance(objects, dict):
            raise YtvosFormatError(f"{at}.objects: expected an object of palette id → object, got {_short(objects)}")
        parsed = {_palette_id(k, f"{at}.objects key"): _parse_object(v, f"{at}.objects[{k!r}]")
                  for k, v in objects.items()}
        out[name] = dict(sorted(parsed.items()))
    return out


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------

class YtvosSplit:
    """A Ref-YouTube-VOS-layout split opened for reading (folder or zip); frames and annotation
    PNGs are read only when asked for. Use :func:`read_ytvos_split`; usable as a context manager.

    Attributes:
        path: the folder or zip that was opened.
        videos: video names, in ``meta_expressions.json`` order.
        has_annotations: whether an ``Annotations/`` folder is present.
        has_meta: whether ``meta.json`` is present.
    """

    def __init__(self, path: Path, store: _FolderStore | _ZipStore, meta_expressions: tuple[Any, str]) -> None:
        self.path = path
        self._store = store
        obj, self._meta_where = meta_expressions
        self._exps = _parse_meta_expressions(obj, self._meta_where)
        self.videos: list[str] = list(self._exps)
        self.has_meta = store.exists(META_FILE)
        self._objects = (_parse_meta(_load_json(store, META_FILE, YtvosFormatError), store.describe(META_FILE))
                         if self.has_meta else {})
        self.has_annotations = store.has_dir(ANNOTATIONS_DIR)
        self._sizes: dict[str, tuple[int, int] | None] = {}

    def close(self) -> None:
        """Release the underlying zip file (no-op for folders)."""
        self._store.close()

    def __enter__(self) -> YtvosSplit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata ------------------------------------------------------------------------------
    def _video(self, video: str) -> tuple[list[str], dict[str, YtvosExpression]]:
        if video not in self._exps:
            raise KeyError(f"video {video!r} is not in {self._meta_where}")
        return self._exps[video]

    def frame_names(self, video: str) -> list[str]:
        """Frame names of ``video`` (without extension) in ``"frames"`` order. Raises KeyError."""
        return list(self._video(video)[0])

    def expressions(self, video: str) -> dict[str, YtvosExpression]:
        """Expression id → :class:`YtvosExpression`, ids in natural order. Raises KeyError."""
        return dict(self._video(video)[1])

    def objects(self, video: str) -> dict[int, YtvosObject]:
        """Palette id → :class:`YtvosObject` from ``meta.json`` (ascending; empty without ``meta.json``
        or when the video is not listed there). Raises KeyError for an unknown video."""
        self._video(video)
        return dict(self._objects.get(video, {}))

    # -- frames --------------------------------------------------------------------------------
    def _rel(self, folder: str, video: str, index: int, ext: str) -> str:
        names = self._video(video)[0]
        if not 0 <= index < len(names):
            raise IndexError(f"video {video!r}: frame index {index} out of range 0..{len(names) - 1}")
        return f"{folder}/{video}/{names[index]}{ext}"

    def frame_bytes(self, video: str, index: int) -> bytes:
        """The stored JPEG of frame ``index``, unchanged. Raises KeyError, IndexError, FileNotFoundError."""
        return self._store.read(self._rel(FRAMES_DIR, video, index, ".jpg"))

    def frame(self, video: str, index: int) -> np.ndarray:
        """Frame ``index`` of ``video`` as ``(H, W, 3)`` uint8 RGB.

        Raises:
            KeyError, IndexError, FileNotFoundError: unknown video, bad index, missing JPEG.
            YtvosFormatError: the JPEG does not decode.
        """
        rel = self._rel(FRAMES_DIR, video, index, ".jpg")
        return _decode_jpeg(self._store.read(rel), self._store.describe(rel), YtvosFormatError)

    def frame_size(self, video: str) -> tuple[int, int] | None:
        """``(H, W)`` from the header of the video's first JPEG, or ``None`` when that JPEG is missing."""
        if video not in self._sizes:
            rel = self._rel(FRAMES_DIR, video, 0, ".jpg")
            self._sizes[video] = (_jpeg_size(self._store.read(rel), self._store.describe(rel), YtvosFormatError)
                                  if self._store.exists(rel) else None)
        return self._sizes[video]

    # -- annotations ---------------------------------------------------------------------------
    def annotation(self, video: str, index: int) -> np.ndarray | None:
        """Object ids of frame ``index``: ``(H, W)`` uint8 (0 background), or ``None`` when the
        frame has no annotation PNG (e.g. a ``valid`` split, or an unannotated frame).

        Raises:
            KeyError, IndexError: unknown video, bad index.
            YtvosFormatError: not a palette/greyscale PNG (e.g. RGB), or a size other than the frame's.
        """
        rel = self._rel(ANNOTATIONS_DIR, video, index, ".png")
        if not self._store.exists(rel):
            return None
        where = self._store.describe(rel)
        try:
            ids, _ = annotation_ids(self._store.read(rel), where)
        except ValueError as e:
            raise YtvosFormatError(str(e)) from None
        size = self.frame_size(video)
        if size is not None and ids.shape != size:
            raise YtvosFormatError(f"{where}: size {list(ids.shape)} (H, W), expected the frame size {list(size)}")
        return ids

    def object_masks(self, video: str, obj_id: int) -> list[np.ndarray | None]:
        """One object's masks: per frame ``(H, W)`` bool (``annotation == obj_id``), ``None`` where
        the frame has no annotation PNG. Raises as :meth:`annotation`."""
        out: list[np.ndarray | None] = []
        for i in range(len(self._video(video)[0])):
            ids = self.annotation(video, i)
            out.append(None if ids is None else ids == int(obj_id))
        return out

    def expression_masks(self, video: str, exp_id: str) -> np.ndarray:
        """Ground truth of one expression: ``(T, H, W)`` bool, the union of its objects' masks.

        Raises:
            KeyError: unknown video or expression id.
            YtvosFormatError: the expression has no ``obj_id`` (e.g. the ``valid`` split), or as
                :meth:`annotation`.
            FileNotFoundError: a frame has no annotation PNG (unannotated is not the same as empty).
        """
        names, exps = self._video(video)
        if exp_id not in exps:
            raise KeyError(f"video {video!r}: expression id {exp_id!r} not in {self._meta_where}")
        ids_wanted = exps[exp_id].obj_id
        if not ids_wanted:
            raise YtvosFormatError(f"{self._meta_where}: videos[{video!r}].expressions[{exp_id!r}] has no obj_id")
        frames = []
        for i, name in enumerate(names):
            ids = self.annotation(video, i)
            if ids is None:
                rel = f"{ANNOTATIONS_DIR}/{video}/{name}.png"
                raise FileNotFoundError(f"{self._store.describe(rel)}: no annotation PNG for this frame")
            frames.append(np.isin(ids, ids_wanted))
        return np.stack(frames)


def _find_meta_expressions(p: Path, store: _FolderStore | _ZipStore,
                           explicit: str | os.PathLike | None) -> tuple[Any, str]:
    """Load ``meta_expressions.json``: the explicit file, else the split root, else (folders) the
    official ``../meta_expressions/<split>/meta_expressions.json``. Returns ``(json, description)``."""
    if explicit is not None:
        f = Path(explicit)
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such meta_expressions file")
        return _parse_json(f.read_bytes(), str(f), YtvosFormatError), str(f)
    if store.exists(META_EXPRESSIONS_FILE):
        return _load_json(store, META_EXPRESSIONS_FILE, YtvosFormatError), store.describe(META_EXPRESSIONS_FILE)
    tried = [store.describe(META_EXPRESSIONS_FILE)]
    if p.is_dir():
        official = p.parent / "meta_expressions" / p.name / META_EXPRESSIONS_FILE
        if official.is_file():
            return _parse_json(official.read_bytes(), str(official), YtvosFormatError), str(official)
        tried.append(str(official))
    raise FileNotFoundError(f"no {META_EXPRESSIONS_FILE} found (not a Ref-YouTube-VOS-layout split?); "
                            f"tried {', '.join(tried)}")


def read_ytvos_split(path: str | os.PathLike, meta_expressions: str | os.PathLike | None = None) -> YtvosSplit:
    """Open a Ref-YouTube-VOS-layout split (a folder or a ``.zip``) and validate its JSON files.

    In a zip the split may sit at the root or in one top folder (found from ``meta_expressions.json``
    or ``JPEGImages/``). Frames and annotation PNGs are read only when asked for.

    Args:
        path: the split folder (``train/``, ``valid/``) or a zip of it.
        meta_expressions: the expressions file, when it is not ``SPLIT/meta_expressions.json`` or the
            official ``SPLIT/../meta_expressions/<split>/meta_expressions.json``.

    Raises:
        FileNotFoundError: ``path`` or the expressions file does not exist.
        YtvosFormatError: malformed JSON or fields (the message names the file, field and value), a
            file that is not a zip, or a zip with absolute / ``..`` entry names.
    """
    p = Path(path)
    store = _open_store(p, (META_EXPRESSIONS_FILE, f"{FRAMES_DIR}/"), YtvosFormatError)
    try:
        return YtvosSplit(p, store, _find_meta_expressions(p, store, meta_expressions))
    except BaseException:
        store.close()
        raise


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------

def _obj_id_json(ids: list[int]) -> str | list[str]:
    """One id → ``"1"`` (Ref-YouTube-VOS spelling); several → ``["1", "3"]``."""
    return str(ids[0]) if len(ids) == 1 else [str(i) for i in ids]


def _expression_json(e: YtvosExpression, where: str) -> dict[str, Any]:
    if not isinstance(e, YtvosExpression):
        raise ValueError(f"{where}: expected a YtvosExpression, got {type(e).__name__}")
    if not isinstance(e.exp, str):
        raise ValueError(f"{where}.exp: expected str, got {e.exp!r}")
    clash = [k for k in e.extra if k in ("exp", "obj_id")]
    if clash:
        raise ValueError(f"{where}.extra: must not hold {clash} (they are fields of the expression)")
    try:
        ids = _parse_obj_ids(list(e.obj_id), f"{where}.obj_id") if e.obj_id else []
    except YtvosFormatError as err:
        raise ValueError(str(err)) from None
    out: dict[str, Any] = {"exp": e.exp}
    if ids:
        out["obj_id"] = _obj_id_json(ids)
    out.update(e.extra)
    return out


def _objects_json(objects: Mapping[int, YtvosObject], frame_names: list[str], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    known = set(frame_names)
    for key in sorted(objects):
        o = objects[key]
        try:
            pid = _palette_id(key, f"{where} key")
        except YtvosFormatError as err:
            raise ValueError(str(err)) from None
        if not isinstance(o, YtvosObject) or not (o.category is None or isinstance(o.category, str)):
            raise ValueError(f"{where}[{pid}]: expected a YtvosObject with a str or None category, got {o!r}")
        unknown = [f for f in o.frames if f not in known]
        if unknown:
            raise ValueError(f"{where}[{pid}].frames: {unknown[:3]} are not frames of the video")
        entry: dict[str, Any] = {} if o.category is None else {"category": o.category}
        entry["frames"] = list(o.frames)
        entry.update(o.extra)
        out[str(pid)] = entry
    return out


def _check_video(name: str, video: YtvosVideo) -> None:
    _check_name(name, "video name")
    if not isinstance(video, YtvosVideo):
        raise ValueError(f"video {name!r}: expected a YtvosVideo, got {type(video).__name__}")
    _check_video_names(name, video.frame_names, video.expressions)


def _write_annotation(tmp: Path, rel: str, ids: object, size: tuple[int, int], where: str) -> None:
    from rvos_core.masks import write_palette_png

    arr = np.asarray(ids)
    if arr.shape != size:
        raise ValueError(f"{where}: annotation shape {arr.shape}, expected the frame size {size}")
    try:
        write_palette_png(tmp / rel, arr)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _write_video(tmp: Path, name: str, video: YtvosVideo, jpeg_quality: int) -> tuple[dict, dict | None]:
    """Write one video's frames and annotations under ``tmp``; return its meta_expressions and
    meta.json entries (the latter ``None`` when the video has no objects)."""
    _check_video(name, video)
    n = len(video.frame_names)
    get_frame = _indexed_source(video.frames, n, "frames", f"video {name!r}")
    get_ids = (None if video.annotations is None
               else _indexed_source(video.annotations, n, "annotations", f"video {name!r}"))
    size: tuple[int, int] | None = None
    for i, fname in enumerate(video.frame_names):
        where = f"video {name!r} frame {fname!r}"
        data, hw = _frame_jpeg(get_frame(i), jpeg_quality, where)
        if size is not None and hw != size:
            raise ValueError(f"{where}: size {hw} differs from the first frame {size}")
        size = hw
        _write_entry(tmp, f"{FRAMES_DIR}/{name}/{fname}.jpg", data)
        ids = get_ids(i) if get_ids is not None else None
        if ids is not None:
            _write_annotation(tmp, f"{ANNOTATIONS_DIR}/{name}/{fname}.png", ids, hw, where)
    exps = {k: _expression_json(video.expressions[k], f"video {name!r} expression {k!r}")
            for k in sorted(video.expressions, key=_natural_key)}
    objects = video.objects() if callable(video.objects) else video.objects
    if objects is None:
        return {"expressions": exps, "frames": list(video.frame_names)}, None
    objs = _objects_json(objects, list(video.frame_names), f"video {name!r} objects")
    missing = sorted({i for e in video.expressions.values() for i in e.obj_id} - {int(k) for k in objs})
    if missing:
        raise ValueError(f"video {name!r}: expressions refer to palette ids {missing} that objects does not list")
    return {"expressions": exps, "frames": list(video.frame_names)}, {"objects": objs}


def write_ytvos_split(out_dir: str | os.PathLike, videos: Mapping[str, YtvosVideo], jpeg_quality: int = 95,
                      progress: bool = False, overwrite: bool = False) -> Path:
    """Write videos as a Ref-YouTube-VOS-layout split folder, atomically.

    Writes ``JPEGImages/<video>/<frame>.jpg`` (arrays: OpenCV baseline JPEG, 4:4:4, ``jpeg_quality``;
    bytes: verbatim), ``Annotations/<video>/<frame>.png`` (palette PNGs via
    :func:`rvos_core.masks.write_palette_png`) where given, ``meta_expressions.json`` (inside the
    split, the layout MeViS-in-Ref-YouTube-VOS code reads) and ``meta.json`` when any video has
    ``objects``. Videos and expressions in natural order, objects by id: the same input gives
    byte-identical files. The split is built in a temporary folder beside ``out_dir`` and renamed
    into place; a failure leaves nothing behind.

    Args:
        out_dir: destination folder; must not exist or be empty unless ``overwrite``.
        videos: video name → :class:`YtvosVideo`; each value is fetched once.
        jpeg_quality: 1..100 (for frames given as arrays).
        progress: show a tqdm bar.
        overwrite: replace an existing non-empty ``out_dir``.

    Returns:
        ``Path(out_dir)``.

    Raises:
        FileExistsError: ``out_dir`` exists, is not empty (or is a file) and ``overwrite`` is false.
        ValueError: malformed videos: names, frame shapes/sizes, annotation shape/values, obj_id
            outside 1..255, object frames that are not frames of the video, expressions referring to
            ids ``objects`` does not list.
    """
    from tqdm import tqdm

    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality: expected 1..100, got {jpeg_quality!r}")
    out = Path(out_dir)
    with _atomic_dir(out, overwrite) as tmp:
        meta_exps: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        names = sorted(videos.keys(), key=_natural_key)
        for name in tqdm(names, desc="write Ref-YouTube-VOS split", disable=not progress, unit="video"):
            meta_exps[name], objects = _write_video(tmp, name, videos[name], jpeg_quality)
            if objects is not None:
                meta[name] = objects
        (tmp / FRAMES_DIR).mkdir(exist_ok=True)
        (tmp / META_EXPRESSIONS_FILE).write_bytes(_dump_json({"videos": meta_exps}))
        if meta:
            (tmp / META_FILE).write_bytes(_dump_json({"videos": meta}))
    return out


__all__ = [
    "YtvosFormatError", "YtvosExpression", "YtvosObject", "YtvosVideo", "YtvosSplit",
    "read_ytvos_split", "write_ytvos_split",
    "META_EXPRESSIONS_FILE", "META_FILE", "FRAMES_DIR", "ANNOTATIONS_DIR",
]
