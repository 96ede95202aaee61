"""Predicted masks in the MeViS / Ref-YouTube-VOS submission layout, read from a folder or a zip.

Layout (MeViS, Ding et al., ICCV 2023; the same as Ref-YouTube-VOS)::

    <video>/<exp_id>/<frame>.png     8-bit greyscale PNG, 0 background / 255 referred object(s),
                                     at the original frame size

A zip may hold the video folders at its root, under an ``Annotations/`` prefix, or under any
single wrapping folder (``submission/Annotations/<video>/...`` too): while every PNG entry lies
deeper than ``<video>/<exp_id>/<frame>.png`` and all share the same first folder, that folder is
taken as a prefix and stripped. A folder is indexed with the same rule. Other files (non-PNG, PNG
at another depth, macOS ``__MACOSX/`` metadata) are ignored and listed in
:attr:`PredictionSource.ignored_entries`.

Pixel rule. The official DAVIS / MeViS evaluation (``db_eval_iou``: ``segmentation.astype(bool)``
after ``cv2.imread(..., IMREAD_GRAYSCALE)``) counts any non-zero grey value as foreground and
silently converts colour images to grey. Here a prediction must be what the format says, an 8-bit
greyscale (PIL mode ``"L"``) PNG holding only the values 0 and 255; foreground is ``value > 0``
(= ``value == 255`` for a valid file, so the official rule and ours agree on every valid file).
Anything else — a missing file, an unreadable / truncated PNG, another size than the ground-truth
frame, a colour / palette / 16-bit / 1-bit / grey+alpha image, or grey values other than 0 and 255
— is *not* guessed at: :meth:`PredictionSource.read_mask` returns an all-False mask and a one-line
problem naming ``<video>/<exp_id>/<frame>.png`` and what was wrong, and the evaluation scores that
frame as an empty prediction.
"""

from __future__ import annotations

import io
import os
import threading
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from rvos_core.formats.mevis import _natural_key, _unsafe_zip_name, _zip_info

__all__ = ["PredictionFormatError", "PredictionSource", "open_predictions", "write_prediction_zip"]

#: Depth of a prediction PNG below the video folders: ``<video>/<exp_id>/<frame>.png``.
_DEPTH = 3
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Largest file accepted as one mask PNG (an 8-bit 8K frame stored uncompressed is ~35 MB).
_MAX_PNG_BYTES = 64 * 1024 * 1024
#: Folders some zip tools add that never hold predictions.
_SKIP_TOP = ("__MACOSX",)

# video → exp_id → frame → relative path of the PNG (inside the zip or below the folder)
_Index = dict[str, dict[str, dict[str, str]]]


class PredictionFormatError(ValueError):
    """A prediction folder / zip cannot be used; the message names the file or entry and what was expected
    (e.g. an unsafe zip entry with ``..`` or an absolute path, or a file that is not a zip)."""


# ----------------------------------------------------------------------------------------------
# index
# ----------------------------------------------------------------------------------------------

def _safe_parts(name: str, where: str) -> tuple[str, ...]:
    """Split a zip entry name into path components (``/`` or ``\\`` separated), refusing names that
    could escape the archive.

    Raises:
        PredictionFormatError: an absolute path (``/x``, ``\\x``, ``C:x``) or a ``..`` component.
    """
    if _unsafe_zip_name(name):
        raise PredictionFormatError(f"{where}: unsafe entry {name!r} (absolute path or '..'); "
                                    "expected relative <video>/<exp_id>/<frame>.png entries")
    return tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))


def _strip_prefix(pngs: list[tuple[str, ...]]) -> tuple[str, ...]:
    """Common wrapping folders of PNG paths deeper than ``<video>/<exp_id>/<frame>.png``."""
    prefix: tuple[str, ...] = ()
    while pngs and all(len(p) > _DEPTH + len(prefix) for p in pngs):
        first = {p[len(prefix)] for p in pngs}
        if len(first) != 1:
            break
        prefix += (first.pop(),)
    return prefix


