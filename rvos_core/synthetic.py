"""Procedural referring-motion clips: coloured shapes moving over a textured background.

Training and held-out data for the demo model, in the spirit of MeViS (Ding et al., "MeViS: A
Large-scale Benchmark for Video Segmentation with Motion Expressions", ICCV 2023): many expressions
can only be resolved by *motion*, because a same-looking distractor is present; some refer to
several objects at once. Splits are written in the MeViS layout (``train`` / ``valid_u`` style, with
``mask_dict.json``; layout as used by the 2nd-place PVUW 2024 MeViS entry, seed 003) through
:func:`rvos_core.formats.mevis.write_mevis_split`.

Content of one clip (all sizes relative to the frame):

* background: a random mix of a smooth gradient, stripes and blotchy noise between two
  low-saturation colours (never confusable with the saturated objects; white objects are brighter
  than any background pixel);
* 2–4 objects: shape ``circle | square | triangle | diamond``; colour ``red | green | blue | yellow |
  purple | orange | white``; size ``small`` (radius 7–10 % of ``min(H, W)``) or ``big`` (13–17 %);
  motion ``left | right | up | down | still`` ("up" = towards row 0), speed ``slow`` (total
  displacement 20–30 % of the frame over the clip) or ``fast`` (45–60 %); objects may leave the
  frame partly or fully (their mask is then empty on those frames);
* occlusion: objects are drawn in ``obj_id`` order, later on top; earlier masks lose covered pixels;
* expressions (2–5 per clip), each with a ``kind``:

  - ``"appearance"``: only appearance words (colour / shape / size);
  - ``"motion"``: a referred object has a distractor of identical shape, colour and size that is
    not referred, so only the motion words tell them apart;
  - ``"mixed"``: appearance and motion words are both needed and no identical distractor exists.

  Every expression is checked to be satisfied by exactly its ``obj_ids`` (:func:`_referents`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

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

APPEARANCE_ATTRS = ("color", "shape", "size")
MOTION_ATTRS = ("motion", "speed")
ATTRS = APPEARANCE_ATTRS + MOTION_ATTRS

_TWIN_PROB = 0.7          # chance to plant a same-looking distractor with a different motion
_MIXED_PROB = 0.7         # chance (when room is left) to plant a pair that calls for mixed expressions
_MIN_VISIBLE = 0.35        # visible area / full area for a frame to count as "visible"
_SUBPIXEL = 4              # cv2 drawing shift: coordinates in 1/16 px
_ANNO_STRIDE = 10          # anno_id = video_index * 10 + obj_id (at most 4 objects per clip)


@dataclass(frozen=True)
class SynthObject:
    """One object of a clip.

    Attributes:
        obj_id: index within the clip (also the drawing order: higher ids are drawn on top).
        shape: one of :data:`SHAPES`. color: one of :data:`COLORS`. size_name: ``"small"`` / ``"big"``.
        motion: one of :data:`MOTIONS` (image directions; ``"up"`` = towards row 0).
        speed: ``"slow"`` / ``"fast"``, or ``None`` when ``motion == "still"``.
        radius: radius in pixels. start, end: centre ``(x, y)`` in pixels on the first / last frame
            (linear in between; may lie outside the frame).
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
class SynthExpression:
    """A referring expression of a clip.

    Attributes:
        text: the expression, lower case, e.g. ``"the circle moving to the left"``.
        obj_ids: the referred objects (sorted); the ground truth is the union of their masks.
        kind: ``"appearance"``, ``"motion"`` or ``"mixed"`` (see the module docstring).
        spec: the attributes the text states (``_referents(objects, spec) == obj_ids``).
    """

    text: str
    obj_ids: list[int]
    kind: str
    spec: ExpressionSpec


@dataclass
class SynthVideo:
    """One generated clip, in memory.

    Attributes:
        frames: ``(T, H, W, 3)`` uint8 RGB.
        objects: the objects, ``objects[k].obj_id == k``.
        masks: ``(K, T, H, W)`` bool, exact pixel masks after occlusion (empty where off-frame).
        expressions: 2–5 :class:`SynthExpression`.
    """

    frames: np.ndarray
    objects: list[SynthObject]
    masks: np.ndarray
    expressions: list[SynthExpression]


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


