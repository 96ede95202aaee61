"""Procedural referring-motion clips: coloured shapes moving over a textured background.

Training and held-out data for the demo model, in the spirit of MeViS (Ding et al., "MeViS: A
Large-scale Benchmark for Video Segmentation with Motion Expressions", ICCV 2023): many expressions
can only be resolved by *motion*, because a same-looking distractor is present; some refer to
several objects at once. Splits are written in the MeViS layout (``train`` / ``valid_u`` style, with
``mask_dict.json``; layout as used by the 2nd-place PVUW 2024 MeViS entry, seed 003) through
:func:`rvos_core.formats.mevis.write_mevis_split`.

Two vocabularies (``vocabulary=`` of :func:`generate_video`, :func:`write_split`,
:func:`iterate_training_samples`; ``synth --vocabulary``):

* ``"basic"`` — the first generator, kept byte for byte: the shipped ``clip-rvos-tiny`` was trained
  on it (``rvos_core.training`` calls :func:`generate_video` without a vocabulary) and its held-out
  split is ``synth --vocabulary basic --seed 1000 …``. Default of the library functions.
* ``"full"`` — the MeViS motion vocabulary below. Default of the ``synth`` command.

Common to both (sizes relative to the frame): background: a random mix of a smooth gradient, stripes
and blotchy noise between two low-saturation colours (never confusable with the saturated objects;
white objects are brighter than any background pixel); shape ``circle | square | triangle |
diamond``; colour ``red | green | blue | yellow | purple | orange | white``; size ``small`` (radius
7–10 % of ``min(H, W)``) or ``big`` (13–17 %); objects may leave the frame partly or fully (their
mask is then empty on those frames, ``null`` in ``mask_dict.json``); occlusion: a pixel belongs to
the front-most object, masks exclude covered parts.

Basic vocabulary
----------------
2–4 objects with motion ``left | right | up | down | still`` ("up" = towards row 0), speed ``slow``
(total displacement 20–30 % of the frame over the clip) or ``fast`` (45–60 %), linear; drawn in
``obj_id`` order (later on top); no camera motion; 2–5 expressions per clip, each with a ``kind``:

- ``"appearance"``: only appearance words (colour / shape / size);
- ``"motion"``: a referred object has a distractor of identical shape, colour and size that is
  not referred, so only the motion words tell them apart;
- ``"mixed"``: appearance and motion words are both needed and no identical distractor exists.

Every expression is checked to be satisfied by exactly its ``obj_ids`` (:func:`_referents`).

Full vocabulary
---------------
* 2–6 objects; usually a same-looking pair (identical shape, colour, size and radius) whose two
  members move differently, sometimes a second pair; others often share a colour or a shape.
* Each object follows a per-frame motion *program* (``SynthObject.motion``, one of
  :data:`PROGRAMS`): still; linear (a direction, slow / fast); starts moving / stops (still for part
  of the clip); turns around; speeds up / slows down (speed ramps ×3–5); one loop of a circle;
  approaches / moves away from another object (heading re-aimed at it every frame); enters / leaves
  the frame (fully outside on the first / last frame). Programs that need several phases are only
  planted when the clip has enough frames (e.g. a loop needs ``T ≥ 6``).
* Camera motion (35 % of clips): a linear pan by 8–16 % of ``min(H, W)``; the background and all
  objects shift on screen. ``SynthVideo.tracks`` are world (scene) positions, ``SynthVideo.camera``
  the offsets: an object is drawn at ``tracks[k, i] - camera[i]``.
* Occlusion: a random depth order (``SynthVideo.depth``, back to front).
* Expressions (2–6 per clip): optional appearance words + at most one motion predicate
  (:data:`PREDICATES`, :class:`MotionSpec`). Their truth is *computed from the tracks*, not assumed
  from the planted programs. Speeds are measured in u = ``min(H, W) / (T - 1)`` px per frame
  (one frame side over the clip), lengths in L = ``min(H, W)``; an interval (frame to frame) is
  *moving* at ≥ 0.10 u and *still* at ≤ 0.02 u. Motion words describe motion in the scene (world
  coordinates: a still object stays "still" under a camera pan); entering / leaving refer to the frame.

  ==============  ==========================================================================
  predicate       true when (false needs a clear margin; anything in between is undecided)
  ==============  ==========================================================================
  still           every interval still (false: path ≥ 0.15 L)
  moves D [S]     every moving interval heads within ~37° of D and the net displacement along D
                  is ≥ 0.10 L; "slowly": every moving interval ≤ 0.42 u, "quickly": ≥ 0.50 u
  starts / stops  still for the first (last) intervals, then moving to the end (from the start)
  turns_around    straight path, out ≥ 0.10 L along the first heading, then back ≥ 0.10 L
  speeds_up /     moving throughout on one heading; the mean speed of the last third is ≥ 2 ×
  slows_down      that of the first third (reversed for slows_down; ≤ 1.25 ×: false)
  circle          moving throughout, the heading turns one way by ≥ 252° ("moving in a loop")
  approaches B    path ≥ 0.15 L, every moving interval within ~45° of the direction to B's
                  current position, the distance ends ≤ 0.6 × its start
  moves_away B    mirrored: away from B, the distance ends ≥ 1.6 × its start
  enters / leaves no pixel in frame on the first (last) frame, ≥ 90 % of the shape in frame on the
                  last (first), moving (false: ≥ 50 % in frame on the first (last) frame)
  first / last    within the group the appearance words select: the one whose motion starts
                  first (last), ≥ 2 frames before (after) every other; the others clearly still
                  before their onset
  most            within the group: the longest path, ≥ 1.5 × every other and ≥ 0.3 L
  ==============  ==========================================================================

  An expression is generated only when its truth is decided for every candidate object (no
  borderline object), it selects 1 … K - 1 objects, and every word is needed (minimal). Relations
  name the other object ("the landmark") by appearance words that select it alone. Kinds:

  - ``"appearance"``: no motion words;
  - ``"motion"``: only motion tells — a referred object has a same-looking distractor that is
    not referred, or the text has no appearance words at all ("the object that moves first");
  - ``"mixed"``: appearance and motion words are both needed and no identical distractor exists.

Held-out split and its motion-only subset: :func:`write_split` with a seed writes clips drawn with
``default_rng([seed, i])``, which :func:`iterate_training_samples` never uses; with
``motion_only=True`` (``synth --motion-only``) it also writes :data:`MOTION_ONLY_FILE`
(``meta_expressions_motion_only.json``, same schema as ``meta_expressions.json``, only the
expressions of kind ``"motion"``, original ids; see :func:`write_motion_only_subset`).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Union

import cv2
import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond")
#: Nominal RGB of each colour name (jittered by at most ±12 per channel, once per clip).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35), "green": (40, 185, 55), "blue": (40, 75, 230), "yellow": (240, 215, 30),
    "purple": (150, 50, 200), "orange": (250, 135, 20), "white": (248, 248, 248),
}
#: Radius range as a fraction of ``min(H, W)``.
SIZES: dict[str, tuple[float, float]] = {"small": (0.07, 0.10), "big": (0.13, 0.17)}
DIRECTIONS = ("left", "right", "up", "down")
MOTIONS = DIRECTIONS + ("still",)
#: Total displacement over the clip as a fraction of the frame width (left/right) or height (up/down).
SPEEDS: dict[str, tuple[float, float]] = {"slow": (0.20, 0.30), "fast": (0.45, 0.60)}
KINDS = ("appearance", "motion", "mixed")
#: Generators: ``"basic"`` (the first version, unchanged; default of :func:`generate_video`) and ``"full"``.
VOCABULARIES = ("basic", "full")
#: Motion predicates of the full vocabulary (see the module docstring for their definitions).
PREDICATES = ("still", "moves", "starts", "stops", "turns_around", "speeds_up", "slows_down", "circle",
              "approaches", "moves_away", "enters", "leaves", "first", "last", "most")
RELATIONAL_PREDICATES = ("approaches", "moves_away")
SUPERLATIVE_PREDICATES = ("first", "last", "most")
#: Motion programs planted by the full vocabulary (``SynthObject.motion``; truth is read from the tracks).
PROGRAMS = ("still", "linear", "starts", "stops", "turns_around", "speeds_up", "slows_down", "circle",
            "approaches", "moves_away", "enters", "leaves")
#: Extra file :func:`write_motion_only_subset` writes into a split.
MOTION_ONLY_FILE = "meta_expressions_motion_only.json"

APPEARANCE_ATTRS = ("color", "shape", "size")
MOTION_ATTRS = ("motion", "speed")
ATTRS = APPEARANCE_ATTRS + MOTION_ATTRS

_TWIN_PROB = 0.7          # chance to plant a same-looking distractor with a different motion
_MIXED_PROB = 0.7         # chance (when room is left) to plant a pair that calls for mixed expressions
_MIN_VISIBLE = 0.35        # visible area / full area for a frame to count as "visible"
_SUBPIXEL = 4              # cv2 drawing shift: coordinates in 1/16 px
_ANNO_STRIDE = 10          # anno_id = video_index * 10 + obj_id (at most 6 objects per clip)


@dataclass(frozen=True)
class SynthObject:
    """One object of a clip.

    Attributes:
        obj_id: index within the clip (basic vocabulary: also the drawing order, higher ids on top;
            full vocabulary: see ``SynthVideo.depth``).
        shape: one of :data:`SHAPES`. color: one of :data:`COLORS`. size_name: ``"small"`` / ``"big"``.
        motion: basic vocabulary: one of :data:`MOTIONS` (image directions; ``"up"`` = towards row 0).
            Full vocabulary: the planted program, one of :data:`PROGRAMS` (informational: expressions
            are checked against ``SynthVideo.tracks``, not against this name).
        speed: ``"slow"`` / ``"fast"``, or ``None`` (``motion == "still"``; full: programs without a speed class).
        radius: radius in pixels. start, end: centre ``(x, y)`` in pixels on the first / last frame
            (basic: linear in between; full: world coordinates, the path is ``SynthVideo.tracks``;
            may lie outside the frame).
    """

    obj_id: int
    shape: str
    color: str
    size_name: str
    motion: str
    speed: str | None
    radius: float = 0.0
    start: tuple[float, float] = (0.0, 0.0)
    end: tuple[float, float] = (0.0, 0.0)

    def attr(self, name: str) -> str | None:
        """Value of an expression attribute (``color, shape, size, motion, speed``)."""
        return self.size_name if name == "size" else getattr(self, name)


@dataclass(frozen=True)
class ExpressionSpec:
    """What an expression says: each attribute is a required value, or ``None`` (not mentioned).

    Attributes:
        color, shape, size: appearance words. motion: a direction or ``"still"``. speed: ``"slow"`` /
            ``"fast"``. plural: the expression refers to several objects ("all the red circles").
    """

    color: str | None = None
    shape: str | None = None
    size: str | None = None
    motion: str | None = None
    speed: str | None = None
    plural: bool = False

    def attrs(self) -> tuple[str, ...]:
        """Names of the attributes the expression mentions."""
        return tuple(a for a in ATTRS if getattr(self, a) is not None)

    def without(self, names: Sequence[str]) -> ExpressionSpec:
        """The same spec with the given attributes dropped."""
        return replace(self, **{n: None for n in names})


@dataclass(frozen=True)
class MotionSpec:
    """What a full-vocabulary expression says.

    Attributes:
        color, shape, size: appearance words of the referred objects (``None``: not mentioned).
        predicate: one of :data:`PREDICATES`, or ``None`` (an appearance-only expression).
        direction: ``"left" | "right" | "up" | "down"`` for ``predicate == "moves"``.
        speed: ``"slow" | "fast"`` or ``None``, for ``"moves"`` only.
        landmark: obj_id of the other object of ``"approaches"`` / ``"moves_away"``.
        landmark_spec: the appearance words naming the landmark (they select it alone among all objects).
        plural: the expression refers to several objects.
    """

    color: str | None = None
    shape: str | None = None
    size: str | None = None
    predicate: str | None = None
    direction: str | None = None
    speed: str | None = None
    landmark: int | None = None
    landmark_spec: ExpressionSpec | None = None
    plural: bool = False

    def appearance(self) -> ExpressionSpec:
        """The appearance words of the referred objects as an :class:`ExpressionSpec`."""
        return ExpressionSpec(color=self.color, shape=self.shape, size=self.size)

    def motion(self) -> _Motion | None:
        """``(predicate, direction, speed, landmark)``, or ``None`` when no motion is stated."""
        return None if self.predicate is None else (self.predicate, self.direction, self.speed, self.landmark)


_AnySpec = Union[ExpressionSpec, MotionSpec]
#: A candidate expression: (spec, referred obj_ids, kind).
_Candidate = tuple[Any, list[int], str]


@dataclass(frozen=True)
class SynthExpression:
    """A referring expression of a clip.

    Attributes:
        text: the expression, lower case, e.g. ``"the circle moving to the left"``.
        obj_ids: the referred objects (sorted); the ground truth is the union of their masks.
        kind: ``"appearance"``, ``"motion"`` or ``"mixed"`` (see the module docstring).
        spec: what the text states: an :class:`ExpressionSpec` (basic vocabulary;
            ``_referents(objects, spec) == obj_ids``) or a :class:`MotionSpec` (full vocabulary; its
            truth was computed from the clip's tracks).
    """

    text: str
    obj_ids: list[int]
    kind: str
    spec: ExpressionSpec | MotionSpec


@dataclass
class SynthVideo:
    """One generated clip, in memory.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        objects: the objects, ``objects[k].obj_id == k``.
        masks: ``(K, T, H, W)`` bool, exact pixel masks after occlusion (empty where off-frame or hidden).
        expressions: 2–5 (basic) or 2–6 (full) :class:`SynthExpression`.
        tracks: ``(K, T, 2)`` float64 object centres ``(x, y)`` in px, world coordinates (the scene);
            on frame ``i`` an object is drawn at ``tracks[k, i] - camera[i]``.
        camera: ``(T, 2)`` int64 camera offsets ``(x, y)`` in px, ``camera[0] == (0, 0)``; all zero
            without camera motion (always so in the basic vocabulary).
        depth: obj_ids from back to front (drawing order); basic: ``[0, 1, …, K - 1]``.
        vocabulary: ``"basic"`` or ``"full"``.
    """

    frames: np.ndarray
    objects: list[SynthObject]
    masks: np.ndarray
    expressions: list[SynthExpression]
    tracks: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 2)))
    camera: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    depth: list[int] = field(default_factory=list)
    vocabulary: str = "basic"


# ----------------------------------------------------------------------------------------------
# referents and kinds
# ----------------------------------------------------------------------------------------------

def _referents(objects: Sequence[SynthObject], spec: ExpressionSpec) -> list[int]:
    """obj_ids of every object satisfying all attributes ``spec`` mentions (sorted).

    A spec mentioning nothing matches every object. ``speed`` never matches a still object.
    """
    names = spec.attrs()
    return [o.obj_id for o in objects if all(o.attr(a) == getattr(spec, a) for a in names)]


def _looks_same(a: SynthObject, b: SynthObject) -> bool:
    """Identical shape, colour and size class (and radius): only motion can tell them apart."""
    return a.shape == b.shape and a.color == b.color and a.size_name == b.size_name and a.radius == b.radius


def _has_lookalike_distractor(objects: Sequence[SynthObject], referents: Sequence[int]) -> bool:
    """Whether some referred object has a same-looking object that is not referred."""
    ref = set(referents)
    return any(_looks_same(objects[i], o) for i in ref for o in objects if o.obj_id not in ref)


def _kind(objects: Sequence[SynthObject], spec: ExpressionSpec, referents: Sequence[int]) -> str | None:
    """``"appearance"`` / ``"motion"`` / ``"mixed"`` for a minimal spec, or ``None`` when the spec uses
    only motion words although appearance alone could tell (not generated)."""
    names = set(spec.attrs())
    if not names & set(MOTION_ATTRS):
        return "appearance"
    if _has_lookalike_distractor(objects, referents):
        return "motion"
    return "mixed" if names & set(APPEARANCE_ATTRS) else None


def _is_minimal(objects: Sequence[SynthObject], spec: ExpressionSpec, referents: list[int]) -> bool:
    """Every mentioned attribute is needed: dropping any one changes the referent set."""
    return all(_referents(objects, spec.without([a])) != referents for a in spec.attrs())


def _candidate_specs(objects: Sequence[SynthObject]) -> list[tuple[ExpressionSpec, list[int], str]]:
    """All minimal specs (single- and multi-object) with their referents and kind.

    A single-object spec must select exactly one object; a multi-object spec selects ≥ 2 objects
    but not all of them.
    """
    seen: set[ExpressionSpec] = set()
    out = []
    n = len(objects)
    for o in objects:
        for r in range(1, len(ATTRS) + 1):
            for subset in itertools.combinations(ATTRS, r):
                values = {a: o.attr(a) for a in subset}
                if any(v is None for v in values.values()):
                    continue  # speed of a still object
                refs = _referents(objects, ExpressionSpec(**values))
                if not 1 <= len(refs) < n:
                    continue
                spec = ExpressionSpec(**values, plural=len(refs) > 1)
                if spec in seen or not _is_minimal(objects, spec, refs):
                    continue
                seen.add(spec)
                kind = _kind(objects, spec, refs)
                if kind is not None:
                    out.append((spec, refs, kind))
    return out


# ----------------------------------------------------------------------------------------------
# text
# ----------------------------------------------------------------------------------------------

_DIR_WORDS = {"left": ("left", "to the left"), "right": ("right", "to the right"),
              "up": ("up", "upwards"), "down": ("down", "downwards")}
_STILL = {False: ("staying still", "that stays still", "that is not moving", "standing still",
                  "that does not move", "that remains still"),
          True: ("staying still", "that stay still", "that are not moving", "standing still",
                 "that do not move", "that remain still")}
_ADVERB = {"slow": ("slowly",), "fast": ("quickly", "fast")}
_SPEED_ADJ = {"slow": ("slow-moving",), "fast": ("fast-moving",)}
_SIZE_WORDS = {"small": ("small", "little"), "big": ("big", "large")}
_GENERIC = {False: ("object", "shape"), True: ("objects", "shapes")}


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _motion_phrase(rng: np.random.Generator, spec: ExpressionSpec, plural: bool) -> str:
    """Post-nominal motion phrase, e.g. ``"moving quickly to the left"`` (``""`` if no direction)."""
    if spec.motion is None:
        return ""
    if spec.motion == "still":
        return _pick(rng, _STILL[plural])
    d = _pick(rng, _DIR_WORDS[spec.motion])
    moves = "move" if plural else "moves"
    if spec.speed is None:
        heading = "heading" if spec.motion in ("left", "right") else "going"
        return _pick(rng, (f"moving {d}", f"going {d}", f"{heading} {d}", f"that {moves} {d}"))
    adv = _pick(rng, _ADVERB[spec.speed])
    return _pick(rng, (f"moving {d} {adv}", f"{adv} moving {d}", f"that {moves} {d} {adv}"))


def _determiner(rng: np.random.Generator, count: int) -> str:
    if count == 1:
        return "the"
    if count == 2:
        return _pick(rng, ("the two", "both", "both of the", "all the", "the"))
    return _pick(rng, ("the three", "all three", "all the", "the") if count == 3 else ("all the", "the"))


def _noun_words(rng: np.random.Generator, spec: ExpressionSpec | MotionSpec, plural: bool) -> list[str]:
    """Size, colour and shape words of a spec (a generic noun when no shape), e.g. ``["big", "red", "circles"]``."""
    words = []
    if spec.size:
        words.append(_pick(rng, _SIZE_WORDS[spec.size]))
    if spec.color:
        words.append(spec.color)
    if spec.shape:
        words.append(spec.shape + ("s" if plural else ""))
    else:
        words.append(_pick(rng, _GENERIC[plural]))
    return words


def _render_text(rng: np.random.Generator, spec: ExpressionSpec, count: int) -> str:
    """Words for a spec; only what the spec states, in one of several phrasings."""
    plural = count > 1
    words = [_determiner(rng, count)]
    speed_only = spec.speed is not None and spec.motion is None
    if speed_only and rng.random() < 0.6:
        words.append(_pick(rng, _SPEED_ADJ[spec.speed]))
        speed_only = False
    words += _noun_words(rng, spec, plural)
    if speed_only:
        moves = "move" if plural else "moves"
        words.append(_pick(rng, (f"that {moves} {_pick(rng, _ADVERB[spec.speed])}",
                                 f"moving {_pick(rng, _ADVERB[spec.speed])}")))
    phrase = _motion_phrase(rng, spec, plural)
    if phrase:
        words.append(phrase)
    return " ".join(words)


# ----------------------------------------------------------------------------------------------
# choosing expressions
# ----------------------------------------------------------------------------------------------

def _embellish(rng: np.random.Generator, objects: Sequence[SynthObject], spec: ExpressionSpec,
               refs: list[int], kind: str) -> ExpressionSpec:
    """Optionally add true, redundant shape/colour words (natural phrasing: "the red circle moving
    left"); never for ``"mixed"``, whose words must all be needed."""
    if kind == "mixed":
        return spec
    return _add_true_words(rng, objects, spec, refs, lambda trial: _referents(objects, trial) == refs)


def _add_true_words(rng: np.random.Generator, objects: Sequence[SynthObject], spec: _AnySpec, refs: list[int],
                    keeps_referents: Callable[[_AnySpec], bool]) -> _AnySpec:
    """Add a shape word (70 %) and a colour word (30 %) that all referents share, when ``keeps_referents``
    holds for the result (the referent set stays the same)."""
    for a in ("shape", "color"):
        if getattr(spec, a) is not None or rng.random() >= (0.7 if a == "shape" else 0.3):
            continue
        values = {objects[i].attr(a) for i in refs}
        if len(values) == 1:
            trial = replace(spec, **{a: values.pop()})
            if keeps_referents(trial):
                spec = trial
    return spec


def _choose_expressions(rng: np.random.Generator, objects: Sequence[SynthObject]) -> list[SynthExpression]:
    """2–5 expressions favouring motion (≥ 30 % overall) and multi-object ones (≥ 15 %)."""
    cands = _candidate_specs(objects)
    if len(cands) < 2:
        return []
    order = [cands[i] for i in rng.permutation(len(cands))]
    chosen: list[_Candidate] = []
    want = int(rng.integers(2, 6))
    _take(order, chosen, lambda c: c[2] == "motion", 1)
    if rng.random() < 0.6:
        _take(order, chosen, lambda c: len(c[1]) > 1, len(chosen) + 1)
    _take(order, chosen, lambda c: c[2] == "mixed", len(chosen) + 1)
    weights = {"appearance": 3.0, "mixed": 3.0, "motion": 1.0}
    _fill(rng, order, chosen, want, lambda c: weights[c[2]])  # non-motion kinds preferred
    return _finalise(rng, chosen, lambda core, refs, kind: _embellish(rng, objects, core, refs, kind),
                     lambda spec, count: _render_text(rng, spec, count))


def _take(order: Sequence[_Candidate], chosen: list[_Candidate], pred: Callable[[_Candidate], bool],
          limit: int) -> None:
    """Append candidates of ``order`` satisfying ``pred`` with a referent set not chosen yet, until
    ``len(chosen) == limit``."""
    for c in order:
        if len(chosen) >= limit:
            return
        if c not in chosen and pred(c) and all(c[1] != d[1] for d in chosen):
            chosen.append(c)


def _fill(rng: np.random.Generator, order: Sequence[_Candidate], chosen: list[_Candidate], want: int,
          weight: Callable[[_Candidate], float]) -> None:
    """Draw candidates (probability ∝ ``weight``) until ``want`` are chosen, preferring new referent sets."""
    rest = [c for c in order if c not in chosen]
    while rest and len(chosen) < want:
        fresh = [c for c in rest if all(c[1] != d[1] for d in chosen)] or rest
        p = np.array([weight(c) for c in fresh])
        c = fresh[int(rng.choice(len(fresh), p=p / p.sum()))]
        chosen.append(c)
        rest.remove(c)


def _finalise(rng: np.random.Generator, chosen: Sequence[_Candidate],
              embellish: Callable[[_AnySpec, list[int], str], _AnySpec],
              render: Callable[[_AnySpec, int], str]) -> list[SynthExpression]:
    """Chosen candidates in random order → expressions (optionally embellished, one per distinct spec)."""
    out = []
    used: set[_AnySpec] = set()
    for i in rng.permutation(len(chosen)):
        core, refs, kind = chosen[i]
        spec = embellish(core, refs, kind)
        if spec in used:  # two cores embellished into the same words: keep the plain core
            spec = core
        if spec in used:
            continue
        used.add(spec)
        out.append(SynthExpression(render(spec, len(refs)), list(refs), kind, spec))
    return out


# ----------------------------------------------------------------------------------------------
# objects, rendering
# ----------------------------------------------------------------------------------------------

def _random_motion(rng: np.random.Generator) -> tuple[str, str | None]:
    motion = _pick(rng, MOTIONS)
    return motion, (None if motion == "still" else _pick(rng, tuple(SPEEDS)))


def _other_motion(rng: np.random.Generator, motion: str, speed: str | None) -> tuple[str, str | None]:
    """A motion that differs from ``(motion, speed)``: same direction at the other speed (25 %), else
    another direction (or still)."""
    if motion != "still" and rng.random() < 0.25:
        return motion, ("fast" if speed == "slow" else "slow")
    m = _pick(rng, tuple(x for x in MOTIONS if x != motion))
    return m, (None if m == "still" else _pick(rng, tuple(SPEEDS)))


def _add_object(objs: list[dict], rng: np.random.Generator, min_side: int, shape: str, color: str,
                size_name: str, motion: str, speed: str | None) -> bool:
    """Append an object unless it would equal an existing one in appearance *and* motion; same-looking
    objects share the radius. Returns whether it was added."""
    same = [o for o in objs if (o["shape"], o["color"], o["size_name"]) == (shape, color, size_name)]
    if any((o["motion"], o["speed"]) == (motion, speed) for o in same):
        return False
    lo, hi = SIZES[size_name]
    r = same[0]["radius"] if same else float(rng.uniform(lo, hi) * min_side)
    objs.append(dict(shape=shape, color=color, size_name=size_name, radius=r, motion=motion, speed=speed))
    return True


def _plant_mixed_pair(objs: list[dict], rng: np.random.Generator, min_side: int) -> None:
    """Add X and Y so that X needs appearance *and* motion words: Y shares X's colour (or shape) but
    moves differently, and an existing object Z moves like X but differs in that colour (or shape)."""
    z = objs[int(rng.integers(len(objs)))]
    key = _pick(rng, ("color", "shape"))
    other = "shape" if key == "color" else "color"
    pool = {"color": tuple(COLORS), "shape": SHAPES}
    x_key = _pick(rng, tuple(v for v in pool[key] if v != z[key]))
    x_other = _pick(rng, pool[other])
    y_other = _pick(rng, tuple(v for v in pool[other] if v != x_other))
    x = {key: x_key, other: x_other}
    y = {key: x_key, other: y_other}
    y_motion = _other_motion(rng, z["motion"], z["speed"])
    if _add_object(objs, rng, min_side, x["shape"], x["color"], _pick(rng, tuple(SIZES)), z["motion"], z["speed"]):
        _add_object(objs, rng, min_side, y["shape"], y["color"], _pick(rng, tuple(SIZES)), *y_motion)


def _sample_attributes(rng: np.random.Generator, min_side: int) -> list[dict]:
    """Object attributes of 2–4 objects; usually with a same-looking pair that moves differently
    (motion expressions), often with a pair planted for mixed expressions."""
    n = int(rng.choice((2, 3, 4), p=(0.2, 0.4, 0.4)))
    objs: list[dict] = []
    _add_object(objs, rng, min_side, _pick(rng, SHAPES), _pick(rng, tuple(COLORS)), _pick(rng, tuple(SIZES)),
                *_random_motion(rng))
    if rng.random() < _TWIN_PROB:
        a = objs[0]
        _add_object(objs, rng, min_side, a["shape"], a["color"], a["size_name"], *_other_motion(rng, a["motion"], a["speed"]))
    if n - len(objs) >= 2 and rng.random() < _MIXED_PROB:
        _plant_mixed_pair(objs, rng, min_side)
    while len(objs) < n:
        ref = objs[int(rng.integers(len(objs)))]
        shape = ref["shape"] if rng.random() < 0.5 else _pick(rng, SHAPES)
        color = ref["color"] if rng.random() < 0.5 else _pick(rng, tuple(COLORS))
        _add_object(objs, rng, min_side, shape, color, _pick(rng, tuple(SIZES)), *_random_motion(rng))
    order = rng.permutation(len(objs))  # drawing order (and obj_id) independent of the planting order
    return [objs[i] for i in order]


def _place(rng: np.random.Generator, attrs: dict, obj_id: int, h: int, w: int) -> SynthObject:
    """Choose start/end centres (pixels) for the object's motion; paths may leave the frame."""
    motion, speed = attrs["motion"], attrs["speed"]
    x, y = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
    if motion == "still":
        start = end = (float(x), float(y))
    else:
        horizontal = motion in ("left", "right")
        length = w if horizontal else h
        disp = rng.uniform(*SPEEDS[speed]) * length * (1 if motion in ("right", "down") else -1)
        mid = rng.uniform(0.15, 0.85) * length
        a, b = mid - disp / 2, mid + disp / 2
        start, end = ((a, y), (b, y)) if horizontal else ((x, a), (x, b))
    return SynthObject(obj_id=obj_id, shape=attrs["shape"], color=attrs["color"], size_name=attrs["size_name"],
                       motion=motion, speed=speed, radius=attrs["radius"],
                       start=(float(start[0]), float(start[1])), end=(float(end[0]), float(end[1])))


def _polygon(shape: str, cx: float, cy: float, r: float) -> np.ndarray:
    """Vertices ``(N, 2)`` (x, y) in pixels of a polygonal shape of radius ``r``."""
    if shape == "square":
        s = 0.88 * r
        pts = [(-s, -s), (s, -s), (s, s), (-s, s)]
    elif shape == "diamond":
        pts = [(0.0, -r), (0.72 * r, 0.0), (0.0, r), (-0.72 * r, 0.0)]
    else:  # triangle, equilateral, pointing up
        big = 1.1 * r
        pts = [(0.0, -big), (0.866 * big, 0.5 * big), (-0.866 * big, 0.5 * big)]
    return np.array([(cx + dx, cy + dy) for dx, dy in pts])


def _full_area(shape: str, r: float) -> float:
    """Area in px² of the shape when fully inside the frame."""
    return {"circle": np.pi * r * r, "square": (1.76 * r) ** 2, "diamond": 1.44 * r * r,
            "triangle": 0.75 * np.sqrt(3) * (1.1 * r) ** 2}[shape]


def _draw(canvas: np.ndarray, obj: SynthObject, cx: float, cy: float) -> None:
    """Fill the object's shape with 1 on a uint8 ``(H, W)`` canvas (no anti-aliasing: exact masks)."""
    scale = 1 << _SUBPIXEL
    if obj.shape == "circle":
        cv2.circle(canvas, (round(cx * scale), round(cy * scale)), round(obj.radius * scale), 1, -1,
                   cv2.LINE_8, _SUBPIXEL)
    else:
        pts = np.round(_polygon(obj.shape, cx, cy, obj.radius) * scale).astype(np.int32)
        cv2.fillConvexPoly(canvas, pts, 1, cv2.LINE_8, _SUBPIXEL)


def _linear_tracks(objects: Sequence[SynthObject], t: int) -> np.ndarray:
    """``(K, T, 2)`` float64 centres ``(x, y)``: linear from ``start`` to ``end`` (basic vocabulary)."""
    out = np.empty((len(objects), t, 2))
    for k, o in enumerate(objects):
        for i in range(t):
            a = i / (t - 1)
            out[k, i] = (o.start[0] + a * (o.end[0] - o.start[0]), o.start[1] + a * (o.end[1] - o.start[1]))
    return out


def _rasterise(objects: Sequence[SynthObject], centres: np.ndarray, h: int, w: int) -> np.ndarray:
    """``(K, T, H, W)`` bool masks of each whole shape at ``centres`` ``(K, T, 2)`` (x, y) px, clipped to
    the frame; no occlusion."""
    raw = np.zeros((len(objects), centres.shape[1], h, w), dtype=np.uint8)
    for k, o in enumerate(objects):
        for i in range(centres.shape[1]):
            _draw(raw[k, i], o, float(centres[k, i, 0]), float(centres[k, i, 1]))
    return raw.astype(bool)


def _occlude(raw: np.ndarray, depth: Sequence[int]) -> np.ndarray:
    """Masks after occlusion: ``depth`` lists obj_ids back to front; a pixel goes to the front-most object."""
    masks = raw.copy()
    covered = np.zeros(raw.shape[1:], dtype=bool)
    for k in reversed(depth):
        visible = masks[k] & ~covered
        covered |= masks[k]
        masks[k] = visible
    return masks


def _render_masks(objects: Sequence[SynthObject], t: int, h: int, w: int) -> np.ndarray:
    """``(K, T, H, W)`` bool masks after occlusion (later objects on top), linear motion."""
    raw = _rasterise(objects, _linear_tracks(objects, t), h, w)
    return _occlude(raw, range(len(objects)))


def _visible_enough(objects: Sequence[SynthObject], masks: np.ndarray) -> bool:
    """Each object shows ≥ 35 % of its area on at least half of the frames (so its motion is seen)."""
    t = masks.shape[1]
    areas = masks.sum(axis=(2, 3))
    for o, a in zip(objects, areas):
        if (a >= _MIN_VISIBLE * _full_area(o.shape, o.radius)).sum() * 2 < t:
            return False
    return True


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 low-saturation texture: a random mix of gradient, stripes and blotches."""
    yy = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    xx = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    a1, a2 = rng.uniform(0, 2 * np.pi, size=2)
    grad = xx * np.float32(np.cos(a1)) + yy * np.float32(np.sin(a1))
    grad = (grad - grad.min()) / max(float(grad.max() - grad.min()), 1e-6)
    phase = xx * np.float32(np.cos(a2)) + yy * np.float32(np.sin(a2))
    stripes = 0.5 + 0.5 * np.sin(np.float32(2 * np.pi * rng.uniform(2, 9)) * phase + np.float32(rng.uniform(0, 6.3)))
    g = int(rng.integers(3, 9))
    blotch = cv2.resize(rng.random((g, g), dtype=np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    wts = rng.dirichlet((0.8, 0.8, 0.8)).astype(np.float32)
    field = np.clip(wts[0] * grad + wts[1] * stripes + wts[2] * blotch, 0.0, 1.0)
    lo = rng.uniform(45, 105) + rng.uniform(-16, 16, size=3)
    hi = rng.uniform(125, 185) + rng.uniform(-16, 16, size=3)
    if rng.random() < 0.5:
        lo, hi = hi, lo
    img = lo.astype(np.float32) + field[..., None] * (hi - lo).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _palette(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-clip colour of each name: the nominal RGB jittered by ±12 per channel."""
    return {n: np.clip(np.array(c) + rng.integers(-12, 13, size=3), 0, 255).astype(np.uint8)
            for n, c in COLORS.items()}


def _paint(bg: np.ndarray, objects: Sequence[SynthObject], masks: np.ndarray,
           palette: Mapping[str, np.ndarray]) -> np.ndarray:
    """Frames ``(T, H, W, 3)``: the background (one ``(H, W, 3)`` image, or one per frame) with each
    object's visible pixels in its colour."""
    frames = np.repeat(bg[None], masks.shape[1], axis=0) if bg.ndim == 3 else bg.copy()
    for o, m in zip(objects, masks):
        frames[m] = palette[o.color]
    return frames


def _check_args(num_frames: int, size: tuple[int, int]) -> tuple[int, int]:
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 2:
        raise ValueError(f"num_frames: expected an int ≥ 2, got {num_frames!r}")
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size: expected (H, W) ints, got {size!r}") from None
    if h < 32 or w < 32:
        raise ValueError(f"size: expected H, W ≥ 32 pixels, got {size!r}")
    return h, w


def _check_vocabulary(vocabulary: str) -> str:
    if vocabulary not in VOCABULARIES:
        raise ValueError(f"vocabulary: expected one of {', '.join(VOCABULARIES)}, got {vocabulary!r}")
    return vocabulary


def generate_video(rng: np.random.Generator, num_frames: int = 8, size: tuple[int, int] = (128, 128),
                   vocabulary: str = "basic") -> SynthVideo:
    """Generate one clip with its objects, exact masks, tracks and referring expressions.

    Args:
        rng: the only source of randomness (same generator state → same clip).
        num_frames: ``T ≥ 2``.
        size: ``(H, W)`` in pixels, each ≥ 32.
        vocabulary: ``"basic"`` (default; the generator the shipped model was trained and scored on,
            reproduced byte for byte) or ``"full"`` (the MeViS motion vocabulary, camera motion,
            2–6 objects). See the module docstring.

    Returns:
        A :class:`SynthVideo`: frames ``(T, H, W, 3)`` uint8 RGB, masks ``(K, T, H, W)`` bool,
        tracks ``(K, T, 2)`` float64 px.

    Raises:
        ValueError: bad ``num_frames``, ``size`` or ``vocabulary``.
    """
    t = int(num_frames)
    h, w = _check_args(num_frames, size)
    if _check_vocabulary(vocabulary) == "full":
        return _generate_full(rng, t, h, w)
    bg = _background(rng, h, w)
    palette = _palette(rng)
    while True:
        attrs = _sample_attributes(rng, min(h, w))
        for _ in range(20):
            objects = [_place(rng, a, k, h, w) for k, a in enumerate(attrs)]
            masks = _render_masks(objects, t, h, w)
            if _visible_enough(objects, masks):
                break
        else:
            continue
        expressions = _choose_expressions(rng, objects)
        if len(expressions) >= 2:
            return SynthVideo(frames=_paint(bg, objects, masks, palette), objects=objects, masks=masks,
                              expressions=expressions, tracks=_linear_tracks(objects, t),
                              camera=np.zeros((t, 2), dtype=np.int64), depth=list(range(len(objects))))


# ----------------------------------------------------------------------------------------------
# full vocabulary: the motion facts of a clip (truth of every predicate, from the tracks)
# ----------------------------------------------------------------------------------------------

#: Unit vector ``(x, y)`` of each image direction (``"up"`` = towards row 0).
_UNIT: dict[str, tuple[float, float]] = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0),
                                         "down": (0.0, 1.0)}
