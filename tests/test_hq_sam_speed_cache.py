"""HQ-SAM refiner's cached decoder: same answer as the package's ``SamPredictor`` path, image-only work done once
per frame, cache invalidation and LRU eviction. Random-init Light HQ-SAM (vit_tiny); no weights downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rvos_core.refiners import hq_sam
from rvos_core.refiners.hq_sam import HQSamRefiner, _grid_extent, _lowres_extent, _linear, prior_to_lowres_logits
from rvos_core.refiners.registry import validate_prompts

from test_refiners import load_frame  # DAVIS-2016 blackswan frame + ground truth

#: The refiner's full-size logits equal the package's up to float32 rounding: measured max |Δ| ≈ 2e-5 for
#: logits of magnitude ~1 (1e-6 from the re-associated decoder, the rest from OpenCV vs torch resampling).
#: A mask pixel may only differ where the reference logit is within this band of 0.
LOGIT_ATOL = 1e-4
SCORE_ATOL = 1e-5
#: At most this share of a mask's pixels may differ (measured: 0–3 of 409,920 pixels per mask, i.e. ≤ 7.3e-6).
MAX_DIFFERING_SHARE = 2e-5


class ForwardCalls:
    """Counts forward calls of a module via a forward hook."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.count = 0
        module.register_forward_hook(self._hook)

    def _hook(self, *_) -> None:
        self.count += 1


class StandInEncoder(torch.nn.Module):
    """A cheap stand-in for the image encoder (the real one takes seconds per frame on a CPU) where the test is
    about the decoder or the cache: Light HQ-SAM's output shapes ((1, 256, 64, 64) embedding, [(1, 64, 64, 160)]
    early features), from 16-px average pooling and fixed random 1×1 projections, so different frames and
    channels differ."""

    img_size = 1024

    def __init__(self) -> None:
        super().__init__()
        rng = torch.Generator().manual_seed(0)
        self.to_embedding = torch.randn(256, 3, generator=rng) / 50.0
        self.to_interm = torch.randn(160, 3, generator=rng) / 50.0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        pooled = torch.nn.functional.avg_pool2d(x, 16)[0].flatten(1)  # (3, 4096), normalised pixels
        features = torch.tanh(self.to_embedding @ pooled).view(1, 256, 64, 64)
        interm = torch.tanh(self.to_interm @ pooled).t().reshape(1, 64, 64, 160)
        return features, [interm]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return HQSamRefiner.save_random_checkpoint(tmp_path_factory.mktemp("hq") / "tiny.pth", "vit_tiny", seed=0)


@pytest.fixture(scope="module")
def refiner(checkpoint) -> HQSamRefiner:
    """Random-init vit_tiny with its real image encoder (for the equality tests)."""
    return HQSamRefiner("vit_tiny", checkpoint=checkpoint, cache_size=2)


def cache_refiner(checkpoint: Path, cache_size: int = 2) -> HQSamRefiner:
    """Random-init vit_tiny with :class:`StandInEncoder` and call counters on the image-only modules."""
    refiner = HQSamRefiner("vit_tiny", checkpoint=checkpoint, cache_size=cache_size)
    refiner.model.image_encoder = StandInEncoder()
    decoder = refiner.model.mask_decoder
    refiner.encoder_calls = ForwardCalls(refiner.model.image_encoder)
    refiner.hq_feature_calls = ForwardCalls(decoder.compress_vit_feat)
    refiner.embedding_encoder_calls = ForwardCalls(decoder.embedding_encoder)
    return refiner


@pytest.fixture(scope="module")
def blackswan() -> tuple[np.ndarray, np.ndarray]:
    return load_frame(0)


@pytest.fixture(scope="module")
def predictor(refiner, blackswan):
    """The package's ``SamPredictor`` on the same model with the blackswan frame set (the reference path)."""
    from segment_anything_hq import SamPredictor

    predictor = SamPredictor(refiner.model)
    with torch.inference_mode():
        predictor.set_image(blackswan[0], image_format="RGB")
    return predictor


def reference(predictor, frame: np.ndarray, **prompts) -> tuple[np.ndarray, float]:
    """What ``refine`` did before the cache: ``SamPredictor.predict`` on the frame set in ``predictor``.

    Returns ``(H, W)`` float32 mask logits and the predicted IoU clipped to [0, 1].
    """
    p = validate_prompts(frame, **prompts)
    with torch.inference_mode():
        mask_input = None if p.mask_prior is None else prior_to_lowres_logits(p.mask_prior, predictor.input_size)
        logits, scores, _ = predictor.predict(p.points, p.labels, p.box, mask_input, multimask_output=False,
                                              return_logits=True)
    return logits[0], float(np.clip(scores[0], 0.0, 1.0))


