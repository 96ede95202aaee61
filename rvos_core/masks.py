"""Binary masks: RLE, PNG / palette I/O, overlays, boxes and prompt points.

Conventions (used throughout rvos_core):
- a mask is ``(H, W)`` bool (inputs may also be any numeric array: non-zero = foreground);
- points are ``(x, y)`` pixel indices, x = column, y = row; a point at ``(x, y)`` denotes the
  centre of that pixel (SAM's prompt encoder adds the 0.5 itself);
- boxes are XYXY with inclusive pixel indices: ``(min column, min row, max column, max row)``;
- RLE is the COCO / pycocotools *compressed* RLE, ``{"size": [H, W], "counts": str}``,
  column-major (Fortran) order, as stored in MeViS ``mask_dict.json``.

Nothing happens at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from rvos_core.fileio import atomic_output_path

__all__ = [
    "atomic_output_path",
    "as_bool_mask",
    "mask_to_rle",
    "rle_to_mask",
    "read_mask_png",
    "write_mask_png",
    "read_palette_png",
    "write_palette_png",
    "voc_palette",
    "object_color",
    "overlay",
    "mask_to_box",
    "sample_prompt_points",
    "resize_mask",
    "mask_iou",
]


# ----------------------------------------------------------------------------- atomic writes


# ----------------------------------------------------------------------------- validation


def as_bool_mask(mask: Any, name: str = "mask") -> np.ndarray:
    """``mask`` as an ``(H, W)`` bool array (non-zero = foreground).

    Raises:
        ValueError: not 2-D, or an empty dimension.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name}: expected an (H, W) array with H, W >= 1, got shape {arr.shape}")
    return arr if arr.dtype == bool else arr != 0


# ----------------------------------------------------------------------------- RLE