# Thresholds. Speeds are in u = min(H, W) / (T - 1) px per frame (one frame side over the clip), lengths
# in L = min(H, W) px. Each predicate is True / False only with a margin; in between it is undecided,
# and no expression is made whose truth depends on an undecided object.
_U_MOVING = 0.10          # an interval is "moving" at speed ≥ 0.10 u ...
_U_STILL = 0.02           # ... and "still" at ≤ 0.02 u
_U_SLOW_MAX = 0.42        # "slowly": every moving interval ≤ 0.42 u; "quickly": every one ≥ 0.50 u
_U_FAST_MIN = 0.50
_TRAVEL = 0.15            # a clear mover's path is ≥ 0.15 L (net displacement ≥ 0.10 L for a direction)
_NET = 0.10
_HEADING = 0.8            # cos: "moves left" holds when every moving interval heads within ~37° of left
_COLLINEAR = 0.25         # |sin| between any two moving intervals for a straight-line path
_TURN_LEG = 0.10          # "turns around": out ≥ 0.10 L, then back ≥ 0.10 L along the first heading
_RATIO_TRUE = 2.0         # "speeds up": mean speed of the last third ≥ 2 × the first third (≤ 1.25 ×: false)
_RATIO_FALSE = 1.25
_LOOP_TRUE = 1.4 * np.pi  # "moves in a loop": heading turns ≥ 252° one way (≤ 72° net, or straight: false)
_LOOP_FALSE = 0.4 * np.pi
_TOWARD_TRUE = 0.7        # "approaches B": every moving interval within ~45° of the direction to B ...
_TOWARD_FALSE = 0.2       # ... and the distance ends ≤ 0.6 × its start (false: never within ~78° of B, no nearer)
_CLOSER = 0.6
_FARTHER = 1.6            # "moves away from B": mirrored, the distance ends ≥ 1.6 × its start
_INSIDE = 0.9             # "enters the frame": no pixel in frame on the first frame, ≥ 90 % of the shape on the last
_ENTER_FALSE = 0.5        # ≥ 50 % in frame on the first frame: not entering
_ONSET_GAP = 2            # "first / last to move": onsets at least 2 frame intervals apart
_MOST_RATIO = 1.5         # "moves the most": path ≥ 1.5 × every other path in the group and ≥ 0.3 L
_MOST_MIN = 0.3

