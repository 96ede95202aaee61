"""MeViS dataset layout: reader and writers (folder or zip) and the prediction PNG layout.

Layout (MeViS, Ding et al., "MeViS: A Large-scale Benchmark for Video Segmentation with Motion
Expressions", ICCV 2023; splits ``train`` / ``valid_u`` / ``valid`` as used by the 2nd-place PVUW 2024
MeViS entry, seed 003)::

    SPLIT/
      JPEGImages/<video>/<frame>.jpg
      meta_expressions.json   {"videos": {VIDEO: {"expressions": {"0": {"exp": str, "obj_id": [int],
                                                                    "anno_id": [int]}, ...},
                                                  "frames": ["00000", ...]}}}
      mask_dict.json          {ANNO_ID: [RLE or null, one per frame in "frames" order]}
                              (absent in the server-scored ``valid`` split)

RLE is pycocotools *compressed* RLE ``{"size": [H, W], "counts": str}`` (column-major, COCO).
``obj_id`` indexes objects within a video; ``anno_id`` keys ``mask_dict.json`` (as a string). A
multi-object expression's ground truth on a frame is the union of its objects' masks; ``null``
(object absent) is skipped. Our writers add an optional ``"kind"`` field per expression
(``"appearance"``, ``"motion"`` or ``"mixed"``, see :mod:`rvos_core.synthetic`).

Prediction layout (MeViS submission): ``<video>/<exp_id>/<frame>.png``, 8-bit greyscale, 0
background / 255 referred object(s), original frame size; in a zip, video folders at the root.

All writers are byte-deterministic (fixed key order, fixed JPEG encoder settings, fixed zip entry
metadata) and atomic (a temporary sibling is built, then renamed into place). Frames given as
encoded JPEG bytes are written verbatim (lossless copies between layouts).

Reading validates the JSON files at once and names file, field and value in every
:class:`MevisFormatError`: invalid JSON / UTF-8, missing or ill-typed fields, duplicate or unsafe
frame / video names, ids that are not non-negative ints, ``mask_dict.json`` lists whose length is not
the video's frame count, anno_ids with no ``mask_dict.json`` entry, and (when decoded) RLEs of
another size than the frame or with runs that do not add up. A zip with an absolute entry name or a
``..`` component is refused as a whole. Prediction PNGs are read (and their 0/255 greyscale format
checked) by :mod:`rvos_core.formats.predictions`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

META_FILE = "meta_expressions.json"
MASK_FILE = "mask_dict.json"
FRAMES_DIR = "JPEGImages"

#: Fixed timestamp of every zip entry (the earliest the zip format allows) → byte-identical zips.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


class MevisFormatError(ValueError):
    """A MeViS-layout file is malformed; the message names the file, the field and the bad value."""


@dataclass
class MevisExpression:
    """One referring expression of a video.

    Attributes:
        exp: the expression text.
        obj_id: object indices within the video (parallel to ``anno_id``); empty when unknown
            (the server-scored ``valid`` split carries no ids).
        anno_id: keys of ``mask_dict.json`` (ints), one per referred object.
        kind: optional ``"appearance"`` / ``"motion"`` / ``"mixed"`` (our extension; ``None`` if absent).
    """

    exp: str
    obj_id: list[int]
    anno_id: list[int]
    kind: str | None = None


@dataclass
class MevisVideo:
    """One video to write.

    Attributes:
        frame_names: frame names without extension, e.g. ``["00000", "00001", ...]``.
        frames: either a sequence (list or ``(T, H, W, 3)`` array) of ``(H, W, 3)`` uint8 RGB frames,
            or a callable ``i -> (H, W, 3) uint8 RGB`` (called once per frame, in order). An item
            may also be ``bytes`` of an already encoded JPEG: it is written verbatim (no
            re-encoding; used by :mod:`rvos_core.formats.convert` to copy frames losslessly).
        expressions: expression id (a string such as ``"0"``) → :class:`MevisExpression`.
        masks: anno_id → one ``(H, W)`` mask per frame (bool, or 0/non-zero) or ``None`` where the
            object is absent. May be empty when no ``mask_dict.json`` is written.
    """

    frame_names: list[str]
    frames: Sequence[np.ndarray] | Callable[[int], np.ndarray]
    expressions: dict[str, MevisExpression]
    masks: dict[int, list[np.ndarray | None]]


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------

def _natural_key(name: str) -> list[Any]:
    """Sort key that orders ``"2"`` before ``"10"`` (digit runs compared as numbers)."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def _check_name(name: object, what: str) -> str:
    """A video / frame / expression name must be a plain path component."""
    if not _plain_name(name):
        raise ValueError(f"{what}: expected a non-empty name without path separators, got {name!r}")
    return name


