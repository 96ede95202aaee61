"""DAVIS annotation folders: palette PNGs of object ids (DAVIS 2017) and 0/255 masks (DAVIS 2016).

Layouts read (Pont-Tuset et al., "The 2017 DAVIS Challenge on Video Object Segmentation", 2017;
Perazzi et al., "A Benchmark Dataset and Evaluation Methodology for Video Object Segmentation",
CVPR 2016)::

    DAVIS/Annotations/480p/<video>/00000.png   DAVIS 2017: palette (P) PNG, pixel = object id
                                               (0 background, 1, 2, ... objects; colours from the
                                               PASCAL VOC colour map)
    DAVIS/Annotations/480p/<video>/00000.png   DAVIS 2016: 8-bit greyscale, 0 background / 255 object
    <any folder>/00000.png ...                 a plain folder of such PNGs (e.g. the shared test clips)

Reading gives ``(T, H, W)`` uint8 object ids. A PNG whose only non-zero value is 255 is a DAVIS-2016
binary mask and becomes object 1 (DAVIS-2017 tools number objects 1, 2, ...; 255 as the only id does
not occur there); all other files keep their values as ids. A folder mixing the two is an error.

Writing uses :func:`rvos_core.masks.write_palette_png` (DAVIS colours; each file atomic) or, for
``binary=True``, :func:`rvos_core.masks.write_mask_png` (0/255 greyscale, DAVIS-2016 style).

A palette PNG holds one id per pixel, so overlapping object masks cannot be stored:
:func:`ids_from_masks` detects overlaps and raises :class:`MaskOverlapError` (naming the place, the
objects and the pixel count) or, with ``on_overlap="last"``, lets the higher id win and reports
how many pixels were affected.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rvos_core.formats.mevis import _natural_key, _plain_name
from rvos_core.masks import check_object_ids

#: Annotation file extension in DAVIS and Ref-YouTube-VOS.
PNG_SUFFIX = ".png"
OVERLAP_RULES = ("error", "last")


class DavisFormatError(ValueError):
    """A DAVIS annotation file or folder is malformed; the message names the file and the problem."""


class MaskOverlapError(ValueError):
    """Object masks overlap, which a palette PNG (one id per pixel) cannot represent."""


@dataclass
class DavisAnnotations:
    """The annotations of one video.

    Attributes:
        folder: the folder the PNGs were read from.
        frame_names: PNG file stems in natural order (``"00000"``, ``"00001"``, ...).
        ids: ``(T, H, W)`` uint8 object ids, 0 = background.
        binary: True when the files were DAVIS-2016 0/255 masks (stored here as id 1).
    """

    folder: Path
    frame_names: list[str]
    ids: np.ndarray
    binary: bool

    def object_ids(self) -> list[int]:
        """Object ids present on any frame, ascending (0 excluded)."""
        return [int(v) for v in np.unique(self.ids) if v != 0]

    def object_masks(self) -> dict[int, np.ndarray]:
        """Object id → ``(T, H, W)`` bool mask, for every id present on any frame."""
        return masks_from_ids(self.ids)


# ----------------------------------------------------------------------------------------------
# ids <-> masks
# ----------------------------------------------------------------------------------------------

def masks_from_ids(ids: np.ndarray) -> dict[int, np.ndarray]:
    """Split an id array (any shape, e.g. ``(H, W)`` or ``(T, H, W)``) into ``{id: bool mask}``
    for every non-zero id present, ascending."""
    arr = np.asarray(ids)
    return {int(v): arr == v for v in np.unique(arr) if v != 0}


def _check_object_id(key: object, where: str) -> int:
    if isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer)) or not 1 <= key <= 255:
        raise ValueError(f"{where}: object id {key!r}; expected an int in 1..255 (0 is the background)")
    return int(key)


def ids_from_masks(masks: Mapping[int, np.ndarray], shape: Sequence[int] | None = None, *,
                   where: str = "masks", on_overlap: str = "error") -> tuple[np.ndarray, int]:
    """Merge per-object masks into one id array for a palette PNG.

    Args:
        masks: object id (1..255) → bool (or 0/non-zero) mask; all of one shape, ``(H, W)`` or
            ``(T, H, W)``.
        shape: the output shape; required when ``masks`` is empty, else checked against it.
        where: place named in error messages, e.g. ``"video 'x' frame '00003'"``.
        on_overlap: ``"error"`` (default) raises :class:`MaskOverlapError` when two objects share a
            pixel; ``"last"`` gives such pixels to the higher id (deterministic) and counts them.

    Returns:
        ``(ids, overlap_pixels)``: uint8 ids of ``shape`` (0 background) and the number of pixels
        claimed by more than one object (0 when there is no overlap).

    Raises:
        MaskOverlapError: overlap with ``on_overlap="error"``; names ``where``, both ids and the count.
        ValueError: bad ids, shapes that differ, no shape at all, or an unknown ``on_overlap``.
    """
    if on_overlap not in OVERLAP_RULES:
        raise ValueError(f"on_overlap: expected one of {OVERLAP_RULES}, got {on_overlap!r}")
    items = sorted(((_check_object_id(k, where), np.asarray(m)) for k, m in masks.items()), key=lambda t: t[0])
    out_shape = tuple(int(s) for s in shape) if shape is not None else (items[0][1].shape if items else None)
    if out_shape is None:
        raise ValueError(f"{where}: no masks and no shape given")
    ids = np.zeros(out_shape, dtype=np.uint8)
    claimed = np.zeros(out_shape, dtype=np.uint16)
    for obj, m in items:
        if m.shape != out_shape:
            raise ValueError(f"{where}: object {obj} mask has shape {m.shape}, expected {out_shape}")
        fg = m != 0
        ids[fg] = obj
        claimed += fg
    overlap = int(np.count_nonzero(claimed > 1))
    if overlap and on_overlap == "error":
        raise MaskOverlapError(_overlap_message(items, where, overlap))
    return ids, overlap


def _overlap_message(items: list[tuple[int, np.ndarray]], where: str, total: int) -> str:
    """Name the first overlapping pair (by id) and its pixel count."""
    for i, (a, ma) in enumerate(items):
        for b, mb in items[i + 1:]:
            n = int(np.count_nonzero((ma != 0) & (mb != 0)))
            if n:
                return (f"{where}: objects {a} and {b} overlap on {n} pixels ({total} overlapping pixels in all); "
                        "a palette PNG holds one object id per pixel (use on_overlap='last' to let the higher "
                        "id win)")
    return f"{where}: {total} pixels belong to more than one object"  # unreachable: total > 0 implies a pair


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------

def _decode_png_ids(data: bytes, where: str) -> np.ndarray:
    """PNG bytes → ``(H, W)`` uint8 values of a palette (P, index per pixel) or greyscale (L) image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            mode = im.mode
            arr = np.array(im, dtype=np.uint8) if mode in ("P", "L") else None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DavisFormatError(f"{where}: not a readable PNG ({e})") from None
    if arr is None:
        raise DavisFormatError(f"{where}: image mode {mode!r}; expected a palette (P) PNG of object ids "
                               "or an 8-bit greyscale (L) 0/255 mask")
    return arr


