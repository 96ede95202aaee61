"""MeViS ⇄ Ref-YouTube-VOS layout conversion, lossless for masks and expressions.

SOC / SOC++ (Luo et al., "SOC: Semantic-Assisted Object Cluster for Referring Video Object
Segmentation", NeurIPS 2023, and its journal extension SOC++; seed 002) train and test on MeViS
"processed into the same format as Ref-YouTubeVOS". :func:`mevis_to_ytvos` does that processing and
:func:`ytvos_to_mevis` the inverse; MeViS → Ref-YouTube-VOS → MeViS gives back identical masks,
expressions and frame bytes (without overlapping objects, see below).

MeViS → Ref-YouTube-VOS (layouts: :mod:`rvos_core.formats.mevis`, :mod:`rvos_core.formats.ytvos`):

* frames: the JPEG bytes are copied unchanged.
* objects: each object an expression of the video refers to, a pair (``obj_id``, ``anno_id``), gets
  palette id ``obj_id + 1`` — the colour :func:`rvos_core.masks.object_color` gives that ``obj_id``.
  Within a video an ``anno_id`` must pair with one ``obj_id`` and vice versa, and ``obj_id`` must be
  in 0..254; otherwise :class:`ConversionError` names the video, expression and ids.
* ``Annotations/<video>/<frame>.png``: a palette PNG for every frame (all background where no
  object is present), when the split has ``mask_dict.json``.
* ``meta.json``: per object ``{"frames": [frames where mask_dict.json holds an RLE]}``, so MeViS's
  distinction between ``null`` (absent) and an empty mask survives the trip; ``"category"`` only
  when ``category`` is given (MeViS has none; ``"others"`` is YouTube-VOS's catch-all class, for
  loaders that look the category up).
* ``meta_expressions.json``: ``{"exp", "obj_id": "2" or ["1", "3"], "anno_id": [...], "kind"}`` —
  palette ids in the Ref-YouTube-VOS spelling (a list for multi-object expressions), MeViS
  ``anno_id`` and our ``kind`` kept as extra fields.
* overlaps: a palette PNG holds one id per pixel. With ``on_overlap="error"`` (default) the first
  pixel claimed by two objects stops the conversion with :class:`~rvos_core.formats.davis.MaskOverlapError`
  naming the video, frame, palette ids and anno_ids (nothing is written). With ``"last"`` the
  higher palette id wins and :attr:`ConversionReport.overlap_pixels` / ``overlap_frames`` count
  what was lost (then the round trip is lossy on exactly those pixels).
* ``mask_dict.json`` entries no expression refers to belong to no known video and are not
  written; :attr:`ConversionReport.unreferenced_anno_ids` lists them.

Ref-YouTube-VOS → MeViS:

* the objects referred to by a video's expressions become MeViS objects with ``obj_id = palette id
  - 1`` and the expression's ``anno_id`` (parallel to ``obj_id``) when present, else new anno_ids
  numbered from ``max(existing) + 1`` in video (natural) order, then palette-id order;
* an object is present (non-``null``) on a frame listed in its ``meta.json`` ``frames``, or, without
  that list, on frames where it has pixels; frames without an annotation PNG are ``null``;
* ``kind`` is kept; other extra expression fields have no MeViS place and are dropped;
* the output is a folder, or a zip when ``dst`` ends with ``.zip``; frames are copied unchanged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rvos_core.formats.davis import MaskOverlapError, ids_from_masks
from rvos_core.formats.mevis import MevisExpression, MevisSplit, MevisVideo, _is_digits, _natural_key
from rvos_core.formats.ytvos import YtvosExpression, YtvosObject, YtvosSplit, YtvosVideo


class ConversionError(ValueError):
    """The source cannot be converted as asked; the message names the video / expression / ids."""


@dataclass
class ConversionReport:
    """What a conversion did.

    Attributes:
        source, destination: the paths given.
        videos, expressions, objects, frames: counts written (objects = referred objects, summed
            over videos; frames = JPEGs copied).
        overlap_pixels: pixels claimed by more than one object (``on_overlap="last"`` only; the
            higher palette id kept them). overlap_frames: frames with any such pixel.
        unreferenced_anno_ids: MeViS anno_ids in ``mask_dict.json`` that no expression refers to
            (not written: no video to put them in).
        seconds: wall time.
    """

    source: str
    destination: str
    videos: int = 0
    expressions: int = 0
    objects: int = 0
    frames: int = 0
    overlap_pixels: int = 0
    overlap_frames: int = 0
    unreferenced_anno_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for a CLI: counts, overlaps and dropped anno_ids."""
        text = (f"{self.source} -> {self.destination}: {self.videos} videos, {self.expressions} expressions, "
                f"{self.objects} objects, {self.frames} frames in {self.seconds:.1f} s")
        if self.overlap_pixels:
            text += f"; {self.overlap_pixels} overlapping pixels on {self.overlap_frames} frames went to the higher id"
        if self.unreferenced_anno_ids:
            text += f"; {len(self.unreferenced_anno_ids)} anno_ids referred to by no expression were not written"
        return text