def _encode_jpeg(frame: np.ndarray, quality: int, where: str) -> bytes:
    """``(H, W, 3)`` uint8 RGB → JPEG bytes with fixed settings (baseline, 4:4:4, no optimisation)."""
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"{where}: expected an (H, W, 3) uint8 RGB frame, got shape {arr.shape} dtype {arr.dtype}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality), cv2.IMWRITE_JPEG_OPTIMIZE, 0,
              cv2.IMWRITE_JPEG_PROGRESSIVE, 0,
              cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(arr[..., ::-1]), params)
    if not ok:
        raise ValueError(f"{where}: OpenCV could not encode the frame as JPEG")
    return buf.tobytes()


def _jpeg_size(data: bytes, where: str, error: type[ValueError] = ValueError) -> tuple[int, int]:
    """``(H, W)`` of encoded JPEG ``data`` as :func:`_decode_jpeg` returns it, read from the header
    (no full decode): an EXIF orientation that turns the image by 90° (5–8) swaps H and W, as
    OpenCV's decoder applies it.

    Raises:
        error: ``data`` is not a JPEG.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, (w, h) = im.format, im.size
            turned = im.getexif().get(0x0112) in (5, 6, 7, 8)  # 0x0112: EXIF Orientation
    except (UnidentifiedImageError, OSError) as e:
        raise error(f"{where}: not a readable image ({e}); expected an encoded JPEG") from None
    if fmt != "JPEG":
        raise error(f"{where}: a {fmt} image; expected an encoded JPEG")
    return (int(w), int(h)) if turned else (int(h), int(w))


def _frame_jpeg(frame: object, quality: int, where: str) -> tuple[bytes, tuple[int, int]]:
    """A frame to write → ``(JPEG bytes, (H, W))``: encoded JPEG ``bytes`` pass through unchanged,
    an ``(H, W, 3)`` uint8 RGB array is encoded with :func:`_encode_jpeg`."""
    if isinstance(frame, (bytes, bytearray, memoryview)):
        data = bytes(frame)
        return data, _jpeg_size(data, where)
    arr = np.asarray(frame)
    data = _encode_jpeg(arr, quality, where)
    return data, (int(arr.shape[0]), int(arr.shape[1]))


def _decode_jpeg(data: bytes, where: str, error: type[ValueError] = MevisFormatError) -> np.ndarray:
    """JPEG bytes → ``(H, W, 3)`` uint8 RGB; ``error`` when they do not decode."""
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise error(f"{where}: not a readable JPEG image")
    return np.ascontiguousarray(img[..., ::-1])


def _dump_json(obj: Any) -> bytes:
    """Compact, ASCII-only JSON; key order is the (already deterministic) insertion order."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii")


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------

def _expression_json(exp_id: str, e: MevisExpression, where: str) -> dict[str, Any]:
    if not isinstance(e, MevisExpression):
        raise ValueError(f"{where}: expected a MevisExpression, got {type(e).__name__}")
    if not isinstance(e.exp, str):
        raise ValueError(f"{where}.exp: expected str, got {e.exp!r}")
    obj_id = [_as_int(v, f"{where}.obj_id") for v in e.obj_id]
    anno_id = [_as_int(v, f"{where}.anno_id") for v in e.anno_id]
    if len(obj_id) != len(anno_id):
        raise ValueError(f"{where}: obj_id {obj_id} and anno_id {anno_id} must have the same length")
    out: dict[str, Any] = {"exp": e.exp, "obj_id": obj_id, "anno_id": anno_id}
    if e.kind is not None:
        if not isinstance(e.kind, str):
            raise ValueError(f"{where}.kind: expected str or None, got {e.kind!r}")
        out["kind"] = e.kind
    return out


def _as_int(v: object, where: str) -> int:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
        raise ValueError(f"{where}: expected int, got {v!r}")
    return int(v)


def _indexed_source(items: Sequence[Any] | Callable[[int], Any], count: int, what: str,
                    where: str) -> Callable[[int], Any]:
    """A sequence of ``count`` items, or a callable ``i -> item``, as a callable ``i -> item``.

    Raises:
        ValueError: a sequence whose length is not ``count`` (message: ``where``, ``what``).
    """
    if callable(items):
        return items
    if len(items) != count:
        raise ValueError(f"{where}: {len(items)} {what} but {count} frame_names")
    return lambda i: items[i]


def _frame_source(video: MevisVideo, name: str) -> Callable[[int], np.ndarray]:
    return _indexed_source(video.frames, len(video.frame_names), "frames", f"video {name!r}")


def _encode_masks(name: str, video: MevisVideo, size: tuple[int, int]) -> dict[int, list[dict | None]]:
    """anno_id → list of RLE dicts / None for one video, checking lengths and sizes."""
    from rvos_core.masks import mask_to_rle

    out: dict[int, list[dict | None]] = {}
    t = len(video.frame_names)
    for anno, per_frame in video.masks.items():
        anno = _as_int(anno, f"video {name!r} masks key")
        if len(per_frame) != t:
            raise ValueError(f"video {name!r} anno_id {anno}: {len(per_frame)} masks but {t} frames")
        rles: list[dict | None] = []
        for i, m in enumerate(per_frame):
            if m is None:
                rles.append(None)
                continue
            arr = np.asarray(m)
            if arr.shape != size:
                raise ValueError(f"video {name!r} anno_id {anno} frame {i}: mask shape {arr.shape}, "
                                 f"expected the frame size {size}")
            rle = mask_to_rle(arr != 0)
            rles.append({"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"]})
        out[anno] = rles
    return out