def annotation_ids(source: str | os.PathLike | bytes, where: str | None = None) -> tuple[np.ndarray, bool]:
    """Read one annotation PNG as object ids.

    Args:
        source: a PNG path (read with :func:`rvos_core.masks.read_palette_png`) or the PNG's bytes
            (e.g. from a zip).
        where: name used in error messages (default: the path, or ``"<bytes>"``).

    Returns:
        ``(ids, binary)``: ``(H, W)`` uint8 ids (0 background) and whether the file was a
        DAVIS-2016 0/255 mask (then 255 → id 1).

    Raises:
        FileNotFoundError: no such file.
        DavisFormatError: unreadable, or neither palette (P) nor greyscale (L) — e.g. an RGB image.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        arr = _decode_png_ids(bytes(source), where or "<bytes>")
    else:
        from rvos_core.masks import read_palette_png

        try:
            arr = read_palette_png(source)
        except ValueError as e:
            raise DavisFormatError(f"{e}; expected a DAVIS palette or 0/255 annotation PNG") from None
    if arr.max(initial=0) == 255 and np.isin(arr, (0, 255)).all():
        return (arr == 255).astype(np.uint8), True
    return arr, False


def find_annotation_folder(root: str | os.PathLike, video: str | None = None, resolution: str = "480p") -> Path:
    """Locate a video's annotation PNG folder.

    With ``video``: the first existing of ``root/Annotations/<resolution>/<video>``,
    ``root/Annotations/<video>`` and ``root/<video>``. Without: ``root/Annotations`` when it
    holds PNGs directly (the shared-clip layout), else ``root`` itself.

    Raises:
        FileNotFoundError: nothing found; the message lists the places tried.
    """
    base = Path(root)
    if video is not None:
        if not _plain_name(video):
            raise ValueError(f"video: expected a plain folder name, got {video!r}")
        tried = [base / "Annotations" / resolution / video, base / "Annotations" / video, base / video]
    else:
        tried = [base / "Annotations", base]
    for cand in tried:
        if cand.is_dir() and _png_files(cand):
            return cand
    raise FileNotFoundError(f"no folder of annotation PNGs found; tried {', '.join(str(t) for t in tried)}")


def list_davis_videos(root: str | os.PathLike, resolution: str = "480p") -> list[str]:
    """Video names under ``root/Annotations/<resolution>/`` (natural order; folders holding PNGs).

    Raises:
        FileNotFoundError: that folder does not exist.
    """
    folder = Path(root) / "Annotations" / resolution
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder (expected DAVIS/Annotations/{resolution}/<video>/)")
    return sorted((p.name for p in folder.iterdir() if p.is_dir() and _png_files(p)), key=_natural_key)


def _png_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir()
             if p.is_file() and p.suffix.lower() == PNG_SUFFIX and not p.name.startswith(".")]
    return sorted(files, key=lambda p: _natural_key(p.stem))


def read_davis_annotations(path: str | os.PathLike, video: str | None = None,
                           resolution: str = "480p") -> DavisAnnotations:
    """Read a video's annotation PNGs (DAVIS 2017 palette or DAVIS 2016 0/255) as object ids.

    Args:
        path: a folder of PNGs, or a DAVIS root / clip folder resolved by
            :func:`find_annotation_folder` (with ``video`` and ``resolution``).

    Returns:
        :class:`DavisAnnotations` with ``ids`` of shape ``(T, H, W)`` uint8, frames in natural order.

    Raises:
        FileNotFoundError: no annotation folder / PNGs.
        DavisFormatError: an unreadable or colour PNG, frames of different sizes, or a folder that
            mixes 0/255 masks with palette ids; the message names the file.
    """
    folder = find_annotation_folder(path, video, resolution)
    files = _png_files(folder)
    frames: list[np.ndarray] = []
    binary_file: Path | None = None
    ids_file: Path | None = None
    for f in files:
        ids, binary = annotation_ids(f)
        if frames and ids.shape != frames[0].shape:
            raise DavisFormatError(f"{f}: size {list(ids.shape)} (H, W) differs from {files[0].name}'s "
                                   f"{list(frames[0].shape)}")
        if binary:
            binary_file = binary_file or f
        elif ids.any():
            ids_file = ids_file or f
        frames.append(ids)
    if binary_file is not None and ids_file is not None:
        raise DavisFormatError(f"{folder}: mixes 0/255 binary masks ({binary_file.name}) with palette object ids "
                               f"({ids_file.name})")
    return DavisAnnotations(folder=folder, frame_names=[f.stem for f in files], ids=np.stack(frames),
                            binary=binary_file is not None)


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------

def _check_ids_stack(ids: object, frame_names: Sequence[str]) -> np.ndarray:
    arr = check_object_ids(ids, ndim=3)
    if arr.shape[0] != len(frame_names):
        raise ValueError(f"ids: {arr.shape[0]} frames but {len(frame_names)} frame_names")
    for name in frame_names:
        if not _plain_name(name):
            raise ValueError(f"frame_names: expected plain names without path separators, got {name!r}")
    if len(set(frame_names)) != len(frame_names):
        raise ValueError("frame_names: contain duplicates")
    return arr


def write_davis_annotations(out_dir: str | os.PathLike, ids: np.ndarray, frame_names: Sequence[str],
                            binary: bool = False, overwrite: bool = False) -> list[Path]:
    """Write ``(T, H, W)`` object ids as one annotation PNG per frame: ``out_dir/<frame>.png``.

    Palette PNGs with DAVIS (PASCAL VOC) colours by default; with ``binary=True`` 8-bit greyscale
    0/255 masks (DAVIS 2016; ``ids`` must then hold only 0 and 1). Everything is checked before the
    first file is written; each file is written atomically.

    Args:
        ids: ``(T, H, W)`` integer (or bool) object ids in 0..255, 0 = background.
        frame_names: ``T`` file stems, e.g. ``["00000", "00001", ...]``.
        binary: write 0/255 greyscale instead of palette PNGs.
        overwrite: replace existing PNGs of the same names.

    Returns:
        The written paths in frame order.

    Raises:
        ValueError: bad shape / dtype / values / names, or ``binary`` with ids other than 0/1.
        FileExistsError: a target PNG exists and ``overwrite`` is false.
    """
    from rvos_core.masks import write_mask_png, write_palette_png

    arr = _check_ids_stack(ids, frame_names)
    if binary and arr.max() > 1:
        raise ValueError(f"ids: binary=True needs ids 0/1 only, got max {int(arr.max())}")
    folder = Path(out_dir)
    paths = [folder / f"{name}{PNG_SUFFIX}" for name in frame_names]
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]}: already exists (pass overwrite=True to replace)")
    for path, frame in zip(paths, arr):
        if binary:
            write_mask_png(path, frame)
        else:
            write_palette_png(path, frame)
    return paths