class _LazyVideos(Mapping[str, Any]):
    """Video name → value built on access (each writer fetches every video exactly once)."""

    def __init__(self, names: Sequence[str], build: Callable[[str], Any]) -> None:
        self._names = list(names)
        self._known = set(self._names)
        self._build = build

    def __getitem__(self, name: str) -> Any:
        if name not in self._known:
            raise KeyError(name)
        return self._build(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


# ----------------------------------------------------------------------------------------------
# MeViS -> Ref-YouTube-VOS
# ----------------------------------------------------------------------------------------------

def _palette_of_video(split: MevisSplit, video: str) -> dict[int, int]:
    """Palette id (``obj_id + 1``) → anno_id for the objects the video's expressions refer to.

    Raises:
        ConversionError: obj_id outside 0..254, or an obj_id / anno_id paired with two different ids.
    """
    anno_of: dict[int, int] = {}
    obj_of: dict[int, int] = {}
    for exp_id, e in split.expressions(video).items():
        where = f"video {video!r} expression {exp_id!r}"
        for obj, anno in zip(e.obj_id, e.anno_id):
            if not 0 <= obj <= 254:
                raise ConversionError(f"{where}: obj_id {obj} cannot become a palette id "
                                      "(obj_id + 1 must be in 1..255)")
            if anno_of.setdefault(obj + 1, anno) != anno:
                raise ConversionError(f"{where}: obj_id {obj} is paired with anno_id {anno_of[obj + 1]} elsewhere "
                                      f"and with {anno} here; one palette id cannot hold two objects")
            if obj_of.setdefault(anno, obj) != obj:
                raise ConversionError(f"{where}: anno_id {anno} has obj_id {obj_of[anno]} elsewhere and {obj} here")
    return dict(sorted(anno_of.items()))


class _MevisToYtvosVideo:
    """Builds one :class:`YtvosVideo` from a MeViS video, decoding one frame's RLEs at a time."""

    def __init__(self, split: MevisSplit, video: str, on_overlap: str, category: str | None,
                 report: ConversionReport) -> None:
        self.split, self.video, self.on_overlap, self.category, self.report = split, video, on_overlap, category, report
        self.names = split.frame_names(video)
        self.palette = _palette_of_video(split, video)
        self.present: dict[int, list[str]] = {p: [] for p in self.palette}

    def annotation(self, index: int) -> np.ndarray:
        """``(H, W)`` uint8 palette ids of frame ``index``; records which objects are present."""
        masks = {}
        for pid, anno in self.palette.items():
            m = self.split.object_mask(anno, index)
            if m is not None:
                masks[pid] = m
                self.present[pid].append(self.names[index])
        where = f"{self.split.path}: video {self.video!r} frame {self.names[index]!r}"
        try:
            ids, overlap = ids_from_masks(masks, self.split.frame_size(self.video), where=where,
                                          on_overlap=self.on_overlap)
        except MaskOverlapError as e:
            raise MaskOverlapError(f"{e} [palette id -> anno_id: {self.palette}]") from None
        if overlap:
            self.report.overlap_pixels += overlap
            self.report.overlap_frames += 1
        return ids

    def objects(self) -> dict[int, YtvosObject]:
        """meta.json objects; call after every frame's :meth:`annotation`."""
        return {pid: YtvosObject(category=self.category, frames=list(frames)) for pid, frames in self.present.items()}

    def expression(self, e: MevisExpression) -> YtvosExpression:
        extra: dict[str, Any] = {"anno_id": list(e.anno_id)} if e.anno_id else {}
        if e.kind is not None:
            extra["kind"] = e.kind
        return YtvosExpression(exp=e.exp, obj_id=[o + 1 for o in e.obj_id], extra=extra)

    def build(self) -> YtvosVideo:
        exps = {k: self.expression(e) for k, e in self.split.expressions(self.video).items()}
        has_masks = self.split.has_masks
        self.report.videos += 1
        self.report.expressions += len(exps)
        self.report.objects += len(self.palette)
        self.report.frames += len(self.names)
        return YtvosVideo(frame_names=list(self.names), frames=lambda i: self.split.frame_bytes(self.video, i),
                          expressions=exps, annotations=self.annotation if has_masks else None,
                          objects=self.objects if has_masks else None)


def mevis_to_ytvos(src: str | os.PathLike, dst: str | os.PathLike, *, on_overlap: str = "error",
                   category: str | None = None, overwrite: bool = False, progress: bool = False) -> ConversionReport:
    """Convert a MeViS-layout split (folder or zip) into a Ref-YouTube-VOS-layout split folder.

    See the module docstring for the mapping. Frames are copied byte for byte; masks are decoded one
    frame at a time (memory ~ one frame per object); the output is written atomically.

    Args:
        src: MeViS split folder or zip (``train`` / ``valid_u`` with masks, or ``valid`` without).
        dst: output split folder.
        on_overlap: ``"error"`` or ``"last"`` (see the module docstring).
        category: ``meta.json`` category for every object (default: none written).
        overwrite: replace a non-empty ``dst``.
        progress: show a tqdm bar.

    Returns:
        :class:`ConversionReport`.

    Raises:
        FileNotFoundError, MevisFormatError: unreadable source (from :func:`read_mevis_split`).
        ConversionError: obj_id/anno_id pairing that no palette can hold.
        MaskOverlapError: overlapping objects with ``on_overlap="error"``.
        FileExistsError: ``dst`` not empty and ``overwrite`` false.
    """
    from rvos_core.formats.mevis import read_mevis_split
    from rvos_core.formats.ytvos import write_ytvos_split

    if on_overlap not in ("error", "last"):
        raise ValueError(f"on_overlap: expected 'error' or 'last', got {on_overlap!r}")
    start = time.perf_counter()
    report = ConversionReport(source=str(src), destination=str(dst))
    with read_mevis_split(src) as split:
        videos = _LazyVideos(split.videos,
                             lambda v: _MevisToYtvosVideo(split, v, on_overlap, category, report).build())
        write_ytvos_split(dst, videos, progress=progress, overwrite=overwrite)
        referred = {a for v in split.videos for e in split.expressions(v).values() for a in e.anno_id}
        report.unreferenced_anno_ids = [a for a in split.anno_ids if a not in referred]
    report.seconds = time.perf_counter() - start
    return report


# ----------------------------------------------------------------------------------------------
# Ref-YouTube-VOS -> MeViS
# ----------------------------------------------------------------------------------------------

def _given_anno_ids(e: YtvosExpression, where: str) -> list[int] | None:
    """The expression's ``anno_id`` list (parallel to ``obj_id``), or ``None`` when absent."""
    raw = e.extra.get("anno_id")
    if raw is None:
        return None
    ok = isinstance(raw, list) and all(
        (isinstance(a, int) and not isinstance(a, bool) and a >= 0) or (isinstance(a, str) and _is_digits(a))
        for a in raw)
    if not ok or len(raw) != len(e.obj_id):
        raise ConversionError(f"{where}.anno_id: expected a list of {len(e.obj_id)} non-negative ints "
                              f"(one per obj_id {e.obj_id}), got {raw!r}")
    return [int(a) for a in raw]


def _assign_anno_ids(split: YtvosSplit) -> dict[tuple[str, int], int]:
    """(video, palette id) → anno_id for every referred object: given ones first, then new ones.

    Raises:
        ConversionError: an anno_id list of the wrong length / type, or the same object given two
            anno_ids, or one anno_id given to two objects.
    """
    out: dict[tuple[str, int], int] = {}
    owner: dict[int, tuple[str, int]] = {}
    for video in split.videos:
        for exp_id, e in split.expressions(video).items():
            where = f"{split.path}: video {video!r} expression {exp_id!r}"
            for pid, anno in zip(e.obj_id, _given_anno_ids(e, where) or []):
                if out.setdefault((video, pid), anno) != anno:
                    raise ConversionError(f"{where}: palette id {pid} has anno_id {out[(video, pid)]} elsewhere "
                                          f"and {anno} here")
                if owner.setdefault(anno, (video, pid)) != (video, pid):
                    raise ConversionError(f"{where}: anno_id {anno} is also used by video {owner[anno][0]!r} "
                                          f"palette id {owner[anno][1]}; anno_id must be unique in a MeViS split")
    next_id = max(owner, default=-1) + 1
    for video in sorted(split.videos, key=_natural_key):
        referred = sorted({pid for e in split.expressions(video).values() for pid in e.obj_id})
        for pid in referred:
            if (video, pid) not in out:
                out[(video, pid)] = next_id
                next_id += 1
    return out


class _ObjectMasks(Sequence):
    """One object's per-frame masks read lazily from the annotation PNGs (``None`` = absent)."""

    def __init__(self, split: YtvosSplit, video: str, pid: int) -> None:
        self.split, self.video, self.pid = split, video, pid
        self.names = split.frame_names(video)
        obj = split.objects(video).get(pid)
        self.listed = set(obj.frames) if obj is not None else None

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> np.ndarray | None:  # type: ignore[override]
        if not 0 <= index < len(self.names):
            raise IndexError(index)
        ids = self.split.annotation(self.video, index)
        if ids is None:
            return None
        mask = ids == self.pid
        present = self.names[index] in self.listed if self.listed is not None else bool(mask.any())
        return mask if present else None


def _kind_of(e: YtvosExpression, where: str) -> str | None:
    kind = e.extra.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise ConversionError(f"{where}.kind: expected a string, got {kind!r}")
    return kind


def _ytvos_to_mevis_video(split: YtvosSplit, video: str, annos: dict[tuple[str, int], int],
                          report: ConversionReport) -> MevisVideo:
    names = split.frame_names(video)
    exps = {}
    for exp_id, e in split.expressions(video).items():
        where = f"{split.path}: video {video!r} expression {exp_id!r}"
        exps[exp_id] = MevisExpression(exp=e.exp, obj_id=[p - 1 for p in e.obj_id],
                                       anno_id=[annos[(video, p)] for p in e.obj_id], kind=_kind_of(e, where))
    referred = sorted({p for e in split.expressions(video).values() for p in e.obj_id})
    masks = ({annos[(video, p)]: _ObjectMasks(split, video, p) for p in referred}
             if split.has_annotations else {})
    report.videos += 1
    report.expressions += len(exps)
    report.objects += len(referred)
    report.frames += len(names)
    return MevisVideo(frame_names=names, frames=lambda i: split.frame_bytes(video, i), expressions=exps,
                      masks=masks)  # type: ignore[arg-type]  # lazy per-frame sequences


def ytvos_to_mevis(src: str | os.PathLike, dst: str | os.PathLike, *,
                   meta_expressions: str | os.PathLike | None = None, overwrite: bool = False,
                   progress: bool = False) -> ConversionReport:
    """Convert a Ref-YouTube-VOS-layout split (folder or zip) into a MeViS-layout split.

    See the module docstring for the mapping. ``mask_dict.json`` is written when the source has an
    ``Annotations/`` folder. A ``dst`` ending in ``.zip`` gives a zip
    (:func:`~rvos_core.formats.mevis.write_mevis_zip`), otherwise a folder; written atomically.

    Args:
        src: Ref-YouTube-VOS split folder or zip.
        dst: output folder or ``.zip``.
        meta_expressions: expressions file when not found by :func:`read_ytvos_split`.
        overwrite: replace an existing ``dst``.
        progress: show a tqdm bar.

    Returns:
        :class:`ConversionReport`.

    Raises:
        FileNotFoundError, YtvosFormatError: unreadable source (from :func:`read_ytvos_split`).
        ConversionError: inconsistent ``anno_id`` fields or a non-string ``kind``.
        FileExistsError: ``dst`` exists and ``overwrite`` is false.
    """
    from rvos_core.formats.mevis import write_mevis_split, write_mevis_zip
    from rvos_core.formats.ytvos import read_ytvos_split

    start = time.perf_counter()
    report = ConversionReport(source=str(src), destination=str(dst))
    with read_ytvos_split(src, meta_expressions) as split:
        annos = _assign_anno_ids(split)
        videos = _LazyVideos(split.videos, lambda v: _ytvos_to_mevis_video(split, v, annos, report))
        writer = write_mevis_zip if str(dst).lower().endswith(".zip") else write_mevis_split
        writer(dst, videos, progress=progress, overwrite=overwrite, with_masks=split.has_annotations)
    report.seconds = time.perf_counter() - start
    return report


__all__ = ["ConversionError", "ConversionReport", "mevis_to_ytvos", "ytvos_to_mevis"]