def _check_video_names(name: str, frame_names: Sequence[str], exp_ids: Iterable[str]) -> None:
    """Frame and expression names of video ``name`` (to write) are plain, frames unique and non-empty.

    Raises:
        ValueError: naming the video and the bad name.
    """
    if not frame_names:
        raise ValueError(f"video {name!r}: frame_names is empty")
    for f in frame_names:
        _check_name(f, f"video {name!r} frame name")
    if len(set(frame_names)) != len(frame_names):
        raise ValueError(f"video {name!r}: frame_names contain duplicates")
    for exp_id in exp_ids:
        _check_name(exp_id, f"video {name!r} expression id")


def _check_video(name: str, video: MevisVideo, with_masks: bool) -> None:
    _check_name(name, "video name")
    if not isinstance(video, MevisVideo):
        raise ValueError(f"video {name!r}: expected a MevisVideo, got {type(video).__name__}")
    _check_video_names(name, video.frame_names, video.expressions)
    for exp_id, e in video.expressions.items():
        if with_masks:
            missing = [a for a in e.anno_id if a not in video.masks]
            if missing:
                raise ValueError(f"video {name!r} expression {exp_id!r}: anno_id {missing} has no entry in masks")


def _iter_video_entries(videos: Mapping[str, MevisVideo], jpeg_quality: int, with_masks: bool,
                        progress: bool, meta: dict, mask_dict: dict) -> Iterable[tuple[str, bytes]]:
    """Yield ``(relative path, JPEG bytes)`` for every frame; fill ``meta`` / ``mask_dict`` as it goes.

    Each video is fetched from ``videos`` exactly once (lazy mappings generate on access).
    """
    from tqdm import tqdm

    if not 1 <= int(jpeg_quality) <= 100:
        raise ValueError(f"jpeg_quality: expected 1..100, got {jpeg_quality!r}")
    names = sorted(videos.keys(), key=_natural_key)
    owner: dict[int, str] = {}
    for name in tqdm(names, desc="write MeViS split", disable=not progress, unit="video"):
        video = videos[name]
        _check_video(name, video, with_masks)
        get = _frame_source(video, name)
        size: tuple[int, int] | None = None
        for i, fname in enumerate(video.frame_names):
            data, hw = _frame_jpeg(get(i), jpeg_quality, f"video {name!r} frame {fname!r}")
            if size is None:
                size = hw
            elif hw != size:
                raise ValueError(f"video {name!r} frame {fname!r}: size {hw} differs from the first frame {size}")
            yield f"{FRAMES_DIR}/{name}/{fname}.jpg", data
        exps = {k: _expression_json(k, video.expressions[k], f"video {name!r} expression {k!r}")
                for k in sorted(video.expressions, key=_natural_key)}
        meta[name] = {"expressions": exps, "frames": list(video.frame_names)}
        if with_masks and size is not None:  # size is set: frame_names is non-empty (checked above)
            for anno, rles in _encode_masks(name, video, size).items():
                if anno in owner:
                    raise ValueError(f"anno_id {anno} is used by videos {owner[anno]!r} and {name!r}; "
                                     "anno_id must be unique across the split")
                owner[anno] = name
                mask_dict[anno] = rles


def _json_payloads(meta: dict, mask_dict: dict, with_masks: bool) -> list[tuple[str, bytes]]:
    out = [(META_FILE, _dump_json({"videos": meta}))]
    if with_masks:
        out.append((MASK_FILE, _dump_json({str(a): mask_dict[a] for a in sorted(mask_dict)})))
    return out