def cases(gt: np.ndarray) -> dict[str, dict]:
    """Prompt sets on the blackswan frame: clicks from the ground truth, its box, a shifted mask prior."""
    ys, xs = np.nonzero(gt)
    inside = np.array([[xs[i], ys[i]] for i in np.linspace(0, len(xs) - 1, 4).astype(int)], np.float32)
    outside = np.array([[40.0, 40.0], [800.0, 420.0]], np.float32)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    prior = np.roll(gt, (12, -20), axis=(0, 1))
    return {
        "one click": {"points": inside[:1], "labels": np.array([1])},
        "multi clicks": {"points": np.vstack([inside[:3], outside]), "labels": np.array([1, 1, 1, 0, 0])},
        "box": {"box": box},
        "box and clicks": {"points": np.vstack([inside[1:2], outside[:1]]), "labels": np.array([1, 0]), "box": box},
        "prior and clicks": {"points": np.vstack([inside[2:], outside[1:]]), "labels": np.array([1, 1, 0]),
                             "mask_prior": prior},
        "prior only": {"mask_prior": prior},
        "prior, box and clicks": {"points": inside[:2], "labels": np.array([1, 1]), "box": box, "mask_prior": prior},
    }


def assert_same_result(refiner: HQSamRefiner, predictor, frame: np.ndarray, key: str, prompts: dict) -> float:
    """refine(…) and its logits against the SamPredictor path; returns the mask's foreground share."""
    result = refiner.refine(frame, frame_key=key, **prompts)
    ref_logits, ref_score = reference(predictor, frame, **prompts)
    assert result.mask.shape == frame.shape[:2] and result.mask.dtype == bool
    assert abs(result.score - ref_score) <= SCORE_ATOL
    p = validate_prompts(frame, **prompts)
    emb = refiner._cache[key]
    mask_input = None if p.mask_prior is None else prior_to_lowres_logits(p.mask_prior, emb.input_size)
    with torch.inference_mode():
        logits, _ = refiner._decoder.decode(p, emb, mask_input)
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=LOGIT_ATOL)
    differ = result.mask != (ref_logits > 0)
    assert np.all(np.abs(ref_logits[differ]) < LOGIT_ATOL), "a pixel differs away from the 0-logit tie band"
    assert differ.mean() <= MAX_DIFFERING_SHARE
    return float(result.mask.mean())


def test_cached_decoder_equals_sam_predictor_on_a_real_frame(refiner, predictor, blackswan):
    frame, gt = blackswan
    shares = [assert_same_result(refiner, predictor, frame, "swan:0", prompts) for prompts in cases(gt).values()]
    assert all(0.01 < share < 0.99 for share in shares), shares  # both classes present: not a trivial agreement


def test_cached_decoder_equals_sam_predictor_on_a_portrait_frame(checkpoint, blackswan):
    from segment_anything_hq import SamPredictor

    frame, gt = blackswan
    portrait, gt_p = np.ascontiguousarray(frame[:, 250:570]), np.ascontiguousarray(gt[:, 250:570])  # 480×320
    refiner = cache_refiner(checkpoint)  # the crop geometry is what is tested here: a cheap encoder will do
    predictor = SamPredictor(refiner.model)
    with torch.inference_mode():
        predictor.set_image(portrait, image_format="RGB")
    assert predictor.input_size == (1024, 683)
    assert _lowres_extent(predictor.input_size) == (256, 172)  # the columns are cropped, not the rows
    ys, xs = np.nonzero(gt_p)
    prompts = {"points": np.array([[xs[0], ys[0]], [10.0, 470.0]], np.float32), "labels": np.array([1, 0]),
               "mask_prior": gt_p}
    assert_same_result(refiner, predictor, portrait, "portrait", prompts)
    assert tuple(refiner._cache["portrait"].hq_features.shape) == (256, 176, 32)


def test_cached_decoder_without_onednn_equals_sam_predictor(refiner, predictor, blackswan, monkeypatch):
    """The plain ``F.linear`` path (other CPUs / builds, CUDA) gives the same answer."""
    monkeypatch.setattr(hq_sam, "_onednn_linear_available", lambda: False)
    frame, gt = blackswan
    for name in ("multi clicks", "prior, box and clicks"):
        assert_same_result(refiner, predictor, frame, "swan:0", cases(gt)[name])


def test_linear_matches_f_linear():
    rng = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(300, 64, generator=rng), torch.randn(40, 64, generator=rng), torch.randn(40, generator=rng)
    with torch.inference_mode():
        torch.testing.assert_close(_linear(x, w, b), torch.nn.functional.linear(x, w, b), rtol=1e-5, atol=1e-5)
        a, c = torch.randn(64, 300, generator=rng).t(), torch.randn(64, 40, generator=rng).t()  # strided operands
        torch.testing.assert_close(_linear(a, c, b), a @ c.t() + b, rtol=1e-5, atol=1e-5)
    x.requires_grad_(True)
    torch.testing.assert_close(_linear(x, w, b), torch.nn.functional.linear(x, w, b))  # autograd: plain F.linear


