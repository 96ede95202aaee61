"""Offline refiner: GrabCut on a crop around the prompts; no weights, no network.

Method: GrabCut (Rother, Kolmogorov & Blake, "GrabCut: interactive foreground extraction using iterated
graph cuts", SIGGRAPH 2004) as implemented by OpenCV (``cv2.grabCut``, colour GMMs + graph cut).

How the prompts seed GrabCut's label map (OpenCV's ``GC_BGD`` / ``GC_FGD`` definite, ``GC_PR_*`` probable):

- mask prior → probable foreground inside; probable background in the margin ring around it (the rest of
  the crop, whose margin is ``margin_frac`` of the prompts' extent), with a thin definite-background strip
  along the crop's sides; with a box, definite background outside the box instead;
- box → definite background outside it; inside it, probable foreground (or probable background where a
  prior exists and says "not object");
- positive clicks → definite-foreground disks; negative clicks → definite-background disks;
- only positive clicks → a default box around them (``default_box_frac`` of the frame's longer side).

GrabCut runs on a crop (the prompts' extent plus a margin) downscaled so its longer side is at most
``max_side``; the result is upsampled (nearest) and pasted back. Post-processing keeps the connected
components that contain a positive click (or, without positive clicks, that overlap the prior); a negative
click that lands in the mask removes the region around it up to the nearest colour edge (marker-controlled
watershed, see :meth:`GrabCutRefiner._split_at_negative_clicks`: a colour-similar false positive the prior
called foreground is otherwise kept by GrabCut); finally positive-click disks are forced in and
negative-click disks out.

Iterations stop early once the labelling settles: GrabCut runs one ``cv2.grabCut`` iteration at a time (the
first initialises the colour GMMs by k-means, the next continue from the returned models with ``GC_EVAL``,
which reproduces a single multi-iteration call exactly) and stops when an iteration flipped at most
``settle_frac`` (0.5 %) of the foreground's pixels, or after ``iters`` (3) iterations. Once the labelling
stops changing, a further iteration re-fits nearly the same GMMs and returns nearly the same cut.
``cv2.grabCut`` is ~90 % of a call; each iteration costs a GMM re-fit and a graph cut over the whole working
crop. Measured with the robot user (:mod:`rvos_core.robot_user`: 20 clicks per frame, previous mask as prior)
on DAVIS-2016 blackswan and bmx-trees at 854 × 480, on the shared 2-core dev machine, always 3 iterations →
early stop: the same 220 recorded click calls replayed interleaved, p50 114 → 82 ms, p95 483 → 424 ms (wall =
CPU at that moment); robot runs on every 2nd frame (1100 clicks), process CPU per click p50 125 → 75 ms, p95
507 → 398 ms; quality unchanged within noise: blackswan NoC@85 5.52 → 5.68, NoC@90 6.84 → 6.80, mean J after 1
click 0.397 → 0.397, after 5 clicks 0.814 → 0.800, after 20 clicks 0.949 → 0.950; bmx-trees mean J after 20
clicks 0.659 → 0.661. On the full benchmark (``bench/clicks.py``, both clips, 2,200+ clicks, load average ~4–5
on 2 cores) click CPU p50 is 79 ms and wall p50 122 ms (the wall figure waits for a core). Tried and dropped:
a smaller working crop (``max_side`` 288 or 256) and 2 fixed iterations (same click figures, but a single
refinement of an eroded prior on blackswan frame 20 fell from IoU 0.88 to 0.64–0.66: some crops need the 3rd
iteration at full working size), and re-using the previous click's colour models on the same frame
(``GC_EVAL`` warm start with one iteration: 41 ms p50, but NoC@85 +0.6 and NoC@90 +1.3 clicks, and a refiner
with state).

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


class GrabCutRefiner:
    """Offline promptable segmenter on ``cv2.grabCut`` (see the module docstring for the method).

    Args:
        max_side: longest side (px) of the crop GrabCut works on; larger crops are area-downscaled (speed:
            see the module docstring).
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

    Raises:
        ValueError: a non-positive size, radius, iteration count or fraction.
    """

    name = "grabcut"

    def __init__(
        self,
        max_side: int = 320,
        click_radius_px: int | None = None,
        iters: int = 3,
        margin_frac: float = 0.1,
        border_frac: float = 0.05,
        default_box_frac: float = 0.2,
        settle_frac: float = 0.005,
    ) -> None:
        if max_side < 16:
            raise ValueError(f"max_side must be >= 16 px, got {max_side}")
        if click_radius_px is not None and click_radius_px < 1:
            raise ValueError(f"click_radius_px must be >= 1 px or None, got {click_radius_px}")
        if iters < 1:
            raise ValueError(f"iters must be >= 1, got {iters}")
        for field, value in (("margin_frac", margin_frac), ("border_frac", border_frac), ("default_box_frac", default_box_frac)):
            if not 0 < value <= 1:
                raise ValueError(f"{field} must be in (0, 1], got {value}")
        if not 0 <= settle_frac < 1:
            raise ValueError(f"settle_frac must be in [0, 1), got {settle_frac}")
        self.max_side = int(max_side)
        self.click_radius_px = click_radius_px
        self.iters = int(iters)
        self.margin_frac = float(margin_frac)
        self.border_frac = float(border_frac)
        self.default_box_frac = float(default_box_frac)
        self.settle_frac = float(settle_frac)

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

        With a box: definite background outside it. Without: probable background in the whole crop
        except a thin definite-background strip along the crop sides that were cut by the margin (not
        along the frame's own edges, where the object may touch the border).
        """
        w, h = crop.small_size
        labels = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        if box is not None:
            inside = np.zeros((h, w), bool)
            (bx0, by0), (bx1, by1) = crop.to_small(box.reshape(2, 2))
            inside[by0 : by1 + 1, bx0 : bx1 + 1] = True
            labels[~inside] = cv2.GC_BGD
            if prompts.mask_prior is None:
                labels[inside] = cv2.GC_PR_FGD
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
            prior_crop = prompts.mask_prior[crop.y0 : crop.y1, crop.x0 : crop.x1].astype(np.uint8)
            labels[cv2.resize(prior_crop, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)] = cv2.GC_PR_FGD
        small_radius = max(1, round(radius * crop.scale))
        labels[_disk_mask((h, w), crop.to_small(prompts.negative), small_radius)] = cv2.GC_BGD
        labels[_disk_mask((h, w), crop.to_small(prompts.positive), small_radius)] = cv2.GC_FGD
        return labels

    def _grabcut(self, frame: np.ndarray, labels: np.ndarray, crop: _Crop) -> np.ndarray | None:
        """Run GrabCut on the crop; ``(h, w)`` bool foreground at the small size, or None if it cannot run."""
        has_fg = np.isin(labels, (cv2.GC_FGD, cv2.GC_PR_FGD)).any()
        has_bg = np.isin(labels, (cv2.GC_BGD, cv2.GC_PR_BGD)).any()
        if not (has_fg and has_bg):
            logger.warning("GrabCut skipped: the crop has no %s sample", "foreground" if not has_fg else "background")
            return None
        image = frame[crop.y0 : crop.y1, crop.x0 : crop.x1]
        if crop.scale < 1.0:
            image = cv2.resize(image, crop.small_size, interpolation=cv2.INTER_AREA)
        image = np.ascontiguousarray(image)
        if float(cv2.meanStdDev(image)[1].max()) < 1.0:
            logger.warning("GrabCut skipped: the crop is uniform in colour; falling back to the prior/clicks")
            return None
        try:
            return self._iterate(image, labels)
        except cv2.error as exc:
            logger.warning("GrabCut failed on a %dx%d crop (%s); falling back to the prior/clicks", *image.shape[1::-1], exc)
            return None

    def _iterate(self, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """GrabCut iterations until the labelling settles (see the module docstring); ``(h, w)`` bool foreground.

        One ``cv2.grabCut`` call per iteration: the first initialises the colour GMMs (k-means) from
        ``labels``, the next ones continue from the returned models (``GC_EVAL``), which gives exactly the
        labelling of a single call with that many iterations.

        Raises:
            cv2.error: OpenCV could not run GrabCut on this crop.
        """
        bgd_model = np.zeros((1, 65), np.float64)
        fgd_model = np.zeros((1, 65), np.float64)
        work = labels.copy()
        fg = np.isin(work, (cv2.GC_FGD, cv2.GC_PR_FGD))
        cv2.setRNGSeed(0)  # GrabCut seeds its GMMs with k-means on OpenCV's (thread-local) RNG: make it repeatable
        for step in range(self.iters):
            mode = cv2.GC_INIT_WITH_MASK if step == 0 else cv2.GC_EVAL
            cv2.grabCut(image, work, None, bgd_model, fgd_model, 1, mode)
            previous, fg = fg, np.isin(work, (cv2.GC_FGD, cv2.GC_PR_FGD))
            changed = cv2.countNonZero(cv2.bitwise_xor(previous.view(np.uint8), fg.view(np.uint8)))
            settled = changed <= self.settle_frac * max(1, cv2.countNonZero(fg.view(np.uint8)))
            if self.settle_frac > 0 and settled:
                break
        return fg

    def _paste(self, small_fg: np.ndarray, crop: _Crop, height: int, width: int) -> np.ndarray:
        full = np.zeros((height, width), bool)
        up = cv2.resize(small_fg.astype(np.uint8), (crop.x1 - crop.x0, crop.y1 - crop.y0), interpolation=cv2.INTER_NEAREST)
        full[crop.y0 : crop.y1, crop.x0 : crop.x1] = up.astype(bool)
        return full

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

    def refine(
        self,
        frame: np.ndarray,
        points: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_prior: np.ndarray | None = None,
        frame_key: str | None = None,
    ) -> RefineResult:
        """Segment one object with GrabCut.

        Args:
            frame: ``(H, W, 3)`` uint8 RGB.
            points: ``(N, 2)`` (x, y) pixels; labels ``(N,)`` 1 positive / 0 negative.
            box: ``(4,)`` XYXY pixels.
            mask_prior: ``(H, W)`` bool, the current mask.
            frame_key: unused (GrabCut keeps no per-frame state); accepted for the protocol.

        Returns:
            :class:`RefineResult` with an ``(H, W)`` bool mask and score 1.0 (GrabCut has no quality estimate).

        Raises:
            ValueError: invalid prompts (see :func:`rvos_core.refiners.registry.validate_prompts`).
        """
        prompts = validate_prompts(frame, points, labels, box, mask_prior)
        height, width = frame.shape[:2]
        radius = self._radius(height, width)
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
        return RefineResult(mask=self._apply_clicks(mask, prompts, radius), score=1.0)