def _render_text(rng: np.random.Generator, spec: ExpressionSpec, count: int) -> str:
    """Words for a spec; only what the spec states, in one of several phrasings."""
    plural = count > 1
    words = [_determiner(rng, count)]
    speed_only = spec.speed is not None and spec.motion is None
    if speed_only and rng.random() < 0.6:
        words.append(_pick(rng, _SPEED_ADJ[spec.speed]))
        speed_only = False
    if spec.size:
        words.append(_pick(rng, _SIZE_WORDS[spec.size]))
    if spec.color:
        words.append(spec.color)
    if spec.shape:
        words.append(spec.shape + ("s" if plural else ""))
    else:
        words.append(_pick(rng, _GENERIC[plural]))
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
    for a in ("shape", "color"):
        if getattr(spec, a) is not None or rng.random() >= (0.7 if a == "shape" else 0.3):
            continue
        values = {objects[i].attr(a) for i in refs}
        if len(values) == 1:
            trial = replace(spec, **{a: values.pop()})
            if _referents(objects, trial) == refs:
                spec = trial
    return spec


def _choose_expressions(rng: np.random.Generator, objects: Sequence[SynthObject]) -> list[SynthExpression]:
    """2–5 expressions favouring motion (≥ 30 % overall) and multi-object ones (≥ 15 %)."""
    cands = _candidate_specs(objects)
    if len(cands) < 2:
        return []
    order = [cands[i] for i in rng.permutation(len(cands))]
    chosen: list[tuple[ExpressionSpec, list[int], str]] = []

    def take(pred, limit: int) -> None:
        for c in order:
            if len(chosen) >= limit:
                return
            if c not in chosen and pred(c) and all(c[1] != d[1] for d in chosen):
                chosen.append(c)

    want = int(rng.integers(2, 6))
    take(lambda c: c[2] == "motion", 1)
    if rng.random() < 0.6:
        take(lambda c: len(c[1]) > 1, len(chosen) + 1)
    take(lambda c: c[2] == "mixed", len(chosen) + 1)
    weights = {"appearance": 3.0, "mixed": 3.0, "motion": 1.0}
    rest = [c for c in order if c not in chosen]
    while rest and len(chosen) < want:  # fill, preferring new referent sets and non-motion kinds
        fresh = [c for c in rest if all(c[1] != d[1] for d in chosen)] or rest
        p = np.array([weights[c[2]] for c in fresh])
        c = fresh[int(rng.choice(len(fresh), p=p / p.sum()))]
        chosen.append(c)
        rest.remove(c)
    out = []
    used: set[ExpressionSpec] = set()
    for i in rng.permutation(len(chosen)):
        core, refs, kind = chosen[i]
        spec = _embellish(rng, objects, core, refs, kind)
        if spec in used:  # two cores embellished into the same words: keep the plain core
            spec = core
        if spec in used:
            continue
        used.add(spec)
        out.append(SynthExpression(_render_text(rng, spec, len(refs)), list(refs), kind, spec))
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


def _render_masks(objects: Sequence[SynthObject], t: int, h: int, w: int) -> np.ndarray:
    """``(K, T, H, W)`` bool masks after occlusion (later objects on top)."""
    raw = np.zeros((len(objects), t, h, w), dtype=np.uint8)
    for k, o in enumerate(objects):
        for i in range(t):
            a = i / (t - 1)
            _draw(raw[k, i], o, o.start[0] + a * (o.end[0] - o.start[0]), o.start[1] + a * (o.end[1] - o.start[1]))
    masks = raw.astype(bool)
    covered = np.zeros((t, h, w), dtype=bool)
    for k in range(len(objects) - 1, -1, -1):
        visible = masks[k] & ~covered
        covered |= masks[k]
        masks[k] = visible
    return masks


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
    frames = np.repeat(bg[None], masks.shape[1], axis=0)
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