def test_crop_geometry():
    assert _lowres_extent((576, 1024)) == (145, 256)  # 854×480: rows 0…144 of the 256 low-res rows are read
    assert _grid_extent((145, 256)) == (37, 64)  # 148 up-sampled rows ≥ 145 + 2 rows of 3×3 context
    assert _lowres_extent((1024, 1024)) == (256, 256) and _grid_extent((256, 256)) == (64, 64)
    assert _lowres_extent((10, 1024)) == (4, 256) and _grid_extent((4, 256)) == (2, 64)


def test_second_click_reuses_all_image_only_work(checkpoint, blackswan):
    frame, gt = blackswan
    refiner = cache_refiner(checkpoint)
    counters = (refiner.encoder_calls, refiner.hq_feature_calls, refiner.embedding_encoder_calls)
    start = [c.count for c in counters]
    prompts = list(cases(gt).values())
    first = refiner.refine(frame, frame_key="swan:0", **prompts[0])
    for p in prompts[1:4]:
        refiner.refine(frame, frame_key="swan:0", **p)
    assert [c.count - s for c, s in zip(counters, start)] == [1, 1, 1]  # once per frame, not per click
    again = refiner.refine(frame, frame_key="swan:0", **prompts[0])
    np.testing.assert_array_equal(first.mask, again.mask)
    assert first.score == again.score
    refiner.refine(frame, **prompts[0])  # frame_key None: computed, not cached
    assert [c.count - s for c, s in zip(counters, start)] == [2, 2, 2]
    assert refiner.cached_keys == ["swan:0"]
    entry = refiner._cache["swan:0"]
    assert tuple(entry.image_tokens.shape) == (4096, 256)
    assert tuple(entry.hq_features.shape) == (148, 256, 32)  # only the rows that cover the frame


def test_changed_frame_under_a_key_is_recomputed(checkpoint, blackswan):
    frame, gt = blackswan
    other, _ = load_frame(30)
    refiner = cache_refiner(checkpoint)
    start = refiner.encoder_calls.count
    prompts = cases(gt)["multi clicks"]
    refiner.refine(frame, frame_key="k", **prompts)
    stale = refiner.refine(other, frame_key="k", **prompts)  # same key, new frame: fingerprint differs
    assert refiner.encoder_calls.count - start == 2
    fresh = refiner.refine(other, **prompts)
    np.testing.assert_array_equal(stale.mask, fresh.mask)
    assert stale.score == fresh.score


def test_cache_is_a_bounded_lru(checkpoint, blackswan):
    frame, gt = blackswan
    flipped = np.ascontiguousarray(frame[:, ::-1])
    refiner = cache_refiner(checkpoint)
    start = refiner.encoder_calls.count
    click = {"points": np.array([[430.0, 220.0]]), "labels": np.array([1])}
    refiner.refine(frame, frame_key="a", **click)
    refiner.refine(flipped, frame_key="b", **click)
    refiner.refine(frame, frame_key="a", **click)  # hit: "a" becomes most recent
    assert refiner.encoder_calls.count - start == 2
    refiner.refine(flipped, frame_key="c", **click)  # cache_size 2: evicts "b", the least recently used
    assert refiner.cached_keys == ["a", "c"]
    refiner.refine(flipped, frame_key="b", **click)  # "b" was evicted: recomputed, evicts "a"
    assert refiner.encoder_calls.count - start == 4
    assert refiner.cached_keys == ["c", "b"]


def test_no_cache_when_size_is_zero(checkpoint, blackswan):
    frame, gt = blackswan
    refiner = cache_refiner(checkpoint, cache_size=0)
    click = {"points": np.array([[430.0, 220.0]]), "labels": np.array([1])}
    first = refiner.refine(frame, frame_key="x", **click)
    second = refiner.refine(frame, frame_key="x", **click)
    assert refiner.cached_keys == [] and refiner.encoder_calls.count == 2
    np.testing.assert_array_equal(first.mask, second.mask)


def test_clear_cache(checkpoint, blackswan):
    frame, _ = blackswan
    refiner = cache_refiner(checkpoint)
    click = {"points": np.array([[430.0, 220.0]]), "labels": np.array([1])}
    refiner.refine(frame, frame_key="x", **click)
    refiner.clear_cache()
    assert refiner.cached_keys == []
    refiner.refine(frame, frame_key="x", **click)
    assert refiner.encoder_calls.count == 2
