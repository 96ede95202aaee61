"""Offline refiner: GrabCut on a crop around the prompts; no weights, no network.

Method: GrabCut (Rother, Kolmogorov & Blake, "GrabCut: interactive foreground extraction using iterated
graph cuts", SIGGRAPH 2004) as implemented by OpenCV (``cv2.grabCut``, colour GMMs + graph cut), with clicks
as hard constraints (Boykov & Jolly, "Interactive graph cuts for optimal boundary & region segmentation of
objects in N-D images", ICCV 2001). A call takes one of three paths:

1. **Seeded first click** (positive clicks, no box, no prior). A box of half-size ``default_box_frac`` of the
   frame's longer side around the positive clicks bounds the object (definite background outside it);
   inside it everything starts as *probable background* except a disk of radius ``seed_frac`` of the
   longer side around each positive click, which starts as *probable foreground*. The foreground colour
   model therefore starts from the object's colours around the click and grows where GrabCut finds the
   same colours, instead of starting from the whole box (GrabCut's box initialisation takes in everything
   of a similar colour near the object: on DAVIS blackswan the swan's dark reflection).
2. **Global refinement** (a box, or a prior with the first two clicks, or a prior that does not agree with
   the earlier clicks, e.g. the session's engine proposal): GrabCut on a crop around all prompts, seeded as
   listed below; the whole crop may change. When the result keeps nothing of the prior (no box, and the
   components holding the positive clicks do not touch it) the prior marked some other object, e.g. an
   engine proposal on a look-alike, and its colours only skewed the foreground model (on the sample dog
   clip a click on the dog's brown patch then kept the patch alone, ~120 px): the cut is redone as a
   seeded first click from the clicks alone (1 470 px on frame 7, 9 150 px on frame 12: the click grows
   over the dog).
3. **Local correction** (a prior, no box, at least ``local_after`` clicks, the newest click contradicts the
   prior and every earlier one is honoured by it: the robot user's and RITM's protocol, where the prior is
   the mask the previous click gave). Only pixels near the newest click may change: a pixel ``p`` is free when
   ``dist(p, click) + dist(p, prior boundary) <= R`` with ``R = max(local_min_frac × longer side,
   local_reach × d)``, ``d`` the click's distance to the other side of the prior (how far the error it
   marks reaches at least). Near the click anything may flip; farther out only a band along the prior's
   boundary, narrowing to nothing at distance ``R``. GrabCut runs on a window of ``local_context × R``
   around the click (local colour models), free pixels are probable, all others definite from the prior,
   and only free pixels are written back. This is FocalClick's idea (Chen, Zhao, Zhang, Cheng, "FocalClick:
   Towards Practical Interactive Image Segmentation", CVPR 2022: refine a local "focus" crop around the new
   click and merge only the change around it) with GrabCut as the local segmenter. A click then cannot undo
   what earlier clicks fixed elsewhere, which matters most for thin objects: on DAVIS bmx-trees, GrabCut
   re-run freely on the ground-truth mask itself returns IoU 0.18–0.60 (blurred wheels and frame tubes),
   and even a 3 px uncertain band along the true boundary only 0.74–0.81. New components that neither touch
   the prior nor hold a positive click are dropped.

How the prompts seed GrabCut's label map in the global path (OpenCV's ``GC_BGD`` / ``GC_FGD`` definite,
``GC_PR_*`` probable):

- mask prior → probable foreground inside; probable background in the margin ring around it (the rest of
  the crop, whose margin is ``margin_frac`` of the prompts' extent), with a thin definite-background strip
  along the crop's sides; with a box, definite background outside the box instead;
- box → definite background outside it; inside it, probable foreground (or probable background where a
  prior exists and says "not object");
- positive clicks → definite-foreground disks; negative clicks → definite-background disks.

GrabCut runs on a crop downscaled (area averaging) so its longer side is at most ``max_side``; the binary
result is upsampled bilinearly and thresholded at 0.5 (a prior goes down the same way: area average ≥ 0.5),
which keeps the mask centred: nearest-neighbour resampling both ways shifts it by up to half a working
pixel per round trip, and the local path, which keeps the prior outside the free region, would accumulate
that drift click after click. Post-processing in the global path keeps the connected components that
contain a positive click (or, without positive clicks, that overlap the prior). In both paths a negative
click that lands in the mask removes the region around it up to the nearest colour edge (marker-controlled
watershed, see :meth:`GrabCutRefiner._split_at_negative_clicks`: a colour-similar false positive the prior
called foreground is otherwise kept by GrabCut); finally positive-click disks are forced in and
negative-click disks out.

Iterations stop early once the labelling settles: GrabCut runs one ``cv2.grabCut`` iteration at a time (the
first initialises the colour GMMs by k-means, the next continue from the returned models with ``GC_EVAL``,
which reproduces a single multi-iteration call exactly) and stops when an iteration flipped at most
``settle_frac`` (0.5 %) of the foreground's pixels, or after ``iters`` (3) iterations. In the local path the
k-means initialisation runs on every 2nd pixel of every 2nd row (``cv2.grabCut`` with zero iterations on
the subsampled window only fits the GMMs), and the GMM re-fits and graph cuts then use every pixel; the
graph cut's cost is mostly in its free pixels, which the local path keeps few.

GrabCut works in 8-bit CIE L*a*b* (``cv2.COLOR_RGB2LAB``) rather than RGB: distances there follow perceived
colour differences more closely, for the colour GMMs and for the contrast-sensitive pairwise term alike
(on DAVIS blackswan it tells the swan's dark plumage from the dark water better: NoC@90 3.94 → 3.41 in the
development runs below).

Measured with ``bench/clicks.py`` (robot user, :mod:`rvos_core.robot_user`: 20 clicks per frame, the previous
mask as prior, all frames; whole-clip protocol with propagation, budget 100) on DAVIS-2016 blackswan (50
frames) and bmx-trees (60) at 854 × 480, on the shared 2-core dev machine (load average 2.0–3.2 during the
new run, 3.0–3.1 during the old one); click → mask latency over both clips, wall-clock and this process's
CPU ms:

=========================  ======  ======  =====  =====  =====  ===========  ============  ============
clip / version             NoC@85  NoC@90  J@1    J@5    J@20   clip clicks  wall p50/p95  CPU p50/p95
=========================  ======  ======  =====  =====  =====  ===========  ============  ============
blackswan, before          5.68    6.92    0.397  0.803  0.950  9
blackswan, now             2.40    3.54    0.738  0.926  0.957  2
bmx-trees, before          20      20      0.276  0.387  0.654  budget
bmx-trees, now             20      20      0.337  0.509  0.675  budget
both clips, before                                                          78 / 408      77 / 402
both clips, now                                                             43 / 89       42 / 87
=========================  ======  ======  =====  =====  =====  ===========  ============  ============

bmx-trees still never reaches J 0.85 within 20 clicks: its outline is motion-blurred and its wheels are thin
rings, and the errors left after ~8 clicks are slivers 3–5 px deep along the whole outline, one per click.

Development runs (blackswan every 3rd frame, bmx-trees every 4th; each row adds one change to the row above;
process CPU ms per click):

===============================================  ======  ======  =====  =====  =====  =====  =====  =====
change                                           swan    swan    swan   swan   bmx    bmx    bmx    CPU
                                                 NoC@85  NoC@90  J@1    J@5    J@1    J@5    J@20   p50
===============================================  ======  ======  =====  =====  =====  =====  =====  =====
before (every 5th frame of both clips)           5.60    7.00    0.395  0.805  0.293  0.392  0.669  76
crop margin 0.1 → 0.3 of the prompts' extent      4.90    6.80    0.422  0.862  0.286  0.446  0.685  90
centred resampling (area down / bilinear up)     4.70    6.60    0.423  0.877  0.287  0.456  0.686  86
seeded first click (seed 0.06, box 0.3)          2.53    4.00    0.713  0.913  0.339  0.486  0.680  74
local correction from the 3rd click (R ≥ 60 px)  2.53    3.82    0.712  0.920  0.344  0.527  0.682  21
local radius R ≥ 0.1 × longer side, 3 d          2.53    3.94    0.713  0.918  0.339  0.521  0.691  42
CIE L*a*b*, crop margin 0.25 (the defaults)      2.35    3.41    0.739  0.928  0.347  0.517  0.688  40
===============================================  ======  ======  =====  =====  =====  =====  =====  =====

(The first three rows were measured on every 5th frame.) The crop margin trades growth room (a swan's neck
missing from the prior) against taking in look-alikes next to the object; single refinements of a shifted
or eroded blackswan mask change by up to ±0.25 IoU between margins 0.1 and 0.3 and between RGB and L*a*b*,
so 0.25 was chosen where all of them did well.

Tried and dropped: progressive merge of the global result (keep only the changed component holding the
newest click: blackswan NoC@85 4.90 → 5.90); local correction from the 2nd click (the 2nd click often has to
change the whole object: blackswan NoC@85 2.53 → 2.94); a FocalClick-style local window *without* the
global path for early clicks (blackswan NoC@85 13.9); a band of probable labels along the whole prior
boundary on top of the click's region (same quality, slower); letting every pixel of the window on the
click's side of the prior flip, not only the click's region (no gain, CPU + 50 %); hard disks of radius ∝
the click's distance to the prior (blackswan NoC@85 +0.2 to +0.7); coarse-to-fine GrabCut (a 160–192 px
pass, then a 4–6 px band at full working size: first-click J 0.71 → 0.35, as OpenCV's fixed pairwise weight
makes a coarser grid smooth more); ``max_side`` 256 (blackswan J@1 0.71 → 0.65); the local window upsampled
2× (bmx J@20 + 0.02, CPU × 2.5); estimating a click's depth from the distance to the nearest Canny edge
(texture: no correlation with the true depth).

GrabCut's k-means initialisation draws from OpenCV's RNG, which is re-seeded before every call, so the same
inputs give the same mask (the refiner keeps no state between calls). If GrabCut cannot run (e.g. no
background or foreground sample left, or a degenerate colour model on a uniform crop), the refiner falls back
to the prior (or the box) with the click disks applied, and logs a warning, instead of raising; the same
fallback applies when GrabCut labels the whole crop background.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from rvos_core.refiners.base import RefineResult
from rvos_core.refiners.registry import Prompts, validate_prompts

logger = logging.getLogger(__name__)


# Negative-click split (see GrabCutRefiner._split_at_negative_clicks); tuned on DAVIS-2016 blackswan.
_NEG_REACH_DEPTH = 3.0  # a negative click claims at most this × its depth inside the mask (px from the mask edge)
_NEG_REACH_PRIOR = 0.35  # … and, without positive clicks, this fraction of the mask's largest distance from it
_WATERSHED_BLUR_SIGMA = 2.0  # px; smooths texture so the watershed follows object edges


@dataclass(frozen=True)
class _Crop:
    """A crop ``[y0:y1, x0:x1]`` of the frame and its scale factor to GrabCut's working size."""

    x0: int
    y0: int
    x1: int
    y1: int
    scale: float

    @property
    def small_size(self) -> tuple[int, int]:
        """(width, height) of the downscaled crop."""
        return max(1, round((self.x1 - self.x0) * self.scale)), max(1, round((self.y1 - self.y0) * self.scale))

    def to_small(self, xy: np.ndarray) -> np.ndarray:
        """Frame (x, y) pixels → integer pixels of the downscaled crop, ``(N, 2)`` int."""
        w, h = self.small_size
        small = (xy - np.array([self.x0, self.y0], np.float32)) * self.scale
        return np.clip(np.round(small), 0, [w - 1, h - 1]).astype(np.int32)