def _build_index(entries: Iterable[tuple[tuple[str, ...], str]]) -> tuple[_Index, tuple[str, ...], list[str]]:
    """Index ``(path parts, relative path)`` entries → ``(index, stripped prefix, ignored entries)``."""
    pngs: list[tuple[tuple[str, ...], str]] = []
    ignored: list[str] = []
    for parts, rel in entries:
        if not parts or parts[0] in _SKIP_TOP:
            continue
        if parts[-1].endswith(".png"):
            pngs.append((parts, rel))
        else:
            ignored.append(rel)
    prefix = _strip_prefix([p for p, _ in pngs])
    index: _Index = {}
    for parts, rel in pngs:
        rest = parts[len(prefix):] if parts[:len(prefix)] == prefix else ()
        if len(rest) != _DEPTH or rest[2] == ".png":
            ignored.append(rel)
            continue
        video, exp_id, fname = rest
        index.setdefault(video, {}).setdefault(exp_id, {})[fname[: -len(".png")]] = rel
    return index, prefix, sorted(ignored, key=_natural_key)


def _zip_entries(zf: zipfile.ZipFile, where: str) -> list[tuple[tuple[str, ...], str]]:
    out = []
    for info in zf.infolist():
        parts = _safe_parts(info.filename, where)
        if not info.is_dir():
            out.append((parts, info.filename))
    return out


def _folder_entries(root: Path) -> list[tuple[tuple[str, ...], str]]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(root)
        for f in sorted(filenames):
            rel = (rel_dir / f).as_posix()
            out.append((PurePosixPath(rel).parts, rel))
    return out


# ----------------------------------------------------------------------------------------------
# decoding
# ----------------------------------------------------------------------------------------------

def _decode_mask(data: bytes, size_hw: tuple[int, int]) -> tuple[np.ndarray | None, str | None]:
    """PNG bytes → ``((H, W) bool, None)``, or ``(None, what is wrong)`` (see the module docstring)."""
    from PIL import Image, UnidentifiedImageError

    h, w = size_hw
    if not data.startswith(_PNG_SIGNATURE):
        return None, f"not a PNG file (no PNG signature; {len(data)} bytes)"
    try:
        im = Image.open(io.BytesIO(data))
        if im.size != (w, h):
            return None, f"size {im.size[1]}x{im.size[0]} (HxW), expected the frame size {h}x{w}"
        if im.mode != "L":
            return None, f"image mode {im.mode!r}, expected 8-bit greyscale ('L') with values 0/255"
        arr = np.asarray(im)  # decodes; a truncated or corrupt stream raises here
    except UnidentifiedImageError:
        return None, "unreadable PNG (corrupt header)"
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, zlib.error, ValueError, ...)
        return None, f"unreadable PNG ({type(e).__name__}: {e})"
    fg = arr == 255
    n_bg = arr.size - np.count_nonzero(arr)
    n_other = arr.size - n_bg - np.count_nonzero(fg)
    if n_other:
        values = np.unique(arr[(arr != 0) & ~fg])[:5].tolist()
        return None, f"{n_other} pixels with grey values other than 0/255 (e.g. {values})"
    return fg, None


# ----------------------------------------------------------------------------------------------
# the source
# ----------------------------------------------------------------------------------------------