_Tri = Optional[bool]      # True, False, or None (undecided)
#: A motion part of a spec: ``(predicate, direction, speed, landmark obj_id)``.
_Motion = tuple[str, Optional[str], Optional[str], Optional[int]]


def _tri(true: bool, false: bool) -> _Tri:
    return True if true and not false else False if false and not true else None


class _Facts:
    """Truth of every predicate for one clip, computed from the world tracks and the in-frame fractions.

    Args:
        tracks: ``(K, T, 2)`` world centres (x, y) px. inframe: ``(K, T)`` fraction of each whole shape
            inside the frame (before occlusion). side: ``L = min(H, W)`` px.
    """

    def __init__(self, tracks: np.ndarray, inframe: np.ndarray, side: float) -> None:
        self.tracks, self.inframe, self.side = tracks, inframe, float(side)
        self.vel = np.diff(tracks, axis=1)
        self.speed = np.hypot(self.vel[..., 0], self.vel[..., 1])
        self.u = self.side / max(tracks.shape[1] - 1, 1)
        self.moving = self.speed >= _U_MOVING * self.u
        self.still = self.speed <= _U_STILL * self.u
        self.path = self.speed.sum(axis=1)
        self._cache: dict[tuple, _Tri | list[int] | None] = {}

    # -- helpers --------------------------------------------------------------------------------
    def _units(self, k: int) -> np.ndarray:
        """``(M, 2)`` unit velocities of object ``k``'s moving intervals."""
        mv = self.moving[k]
        return self.vel[k][mv] / self.speed[k][mv][:, None]

    def _straight(self, k: int, min_cos: float = -1.0) -> bool:
        """Moving intervals all collinear (|sin| ≤ 0.25) and pairwise cos ≥ ``min_cos``."""
        e = self._units(k)
        cos = e @ e.T
        sin = e[:, None, 0] * e[None, :, 1] - e[:, None, 1] * e[None, :, 0]
        return bool((np.abs(sin) <= _COLLINEAR).all() and (cos >= min_cos).all())

    def _clear_mover(self, k: int) -> bool:
        return bool(self.path[k] >= _TRAVEL * self.side)

    def onset(self, k: int) -> int | None:
        """First moving interval of ``k``; ``-1`` if it never moves; ``None`` if unclear (drifts, or not
        clearly still before its onset)."""
        if self.still[k].all():
            return -1
        mv = self.moving[k]
        if not mv.any():
            return None
        o = int(np.argmax(mv))
        return o if self.still[k][:o].all() else None

    # -- per-object predicates ------------------------------------------------------------------
    def truth(self, motion: _Motion, k: int) -> _Tri:
        """Truth of a non-superlative motion part for object ``k`` (cached; dispatched to ``_p_<predicate>``)."""
        key = (motion, k)
        if key not in self._cache:
            self._cache[key] = getattr(self, "_p_" + motion[0])(k, motion)
        return self._cache[key]  # type: ignore[return-value]

    def _p_still(self, k: int, m: _Motion) -> _Tri:
        return _tri(bool(self.still[k].all()), self._clear_mover(k))

    def _p_moves(self, k: int, m: _Motion) -> _Tri:
        e = np.array(_UNIT[m[1]])
        mv = self.moving[k]
        along = self.vel[k] @ e
        net = float((self.tracks[k, -1] - self.tracks[k, 0]) @ e)
        dir_true = bool(mv.any() and (along[mv] >= _HEADING * self.speed[k][mv]).all() and net >= _NET * self.side)
        dir_false = bool((along <= _U_STILL * self.u).all())
        s = self.speed[k][mv]
        if m[2] is None:
            sp_true, sp_false = True, False
        elif m[2] == "fast":
            sp_true, sp_false = bool((s >= _U_FAST_MIN * self.u).all()), bool((s <= _U_SLOW_MAX * self.u).all())
        else:
            sp_true, sp_false = bool((s <= _U_SLOW_MAX * self.u).all()), bool((s >= _U_FAST_MIN * self.u).all())
        return _tri(dir_true and sp_true, dir_false or (dir_true and sp_false))

    def _p_starts(self, k: int, m: _Motion) -> _Tri:
        return self._starts(self.moving[k], self.still[k])

    def _p_stops(self, k: int, m: _Motion) -> _Tri:
        return self._starts(self.moving[k][::-1], self.still[k][::-1])

    @staticmethod
    def _starts(mv: np.ndarray, st: np.ndarray) -> _Tri:
        """Still, then moving to the end (applied reversed in time: moving, then still)."""
        if mv[0] or st.all():
            return False
        if not mv.any():
            return None
        o = int(np.argmax(mv))
        return True if st[:o].all() and mv[o:].all() else None

    def _p_turns_around(self, k: int, m: _Motion) -> _Tri:
        if self.still[k].all():
            return False
        if not self.moving[k].any():
            return None
        e = self._units(k)
        if (e @ e.T >= 0).all():
            return False  # never heads back
        x = (self.tracks[k] - self.tracks[k, 0]) @ e[0]
        peak = float(x.max())
        true = (self._straight(k) and peak >= _TURN_LEG * self.side and peak - float(x[-1]) >= _TURN_LEG * self.side)
        return True if true else None

    def _thirds(self, k: int) -> tuple[float, float]:
        q = max(1, self.speed.shape[1] // 3)
        return float(self.speed[k][:q].mean()), float(self.speed[k][-q:].mean())

    def _p_speeds_up(self, k: int, m: _Motion) -> _Tri:
        a, b = self._thirds(k)
        return self._ramp(k, a, b)

    def _p_slows_down(self, k: int, m: _Motion) -> _Tri:
        b, a = self._thirds(k)
        return self._ramp(k, a, b)

    def _ramp(self, k: int, a: float, b: float) -> _Tri:
        """Speed grows from ``a`` (early) to ``b`` (late) along one heading."""
        if self.still[k].all():
            return False
        true = bool(self.moving[k].all()) and self._straight(k, min_cos=_HEADING) and b >= _RATIO_TRUE * a
        return _tri(true, b <= _RATIO_FALSE * a)

    def _p_circle(self, k: int, m: _Motion) -> _Tri:
        if self.still[k].all():
            return False
        if not self.moving[k].any():
            return None
        if self._straight(k):
            return False
        h = np.arctan2(self.vel[k][:, 1], self.vel[k][:, 0])
        turn = (np.diff(h) + np.pi) % (2 * np.pi) - np.pi
        total = float(turn.sum())
        one_way = bool((turn > 0).all() or (turn < 0).all())
        true = bool(self.moving[k].all()) and one_way and abs(total) >= _LOOP_TRUE
        return _tri(true, abs(total) <= _LOOP_FALSE)

    def _toward(self, k: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """cos between ``k``'s moving-interval velocities and the direction to ``b``; distances ``(T,)``."""
        rel = self.tracks[b] - self.tracks[k]
        dist = np.hypot(rel[:, 0], rel[:, 1])
        mv = self.moving[k]
        cos = (self.vel[k][mv] * rel[:-1][mv]).sum(axis=1) / (self.speed[k][mv] * np.maximum(dist[:-1][mv], 1e-9))
        return cos, dist

    def _p_approaches(self, k: int, m: _Motion) -> _Tri:
        return self._relation(k, int(m[3]), 1.0)  # type: ignore[arg-type]

    def _p_moves_away(self, k: int, m: _Motion) -> _Tri:
        return self._relation(k, int(m[3]), -1.0)  # type: ignore[arg-type]

    def _relation(self, k: int, b: int, sign: float) -> _Tri:
        """``k`` heads towards ``b`` (``sign`` 1) or away from it (-1) and the distance changes accordingly."""
        cos, dist = self._toward(k, b)
        cos = sign * cos
        if sign > 0:
            changed, kept = dist[-1] <= _CLOSER * dist[0], dist[-1] >= 0.95 * dist[0]
        else:
            changed, kept = dist[-1] >= _FARTHER * dist[0], dist[-1] <= 1.05 * dist[0]
        true = self._clear_mover(k) and bool((cos >= _TOWARD_TRUE).all()) and bool(changed)
        false = bool(self.still[k].all()) or (bool((cos <= _TOWARD_FALSE).all()) and bool(kept))
        return _tri(true, false)

    def _p_enters(self, k: int, m: _Motion) -> _Tri:
        return self._enters(self.inframe[k], k)

    def _p_leaves(self, k: int, m: _Motion) -> _Tri:
        return self._enters(self.inframe[k][::-1], k)

    def _enters(self, f: np.ndarray, k: int) -> _Tri:
        """No pixel in frame first, then growing to ≥ 90 % in frame, while moving (time-reversed: leaves)."""
        true = f[0] == 0 and f[-1] >= _INSIDE and bool((np.diff(f) >= -0.1).all()) and self._clear_mover(k)
        return _tri(bool(true), f[0] >= _ENTER_FALSE)

    # -- superlatives over a group --------------------------------------------------------------
    def winner(self, predicate: str, group: Sequence[int]) -> list[int] | None:
        """``[obj_id]`` of the group's clear winner of ``"first" | "last" | "most"``, or ``None``."""
        key = (predicate, tuple(group))
        if key not in self._cache:
            self._cache[key] = self._winner(predicate, list(group))
        return self._cache[key]  # type: ignore[return-value]

    def _winner(self, predicate: str, group: list[int]) -> list[int] | None:
        if len(group) < 2:
            return None
        if predicate == "most":
            order = sorted(group, key=lambda k: -self.path[k])
            best, second = self.path[order[0]], self.path[order[1]]
            ok = best >= _MOST_RATIO * second and best >= _MOST_MIN * self.side
            return [order[0]] if ok else None
        onsets = [self.onset(k) for k in group]
        if any(o is None for o in onsets) or (predicate == "last" and min(onsets) < 0):  # type: ignore[type-var]
            return None
        movers = sorted((o, k) for o, k in zip(onsets, group) if o >= 0)  # type: ignore[operator]
        if len(movers) < 2:
            return None
        if predicate == "first":
            (o1, k1), (o2, _) = movers[0], movers[1]
        else:
            (o1, k1), (o2, _) = (-movers[-1][0], movers[-1][1]), (-movers[-2][0], movers[-2][1])
        return [k1] if o2 >= o1 + _ONSET_GAP else None


# ----------------------------------------------------------------------------------------------
# full vocabulary: specs, referents, kinds
# ----------------------------------------------------------------------------------------------

def _evaluate(objects: Sequence[SynthObject], facts: _Facts, app: ExpressionSpec,
              motion: _Motion | None) -> list[int] | None:
    """obj_ids an expression selects, or ``None`` when its truth is undecided for some candidate.

    Candidates: the objects matching the appearance words (the landmark excluded). A superlative picks
    the group's clear winner; any other predicate keeps the candidates for which it is True and needs
    it decided (True / False) for all of them.
    """
    group = [k for k in _referents(objects, app) if motion is None or k != motion[3]]
    if motion is None:
        return group
    if motion[0] in SUPERLATIVE_PREDICATES:
        return facts.winner(motion[0], group)
    out = []
    for k in group:
        v = facts.truth(motion, k)
        if v is None:
            return None
        if v:
            out.append(k)
    return out


def _motion_parts(objects: Sequence[SynthObject], landmarks: Mapping[int, ExpressionSpec]) -> list[_Motion]:
    """Every motion part worth evaluating on a clip (relations only towards nameable landmarks)."""
    parts: list[_Motion] = [("still", None, None, None)]
    parts += [("moves", d, s, None) for d in DIRECTIONS for s in (None, "slow", "fast")]
    parts += [(p, None, None, None) for p in PREDICATES if p not in ("still", "moves") + RELATIONAL_PREDICATES]
    parts += [(p, None, None, b) for b in landmarks for p in RELATIONAL_PREDICATES]
    return parts


def _landmark_names(objects: Sequence[SynthObject]) -> dict[int, ExpressionSpec]:
    """obj_id → the first appearance words (colour + shape preferred) that select that object alone."""
    prefs = (("color", "shape"), ("shape",), ("color",), ("size", "shape"), ("size", "color"), APPEARANCE_ATTRS)
    out = {}
    for o in objects:
        for names in prefs:
            spec = ExpressionSpec(**{a: o.attr(a) for a in names})
            if _referents(objects, spec) == [o.obj_id]:
                out[o.obj_id] = spec
                break
    return out


def _appearance_specs(objects: Sequence[SynthObject]) -> list[ExpressionSpec]:
    """Distinct appearance specs (all subsets of colour / shape / size of each object, the empty one included)."""
    out: dict[ExpressionSpec, None] = {}
    for o in objects:
        for r in range(len(APPEARANCE_ATTRS) + 1):
            for names in itertools.combinations(APPEARANCE_ATTRS, r):
                out.setdefault(ExpressionSpec(**{a: o.attr(a) for a in names}))
    return list(out)


def _is_minimal_full(objects: Sequence[SynthObject], facts: _Facts, app: ExpressionSpec, motion: _Motion | None,
                     refs: list[int]) -> bool:
    """Every stated word is needed: dropping an appearance word, the speed, or the whole motion part
    changes the selection (or leaves it undecided)."""
    if any(_evaluate(objects, facts, app.without([a]), motion) == refs for a in app.attrs()):
        return False
    if motion is None:
        return True
    if motion[2] is not None and _evaluate(objects, facts, app, motion[:2] + (None, motion[3])) == refs:
        return False
    return _evaluate(objects, facts, app, None) != refs


def _full_kind(objects: Sequence[SynthObject], app: ExpressionSpec, motion: _Motion | None, refs: list[int]) -> str:
    """``"appearance"``: no motion words; ``"motion"``: a same-looking object is not referred, or no
    appearance words are stated (only motion tells); ``"mixed"``: both kinds of words are needed."""
    if motion is None:
        return "appearance"
    if _has_lookalike_distractor(objects, refs) or not app.attrs():
        return "motion"
    return "mixed"


def _full_candidates(objects: Sequence[SynthObject], facts: _Facts) -> list[_Candidate]:
    """All true, decided, minimal specs selecting 1 … K - 1 objects, with referents and kind."""
    n = len(objects)
    landmarks = _landmark_names(objects)
    out = []
    for app in _appearance_specs(objects):
        if not _referents(objects, app):
            continue
        for motion in [None, *_motion_parts(objects, landmarks)]:
            refs = _evaluate(objects, facts, app, motion)
            if refs is None or not 1 <= len(refs) < n or not _is_minimal_full(objects, facts, app, motion, refs):
                continue
            lm = None if motion is None else motion[3]
            spec = MotionSpec(color=app.color, shape=app.shape, size=app.size,
                              predicate=None if motion is None else motion[0],
                              direction=None if motion is None else motion[1],
                              speed=None if motion is None else motion[2], landmark=lm,
                              landmark_spec=None if lm is None else landmarks[lm], plural=len(refs) > 1)
            out.append((spec, refs, _full_kind(objects, app, motion, refs)))
    return out


# ----------------------------------------------------------------------------------------------
# full vocabulary: text and choice
# ----------------------------------------------------------------------------------------------

#: Post-nominal phrases per predicate: (singular, plural); ``{lm}`` is the landmark's noun phrase.
_PHRASES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "starts": (("that starts moving", "that starts to move", "that begins to move"),
               ("that start moving", "that start to move", "that begin to move")),
    "stops": (("that stops moving", "that comes to a stop", "that moves and then stops"),
              ("that stop moving", "that come to a stop", "that move and then stop")),
    "turns_around": (("that turns around", "that turns back", "that reverses its direction"),
                     ("that turn around", "that turn back", "that reverse their direction")),
    "speeds_up": (("that speeds up", "that accelerates", "moving faster and faster"),
                  ("that speed up", "that accelerate", "moving faster and faster")),
    "slows_down": (("that slows down", "that decelerates", "moving slower and slower"),
                   ("that slow down", "that decelerate", "moving slower and slower")),
    "circle": (("moving in a loop", "that moves in a loop", "going round in a loop"),
               ("moving in loops", "that move in loops", "going round in loops")),
    "approaches": (("moving towards {lm}", "that approaches {lm}", "getting closer to {lm}"),
                   ("moving towards {lm}", "that approach {lm}", "getting closer to {lm}")),
    "moves_away": (("moving away from {lm}", "that moves away from {lm}", "getting farther from {lm}"),
                   ("moving away from {lm}", "that move away from {lm}", "getting farther from {lm}")),
    "enters": (("that enters the frame", "coming into view", "that comes into the frame"),
               ("that enter the frame", "coming into view", "that come into the frame")),
    "leaves": (("that leaves the frame", "that moves out of view", "that exits the frame"),
               ("that leave the frame", "that move out of view", "that exit the frame")),
    "first": (("that moves first", "that gets moving first", "that is the first to move"), ()),
    "last": (("that moves last", "that gets moving last", "that is the last to move"), ()),
    "most": (("that moves the most", "that travels the farthest", "that covers the longest distance"), ()),
}


def _predicate_phrase(rng: np.random.Generator, spec: MotionSpec, plural: bool) -> str:
    """Post-nominal words of the spec's motion part (``""`` when none)."""
    if spec.predicate is None:
        return ""
    if spec.predicate in ("still", "moves"):
        motion = "still" if spec.predicate == "still" else spec.direction
        return _motion_phrase(rng, ExpressionSpec(motion=motion, speed=spec.speed), plural)
    phrase = _pick(rng, _PHRASES[spec.predicate][int(plural)])
    if spec.landmark_spec is None:
        return phrase
    return phrase.format(lm=" ".join(["the", *_noun_words(rng, spec.landmark_spec, False)]))


def _render_full_text(rng: np.random.Generator, spec: MotionSpec, count: int) -> str:
    """Words for a full-vocabulary spec: determiner, appearance words (or a generic noun), motion phrase."""
    plural = count > 1
    words = [_determiner(rng, count), *_noun_words(rng, spec, plural), _predicate_phrase(rng, spec, plural)]
    return " ".join(w for w in words if w)


#: Predicates beyond plain direction / stillness (the MeViS motion vocabulary proper).
_RICH_PREDICATES = frozenset(PREDICATES) - {"still", "moves"}


def _choose_full_expressions(rng: np.random.Generator, objects: Sequence[SynthObject],
                             facts: _Facts) -> list[SynthExpression]:
    """2–6 expressions favouring motion-only ones, the rich motion vocabulary, multi-object and mixed ones."""
    cands = _full_candidates(objects, facts)
    if len(cands) < 2:
        return []
    order = [cands[i] for i in rng.permutation(len(cands))]
    chosen: list[_Candidate] = []
    want = int(rng.integers(2, 7))
    _take(order, chosen, lambda c: c[2] == "motion" and _has_lookalike_distractor(objects, c[1]), 1)
    rich = [p for p in PREDICATES if p in _RICH_PREDICATES and any(c[0].predicate == p for c in order)]
    for i in rng.permutation(len(rich))[:2]:  # two of the rich predicates, each equally likely
        _take(order, chosen, lambda c: c[0].predicate == rich[i], len(chosen) + 1)
    if rng.random() < 0.6:
        _take(order, chosen, lambda c: len(c[1]) > 1, len(chosen) + 1)
    _take(order, chosen, lambda c: c[2] == "mixed", len(chosen) + 1)
    weights = {"appearance": 1.0, "mixed": 2.0, "motion": 2.0}

    def weight(c: _Candidate) -> float:
        new_predicate = all(c[0].predicate != d[0].predicate for d in chosen)
        return weights[c[2]] * (3.0 if new_predicate else 1.0)

    _fill(rng, order, chosen, want, weight)

    def embellish(spec: MotionSpec, refs: list[int], kind: str) -> MotionSpec:
        if kind != "motion" or not _has_lookalike_distractor(objects, refs):
            return spec  # mixed: every word needed; motion-only text: no appearance words
        return _add_true_words(rng, objects, spec, refs,
                               lambda t: _evaluate(objects, facts, t.appearance(), t.motion()) == refs)

    out = []
    for e in _finalise(rng, chosen, embellish, lambda spec, count: _render_full_text(rng, spec, count)):
        if all(e.text != d.text for d in out):  # distinct specs normally read differently; make sure
            out.append(e)
    return out


# ----------------------------------------------------------------------------------------------
# full vocabulary: objects, motion programs, camera
# ----------------------------------------------------------------------------------------------

#: Planted speeds as fractions of u = min(H, W) / (T - 1) px per frame.
_PLANT_SPEEDS: dict[str, tuple[float, float]] = {"slow": (0.25, 0.35), "fast": (0.62, 0.80)}
#: Frame intervals (T - 1) a program needs, and its sampling weight.
_PROGRAM_MIN_INTERVALS = {"still": 1, "linear": 1, "starts": 4, "stops": 4, "turns_around": 4, "speeds_up": 3,
                          "slows_down": 3, "circle": 5, "approaches": 1, "moves_away": 1, "enters": 1, "leaves": 1}
_PROGRAM_WEIGHTS = {"still": 1.0, "linear": 1.4, "starts": 1.3, "stops": 1.0, "turns_around": 1.0, "speeds_up": 0.8,
                    "slows_down": 0.8, "circle": 0.8, "approaches": 1.0, "moves_away": 0.8, "enters": 0.8,
                    "leaves": 0.8}
_DIRECTED = ("linear", "starts", "stops", "turns_around", "speeds_up", "slows_down", "enters", "leaves")
_CAMERA_PROB = 0.35       # chance of a camera pan
_CAMERA_PAN = (0.08, 0.16)  # pan over the clip, fraction of L
_FULL_TWIN_PROB = 0.8     # chance of a same-looking pair that moves differently
_SECOND_TWIN_PROB = 0.35  # chance of a second such pair (≥ 4 objects)
_OUTSIDE = 1.3            # a shape lies within 1.3 × its radius of its centre (plus 1 px)


def _sample_program(rng: np.random.Generator, n_int: int, relations: bool,
                    avoid: tuple[str, str | None] | None = None) -> dict:
    """A random motion program ``{"program", "direction", "speed", "landmark": None}`` that fits
    ``n_int`` intervals (relations only if ``relations``); ``avoid``: a (program, direction) to differ from."""
    names = [p for p, m in _PROGRAM_MIN_INTERVALS.items()
             if m <= n_int and (relations or p not in RELATIONAL_PREDICATES)]
    p = np.array([_PROGRAM_WEIGHTS[n] for n in names])
    while True:
        prog = names[int(rng.choice(len(names), p=p / p.sum()))]
        direction = _pick(rng, DIRECTIONS) if prog in _DIRECTED else None
        if avoid is None or (prog, direction) != avoid:
            break
    speed = _pick(rng, ("slow", "fast", "fast")) if prog in ("linear", "starts", "stops") else None
    return dict(program=prog, direction=direction, speed=speed, landmark=None)


def _sample_appearances(rng: np.random.Generator, min_side: int) -> list[dict]:
    """Appearance of 2–6 objects: usually a same-looking pair (shared radius, ``"twin_of"`` set on the
    second), sometimes a second pair; other objects often share a colour or a shape but never all three."""
    n = int(rng.choice((2, 3, 4, 5, 6), p=(0.1, 0.2, 0.25, 0.25, 0.2)))
    objs: list[dict] = []

    def add(shape: str, color: str, size_name: str, twin_of: dict | None = None) -> None:
        lo, hi = SIZES[size_name]
        r = twin_of["radius"] if twin_of else float(rng.uniform(lo, hi) * min_side)
        objs.append(dict(shape=shape, color=color, size_name=size_name, radius=r, twin_of=twin_of, twinned=False))
        if twin_of:
            twin_of["twinned"] = objs[-1]["twinned"] = True

    while len(objs) < n:
        twin_prob = _FULL_TWIN_PROB if len(objs) == 1 else _SECOND_TWIN_PROB
        if objs and not objs[-1]["twinned"] and rng.random() < twin_prob:
            a = objs[-1]
            add(a["shape"], a["color"], a["size_name"], twin_of=a)
            continue
        if objs and rng.random() < 0.6:  # share a colour or a shape with an existing object
            ref = objs[int(rng.integers(len(objs)))]
            shape = ref["shape"] if rng.random() < 0.5 else _pick(rng, SHAPES)
            color = ref["color"] if rng.random() < 0.5 else _pick(rng, tuple(COLORS))
        else:
            shape, color = _pick(rng, SHAPES), _pick(rng, tuple(COLORS))
        size = _pick(rng, tuple(SIZES))
        if any((o["shape"], o["color"], o["size_name"]) == (shape, color, size) for o in objs):
            continue  # same-looking objects only as planted pairs (shared radius)
        add(shape, color, size)
    return objs


def _sample_full_attributes(rng: np.random.Generator, min_side: int, n_int: int) -> list[dict]:
    """Appearance and motion program of 2–6 objects; the two of a same-looking pair move differently.

    A relation (approaches / moves away) points at a landmark (an index into the returned list): an
    object with no same-looking partner (so words can name it) whose own program is not a relation.
    """
    objs = _sample_appearances(rng, min_side)
    for o in objs:
        twin = o.pop("twin_of")
        o.update(_sample_program(rng, n_int, True, (twin["program"], twin["direction"]) if twin else None))
    for i, o in enumerate(objs):
        if o["program"] not in RELATIONAL_PREDICATES:
            continue
        marks = [j for j, b in enumerate(objs)
                 if j != i and not b["twinned"] and b["program"] not in RELATIONAL_PREDICATES]
        if marks:
            o["landmark"] = marks[int(rng.integers(len(marks)))]
        else:
            o.update(_sample_program(rng, n_int, False, (o["program"], o["direction"])))
    order = [int(i) for i in rng.permutation(len(objs))]
    new_index = {old: new for new, old in enumerate(order)}
    out = [objs[i] for i in order]
    for o in out:
        o.pop("twinned")
        if o["landmark"] is not None:
            o["landmark"] = new_index[o["landmark"]]
    return out


def _sample_camera(rng: np.random.Generator, t: int, side: int) -> np.ndarray:
    """``(T, 2)`` int camera offsets ``(x, y)`` px (frame 0 at ``(0, 0)``): still, or a linear pan in
    one of 8 directions by 8–16 % of ``side`` over the clip."""
    if rng.random() >= _CAMERA_PROB:
        return np.zeros((t, 2), dtype=np.int64)
    angle = int(rng.integers(8)) * np.pi / 4
    total = rng.uniform(*_CAMERA_PAN) * side * np.array([np.cos(angle), np.sin(angle)])
    return np.rint(np.arange(t)[:, None] / (t - 1) * total[None]).astype(np.int64)


def _from_velocities(start: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``(T, 2)`` positions from a start ``(2,)`` and per-interval velocities ``(T - 1, 2)``."""
    return np.concatenate([start[None], start[None] + np.cumsum(v, axis=0)])


def _directed_track(rng: np.random.Generator, a: dict, start: np.ndarray, n_int: int, u: float) -> np.ndarray:
    """Track of a program moving along one direction: linear, starts, stops, turns around, speeds up / slows down."""
    e = np.array(_UNIT[a["direction"]])
    v = np.zeros((n_int, 2))
    prog = a["program"]
    if prog in ("speeds_up", "slows_down"):
        ramp = np.linspace(rng.uniform(0.18, 0.25) * u, rng.uniform(0.75, 0.9) * u, n_int)
        v[:] = (ramp if prog == "speeds_up" else ramp[::-1])[:, None] * e
        return _from_velocities(start, v)
    sigma = rng.uniform(*_PLANT_SPEEDS[a["speed"] or "fast"]) * u
    k = int(rng.integers(2, n_int - 1)) if prog != "linear" else 0
    if prog == "linear":
        v[:] = sigma * e
    elif prog == "starts":
        v[k:] = sigma * e
    elif prog == "stops":
        v[:k] = sigma * e
    else:  # turns_around
        v[:k], v[k:] = sigma * e, -sigma * e
    return _from_velocities(start, v)


def _circle_track(rng: np.random.Generator, radius: float, h: int, w: int, t: int, side: int) -> np.ndarray:
    """One loop (95–100 % of a turn) of radius 16–22 % of ``side``, centred so it stays in frame when possible."""
    big = rng.uniform(0.16, 0.22) * side
    margin = big + radius
    cx = rng.uniform(margin, w - margin) if w > 2 * margin else w / 2
    cy = rng.uniform(margin, h - margin) if h > 2 * margin else h / 2
    turn = rng.uniform(0.95, 1.0) * 2 * np.pi * (1 if rng.random() < 0.5 else -1)
    ang = rng.uniform(0, 2 * np.pi) + turn * np.arange(t) / (t - 1)
    return np.stack([cx + big * np.cos(ang), cy + big * np.sin(ang)], axis=1)


def _frame_track(rng: np.random.Generator, a: dict, h: int, w: int, camera: np.ndarray) -> np.ndarray:
    """World track of an object entering (leaving) the frame: from fully outside on the first frame to
    30–70 % across the frame on the last (and the reverse), constant velocity."""
    axis = 0 if a["direction"] in ("left", "right") else 1
    length = (w, h)[axis]
    out = _OUTSIDE * a["radius"] + 1.0
    edge = -out if a["direction"] in ("right", "down") else length + out  # where an entering object starts
    inside = rng.uniform(0.3, 0.7) * length
    if a["program"] == "leaves":
        edge = length + out if a["direction"] in ("right", "down") else -out
        first, last = inside, edge
    else:
        first, last = edge, inside
    cross = rng.uniform(0.2, 0.8) * (h if axis == 0 else w)  # the other coordinate
    img = np.zeros((2, 2))
    img[:, axis], img[:, 1 - axis] = (first, last), cross
    world = img + camera[[0, -1]]
    return np.linspace(world[0], world[1], camera.shape[0])


def _relation_track(rng: np.random.Generator, a: dict, other: np.ndarray, other_r: float, h: int, w: int,
                    side: int, u: float) -> np.ndarray | None:
    """Track heading, on every frame, straight at (away from) the landmark's current position
    ``other[i]``, at constant speed; an approach stops short of 0.8 × the radii sum. ``None`` if no
    start 0.45 L (and 1.8 radii sums) away from the landmark fits after 10 draws."""
    t = other.shape[0]
    contact = a["radius"] + other_r
    sign = 1.0 if a["program"] == "approaches" else -1.0
    for _ in range(10):
        if sign > 0:
            start = np.array([rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h])
            gap = float(np.hypot(*(start - other[0])))
            if gap < max(0.45 * side, 1.8 * contact):
                continue
            sigma = max((gap - 0.8 * contact) / (t - 1), 0.3 * u)
        else:
            ang = rng.uniform(0, 2 * np.pi)
            start = other[0] + np.array([np.cos(ang), np.sin(ang)]) * rng.uniform(0.9, 1.2) * contact
            sigma = rng.uniform(0.55, 0.75) * u
        track = np.empty((t, 2))
        track[0] = start
        for i in range(t - 1):
            rel = other[i] - track[i]
            dist = max(float(np.hypot(*rel)), 1e-9)
            step = min(sigma, dist - 0.8 * contact) if sign > 0 else sigma
            track[i + 1] = track[i] + sign * rel / dist * max(step, 0.0)
        return track
    return None


def _plant_tracks(rng: np.random.Generator, attrs: Sequence[dict], h: int, w: int,
                  camera: np.ndarray) -> np.ndarray | None:
    """``(K, T, 2)`` world tracks for the objects' programs (landmarks first); ``None`` if a relation
    found no start."""
    t, side = camera.shape[0], min(h, w)
    n_int, u = t - 1, min(h, w) / (t - 1)
    tracks = np.zeros((len(attrs), t, 2))
    relational = [k for k, a in enumerate(attrs) if a["program"] in RELATIONAL_PREDICATES]
    for k in [k for k in range(len(attrs)) if k not in relational] + relational:
        a = attrs[k]
        start = np.array([rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h])
        if a["program"] == "still":
            tracks[k] = start
        elif a["program"] == "circle":
            tracks[k] = _circle_track(rng, a["radius"], h, w, t, side)
        elif a["program"] in ("enters", "leaves"):
            tracks[k] = _frame_track(rng, a, h, w, camera)
        elif a["program"] in RELATIONAL_PREDICATES:
            lm = a["landmark"]
            track = _relation_track(rng, a, tracks[lm], attrs[lm]["radius"], h, w, side, u)
            if track is None:
                return None
            tracks[k] = track
        else:
            tracks[k] = _directed_track(rng, a, start, n_int, u)
    return tracks


def _shape_pixels(obj: SynthObject) -> int:
    """Pixels of the whole shape as rasterised (reference for the in-frame fraction)."""
    s = int(2 * _OUTSIDE * obj.radius) + 8
    canvas = np.zeros((s, s), dtype=np.uint8)
    _draw(canvas, obj, s / 2, s / 2)
    return max(int(canvas.sum()), 1)


def _camera_frames(bg: np.ndarray, camera: np.ndarray, h: int, w: int) -> np.ndarray:
    """``(T, H, W, 3)`` crops of the wide background ``bg`` at the camera offsets."""
    off = camera - camera.min(axis=0)
    return np.stack([bg[y:y + h, x:x + w] for x, y in off])


def _generate_full(rng: np.random.Generator, t: int, h: int, w: int) -> SynthVideo:
    """One clip of the full vocabulary (see the module docstring)."""
    side = min(h, w)
    camera = _sample_camera(rng, t, side)
    span = camera.max(axis=0) - camera.min(axis=0)
    backgrounds = _camera_frames(_background(rng, h + int(span[1]), w + int(span[0])), camera, h, w)
    palette = _palette(rng)
    while True:
        attrs = _sample_full_attributes(rng, side, t - 1)
        for _ in range(20):
            tracks = _plant_tracks(rng, attrs, h, w, camera)
            if tracks is None:
                continue
            objects = [SynthObject(obj_id=k, shape=a["shape"], color=a["color"], size_name=a["size_name"],
                                   motion=a["program"], speed=a["speed"], radius=a["radius"],
                                   start=(float(tr[0, 0]), float(tr[0, 1])), end=(float(tr[-1, 0]), float(tr[-1, 1])))
                       for k, (a, tr) in enumerate(zip(attrs, tracks))]
            depth = [int(i) for i in rng.permutation(len(objects))]
            raw = _rasterise(objects, tracks - camera[None], h, w)
            masks = _occlude(raw, depth)
            if _visible_enough(objects, masks):
                break
        else:
            continue
        inframe = raw.sum(axis=(2, 3)) / np.array([_shape_pixels(o) for o in objects])[:, None]
        facts = _Facts(tracks, inframe, side)
        expressions = _choose_full_expressions(rng, objects, facts)
        if len(expressions) >= 2:
            return SynthVideo(frames=_paint(backgrounds, objects, masks, palette), objects=objects, masks=masks,
                              expressions=expressions, tracks=tracks, camera=camera, depth=depth, vocabulary="full")


# ----------------------------------------------------------------------------------------------
# splits and streams
# ----------------------------------------------------------------------------------------------

def video_name(index: int) -> str:
    """Name of the ``index``-th clip of a split, e.g. ``"synth_00012"``."""
    return f"synth_{index:05d}"


def anno_id_of(video_index: int, obj_id: int) -> int:
    """anno_id of an object in a written split: ``video_index * 10 + obj_id`` (unique in the split)."""
    return video_index * _ANNO_STRIDE + obj_id


def _to_mevis(index: int, v: SynthVideo):
    """One clip → :class:`rvos_core.formats.mevis.MevisVideo` (masks only for referred objects)."""
    from rvos_core.formats.mevis import MevisExpression, MevisVideo

    t = v.frames.shape[0]
    exps = {str(i): MevisExpression(exp=e.text, obj_id=list(e.obj_ids),
                                    anno_id=[anno_id_of(index, k) for k in e.obj_ids], kind=e.kind)
            for i, e in enumerate(v.expressions)}
    referred = sorted({k for e in v.expressions for k in e.obj_ids})
    masks = {anno_id_of(index, k): [m if m.any() else None for m in v.masks[k]] for k in referred}
    return MevisVideo(frame_names=[f"{i:05d}" for i in range(t)], frames=v.frames, expressions=exps, masks=masks)


class _LazySplit(Mapping):
    """video name → MevisVideo, generated on access (the writer fetches each video once)."""

    def __init__(self, count: int, seed: int, frames: int, size: tuple[int, int], vocabulary: str) -> None:
        self.count, self.seed, self.frames, self.size, self.vocabulary = count, seed, frames, size, vocabulary

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[str]:
        return (video_name(i) for i in range(self.count))

    def __getitem__(self, name: str):
        index = int(name.rsplit("_", 1)[1]) if isinstance(name, str) and name.startswith("synth_") else -1
        if not 0 <= index < self.count or video_name(index) != name:
            raise KeyError(name)
        rng = np.random.default_rng([self.seed, index])
        return _to_mevis(index, generate_video(rng, num_frames=self.frames, size=self.size, vocabulary=self.vocabulary))


def write_split(out_dir: str | os.PathLike, videos: int, seed: int, frames: int = 8, size: tuple[int, int] = (128, 128),
                progress: bool = True, overwrite: bool = False, vocabulary: str = "basic",
                motion_only: bool = False) -> Path:
    """Write ``videos`` clips as a MeViS-layout split (with ``mask_dict.json`` and ``"kind"`` per expression).

    Clip ``i`` is ``generate_video(np.random.default_rng([seed, i]), frames, size, vocabulary)``, named
    ``synth_{i:05d}``, frames ``00000…``; object ``k`` of clip ``i`` has ``obj_id = k`` and
    ``anno_id = 10 * i + k``; ``mask_dict.json`` holds the referred objects, ``null`` on frames
    where the object is fully off-frame or hidden. Same arguments → byte-identical files. This is the
    held-out split of a seed: training streams (:func:`iterate_training_samples`) never draw its clips.

    Args:
        out_dir: destination folder (must not exist or be empty unless ``overwrite``).
        videos: number of clips ≥ 1. seed: int ≥ 0. frames: ``T ≥ 2``. size: ``(H, W)`` pixels.
        progress: show a tqdm bar.
        vocabulary: ``"basic"`` (default here; the shipped model's held-out split) or ``"full"``.
        motion_only: also write :data:`MOTION_ONLY_FILE` (see :func:`write_motion_only_subset`).

    Returns:
        ``Path(out_dir)``.

    Raises:
        ValueError: bad counts / sizes / vocabulary. FileExistsError: ``out_dir`` is not empty.
    """
    from rvos_core.formats.mevis import write_mevis_split

    if isinstance(videos, bool) or not isinstance(videos, (int, np.integer)) or videos < 1:
        raise ValueError(f"videos: expected an int ≥ 1, got {videos!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an int ≥ 0, got {seed!r}")
    h, w = _check_args(frames, size)
    lazy = _LazySplit(int(videos), int(seed), int(frames), (h, w), _check_vocabulary(vocabulary))
    out = write_mevis_split(out_dir, lazy, progress=progress, overwrite=overwrite)
    if motion_only:
        write_motion_only_subset(out)
    return out


def write_motion_only_subset(split_dir: str | os.PathLike) -> Path:
    """Write ``split_dir/meta_expressions_motion_only.json``: the split's motion-only subset.

    Same schema as ``meta_expressions.json`` (``{"videos": {VIDEO: {"expressions": {ID: {"exp",
    "obj_id", "anno_id", "kind"}}, "frames": [...]}}}``), keeping only expressions with
    ``"kind": "motion"`` under their original ids (so predictions for the whole split score it as
    is), and only videos that keep at least one. ``mask_dict.json`` serves both files. To score the
    subset with a tool that reads ``meta_expressions.json`` only, point it at a copy of the split
    with this file in its place; ``python -m rvos_core evaluate`` already reports the
    ``"kind: motion"`` group.

    Returns:
        The written path (written atomically).

    Raises:
        FileNotFoundError: no split / ``meta_expressions.json`` at ``split_dir``.
        rvos_core.formats.mevis.MevisFormatError: a malformed ``meta_expressions.json``.
    """
    from rvos_core.fileio import atomic_output_path
    from rvos_core.formats.mevis import META_FILE, read_mevis_split

    root = Path(split_dir)
    with read_mevis_split(root):  # validates the split first
        pass
    meta = json.loads((root / META_FILE).read_text(encoding="utf-8"))
    subset = {}
    for name, video in meta["videos"].items():
        exps = {k: e for k, e in video["expressions"].items() if e.get("kind") == "motion"}
        if exps:
            subset[name] = {**video, "expressions": exps}
    out = root / MOTION_ONLY_FILE
    with atomic_output_path(out) as tmp:
        tmp.write_bytes(json.dumps({"videos": subset}, separators=(",", ":"), ensure_ascii=True).encode("ascii"))
    return out


def iterate_training_samples(seed: int, num_frames: int = 8, size: tuple[int, int] = (128, 128),
                             vocabulary: str = "basic") -> Iterator[SynthVideo]:
    """Infinite stream of clips for on-the-fly training.

    Sample ``i`` uses ``np.random.default_rng([seed, i, 1])``: reproducible, and disjoint from the
    clips :func:`write_split` makes with the same seed (those use ``[seed, i]``).

    Raises:
        ValueError: bad ``num_frames``, ``size`` or ``vocabulary`` (at the call, not the first ``next``).
    """
    _check_args(num_frames, size)
    _check_vocabulary(vocabulary)
    return _training_stream(seed, num_frames, size, vocabulary)


def _training_stream(seed: int, num_frames: int, size: tuple[int, int], vocabulary: str) -> Iterator[SynthVideo]:
    for i in itertools.count():
        yield generate_video(np.random.default_rng([seed, i, 1]), num_frames=num_frames, size=size,
                             vocabulary=vocabulary)


__all__ = [
    "SHAPES", "COLORS", "SIZES", "MOTIONS", "SPEEDS", "KINDS", "VOCABULARIES", "PREDICATES", "RELATIONAL_PREDICATES",
    "SUPERLATIVE_PREDICATES", "PROGRAMS", "MOTION_ONLY_FILE", "SynthObject", "SynthVideo", "SynthExpression",
    "ExpressionSpec", "MotionSpec", "generate_video", "write_split", "write_motion_only_subset",
    "iterate_training_samples", "video_name", "anno_id_of",
]