def write_mevis_split(out_dir: str | os.PathLike, videos: Mapping[str, MevisVideo], jpeg_quality: int = 95,
                      progress: bool = False, overwrite: bool = False, with_masks: bool = True) -> Path:
    """Write videos as a MeViS-layout split folder.

    Writes ``JPEGImages/<video>/<frame>.jpg`` (OpenCV baseline JPEG, 4:4:4, ``jpeg_quality``),
    ``meta_expressions.json`` and, when ``with_masks``, ``mask_dict.json``. Videos are written in
    natural name order, expressions in natural id order, fields as ``exp, obj_id, anno_id[, kind]``,
    anno_ids in numeric order: the same input gives byte-identical files. The split is built in a
    temporary folder beside ``out_dir`` and renamed into place, so a failure leaves nothing behind.

    Args:
        out_dir: destination folder; must not exist or be empty unless ``overwrite``.
        videos: video name → :class:`MevisVideo`; each value is fetched once (a lazy mapping may
            generate it on access).
        jpeg_quality: 1..100.
        progress: show a tqdm bar.
        overwrite: replace an existing non-empty ``out_dir``.
        with_masks: write ``mask_dict.json`` (``False`` for a ``valid``-style split).

    Returns:
        ``Path(out_dir)``.

    Raises:
        FileExistsError: ``out_dir`` exists, is not empty (or is a file) and ``overwrite`` is false.
        ValueError: malformed videos (names, frame shapes/dtypes, mask sizes, list lengths, anno_id
            reused across videos, expression referring to an anno_id without masks).
    """
    out = Path(out_dir)
    with _atomic_dir(out, overwrite) as tmp:
        meta: dict[str, Any] = {}
        mask_dict: dict[int, Any] = {}
        for rel, data in _iter_video_entries(videos, jpeg_quality, with_masks, progress, meta, mask_dict):
            _write_entry(tmp, rel, data)
        (tmp / FRAMES_DIR).mkdir(exist_ok=True)
        for rel, data in _json_payloads(meta, mask_dict, with_masks):
            (tmp / rel).write_bytes(data)
    return out