class PredictionSource:
    """Predicted masks of a split in the ``<video>/<exp_id>/<frame>.png`` layout (folder or ``.zip``).

    The file listing is indexed once when opened; PNGs are decoded on demand. A zip is opened
    lazily, once per process (and re-opened after a fork), so a source may be shared by threads and
    pickled to other processes (the index travels, the file handle does not). Usable as a context
    manager. Open one with :func:`open_predictions`.

    Attributes:
        path: the folder or zip given.
        is_zip: whether ``path`` is a zip.
        prefix: the wrapping folders that were stripped (e.g. ``"Annotations"``; ``""`` if none).
        ignored_entries: files that are not ``<video>/<exp_id>/<frame>.png`` below the prefix
            (relative paths / zip entry names, natural order).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        p = Path(path)
        self.path = p
        self.is_zip = p.is_file()
        self._lock = threading.Lock()
        self._zf: zipfile.ZipFile | None = None
        self._zf_pid: int | None = None
        if p.is_dir():
            entries = _folder_entries(p)
        elif p.is_file():
            try:
                entries = _zip_entries(self._zip(), str(p))
            except BaseException:
                self.close()
                raise
        else:
            raise FileNotFoundError(f"{p}: no such prediction folder or zip")
        self._index, prefix, self.ignored_entries = _build_index(entries)
        self.prefix = "/".join(prefix)

    # -- pickling / processes ------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_lock=None, _zf=None, _zf_pid=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _zip(self) -> zipfile.ZipFile:
        """The open zip of this process (opened on first use, re-opened in a forked child)."""
        with self._lock:
            if self._zf is None or self._zf_pid != os.getpid():
                try:
                    self._zf = zipfile.ZipFile(self.path)
                except (zipfile.BadZipFile, OSError) as e:
                    raise PredictionFormatError(f"{self.path}: expected a prediction folder or a readable "
                                                f".zip file ({e})") from None
                self._zf_pid = os.getpid()
            return self._zf

    def close(self) -> None:
        """Close the zip handle of this process (no-op for folders); later reads re-open it."""
        with self._lock:
            if self._zf is not None and self._zf_pid == os.getpid():
                self._zf.close()
            self._zf = None
            self._zf_pid = None

    def __enter__(self) -> PredictionSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- listing -------------------------------------------------------------------------------
    def videos(self) -> list[str]:
        """Video folders present, natural order (``"v2"`` before ``"v10"``)."""
        return sorted(self._index, key=_natural_key)

    def has_video(self, video: str) -> bool:
        """Whether a folder ``<video>/`` with at least one PNG is present."""
        return video in self._index

    def expressions(self, video: str) -> list[str]:
        """Expression folders of ``video``, natural order; ``[]`` for an absent video."""
        return sorted(self._index.get(video, {}), key=_natural_key)

    def frames(self, video: str, exp_id: str) -> list[str]:
        """Frame names (without ``.png``) of ``<video>/<exp_id>/``, natural order; ``[]`` if absent."""
        return sorted(self._index.get(video, {}).get(exp_id, {}), key=_natural_key)

    def num_pngs(self) -> int:
        """Number of indexed prediction PNGs."""
        return sum(len(f) for e in self._index.values() for f in e.values())

    def describe(self, video: str, exp_id: str, frame: str) -> str:
        """``"<video>/<exp_id>/<frame>.png"``, the name used in problem messages."""
        return f"{video}/{exp_id}/{frame}.png"

    # -- reading -------------------------------------------------------------------------------
    def _read_bytes(self, rel: str) -> bytes:
        """Bytes of one file; OSError when it is over :data:`_MAX_PNG_BYTES` (e.g. a zip bomb)."""
        size = self._zip().getinfo(rel).file_size if self.is_zip else (self.path / rel).stat().st_size
        if size > _MAX_PNG_BYTES:
            raise OSError(f"{size} bytes, over the {_MAX_PNG_BYTES} byte limit for one mask PNG")
        if self.is_zip:
            return self._zip().read(rel)
        return (self.path / rel).read_bytes()

    def read_mask(self, video: str, exp_id: str, frame: str, size_hw: tuple[int, int]) -> tuple[np.ndarray, str | None]:
        """Read one predicted mask.

        Args:
            video, exp_id, frame: names as in ``meta_expressions.json`` (frame without extension).
            size_hw: ``(H, W)`` of the ground-truth frame, in pixels.

        Returns:
            ``(mask, problem)``: ``mask`` is ``(H, W)`` bool (True where the PNG is 255);
            ``problem`` is None when the PNG was read fine, else a one-line string
            ``"<video>/<exp_id>/<frame>.png: <what was wrong>; scored as an empty mask"`` and
            ``mask`` is all False. Problems: missing file, unreadable PNG, other size, not 8-bit
            greyscale, values other than 0/255. Never raises for a bad file.

        Raises:
            ValueError: ``size_hw`` is not two positive ints.
        """
        h, w = (int(v) for v in size_hw)
        if h < 1 or w < 1:
            raise ValueError(f"size_hw: expected (H, W) positive ints, got {size_hw!r}")
        rel = self._index.get(video, {}).get(exp_id, {}).get(frame)
        if rel is None:
            return np.zeros((h, w), dtype=bool), self._problem(video, exp_id, frame, "missing")
        try:
            data = self._read_bytes(rel)
        except (OSError, zipfile.BadZipFile, KeyError, RuntimeError) as e:  # RuntimeError: encrypted entry
            return np.zeros((h, w), dtype=bool), self._problem(video, exp_id, frame, f"cannot be read ({e})")
        mask, what = _decode_mask(data, (h, w))
        if mask is None:
            return np.zeros((h, w), dtype=bool), self._problem(video, exp_id, frame, what or "unreadable")
        return mask, None

    def read_expression(self, video: str, exp_id: str, frames: list[str], size_hw: tuple[int, int]) -> tuple[np.ndarray, list[str]]:
        """All frames of one expression: ``((T, H, W) bool, problems)``, frames in the given order.

        A missing ``<video>/`` or ``<video>/<exp_id>/`` folder gives a single problem line (the whole
        expression scored as empty) instead of one per frame; otherwise as :meth:`read_mask`.
        """
        h, w = (int(v) for v in size_hw)
        out = np.zeros((len(frames), h, w), dtype=bool)
        if video not in self._index:
            return out, [f"{video}/{exp_id}: video folder {video!r} missing in the predictions; "
                         f"all {len(frames)} frames scored as empty masks"]
        if exp_id not in self._index[video]:
            return out, [f"{video}/{exp_id}: expression folder missing in the predictions; "
                         f"all {len(frames)} frames scored as empty masks"]
        problems = []
        for i, frame in enumerate(frames):
            out[i], problem = self.read_mask(video, exp_id, frame, (h, w))
            if problem:
                problems.append(problem)
        return out, problems

    @staticmethod
    def _problem(video: str, exp_id: str, frame: str, what: str) -> str:
        return f"{video}/{exp_id}/{frame}.png: {what}; scored as an empty mask"

    def __repr__(self) -> str:
        return f"PredictionSource({str(self.path)!r}, videos={len(self._index)}, pngs={self.num_pngs()})"


def open_predictions(path: str | os.PathLike) -> PredictionSource:
    """Open predictions in the ``<video>/<exp_id>/<frame>.png`` layout: a folder or a ``.zip``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        PredictionFormatError: a file that is not a readable zip, or a zip entry with an absolute
            path or ``..`` (unsafe to interpret).
    """
    return PredictionSource(path)


def write_prediction_zip(zip_path: str | os.PathLike, pred_dir: str | os.PathLike) -> Path:
    """Zip a prediction folder for submission: ``<video>/<exp_id>/<frame>.png`` at the zip root.

    Only indexed prediction PNGs are included (a wrapping ``Annotations/`` folder in ``pred_dir`` is
    dropped; other files are left out). Entries are written in natural order with a fixed
    timestamp and permissions and stored uncompressed (PNG is already compressed), so the same
    folder gives a byte-identical zip. Written atomically; an existing ``zip_path`` is replaced.

    Returns:
        ``Path(zip_path)``.

    Raises:
        FileNotFoundError: ``pred_dir`` does not exist. PredictionFormatError: ``pred_dir`` is not
            a folder, or holds no ``<video>/<exp_id>/<frame>.png`` file.
    """
    from rvos_core.fileio import atomic_output_path

    src = Path(pred_dir)
    if not src.exists():
        raise FileNotFoundError(f"{src}: no such prediction folder")
    if not src.is_dir():
        raise PredictionFormatError(f"{src}: expected a folder of <video>/<exp_id>/<frame>.png predictions")
    source = PredictionSource(src)
    if not source.num_pngs():
        raise PredictionFormatError(f"{src}: no <video>/<exp_id>/<frame>.png files found")
    with atomic_output_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        for video in source.videos():
            for exp_id in source.expressions(video):
                for frame in source.frames(video, exp_id):
                    data = source._read_bytes(source._index[video][exp_id][frame])
                    zf.writestr(_zip_info(f"{video}/{exp_id}/{frame}.png", zipfile.ZIP_STORED), data)
    return Path(zip_path)