def generate_video(rng: np.random.Generator, num_frames: int = 8, size: tuple[int, int] = (128, 128)) -> SynthVideo:
    """Generate one clip with its objects, exact masks and 2–5 referring expressions.

    Args:
        rng: the only source of randomness (same generator state → same clip).
        num_frames: ``T ≥ 2``.
        size: ``(H, W)`` in pixels, each ≥ 32.

    Returns:
        A :class:`SynthVideo`: frames ``(T, H, W, 3)`` uint8 RGB, masks ``(K, T, H, W)`` bool.

    Raises:
        ValueError: bad ``num_frames`` or ``size``.
    """
    t = int(num_frames)
    h, w = _check_args(num_frames, size)
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
                              expressions=expressions)


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

    def __init__(self, count: int, seed: int, frames: int, size: tuple[int, int]) -> None:
        self.count, self.seed, self.frames, self.size = count, seed, frames, size

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[str]:
        return (video_name(i) for i in range(self.count))

    def __getitem__(self, name: str):
        index = int(name.rsplit("_", 1)[1]) if isinstance(name, str) and name.startswith("synth_") else -1
        if not 0 <= index < self.count or video_name(index) != name:
            raise KeyError(name)
        rng = np.random.default_rng([self.seed, index])
        return _to_mevis(index, generate_video(rng, num_frames=self.frames, size=self.size))


def write_split(out_dir: str | os.PathLike, videos: int, seed: int, frames: int = 8, size: tuple[int, int] = (128, 128),
                progress: bool = True, overwrite: bool = False) -> Path:
    """Write ``videos`` clips as a MeViS-layout split (with ``mask_dict.json`` and ``"kind"`` per expression).

    Clip ``i`` is ``generate_video(np.random.default_rng([seed, i]), frames, size)``, named
    ``synth_{i:05d}``, frames ``00000…``; object ``k`` of clip ``i`` has ``obj_id = k`` and
    ``anno_id = 10 * i + k``; ``mask_dict.json`` holds the referred objects, ``null`` on frames
    where the object is fully off-frame or hidden. Same arguments → byte-identical files.

    Args:
        out_dir: destination folder (must not exist or be empty unless ``overwrite``).
        videos: number of clips ≥ 1. seed: int ≥ 0. frames: ``T ≥ 2``. size: ``(H, W)`` pixels.
        progress: show a tqdm bar.

    Returns:
        ``Path(out_dir)``.

    Raises:
        ValueError: bad counts / sizes. FileExistsError: ``out_dir`` is not empty.
    """
    from rvos_core.formats.mevis import write_mevis_split

    if isinstance(videos, bool) or not isinstance(videos, (int, np.integer)) or videos < 1:
        raise ValueError(f"videos: expected an int ≥ 1, got {videos!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an int ≥ 0, got {seed!r}")
    h, w = _check_args(frames, size)
    lazy = _LazySplit(int(videos), int(seed), int(frames), (h, w))
    return write_mevis_split(out_dir, lazy, progress=progress, overwrite=overwrite)


def iterate_training_samples(seed: int, num_frames: int = 8, size: tuple[int, int] = (128, 128)) -> Iterator[SynthVideo]:
    """Infinite stream of clips for on-the-fly training.

    Sample ``i`` uses ``np.random.default_rng([seed, i, 1])``: reproducible, and disjoint from the
    clips :func:`write_split` makes with the same seed (those use ``[seed, i]``).
    """
    _check_args(num_frames, size)
    for i in itertools.count():
        yield generate_video(np.random.default_rng([seed, i, 1]), num_frames=num_frames, size=size)


__all__ = [
    "SHAPES", "COLORS", "SIZES", "MOTIONS", "SPEEDS", "KINDS", "SynthObject", "SynthVideo", "SynthExpression",
    "ExpressionSpec", "generate_video", "write_split", "iterate_training_samples", "video_name", "anno_id_of",
]