def mask_to_rle(mask: Any) -> dict[str, Any]:
    """Encode a mask as pycocotools compressed RLE.

    Args:
        mask: ``(H, W)`` bool or numeric (non-zero = foreground).

    Returns:
        ``{"size": [H, W], "counts": str}`` — the COCO compressed RLE (column-major runs, first run
        background), with ``counts`` as an ASCII str so it is JSON-serialisable (MeViS ``mask_dict.json``).

    Raises:
        ValueError: ``mask`` is not 2-D or has an empty dimension.
    """
    m = as_bool_mask(mask)
    rle = coco_mask.encode(np.asfortranarray(m, dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def _rle_counts(counts: bytes) -> np.ndarray:
    """Run lengths decoded from a compressed-RLE string (format of pycocotools' ``rleFrString``).

    Each run is stored as 5-bit groups, least significant first, in characters offset by 48;
    bit 0x20 marks "more groups follow", bit 0x10 of the last group is the sign. From the third
    run on, the stored value is the difference to the run two places earlier.

    Raises:
        ValueError: a character outside '0'…'o', a truncated last run, or a run over 35 bits.
    """
    c = np.frombuffer(counts, dtype=np.uint8).astype(np.int64) - 48
    if c.size == 0:
        return np.zeros(0, dtype=np.int64)
    if c.min() < 0 or c.max() > 63:
        raise ValueError("RLE counts contain characters outside '0'..'o'")
    last = (c & 0x20) == 0
    if not last[-1]:
        raise ValueError("RLE counts end inside a run")
    ends = np.flatnonzero(last)
    starts = np.concatenate(([0], ends[:-1] + 1))
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    k = np.arange(c.size) - starts[group]
    if k.max() >= 7:
        raise ValueError("RLE counts hold a run longer than 35 bits")
    values = np.add.reduceat((c & 0x1F) << (5 * k), starts)
    negative = (c[ends] & 0x10) != 0
    values = values - (negative.astype(np.int64) << (5 * (k[ends] + 1)))
    runs = values.copy()
    if runs.size > 3:  # odd runs: run[m] = stored[m] + run[m - 2] for m >= 3
        runs[3::2] = values[1] + np.cumsum(values[3::2])
    if runs.size > 4:  # even runs: the same from m = 4 (run 2 is stored as is)
        runs[4::2] = values[2] + np.cumsum(values[4::2])
    return runs


def rle_to_mask(rle: dict[str, Any], expected_size: tuple[int, int] | Sequence[int] | None = None) -> np.ndarray:
    """Decode a pycocotools compressed RLE to an ``(H, W)`` bool mask.

    Args:
        rle: ``{"size": [H, W], "counts": str | bytes}`` (compressed) or with ``counts`` a list of
            ints (uncompressed COCO RLE).
        expected_size: ``(H, W)`` the mask must have, e.g. the video's frame size.

    Raises:
        ValueError: not a dict, missing/ill-typed ``size`` or ``counts``, runs that do not add up
            to H·W (malformed counts), or a size other than ``expected_size``.
    """
    h, w = _rle_size(rle)
    if expected_size is not None and (h, w) != tuple(int(v) for v in expected_size):
        raise ValueError(f"RLE size [{h}, {w}] does not match the expected size {list(expected_size)} (H, W)")
    counts = rle["counts"]
    if isinstance(counts, list):
        runs = np.asarray(counts, dtype=np.int64)
        _check_runs(runs, h, w)
        coded = coco_mask.frPyObjects({"size": [h, w], "counts": [int(v) for v in counts]}, h, w)
    elif isinstance(counts, (str, bytes)):
        try:
            raw = counts.encode("ascii") if isinstance(counts, str) else bytes(counts)
        except UnicodeEncodeError:
            raise ValueError(f"RLE for size [{h}, {w}] is malformed: counts contain non-ASCII characters") from None
        _check_runs(_rle_counts(raw), h, w)
        coded = {"size": [h, w], "counts": raw}
    else:
        raise ValueError(f"RLE 'counts' must be str, bytes or list of ints, got {type(counts).__name__}")
    return coco_mask.decode(coded).astype(bool)


def _rle_size(rle: Any) -> tuple[int, int]:
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"RLE must be a dict with 'size' and 'counts', got {type(rle).__name__}: {str(rle)[:80]}")
    size = rle["size"]
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in size)
    ):
        raise ValueError(f"RLE 'size' must be [H, W] with positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def _check_runs(runs: np.ndarray, h: int, w: int) -> None:
    if runs.size and runs.min() < 0:
        raise ValueError(f"RLE for size [{h}, {w}] is malformed: negative run length {int(runs.min())}")
    total = int(runs.sum())
    if total != h * w:
        raise ValueError(f"RLE for size [{h}, {w}] is malformed: runs cover {total} pixels, expected H*W = {h * w}")


# ----------------------------------------------------------------------------- PNG I/O


def _open_png(path: str | os.PathLike[str]):  # -> PIL.Image.Image
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such mask file")
    try:
        im = Image.open(p)
        im.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{p}: cannot read image ({exc}); expected a PNG mask") from None
    return im


def read_mask_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a binary mask PNG as ``(H, W)`` bool.

    Accepts 8-bit greyscale (``L``, 0 background / 255 target — any non-zero value counts as
    foreground), 1-bit, 16/32-bit greyscale, greyscale+alpha (grey channel used) and palette PNGs
    (non-zero index = foreground, e.g. the union of all objects of a DAVIS-2017 annotation).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, or a colour (RGB/RGBA/…) image, which is not a mask.
    """
    im = _open_png(path)
    if im.mode in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "F"):
        return np.asarray(im) != 0
    if im.mode == "LA":
        return np.asarray(im)[..., 0] != 0
    raise ValueError(
        f"{path}: image mode {im.mode!r} is a colour image, not a mask; expected greyscale (L, 0/255) or palette (P)"
    )


def write_mask_png(path: str | os.PathLike[str], mask: Any) -> None:
    """Write a mask as an 8-bit greyscale PNG, 0 background / 255 foreground, atomically.

    Args:
        path: output ``.png`` path (parent folders are created).
        mask: ``(H, W)`` bool or numeric (non-zero = foreground).

    Raises:
        ValueError: ``mask`` not 2-D.
    """
    from PIL import Image

    m = as_bool_mask(mask)
    img = Image.fromarray(m.astype(np.uint8) * 255, mode="L")
    with atomic_output_path(path) as tmp:
        img.save(tmp, format="PNG")


def read_palette_png(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a DAVIS-style palette PNG as ``(H, W)`` uint8 object ids (0 = background).

    The palette index of each pixel is returned, whatever colours the palette holds. An 8-bit
    greyscale (``L``) PNG is also accepted: its values are taken as ids.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, or neither palette (P) nor greyscale (L) mode.
    """
    im = _open_png(path)
    if im.mode not in ("P", "L"):
        raise ValueError(f"{path}: image mode {im.mode!r}; expected a palette (P) PNG of object ids")
    return np.array(im, dtype=np.uint8)


def check_object_ids(ids: Any, ndim: int, name: str = "ids") -> np.ndarray:
    """Validate palette object ids (0 = background, 1…255 = objects) → uint8 array.

    Args:
        ids: ``(H, W)`` (``ndim=2``) or ``(T, H, W)`` (``ndim=3``) integer or bool array.
        ndim: the expected number of dimensions.
        name: how the error messages name the argument.

    Raises:
        ValueError: wrong shape (or a zero-sized axis), a non-integer dtype, or values outside 0…255.
    """
    arr = np.asarray(ids)
    shape_text = "(H, W)" if ndim == 2 else "(T, H, W)"
    if arr.ndim != ndim or 0 in arr.shape:
        raise ValueError(f"{name}: expected a {shape_text} array of object ids, got shape {arr.shape}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected integer object ids, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() > 255:
        raise ValueError(f"{name}: values must be in [0, 255], got [{arr.min()}, {arr.max()}]")
    return arr.astype(np.uint8)


def write_palette_png(path: str | os.PathLike[str], ids: Any) -> None:
    """Write ``(H, W)`` object ids (0 = background, 1…255 = objects) as a palette PNG, atomically.

    Uses the DAVIS / PASCAL VOC colour map (:func:`voc_palette`), so files open with the usual
    colours in DAVIS-2017 tools.

    Raises:
        ValueError: not 2-D, or values outside 0…255 / not integers.
    """
    from PIL import Image

    arr = check_object_ids(ids, ndim=2)
    img = Image.fromarray(arr, mode="P")
    img.putpalette(voc_palette().reshape(-1).tolist())
    with atomic_output_path(path) as tmp:
        img.save(tmp, format="PNG")


# ----------------------------------------------------------------------------- colours


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map, ``(n, 3)`` uint8 RGB, also used by DAVIS 2017 annotations.

    Index i's colour is built from i's bits, three at a time, interleaved into the high bits of R,
    G and B (VOC devkit ``VOClabelcolormap.m``; Everingham et al., IJCV 2010): 0 → black,
    1 → (128, 0, 0), 2 → (0, 128, 0), 3 → (128, 128, 0), …
    """
    idx = np.arange(n, dtype=np.int64)
    cmap = np.zeros((n, 3), dtype=np.int64)
    c = idx.copy()
    for j in range(8):
        for ch in range(3):
            cmap[:, ch] |= ((c >> ch) & 1) << (7 - j)
        c >>= 3
    return cmap.astype(np.uint8)


_PALETTE = voc_palette()  # a pure computation on 256 ints; no I/O


def object_color(obj_id: int) -> tuple[int, int, int]:
    """RGB colour of object ``obj_id`` (0-based): VOC palette index ``obj_id + 1``.

    obj_id 0 → (128, 0, 0), 1 → (0, 128, 0), 2 → (128, 128, 0), … — the same colour an object gets
    in a DAVIS palette PNG where it is stored as id ``obj_id + 1``.

    Raises:
        ValueError: obj_id not an int in [0, 254].
    """
    if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)) or not 0 <= obj_id <= 254:
        raise ValueError(f"obj_id must be an int in [0, 254], got {obj_id!r}")
    r, g, b = _PALETTE[int(obj_id) + 1]
    return int(r), int(g), int(b)


def _contour_color(color: tuple[int, int, int]) -> tuple[int, int, int]:
    """A shade of ``color`` that stands out from its fill: darker for light colours, lighter for dark."""
    c = np.asarray(color, dtype=np.float64)
    luma = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
    shade = c * 0.5 if luma >= 96 else c + (255.0 - c) * 0.5
    return tuple(int(round(v)) for v in shade)  # type: ignore[return-value]


# ----------------------------------------------------------------------------- overlay


def overlay(
    frame: np.ndarray,
    masks: Sequence[np.ndarray] | np.ndarray,
    colors: Sequence[tuple[int, int, int]] | None = None,
    alpha: float = 0.5,
    contour_px: int = 2,
) -> np.ndarray:
    """Draw masks on a frame: an alpha-blended fill plus a contour, one colour per object.

    Each fill pixel becomes ``round((1 − alpha) · frame + alpha · color)``; the contour (from
    ``cv2.findContours``, outer boundaries and holes) is drawn ``contour_px`` pixels thick, centred
    on the boundary pixels, in a darker shade of the colour (lighter for dark colours). Masks are
    drawn in order, so later objects cover earlier ones. Work is limited to each mask's bounding box.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB; not modified.
        masks: sequence of ``(H, W)`` bool (or non-zero) masks, one per object; a single ``(H, W)``
            array or an ``(N, H, W)`` array is accepted too.
        colors: RGB tuples (0–255), one per mask; default :func:`object_color` of the mask's position.
        alpha: fill opacity in [0, 1].
        contour_px: contour thickness in pixels (int ≥ 0; 0 = no contour).

    Returns:
        A new ``(H, W, 3)`` uint8 RGB image.

    Raises:
        ValueError: bad frame, a mask of another size than the frame, too few colours, alpha
            outside [0, 1], negative contour_px.
    """
    img = np.asarray(frame)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"frame: expected (H, W, 3) uint8 RGB, got shape {img.shape} {img.dtype}")
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        masks = [masks]
    masks = list(masks)
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if isinstance(contour_px, bool) or not isinstance(contour_px, (int, np.integer)) or contour_px < 0:
        raise ValueError(f"contour_px must be an int >= 0, got {contour_px!r}")
    if colors is not None and len(colors) < len(masks):
        raise ValueError(f"colors: got {len(colors)} colours for {len(masks)} masks; expected one per mask")
    out = img.copy()
    for k, mask in enumerate(masks):
        m = as_bool_mask(mask, name=f"masks[{k}]")
        if m.shape != img.shape[:2]:
            raise ValueError(f"masks[{k}]: shape {m.shape} does not match the frame's (H, W) = {img.shape[:2]}")
        color = _check_color(colors[k], k) if colors is not None else object_color(k)
        _draw_one(out, m, color, float(alpha), int(contour_px))
    return out


def _check_color(color: Any, k: int) -> tuple[int, int, int]:
    c = np.asarray(color)
    if c.shape != (3,) or c.min() < 0 or c.max() > 255:
        raise ValueError(f"colors[{k}]: expected an (R, G, B) triple in 0..255, got {color!r}")
    return int(c[0]), int(c[1]), int(c[2])


def _draw_one(out: np.ndarray, m: np.ndarray, color: tuple[int, int, int], alpha: float, contour_px: int) -> None:
    """Blend ``color`` into ``out`` where ``m`` is set and draw its contour, in place."""
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return
    cols = np.flatnonzero(m.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    crop_m = m[y0:y1, x0:x1]
    crop = out[y0:y1, x0:x1]
    if alpha > 0:
        fill = np.empty_like(crop)
        fill[:] = color
        blended = cv2.addWeighted(crop, 1.0 - alpha, fill, alpha, 0.0)
        np.copyto(crop, blended, where=crop_m[..., None])
    if contour_px > 0:
        contours, _ = cv2.findContours(
            crop_m.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE, offset=(int(x0), int(y0))
        )
        cv2.drawContours(out, contours, -1, _contour_color(color), thickness=contour_px, lineType=cv2.LINE_8)


# ----------------------------------------------------------------------------- boxes and points


def mask_to_box(mask: Any) -> np.ndarray | None:
    """Tight box of a mask: ``(4,)`` float32 XYXY, inclusive pixel indices.

    ``x1`` = min column, ``y1`` = min row, ``x2`` = max column, ``y2`` = max row of the foreground
    (a single pixel at (x, y) gives ``[x, y, x, y]``). Returns None for an empty mask.

    Raises:
        ValueError: ``mask`` not 2-D.
    """
    m = as_bool_mask(mask)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float32)


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be an int >= 0, got {value!r}")
    return int(value)


def sample_prompt_points(
    mask: Any, n_pos: int = 10, n_neg: int = 5, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prompt points and box for a promptable segmenter (HQ-SAM), sampled from a coarse mask.

    Source: seed 003 (2nd place, MeViS track, CVPR 2024 PVUW challenge, §2.4): the box spans the
    extreme horizontal and vertical coordinates of the mask; 10 positive points are sampled
    uniformly inside the mask and 5 negative points inside the box but outside the mask; all are
    fed to HQ-SAM's mask decoder.

    Points are distinct pixels drawn uniformly without replacement; if the mask has fewer than
    ``n_pos`` pixels, all are used, and likewise for the box's background pixels (so a mask
    that fills its box gives no negatives).

    Args:
        mask: ``(H, W)`` bool or numeric (non-zero = foreground); must not be empty.
        n_pos, n_neg: requested numbers of positive / negative points (ints ≥ 0).
        rng: source of randomness; None → ``np.random.default_rng(0)`` (deterministic).

    Returns:
        ``points`` ``(N, 2)`` float32 ``(x, y)`` pixel indices (x = column, y = row; the pixel
        centre — SAM's prompt encoder adds 0.5), positives first; ``labels`` ``(N,)`` int64,
        1 positive / 0 negative; ``box`` ``(4,)`` float32 XYXY inclusive (see :func:`mask_to_box`).

    Raises:
        ValueError: empty mask, mask not 2-D, negative counts, rng not a Generator.
    """
    m = as_bool_mask(mask)
    n_pos, n_neg = _check_count("n_pos", n_pos), _check_count("n_neg", n_neg)
    if rng is None:
        rng = np.random.default_rng(0)
    elif not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator or None, got {type(rng).__name__}")
    box = mask_to_box(m)
    if box is None:
        raise ValueError(f"mask of shape {m.shape} is empty; prompt points need at least one foreground pixel")
    x1, y1, x2, y2 = (int(v) for v in box)
    pos = _sample_pixels(m, n_pos, rng)
    neg = _sample_pixels(~m[y1 : y2 + 1, x1 : x2 + 1], n_neg, rng) + np.array([x1, y1])
    points = np.concatenate([pos, neg]).astype(np.float32)
    labels = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
    return points, labels, box


def _sample_pixels(m: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` distinct set pixels of ``m``, uniformly, as ``(k, 2)`` int64 ``(x, y)``."""
    flat = np.flatnonzero(m)
    if flat.size > n:
        flat = rng.choice(flat, size=n, replace=False)
    ys, xs = np.divmod(flat, m.shape[1])
    return np.stack([xs, ys], axis=1).astype(np.int64).reshape(-1, 2)


# ----------------------------------------------------------------------------- misc


def resize_mask(mask: Any, size_hw: tuple[int, int] | Sequence[int]) -> np.ndarray:
    """Resize a mask to ``(H, W)`` with nearest-neighbour sampling, returning bool.

    Uses ``cv2.INTER_NEAREST_EXACT`` (pixel-centre aligned, matching PIL's NEAREST) rather than
    ``INTER_NEAREST``, whose half-pixel offset shifts masks.

    Raises:
        ValueError: mask not 2-D, or ``size_hw`` not two positive ints.
    """
    m = as_bool_mask(mask)
    if len(size_hw) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1 for v in size_hw):
        raise ValueError(f"size_hw must be (H, W) with positive ints, got {size_hw!r}")
    h, w = int(size_hw[0]), int(size_hw[1])
    if (h, w) == m.shape:
        return m.copy()
    return cv2.resize(m.view(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST_EXACT) > 0


def mask_iou(a: Any, b: Any) -> float:
    """Intersection over union |a ∩ b| / |a ∪ b| of two ``(H, W)`` masks; 1.0 when both are empty.

    Raises:
        ValueError: not 2-D, or different shapes.
    """
    ma, mb = as_bool_mask(a, "a"), as_bool_mask(b, "b")
    if ma.shape != mb.shape:
        raise ValueError(f"mask_iou: shapes differ, a {ma.shape} vs b {mb.shape}; expected equal (H, W)")
    union = np.count_nonzero(ma | mb)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(ma & mb) / union)