def _resize_mask_down(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``mask`` (bool) → ``size`` = (width, height) by area averaging, then ≥ 0.5; bool, stays centred."""
    return cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA) >= 0.5


def _resize_mask_up(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``mask`` (bool) → ``size`` = (width, height) by bilinear interpolation, then > 0.5; bool.

    Unlike nearest-neighbour upsampling, this keeps the mask centred and smooths the working grid's stairs.
    """
    return cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) > 0.5


def _disk_mask(shape: tuple[int, int], centers: np.ndarray, radius: int) -> np.ndarray:
    """``(H, W)`` bool: the union of filled disks of ``radius`` px around integer ``centers`` (x, y)."""
    out = np.zeros(shape, np.uint8)
    for x, y in np.asarray(centers, np.int32).reshape(-1, 2):
        cv2.circle(out, (int(x), int(y)), int(radius), 1, thickness=-1)
    return out.astype(bool)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """``mask`` with every background region not connected to the (padded) border filled; bool."""
    padded = np.pad(mask, 1).astype(np.uint8)
    outside = np.zeros((padded.shape[0] + 2, padded.shape[1] + 2), np.uint8)
    cv2.floodFill(padded, outside, (0, 0), 2)
    return (padded != 2)[1:-1, 1:-1]


def _distance_to_points(shape: tuple[int, int], points: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32 Euclidean distance (px) to the nearest of ``points`` (int (x, y), may lie outside)."""
    ys = np.arange(shape[0], dtype=np.float32)[:, None]
    xs = np.arange(shape[1], dtype=np.float32)[None, :]
    squared = np.full(shape, np.inf, np.float32)
    for x, y in np.asarray(points, np.float32).reshape(-1, 2):
        np.minimum(squared, np.square(ys - y) + np.square(xs - x), out=squared)  # outer sum: no (H, W) grids
    return np.sqrt(squared, out=squared)


def _distance_to_other_side(prior: np.ndarray, x: int, y: int, limit: int) -> float:
    """Distance (px) from pixel (x, y) to the nearest pixel on the other side of ``prior`` (``(H, W)`` bool).

    For a pixel outside the prior: to the nearest prior pixel; inside: to the nearest pixel outside it (the
    frame border does not count). Searched within ``limit`` px; ``limit`` when nothing is that close.
    """
    x0, y0 = max(0, x - limit), max(0, y - limit)
    window = prior[y0 : y + limit + 1, x0 : x + limit + 1]
    same_side = (window == prior[y, x]).view(np.uint8)
    if same_side.all():
        return float(limit)
    dist = cv2.distanceTransform(same_side, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return float(min(dist[y - y0, x - x0], limit))


def _crop_around(cx: float, cy: float, half: float, max_side: int, height: int, width: int) -> _Crop:
    """The square ``[cx ± half] × [cy ± half]`` clipped to the frame, scaled so its longer side ≤ ``max_side``."""
    x0, y0 = int(max(0, np.floor(cx - half))), int(max(0, np.floor(cy - half)))
    x1, y1 = int(min(width, np.ceil(cx + half) + 1)), int(min(height, np.ceil(cy + half) + 1))
    return _Crop(x0, y0, x1, y1, min(1.0, max_side / max(x1 - x0, y1 - y0)))


class GrabCutRefiner:
    """Offline promptable segmenter on ``cv2.grabCut`` (see the module docstring for the method).

    Args:
        max_side: longest side (px) of the crop GrabCut works on; larger crops are area-downscaled (speed:
            see the module docstring). Also bounds the local-correction window.
        click_radius_px: radius (px, frame scale) of the hard-constraint disk around each click;
            None → ``max(2, round(0.006 × longer frame side))`` (5 px at 854 × 480).
        iters: at most this many GrabCut iterations (each re-fits the colour GMMs and solves a graph cut).
        settle_frac: stop iterating once an iteration flips at most this fraction of the foreground's
            pixel count (working size); 0 → always ``iters`` iterations.
        margin_frac: crop margin (the probable-background ring around the prior / clicks), as a fraction of
            the prompts' extent (longer side), at least 10 px.
        border_frac: width of the definite-background strip along the crop sides, as a fraction of the
            crop's shorter side (at least 1 working pixel); unused when a box is given.
        default_box_frac: half-size of the default box around positive clicks, as a fraction of the
            frame's longer side (used when there is neither a box nor a prior).
        seed_frac: radius of the probable-foreground seed disk around each positive click when there is
            neither a box nor a prior, as a fraction of the frame's longer side (51 px at 854 × 480).
        local_after: local correction (module docstring) from this many clicks on; 0 disables it.
        local_reach: the local radius R is at least this × the newest click's distance to the other side of
            the prior.
        local_min_frac: … and at least this fraction of the frame's longer side (85 px at 854 × 480).
        local_context: the local GrabCut window is the square of half-size ``local_context × R`` around the
            click (≥ 1; the margin beyond R feeds the colour models).

    Raises:
        ValueError: a non-positive size, radius, iteration count or fraction, or ``local_context < 1``.
    """

    name = "grabcut"

    def __init__(
        self,
        max_side: int = 320,
        click_radius_px: int | None = None,
        iters: int = 3,
        margin_frac: float = 0.25,
        border_frac: float = 0.05,
        default_box_frac: float = 0.3,
        settle_frac: float = 0.005,
        seed_frac: float = 0.06,
        local_after: int = 3,
        local_reach: float = 3.0,
        local_min_frac: float = 0.1,
        local_context: float = 1.5,
    ) -> None:
        if max_side < 16:
            raise ValueError(f"max_side must be >= 16 px, got {max_side}")
        if click_radius_px is not None and click_radius_px < 1:
            raise ValueError(f"click_radius_px must be >= 1 px or None, got {click_radius_px}")
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        if local_after < 0:
            raise ValueError(f"local_after must be >= 0 clicks (0 disables local correction), got {local_after}")
        fractions = (("margin_frac", margin_frac), ("border_frac", border_frac), ("default_box_frac", default_box_frac),
                     ("seed_frac", seed_frac), ("local_min_frac", local_min_frac))
        for field, value in fractions:
            if not 0 < value <= 1:
                raise ValueError(f"{field} must be in (0, 1], got {value}")
        if not 0 <= settle_frac < 1:
            raise ValueError(f"settle_frac must be in [0, 1), got {settle_frac}")
        if not local_reach > 0:
            raise ValueError(f"local_reach must be > 0, got {local_reach}")
        if not local_context >= 1:
            raise ValueError(f"local_context must be >= 1, got {local_context}")
        self.max_side = int(max_side)
        self.click_radius_px = click_radius_px
        self.iters = int(iters)
        self.margin_frac = float(margin_frac)
        self.border_frac = float(border_frac)
        self.default_box_frac = float(default_box_frac)
        self.settle_frac = float(settle_frac)
        self.seed_frac = float(seed_frac)
        self.local_after = int(local_after)
        self.local_reach = float(local_reach)
        self.local_min_frac = float(local_min_frac)
        self.local_context = float(local_context)

    # ------------------------------------------------------------------------------------------ geometry

    def _radius(self, height: int, width: int) -> int:
        if self.click_radius_px is not None:
            return self.click_radius_px
        return max(2, round(0.006 * max(height, width)))

    def _object_box(self, prompts: Prompts, height: int, width: int) -> np.ndarray | None:
        """XYXY float box that bounds the object: the given box, else a default box around positive clicks."""
        if prompts.box is not None:
            return prompts.box
        if prompts.mask_prior is not None:
            return None
        pos = prompts.positive
        half = self.default_box_frac * max(height, width)
        x0, y0 = pos.min(axis=0) - half
        x1, y1 = pos.max(axis=0) + half + 1
        return np.array([max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)], np.float32)

    def _crop(self, prompts: Prompts, box: np.ndarray | None, height: int, width: int) -> _Crop:
        xs: list[float] = []
        ys: list[float] = []
        if box is not None:
            xs += [float(box[0]), float(box[2])]
            ys += [float(box[1]), float(box[3])]
        if prompts.mask_prior is not None:
            bx, by, bw, bh = cv2.boundingRect(prompts.mask_prior.astype(np.uint8))
            xs += [bx, bx + bw]
            ys += [by, by + bh]
        pos = prompts.positive
        if len(pos):
            xs += [float(pos[:, 0].min()), float(pos[:, 0].max()) + 1]
            ys += [float(pos[:, 1].min()), float(pos[:, 1].max()) + 1]
        extent = max(max(xs) - min(xs), max(ys) - min(ys))
        margin = max(10.0, self.margin_frac * extent)
        x0 = int(max(0, np.floor(min(xs) - margin)))
        y0 = int(max(0, np.floor(min(ys) - margin)))
        x1 = int(min(width, np.ceil(max(xs) + margin)))
        y1 = int(min(height, np.ceil(max(ys) + margin)))
        scale = min(1.0, self.max_side / max(x1 - x0, y1 - y0))
        return _Crop(x0, y0, x1, y1, scale)

    # ------------------------------------------------------------------------------------------ GrabCut

    def _init_labels(self, prompts: Prompts, box: np.ndarray | None, crop: _Crop, radius: int, height: int, width: int) -> np.ndarray:
        """GrabCut's initial label map at the downscaled crop size, ``(h, w)`` uint8 of ``cv2.GC_*``.

        With a box: definite background outside it; inside it probable foreground, except for the seeded
        first click (a default box, no prior), where only the seed disks around positive clicks are
        probable foreground. Without a box: probable background in the whole crop except a thin
        definite-background strip along the crop sides that were cut by the margin (not along the frame's
        own edges, where the object may touch the border).
        """
        w, h = crop.small_size
        labels = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        if box is not None:
            inside = np.zeros((h, w), bool)
            (bx0, by0), (bx1, by1) = crop.to_small(box.reshape(2, 2))
            inside[by0 : by1 + 1, bx0 : bx1 + 1] = True
            labels[~inside] = cv2.GC_BGD
            if prompts.mask_prior is None and prompts.box is not None:
                labels[inside] = cv2.GC_PR_FGD
            elif prompts.mask_prior is None:  # seeded first click (see the module docstring)
                seed_radius = max(1, round(self.seed_frac * max(height, width) * crop.scale))
                labels[inside & _disk_mask((h, w), crop.to_small(prompts.positive), seed_radius)] = cv2.GC_PR_FGD
        else:
            strip = max(1, round(self.border_frac * min(w, h)))
            if crop.y0 > 0:
                labels[:strip] = cv2.GC_BGD
            if crop.y1 < height:
                labels[-strip:] = cv2.GC_BGD
            if crop.x0 > 0:
                labels[:, :strip] = cv2.GC_BGD
            if crop.x1 < width:
                labels[:, -strip:] = cv2.GC_BGD
        if prompts.mask_prior is not None:
            prior_crop = prompts.mask_prior[crop.y0 : crop.y1, crop.x0 : crop.x1]
            labels[_resize_mask_down(prior_crop, (w, h))] = cv2.GC_PR_FGD
        self._put_click_disks(labels, prompts, crop, radius)
        return labels

    @staticmethod
    def _put_click_disks(labels: np.ndarray, prompts: Prompts, crop: _Crop, radius: int) -> None:
        """Definite-background disks at negative clicks, then definite-foreground disks at positive ones."""
        small_radius = max(1, round(radius * crop.scale))
        labels[_disk_mask(labels.shape, crop.to_small(prompts.negative), small_radius)] = cv2.GC_BGD
        labels[_disk_mask(labels.shape, crop.to_small(prompts.positive), small_radius)] = cv2.GC_FGD

    @staticmethod
    def _crop_image(frame: np.ndarray, crop: _Crop) -> np.ndarray | None:
        """The crop at working size (area-downscaled) in 8-bit CIE L*a*b*; None (with a warning) if uniform."""
        image = frame[crop.y0 : crop.y1, crop.x0 : crop.x1]
        if crop.scale < 1.0:
            image = cv2.resize(image, crop.small_size, interpolation=cv2.INTER_AREA)
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB)  # see the module docstring
        if float(cv2.meanStdDev(image)[1].max()) < 1.0:
            logger.warning("GrabCut skipped: the crop is uniform in colour; falling back to the prior/clicks")
            return None
        return image

    def _grabcut(self, frame: np.ndarray, labels: np.ndarray, crop: _Crop,
                 subsample_init: bool = False) -> np.ndarray | None:
        """Run GrabCut on the crop; ``(h, w)`` bool foreground at the small size, or None if it cannot run.

        ``subsample_init``: fit the initial colour models on every 2nd pixel (see the module docstring).
        """
        has_fg = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).any()
        has_bg = np.isin(labels, (cv2.GC_BGD, cv2.GC_PR_BGD)).any()
        if not (has_fg and has_bg):
            logger.warning("GrabCut skipped: the crop has no %s sample", "foreground" if not has_fg else "background")
            return None
        image = self._crop_image(frame, crop)
        if image is None:
            return None
        try:
            models = self._subsampled_models(image, labels) if subsample_init else None
            return self._iterate(image, labels, models)
        except cv2.error as exc:
            logger.warning("GrabCut failed on a %dx%d crop (%s); falling back to the prior/clicks",
                           *image.shape[1::-1], exc)
            return None

    @staticmethod
    def _subsampled_models(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """GrabCut's initial colour GMMs (``(1, 65)`` float64 background, foreground) from every 2nd pixel.

        ``cv2.grabCut`` with zero iterations and ``GC_INIT_WITH_MASK`` only runs the k-means initialisation
        and returns the models. None when the subsample lacks enough foreground or background pixels.

        Raises:
            cv2.error: OpenCV could not fit the models.
        """
        sub_image = np.ascontiguousarray(image[::2, ::2])
        sub_labels = np.ascontiguousarray(labels[::2, ::2])
        fg = np.isin(sub_labels, (cv2.GC_FGD, cv2.GC_PR_FGD))
        if min(int(fg.sum()), int(fg.size - fg.sum())) < 20:  # k-means needs a few samples per component
            return None
        bgd_model = np.zeros((1, 65), np.float64)
        fgd_model = np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)
        cv2.grabCut(sub_image, sub_labels, None, bgd_model, fgd_model, 0, cv2.GC_INIT_WITH_MASK)
        return bgd_model, fgd_model

    def _iterate(self, image: np.ndarray, labels: np.ndarray,
                 models: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """GrabCut iterations until the labelling settles (see the module docstring); ``(h, w)`` bool foreground.

        One ``cv2.grabCut`` call per iteration: the first initialises the colour GMMs (k-means) from
        ``labels``, the next ones continue from the returned models (``GC_EVAL``), which gives exactly the
        labelling of a single call with that many iterations. With ``models`` (background, foreground
        GMMs as ``(1, 65)`` float64) every iteration is ``GC_EVAL`` starting from copies of them.

        Raises:
            cv2.error: OpenCV could not run GrabCut on this crop.
        """
        if models is None:
            bgd_model, fgd_model = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        else:
            bgd_model, fgd_model = models[0].copy(), models[1].copy()
        work = labels.copy()
        fg = np.isin(work, (cv2.GC_FGD, cv2.GC_PR_FGD))
        cv2.setRNGSeed(0)  # GrabCut seeds its GMMs with k-means on OpenCV's (thread-local) RNG: make it repeatable
        for step in range(self.iters):
            mode = cv2.GC_INIT_WITH_MASK if step == 0 and models is None else cv2.GC_EVAL
            cv2.grabCut(image, work, None, bgd_model, fgd_model, 1, mode)
            previous, fg = fg, np.isin(work, (cv2.GC_FGD, cv2.GC_PR_FGD))
            changed = cv2.countNonZero(cv2.bitwise_xor(previous.view(np.uint8), fg.view(np.uint8)))
            settled = changed <= self.settle_frac * max(1, cv2.countNonZero(fg.view(np.uint8)))
            if self.settle_frac > 0 and settled:
                break
        return fg

    def _paste(self, small_fg: np.ndarray, crop: _Crop, height: int, width: int) -> np.ndarray:
        full = np.zeros((height, width), bool)
        full[crop.y0 : crop.y1, crop.x0 : crop.x1] = _resize_mask_up(small_fg, (crop.x1 - crop.x0, crop.y1 - crop.y0))
        return full

    # ------------------------------------------------------------------------------------------ local correction

    def _uses_local_correction(self, prompts: Prompts) -> bool:
        """True when the newest click is the only one the prior contradicts (see the module docstring).

        That is the state after the previous click's mask came back as the prior (robot user, RITM): the
        refiner's output always honours its clicks, and a useful new click marks an error of that mask.
        """
        if (self.local_after == 0 or prompts.mask_prior is None or prompts.box is not None
                or prompts.points is None or len(prompts.points) < self.local_after):
            return False
        xy = np.floor(prompts.points).astype(np.int64)
        honoured = prompts.mask_prior[xy[:, 1], xy[:, 0]] == (prompts.labels == 1)
        return bool(np.all(honoured[:-1]) and not honoured[-1])

    def _local_radius(self, prompts: Prompts, height: int, width: int) -> float:
        """R (px, frame scale) of the newest click: ``max(local_min_frac × longer side, local_reach × d)``."""
        floor = self.local_min_frac * max(height, width)
        x, y = np.floor(prompts.points[-1]).astype(int)
        limit = int(np.ceil(max(height, width) / self.local_reach))
        return max(floor, self.local_reach * _distance_to_other_side(prompts.mask_prior, int(x), int(y), limit))

    def _local_correction(self, frame: np.ndarray, prompts: Prompts, radius: int) -> np.ndarray:
        """The prior with only the pixels near the newest click re-decided by GrabCut; ``(H, W)`` bool.

        Free pixels: ``dist(p, click) + dist(p, prior boundary) <= R`` (module docstring), on a window of
        half-size ``local_context × R`` around the click; the other pixels keep the prior at full resolution.
        """
        prior = prompts.mask_prior
        height, width = prior.shape
        reach = self._local_radius(prompts, height, width)
        cx, cy = prompts.points[-1]
        crop = _crop_around(float(cx), float(cy), self.local_context * reach, self.max_side, height, width)
        w, h = crop.small_size
        small_prior = _resize_mask_down(prior[crop.y0 : crop.y1, crop.x0 : crop.x1], (w, h))
        inside = cv2.distanceTransform(small_prior.view(np.uint8), cv2.DIST_L2, 5)
        outside = cv2.distanceTransform((~small_prior).view(np.uint8), cv2.DIST_L2, 5)
        to_boundary = np.maximum(inside, outside)  # to the nearest pixel on the other side of the prior (≥ 1 px)
        free = to_boundary + _distance_to_points((h, w), crop.to_small(prompts.points[-1:])) <= reach * crop.scale
        labels = np.where(small_prior, np.where(free, cv2.GC_PR_FGD, cv2.GC_FGD),
                          np.where(free, cv2.GC_PR_BGD, cv2.GC_BGD)).astype(np.uint8)
        self._put_click_disks(labels, prompts, crop, radius)
        small_fg = self._grabcut(frame, labels, crop, subsample_init=True)
        out = prior.copy()
        if small_fg is not None:
            size = (crop.x1 - crop.x0, crop.y1 - crop.y0)
            window = out[crop.y0 : crop.y1, crop.x0 : crop.x1]  # a view: writes go to ``out``
            full_free = _resize_mask_up(free, size)
            window[full_free] = _resize_mask_up(small_fg, size)[full_free]
        return self._drop_new_islands(out, prompts)

    @staticmethod
    def _drop_new_islands(mask: np.ndarray, prompts: Prompts) -> np.ndarray:
        """``mask`` without the connected components that neither overlap the prior nor hold a positive click."""
        count, comp = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)
        if count <= 2:
            return mask
        xy = np.floor(prompts.positive).astype(np.int64)
        keep = np.zeros(count, bool)
        keep[np.unique(comp[prompts.mask_prior])] = True
        keep[comp[xy[:, 1], xy[:, 0]]] = True
        keep[0] = False
        return keep[comp]

    # ------------------------------------------------------------------------------------------ post

    @staticmethod
    def _keep_components(mask: np.ndarray, prompts: Prompts) -> np.ndarray:
        """Keep components holding a positive click; without positive clicks, those overlapping the prior."""
        count, comp = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        if count <= 2:
            return mask
        pos = prompts.positive
        if len(pos):
            xy = np.floor(pos).astype(np.int64)
            keep_ids = np.unique(comp[xy[:, 1], xy[:, 0]])
        elif prompts.mask_prior is not None:
            keep_ids = np.unique(comp[prompts.mask_prior])
        else:
            return mask
        keep_ids = keep_ids[keep_ids > 0]
        return np.isin(comp, keep_ids)

    @staticmethod
    def _split_at_negative_clicks(frame: np.ndarray, mask: np.ndarray, prompts: Prompts, radius: int) -> np.ndarray:
        """Remove the part of ``mask`` that a negative click inside it claims (marker-based watershed).

        GrabCut treats a click as a few definite-background pixels, which cannot overturn a colour-similar
        region the prior called foreground (it typically leaves a hole at the click). So the mask (plus the
        click disks) is flooded with ``cv2.watershed`` (marker-controlled watershed, Meyer / Beucher & Meyer
        1993) on the slightly blurred frame from three markers: negative-click disks (to remove); object
        seeds; everything outside the mask (fixed). Object seeds are the positive-click disks, the pixels
        less than half as far from a positive click as from a negative one, and the pixels farther from
        the negative clicks than the nearest positive click is; without positive clicks, the pixels
        farther from the negative clicks than 0.35 × the mask's largest such distance. Pixels flooded from
        a negative click are dropped, so the cut follows colour edges near the click. A negative click
        that touches no mask pixel changes nothing here.
        """
        neg = np.floor(prompts.negative).astype(np.int64)
        if len(neg) == 0:
            return mask
        # GrabCut usually leaves a hole at a negative click: the click acts on the mask it touches
        neg_disks = _disk_mask(mask.shape, neg, radius)
        if not (_disk_mask(mask.shape, neg, radius + 2) & mask).any():
            return mask
        domain = mask | neg_disks
        x, y, w, h = cv2.boundingRect(domain.astype(np.uint8))
        x0, y0 = max(0, x - 1), max(0, y - 1)
        x1, y1 = min(mask.shape[1], x + w + 1), min(mask.shape[0], y + h + 1)
        sub = domain[y0:y1, x0:x1]
        dist_neg = _distance_to_points(sub.shape, neg - [x0, y0])
        # a click deep inside a false-positive blob may claim a wide region, one near the edge a narrow one
        depth = cv2.distanceTransform(_fill_holes(sub).astype(np.uint8), cv2.DIST_L2, 5)
        reach = _NEG_REACH_DEPTH * max(float(depth[neg_disks[y0:y1, x0:x1]].max()), float(radius))
        pos = np.floor(prompts.positive).astype(np.int64)
        if len(pos):
            # object seeds: positive-click disks and pixels much nearer a positive than a negative click
            dist_pos = _distance_to_points(sub.shape, pos - [x0, y0])
            reach = min(reach, min(float(np.hypot(*(p - n))) for p in pos for n in neg))
            seeds = (dist_pos < 0.5 * dist_neg) | _disk_mask(mask.shape, pos, radius)[y0:y1, x0:x1]
        else:
            reach = min(reach, _NEG_REACH_PRIOR * float(dist_neg[sub].max()))
            seeds = np.zeros(sub.shape, bool)
        seeds |= dist_neg > reach
        seeds &= sub & ~neg_disks[y0:y1, x0:x1]
        if not seeds.any():
            return mask & ~neg_disks
        markers = np.where(sub, 0, 3).astype(np.int32)
        markers[seeds] = 1
        markers[neg_disks[y0:y1, x0:x1]] = 2
        cv2.watershed(cv2.GaussianBlur(frame[y0:y1, x0:x1], (0, 0), _WATERSHED_BLUR_SIGMA), markers)
        removed = cv2.dilate((markers == 2).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        keep = (markers == 1) | ((markers == -1) & sub & ~removed)
        out = mask.copy()
        out[y0:y1, x0:x1] = keep & mask[y0:y1, x0:x1]
        return out

    def _apply_clicks(self, mask: np.ndarray, prompts: Prompts, radius: int) -> np.ndarray:
        out = mask.copy()
        if len(prompts.positive):
            out |= _disk_mask(mask.shape, np.floor(prompts.positive), radius)
        if len(prompts.negative):
            out &= ~_disk_mask(mask.shape, np.floor(prompts.negative), radius)
        return out

    def _fallback(self, prompts: Prompts, height: int, width: int) -> np.ndarray:
        if prompts.mask_prior is not None:
            return prompts.mask_prior.copy()
        mask = np.zeros((height, width), bool)
        if prompts.box is not None:
            x0, y0, x1, y1 = np.round(prompts.box).astype(int)
            mask[y0:y1, x0:x1] = True
        return mask

    # ------------------------------------------------------------------------------------------ refine

    def _global_refinement(self, frame: np.ndarray, prompts: Prompts, radius: int) -> np.ndarray:
        """GrabCut on a crop around all prompts (seeded first click or global path); ``(H, W)`` bool."""
        height, width = frame.shape[:2]
        object_box = self._object_box(prompts, height, width)
        crop = self._crop(prompts, object_box, height, width)
        init = self._init_labels(prompts, object_box, crop, radius, height, width)
        small_fg = self._grabcut(frame, init, crop)
        mask = None if small_fg is None else self._keep_components(self._paste(small_fg, crop, height, width), prompts)
        if mask is None or not mask.any():
            # GrabCut could not run, or decided there is no object at all: keep what the user gave
            mask = self._fallback(prompts, height, width)
        if prompts.box is not None:  # the box is definite background outside; undo upsampling spill
            x0, y0 = np.floor(prompts.box[:2]).astype(int)
            x1, y1 = np.ceil(prompts.box[2:]).astype(int)
            inside = np.zeros_like(mask)
            inside[y0:y1, x0:x1] = True
            mask &= inside
        if len(prompts.negative):
            mask = self._keep_components(self._split_at_negative_clicks(frame, mask, prompts, radius), prompts)
        if self._prior_is_elsewhere(mask, prompts):
            # the prior marks some other object: its colours only mislead the models, so cut afresh from the clicks
            return self._global_refinement(frame, Prompts(prompts.points, prompts.labels, None, None), radius)
        return mask

    @staticmethod
    def _prior_is_elsewhere(mask: np.ndarray, prompts: Prompts) -> bool:
        """True when a prior-seeded cut kept nothing of the prior (no box, at least one positive click).

        The kept components are those holding a positive click, so the object the clicks mark does not
        touch the prior at all: the prior (e.g. an engine proposal on a look-alike) is about something else.
        """
        return (prompts.mask_prior is not None and prompts.box is None and len(prompts.positive) > 0
                and not (mask & prompts.mask_prior).any())

    def refine(
        self,
        frame: np.ndarray,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_prior: np.ndarray | None = None,
        frame_key: str | None = None,
    ) -> RefineResult:
        """Segment one object with GrabCut (seeded first click, global refinement or local correction).

        Args:
            frame: ``(H, W, 3)`` uint8 RGB.
            points: ``(N, 2)`` (x, y) pixels, in the order they were clicked (the last is the newest);
                labels ``(N,)`` 1 positive / 0 negative.
            box: ``(4,)`` XYXY pixels.
            mask_prior: ``(H, W)`` bool, the current mask (e.g. the mask the previous click gave).
            frame_key: unused (GrabCut keeps no per-frame state); accepted for the protocol.

        Returns:
            :class:`RefineResult` with an ``(H, W)`` bool mask and score 1.0 (GrabCut has no quality estimate).
            The disk of ``click_radius_px`` around each positive click is inside the mask and around each
            negative click outside it (hard constraints; a negative disk wins where two overlap).

        Raises:
            ValueError: invalid prompts (see :func:`rvos_core.refiners.registry.validate_prompts`).
        """
        prompts = validate_prompts(frame, points, labels, box, mask_prior)
        radius = self._radius(*frame.shape[:2])
        if self._uses_local_correction(prompts):
            mask = self._local_correction(frame, prompts, radius)
            if len(prompts.negative):
                mask = self._split_at_negative_clicks(frame, mask, prompts, radius)
        else:
            mask = self._global_refinement(frame, prompts, radius)
        return RefineResult(mask=self._apply_clicks(mask, prompts, radius), score=1.0)