def _write_entry(root: Path, rel: str, data: bytes) -> None:
    """Write ``data`` to ``root / rel``, creating parent folders."""
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@contextmanager
def _atomic_dir(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield an empty temp folder beside ``out``; on success it replaces ``out``, on error it is removed.

    Raises:
        FileExistsError: as :func:`_check_destination_dir` (checked before anything is written).
    """
    _check_destination_dir(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_destination_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: folder exists and is not empty (pass overwrite=True to replace it)")


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished temp folder to ``out``, replacing an existing ``out`` folder."""
    if not out.exists():
        os.rename(tmp, out)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.rename(out, trash / "old")
    os.rename(tmp, out)
    shutil.rmtree(trash, ignore_errors=True)


def _zip_info(name: str, compress: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = compress
    info.create_system = 3  # unix, fixed so the bytes do not depend on the platform
    info.external_attr = 0o644 << 16
    return info


def write_mevis_zip(zip_path: str | os.PathLike, videos: Mapping[str, MevisVideo], jpeg_quality: int = 95,
                    progress: bool = False, overwrite: bool = False, with_masks: bool = True) -> Path:
    """Write videos as a MeViS-layout split inside a zip (``JPEGImages/``, the JSON files at the zip root).

    Same content and determinism as :func:`write_mevis_split`; JPEGs are stored, JSON deflated, every
    entry has a fixed timestamp. Written to a temporary file beside ``zip_path`` and moved into place
    with ``os.replace``, so an error mid-write never leaves a partial zip.

    Raises:
        FileExistsError: ``zip_path`` exists and ``overwrite`` is false.
        ValueError: as :func:`write_mevis_split`.
    """
    dest = Path(zip_path)
    if dest.exists() and (dest.is_dir() or not overwrite):
        raise FileExistsError(f"{dest}: already exists (pass overwrite=True to replace a zip file)")
    from rvos_core.fileio import atomic_output_path

    with atomic_output_path(dest) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        meta: dict[str, Any] = {}
        mask_dict: dict[int, Any] = {}
        for rel, data in _iter_video_entries(videos, jpeg_quality, with_masks, progress, meta, mask_dict):
            zf.writestr(_zip_info(rel, zipfile.ZIP_STORED), data)
        for rel, data in _json_payloads(meta, mask_dict, with_masks):
            zf.writestr(_zip_info(rel, zipfile.ZIP_DEFLATED), data)
    return dest


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------

class _FolderStore:
    """Reads files of a split folder by relative path."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self, rel: str) -> str:
        return str(self.root / rel)

    def exists(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def has_dir(self, rel: str) -> bool:
        return (self.root / rel).is_dir()

    def read(self, rel: str) -> bytes:
        path = self.root / rel
        if not path.is_file():
            raise FileNotFoundError(f"{path}: file not found")
        return path.read_bytes()

    def close(self) -> None:
        pass


def _unsafe_zip_name(name: str) -> bool:
    """True for an entry name that could escape an extraction folder: absolute (``/x``, ``\\x``,
    ``C:x``) or with a ``..`` component (``/`` or ``\\`` separated)."""
    parts = re.split(r"[/\\]", name)
    return name.startswith(("/", "\\")) or bool(re.match(r"^[A-Za-z]:", name)) or ".." in parts


def _zip_prefix(names: Iterable[str], markers: Sequence[str]) -> str:
    """Folder prefix (``""`` or ``"top/"``…) of the shallowest entry matching a marker.

    A marker ending in ``/`` names a folder (matched anywhere in an entry's path), any other marker
    a file (matched as the last component).
    """
    found: list[str] = []
    for n in names:
        for m in markers:
            if m.endswith("/"):
                at = 0 if n.startswith(m) else (n.find("/" + m) + 1 if "/" + m in n else -1)
            else:
                at = 0 if n == m else (len(n) - len(m) if n.endswith("/" + m) else -1)
            if at >= 0:
                found.append(n[:at])
    return min(found, key=lambda f: (f.count("/"), f)) if found else ""


class _ZipStore:
    """Reads files of a split inside a zip; the split may sit at the root or in one top folder.

    The split root is the folder of the shallowest entry matching one of ``markers`` (default: the
    MeViS ``meta_expressions.json``). Entries with absolute paths or ``..`` components make the whole
    zip rejected (``error``) — a split never needs them and they signal a crafted archive.
    """

    def __init__(self, path: Path, markers: Sequence[str] = (META_FILE,),
                 error: type[ValueError] = MevisFormatError) -> None:
        self.path = path
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise error(f"{path}: not a readable zip file ({e})") from None
        names = self.zf.namelist()
        bad = next((n for n in names if _unsafe_zip_name(n)), None)
        if bad is not None:
            self.zf.close()
            raise error(f"{path}: zip entry {bad!r} has an absolute path or a '..' component; "
                        "refusing to read this zip")
        self.prefix = _zip_prefix(names, markers)
        self.names = set(names)

    def describe(self, rel: str) -> str:
        return f"{self.path}:{self.prefix}{rel}"

    def exists(self, rel: str) -> bool:
        return self.prefix + rel in self.names

    def has_dir(self, rel: str) -> bool:
        folder = self.prefix + rel.rstrip("/") + "/"
        return any(n.startswith(folder) for n in self.names)

    def read(self, rel: str) -> bytes:
        if not self.exists(rel):
            raise FileNotFoundError(f"{self.describe(rel)}: file not found in the zip")
        return self.zf.read(self.prefix + rel)

    def close(self) -> None:
        self.zf.close()


def _parse_json(data: bytes, where: str, error: type[ValueError] = MevisFormatError) -> Any:
    """Decode JSON ``data``; ``error`` naming ``where`` when it is not valid UTF-8 JSON."""
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise error(f"{where}: not valid JSON ({e})") from None


def _load_json(store: _FolderStore | _ZipStore, rel: str, error: type[ValueError] = MevisFormatError) -> Any:
    return _parse_json(store.read(rel), store.describe(rel), error)


def _is_digits(s: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts ``"²"``, which ``int`` rejects)."""
    return s.isascii() and s.isdigit()


def _id_list(value: object, where: str) -> list[int]:
    """A list of ints (MeViS files also spell ids as digit strings; both are accepted)."""
    if not isinstance(value, list):
        raise MevisFormatError(f"{where}: expected a list of ints, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
            out.append(v)
        elif isinstance(v, str) and _is_digits(v):
            out.append(int(v))
        else:
            raise MevisFormatError(f"{where}: expected a list of ints, got element {v!r}")
    return out


def _parse_expression(raw: object, where: str, needs_ids: bool) -> MevisExpression:
    if not isinstance(raw, dict):
        raise MevisFormatError(f"{where}: expected an object, got {raw!r}")
    exp = raw.get("exp")
    if not isinstance(exp, str):
        raise MevisFormatError(f"{where}.exp: expected a string, got {exp!r}")
    ids = {}
    for field in ("obj_id", "anno_id"):
        if field in raw:
            ids[field] = _id_list(raw[field], f"{where}.{field}")
        elif needs_ids:
            raise MevisFormatError(f"{where}.{field}: missing (required when {MASK_FILE} is present)")
        else:
            ids[field] = []
    if "obj_id" in raw and "anno_id" in raw and len(ids["obj_id"]) != len(ids["anno_id"]):
        raise MevisFormatError(f"{where}: obj_id {ids['obj_id']} and anno_id {ids['anno_id']} differ in length")
    kind = raw.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise MevisFormatError(f"{where}.kind: expected a string, got {kind!r}")
    return MevisExpression(exp=exp, obj_id=ids["obj_id"], anno_id=ids["anno_id"], kind=kind)


def _parse_video(raw: object, where: str, needs_ids: bool) -> tuple[list[str], dict[str, MevisExpression]]:
    if not isinstance(raw, dict):
        raise MevisFormatError(f"{where}: expected an object, got {raw!r}")
    frames = _frame_list(raw.get("frames"), f"{where}.frames")
    exps = _expressions_field(raw.get("expressions"), f"{where}.expressions")
    parsed = {str(k): _parse_expression(exps[k], f"{where}.expressions[{k!r}]", needs_ids)
              for k in sorted(exps, key=_natural_key)}
    return frames, parsed


def _frame_list(value: object, where: str, error: type[ValueError] = MevisFormatError) -> list[str]:
    """A ``"frames"`` field: a list of unique plain frame names; ``error`` naming ``where`` otherwise."""
    if not isinstance(value, list) or not all(_plain_name(f) for f in value):
        raise error(f"{where}: expected a list of frame-name strings, got {_short(value)}")
    if len(set(value)) != len(value):
        dup = next(f for f in value if value.count(f) > 1)
        raise error(f"{where}: frame name {dup!r} appears more than once")
    return list(value)


def _expressions_field(value: object, where: str, error: type[ValueError] = MevisFormatError) -> dict:
    """An ``"expressions"`` field: an object keyed by plain expression ids."""
    if not isinstance(value, dict):
        raise error(f"{where}: expected an object, got {_short(value)}")
    bad = next((k for k in value if not _plain_name(k)), None)
    if bad is not None:
        raise error(f"{where}: bad expression id {bad!r}")
    return value


def _videos_field(obj: object, where: str, error: type[ValueError] = MevisFormatError) -> dict[str, Any]:
    """The top-level ``{"videos": {VIDEO: ...}}`` object with plain video names."""
    if not isinstance(obj, dict) or not isinstance(obj.get("videos"), dict):
        got = obj.get("videos") if isinstance(obj, dict) else obj
        raise error(f"{where}: field 'videos': expected an object of videos, got {_short(got)}")
    bad = next((n for n in obj["videos"] if not _plain_name(n)), None)
    if bad is not None:
        raise error(f"{where}: videos: bad video name {bad!r}")
    return obj["videos"]


def _parse_meta(obj: object, where: str, needs_ids: bool) -> dict[str, tuple[list[str], dict[str, MevisExpression]]]:
    return {name: _parse_video(raw, f"{where}: videos[{name!r}]", needs_ids)
            for name, raw in _videos_field(obj, where).items()}


def _plain_name(name: object) -> bool:
    """A usable file-name component: a non-empty str, not ``.``/``..``, no ``/`` or ``\\``."""
    return (isinstance(name, str) and bool(name) and name not in (".", "..")
            and "/" not in name and "\\" not in name)


def _short(v: object, limit: int = 80) -> str:
    s = repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _check_rle(item: object, where: str) -> None:
    if item is None:
        return
    if not isinstance(item, dict):
        raise MevisFormatError(f"{where}: expected an RLE object or null, got {_short(item)}")
    size = item.get("size")
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise MevisFormatError(f"{where}.size: expected [H, W] positive ints, got {_short(size)}")
    if not isinstance(item.get("counts"), str):
        raise MevisFormatError(f"{where}.counts: expected a compressed-RLE string, got {_short(item.get('counts'))}")


def _parse_mask_dict(obj: object, where: str) -> dict[int, list]:
    if not isinstance(obj, dict):
        raise MevisFormatError(f"{where}: expected an object anno_id → list of RLE, got {_short(obj)}")
    out: dict[int, list] = {}
    for key, items in obj.items():
        if not _is_digits(key):
            raise MevisFormatError(f"{where}: key {key!r}: expected an anno_id (digits)")
        if not isinstance(items, list):
            raise MevisFormatError(f"{where}[{key!r}]: expected a list (one RLE or null per frame), got {_short(items)}")
        for i, item in enumerate(items):
            _check_rle(item, f"{where}[{key!r}][{i}]")
        out[int(key)] = items
    return out


class MevisSplit:
    """A MeViS-layout split opened for reading (folder or zip); frames and masks are decoded on demand.

    Use :func:`read_mevis_split` to open one. Usable as a context manager (closes the zip).

    Attributes:
        path: the folder or zip that was opened.
        videos: video names in file order.
        has_masks: whether ``mask_dict.json`` is present (``train`` / ``valid_u``; not ``valid``).
    """

    def __init__(self, path: Path, store: _FolderStore | _ZipStore) -> None:
        self.path = path
        self._store = store
        self.has_masks = store.exists(MASK_FILE)
        meta_where = store.describe(META_FILE)
        if not store.exists(META_FILE):
            raise FileNotFoundError(f"{meta_where}: not found (not a MeViS-layout split)")
        self._meta = _parse_meta(_load_json(store, META_FILE), meta_where, self.has_masks)
        self.videos: list[str] = list(self._meta)
        self._mask_dict: dict[int, list] = {}
        self._anno_video: dict[int, str] = {}
        if self.has_masks:
            self._mask_dict = _parse_mask_dict(_load_json(store, MASK_FILE), store.describe(MASK_FILE))
            self._link_annos()
        self._sizes: dict[str, tuple[int, int]] = {}

    def _link_annos(self) -> None:
        """Check every referenced anno_id exists and has one entry per frame of its video."""
        mask_where = self._store.describe(MASK_FILE)
        for video, (frames, exps) in self._meta.items():
            for exp_id, e in exps.items():
                for anno in e.anno_id:
                    if anno not in self._mask_dict:
                        raise MevisFormatError(f"{self._store.describe(META_FILE)}: videos[{video!r}].expressions"
                                               f"[{exp_id!r}].anno_id: {anno} has no entry in {mask_where}")
                    n = len(self._mask_dict[anno])
                    if n != len(frames):
                        raise MevisFormatError(f"{mask_where}[{str(anno)!r}]: {n} entries, but video {video!r} "
                                               f"has {len(frames)} frames")
                    self._anno_video.setdefault(anno, video)

    # -- context manager ---------------------------------------------------------------------
    def close(self) -> None:
        """Release the underlying zip file (no-op for folders)."""
        self._store.close()

    def __enter__(self) -> MevisSplit:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata ------------------------------------------------------------------------------
    def _video(self, video: str) -> tuple[list[str], dict[str, MevisExpression]]:
        if video not in self._meta:
            raise KeyError(f"video {video!r} is not in {self._store.describe(META_FILE)}")
        return self._meta[video]

    def frame_names(self, video: str) -> list[str]:
        """Frame names of ``video`` (without extension), in ``"frames"`` order. Raises KeyError."""
        return list(self._video(video)[0])

    def expressions(self, video: str) -> dict[str, MevisExpression]:
        """Expression id → :class:`MevisExpression` for ``video``, ids in natural order. Raises KeyError."""
        return dict(self._video(video)[1])

    # -- frames --------------------------------------------------------------------------------
    def frame(self, video: str, index: int) -> np.ndarray:
        """Frame ``index`` of ``video`` as ``(H, W, 3)`` uint8 RGB, read from ``JPEGImages``.

        Raises:
            KeyError: unknown video. IndexError: index out of range.
            FileNotFoundError: the JPEG is missing. MevisFormatError: the JPEG cannot be decoded.
        """
        rel = self._frame_rel(video, index)
        return _decode_jpeg(self._store.read(rel), self._store.describe(rel))

    def frame_bytes(self, video: str, index: int) -> bytes:
        """The encoded JPEG of frame ``index`` of ``video``, exactly as stored (for lossless copies).

        Raises:
            KeyError: unknown video. IndexError: index out of range. FileNotFoundError: the JPEG is missing.
        """
        return self._store.read(self._frame_rel(video, index))

    def _frame_rel(self, video: str, index: int) -> str:
        names = self._video(video)[0]
        if not 0 <= index < len(names):
            raise IndexError(f"video {video!r}: frame index {index} out of range 0..{len(names) - 1}")
        return f"{FRAMES_DIR}/{video}/{names[index]}.jpg"

    def frame_size(self, video: str) -> tuple[int, int]:
        """``(H, W)`` of ``video``: from its first JPEG when present, else from its first non-null RLE.

        Raises:
            MevisFormatError: neither a JPEG nor any RLE gives the size.
        """
        if video in self._sizes:
            return self._sizes[video]
        names, exps = self._video(video)
        size: tuple[int, int] | None = None
        first = f"{FRAMES_DIR}/{video}/{names[0]}.jpg" if names else ""
        if names and self._store.exists(first):
            size = _jpeg_size(self._store.read(first), self._store.describe(first), MevisFormatError)
        else:
            for e in exps.values():
                for anno in e.anno_id:
                    rle = next((r for r in self._mask_dict.get(anno, []) if r is not None), None)
                    if rle is not None:
                        size = (rle["size"][0], rle["size"][1])
                        break
                if size:
                    break
        if size is None:
            raise MevisFormatError(f"video {video!r}: no JPEG frame in {self._store.describe(FRAMES_DIR)} "
                                   "and no mask to take the frame size from")
        self._sizes[video] = size
        return size

    # -- masks ---------------------------------------------------------------------------------
    def _require_masks(self) -> None:
        if not self.has_masks:
            raise FileNotFoundError(f"{self._store.describe(MASK_FILE)}: this split has no masks")

    def object_masks(self, anno_id: int) -> list[np.ndarray | None]:
        """Masks of one object: a list, one per frame, of ``(H, W)`` bool or ``None`` where absent.

        Raises:
            FileNotFoundError: the split has no ``mask_dict.json``.
            KeyError: unknown anno_id.
            MevisFormatError: an RLE does not decode or its size differs from the video's frame size.
        """
        n = len(self._object_rles(anno_id))
        return [self.object_mask(anno_id, i) for i in range(n)]

    def object_mask(self, anno_id: int, index: int) -> np.ndarray | None:
        """Mask of one object on frame ``index``: ``(H, W)`` bool, or ``None`` where absent (``null``).

        Decodes a single RLE (use it instead of :meth:`object_masks` to keep memory per frame).

        Raises:
            FileNotFoundError, KeyError, MevisFormatError: as :meth:`object_masks`.
            IndexError: ``index`` outside the object's frame list.
        """
        from rvos_core.masks import rle_to_mask

        rles = self._object_rles(anno_id)
        anno = int(anno_id)
        if not 0 <= index < len(rles):
            raise IndexError(f"anno_id {anno}: frame index {index} out of range 0..{len(rles) - 1}")
        rle = rles[index]
        if rle is None:
            return None
        video = self._anno_video.get(anno)
        expected = self.frame_size(video) if video is not None else None
        where = f"{self._store.describe(MASK_FILE)}[{str(anno)!r}][{index}]"
        if expected is not None and tuple(rle["size"]) != expected:
            raise MevisFormatError(f"{where}.size: {rle['size']}, expected the frame size "
                                   f"{list(expected)} of video {video!r}")
        try:
            return rle_to_mask(rle, expected_size=expected)
        except (ValueError, TypeError) as e:
            raise MevisFormatError(f"{where}: cannot decode RLE ({e})") from None

    def _object_rles(self, anno_id: int) -> list:
        self._require_masks()
        anno = int(anno_id)
        if anno not in self._mask_dict:
            raise KeyError(f"anno_id {anno} is not in {self._store.describe(MASK_FILE)}")
        return self._mask_dict[anno]

    @property
    def anno_ids(self) -> list[int]:
        """Every anno_id in ``mask_dict.json``, ascending (also those no expression refers to);
        empty when the split has no masks."""
        return sorted(self._mask_dict)

    def expression_masks(self, video: str, exp_id: str) -> np.ndarray:
        """Ground truth of one expression: ``(T, H, W)`` bool, the union of its objects' masks per
        frame (absent objects skipped; all-False where no object is present).

        Raises:
            KeyError: unknown video or expression id. FileNotFoundError: no ``mask_dict.json``.
            MevisFormatError: as :meth:`object_masks`.
        """
        self._require_masks()
        names, exps = self._video(video)
        if exp_id not in exps:
            raise KeyError(f"video {video!r}: expression id {exp_id!r} not in {self._store.describe(META_FILE)}")
        h, w = self.frame_size(video)
        out = np.zeros((len(names), h, w), dtype=bool)
        for anno in exps[exp_id].anno_id:
            for i, m in enumerate(self.object_masks(anno)):
                if m is not None:
                    out[i] |= m
        return out


def read_mevis_split(path: str | os.PathLike) -> MevisSplit:
    """Open a MeViS-layout split (a folder or a ``.zip``) and validate its JSON files.

    ``meta_expressions.json`` and (if present) ``mask_dict.json`` are parsed and checked at once:
    structure, types, ``obj_id``/``anno_id`` lengths, every referenced anno_id present with one
    entry per frame. Frames (JPEG) and masks (RLE) are decoded only when asked for.

    Raises:
        FileNotFoundError: ``path`` or its ``meta_expressions.json`` does not exist.
        MevisFormatError: malformed JSON or fields; the message names the file, the field and the value.
    """
    p = Path(path)
    store = _open_store(p, (META_FILE,), MevisFormatError)
    try:
        return MevisSplit(p, store)
    except BaseException:
        store.close()
        raise


def _open_store(p: Path, markers: Sequence[str], error: type[ValueError]) -> _FolderStore | _ZipStore:
    """A folder or a zip of a split (see :class:`_ZipStore` for ``markers``).

    Raises:
        FileNotFoundError: ``p`` does not exist. error: a file that is not a zip, or an unsafe zip.
    """
    if p.is_dir():
        return _FolderStore(p)
    if p.is_file():
        if not zipfile.is_zipfile(p):
            raise error(f"{p}: expected a split folder or a .zip file")
        return _ZipStore(p, markers, error)
    raise FileNotFoundError(f"{p}: no such split folder or zip")


# ----------------------------------------------------------------------------------------------
# predictions
# ----------------------------------------------------------------------------------------------

def write_prediction_pngs(out_dir: str | os.PathLike, video: str, exp_id: str, masks: np.ndarray,
                          frame_names: Sequence[str]) -> list[Path]:
    """Write one expression's predicted masks in the MeViS prediction layout.

    Files: ``out_dir/<video>/<exp_id>/<frame>.png``, 8-bit greyscale, 0 background / 255 referred
    object(s), each written atomically.

    Args:
        masks: ``(T, H, W)`` bool (or 0/non-zero) at the original frame size.
        frame_names: ``T`` frame names without extension.

    Returns:
        The written paths, in frame order.

    Raises:
        ValueError: bad names, ``masks`` not 3-D, or ``T`` ≠ ``len(frame_names)``.
    """
    from rvos_core.masks import write_mask_png

    _check_name(video, "video")
    _check_name(exp_id, "exp_id")
    arr = np.asarray(masks)
    if arr.ndim != 3:
        raise ValueError(f"masks: expected a (T, H, W) array, got shape {arr.shape}")
    if arr.shape[0] != len(frame_names):
        raise ValueError(f"masks: {arr.shape[0]} masks but {len(frame_names)} frame_names")
    folder = Path(out_dir) / video / exp_id
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for m, name in zip(arr, frame_names):
        path = folder / f"{_check_name(name, 'frame name')}.png"
        write_mask_png(path, m != 0)
        paths.append(path)
    return paths

