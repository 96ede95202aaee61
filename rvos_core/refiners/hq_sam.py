"""HQ-SAM refiner: clicks / box / mask prior → one high-quality mask.

Method: HQ-SAM (Ke et al., "Segment Anything in High Quality", NeurIPS 2023), a SAM (Kirillov et al.,
ICCV 2023) whose mask decoder adds a high-quality output token fed with early ViT features. The model code
is the authors' ``segment-anything-hq`` package; this module is an adapter that

- loads safely and strictly: the architecture is built without a checkpoint, the file is read with
  ``torch.load(map_location="cpu", weights_only=True)``, keys and shapes must match exactly, then ``.eval()``;
- caches the image embedding per ``frame_key`` (bounded LRU) so a second click on the same frame skips the
  image encoder and costs only the prompt encoder + mask decoder;
- guards the predictor with a lock so one instance can serve several threads.

``import`` of this module loads no model and touches no file.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import cv2
import numpy as np
import torch

from rvos_core import weights
from rvos_core.refiners.base import RefineResult
from rvos_core.refiners.registry import Prompts, validate_prompts

logger = logging.getLogger(__name__)

MODEL_TYPES: tuple[str, ...] = ("vit_tiny", "vit_b", "vit_l", "vit_h")

#: SAM's image-encoder input side (pixels) and its low-res mask side (= input side / 4).
SAM_INPUT_SIDE = 1024
SAM_LOWRES_SIDE = 256
#: A mask prior p in [0, 1] enters SAM as logits ``PRIOR_LOGIT_SCALE * p + PRIOR_LOGIT_BIAS``, i.e. ±10
#: (the scale SAM 2 uses to turn a binary mask into mask logits, ``20 * m - 10``); padding gets -10.
PRIOR_LOGIT_SCALE = 20.0
PRIOR_LOGIT_BIAS = -10.0


class CheckpointMismatch(ValueError):
    """A checkpoint does not fit the HQ-SAM architecture (missing / unexpected keys or wrong shapes)."""


def build_model(model_type: str) -> torch.nn.Module:
    """Build an HQ-SAM architecture with random initialisation (no checkpoint read), on CPU, in eval mode.

    Args:
        model_type: one of :data:`MODEL_TYPES` (``"vit_tiny"`` is Light HQ-SAM with a TinyViT encoder).

    Raises:
        ValueError: unknown model type (lists the valid ones).
    """
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown HQ-SAM model_type {model_type!r}; valid: {', '.join(MODEL_TYPES)}")
    with warnings.catch_warnings():  # the package's timm imports and TinyViT registration warn on import
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        from segment_anything_hq import sam_model_registry

    model = sam_model_registry[model_type](checkpoint=None)
    return model.eval()


def _summarise(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, … ({len(keys)} in all)" if len(keys) > limit else shown


def _unwrap_state_dict(obj: Any, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, Mapping) and len(obj) == 1 and next(iter(obj)) in ("model", "state_dict"):
        obj = next(iter(obj.values()))
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointMismatch(f"checkpoint {path} is not a state dict of tensors (got {type(obj).__name__})")
    return obj


def load_checkpoint_strict(model: torch.nn.Module, path: str | os.PathLike[str], model_type: str = "") -> None:
    """Load a state dict into ``model`` safely and strictly, then put the model in eval mode.

    The file is read with ``torch.load(path, map_location="cpu", weights_only=True)`` (no pickle code
    execution). A plain state dict or one wrapped as ``{"model": …}`` / ``{"state_dict": …}`` is accepted.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointMismatch: the file is not a state dict, or its keys / tensor shapes differ from the model's;
            the message lists up to five missing and unexpected keys and the counts.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HQ-SAM checkpoint {path} does not exist")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, or a pickle needing code execution
        raise CheckpointMismatch(f"cannot read checkpoint {path} with weights_only=True: {exc}") from exc
    state = _unwrap_state_dict(raw, path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    what = f"HQ-SAM {model_type} " if model_type else "HQ-SAM "
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_summarise(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_summarise(unexpected)}")
        raise CheckpointMismatch(f"checkpoint {path} does not match the {what}architecture; " + "; ".join(parts))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items() if state[k].shape != v.shape]
    if wrong:
        raise CheckpointMismatch(
            f"checkpoint {path} does not match the {what}architecture; tensor shapes (file vs model): {_summarise(wrong)}"
        )
    model.load_state_dict(state, strict=True)
    model.eval()


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike[str]) -> Path:
    """Write ``model.state_dict()`` atomically (temp file in the same folder, then ``os.replace``)."""
    from rvos_core.fileio import atomic_output_path

    path = Path(path)
    with atomic_output_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return path


def prior_to_lowres_logits(prior: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """Turn a full-size binary mask into SAM's low-res mask input.

    SAM's mask input lives in the frame of the padded encoder input: the image is resized so its longer
    side is 1024 (``input_size`` = (h', w')), padded right/bottom to 1024 × 1024, and the mask input is that
    square at 1/4 resolution. So: resize the prior to (h', w') (bilinear on {0, 1}), pad with 0 to
    1024 × 1024, area-downsample to 256 × 256 (giving soft values p in [0, 1]), and map to logits
    ``20·p − 10`` (±10, see :data:`PRIOR_LOGIT_SCALE`).

    Args:
        prior: ``(H, W)`` bool.
        input_size: ``(h', w')`` the resized image size inside the 1024 square (``SamPredictor.input_size``).

    Returns:
        ``(1, 256, 256)`` float32 logits (> 0 inside the object).
    """
    h_in, w_in = input_size
    resized = cv2.resize(prior.astype(np.float32), (w_in, h_in), interpolation=cv2.INTER_LINEAR)
    padded = np.zeros((SAM_INPUT_SIDE, SAM_INPUT_SIDE), np.float32)
    padded[:h_in, :w_in] = resized
    low = cv2.resize(padded, (SAM_LOWRES_SIDE, SAM_LOWRES_SIDE), interpolation=cv2.INTER_AREA)
    return (PRIOR_LOGIT_SCALE * low + PRIOR_LOGIT_BIAS)[None].astype(np.float32)


@dataclass
class _Embedding:
    """What ``SamPredictor.set_image`` computes for one frame (kept on the model's device)."""

    features: torch.Tensor  # (1, 256, 64, 64) image embedding
    interm_features: list[torch.Tensor]  # [(1, 64, 64, C)] early ViT features used by the HQ decoder
    original_size: tuple[int, int]  # (H, W) of the frame
    input_size: tuple[int, int]  # (h', w') after resizing the longer side to 1024
    fingerprint: int  # cheap check that the frame under a key has not changed


def _fingerprint(frame: np.ndarray) -> int:
    """crc32 of the frame shape and a strided subsample; catches a frame_key reused for a different frame."""
    sample = np.ascontiguousarray(frame[::7, ::7])
    return zlib.crc32(sample.tobytes(), zlib.crc32(np.asarray(frame.shape, np.int64).tobytes()))


class HQSamRefiner:
    """Promptable segmentation with HQ-SAM, behind the :class:`~rvos_core.refiners.base.Refiner` protocol.

    Args:
        model_type: ``"vit_tiny"`` (Light HQ-SAM), ``"vit_b"``, ``"vit_l"`` or ``"vit_h"``.
        checkpoint: None → the weights-registry file ``hq_sam_<model_type>`` (must be downloaded);
            a registry name; or a path to a state-dict file.
        device: torch device string (``"cpu"``, ``"cuda"``, ``"cuda:0"``…).
        cache_size: how many frames' image embeddings to keep (LRU); 0 disables the cache. One entry holds
            the 64×64 image embedding plus the first intermediate ViT feature map HQ-SAM uses (~17 MB for
            vit_b, ~25 MB for vit_h in float32); the other intermediate maps are not needed and not kept.

    Raises:
        ValueError: unknown model type, bad device, ``cache_size < 0``.
        rvos_core.weights.WeightsNotAvailable: the checkpoint is not on disk (message gives the download command).
        CheckpointMismatch: the checkpoint does not fit the architecture.
    """

    def __init__(
        self,
        model_type: str = "vit_b",
        checkpoint: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        cache_size: int = 8,
    ) -> None:
        if model_type not in MODEL_TYPES:
            raise ValueError(f"unknown HQ-SAM model_type {model_type!r}; valid: {', '.join(MODEL_TYPES)}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"invalid torch device {device!r}: {exc}") from exc
        self.model_type = model_type
        self.name = f"hq_sam:{model_type}"
        self.checkpoint_path = weights.require(checkpoint if checkpoint is not None else f"hq_sam_{model_type}")
        model = build_model(model_type)
        load_checkpoint_strict(model, self.checkpoint_path, model_type)
        self.model = model.to(self.device).eval()
        from segment_anything_hq import SamPredictor

        self._predictor = SamPredictor(self.model)
        self._cache: OrderedDict[str, _Embedding] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    @classmethod
    def save_random_checkpoint(cls, path: str | os.PathLike[str], model_type: str = "vit_tiny", seed: int = 0) -> Path:
        """Build a randomly initialised HQ-SAM (``torch.manual_seed(seed)``) and save its state dict to ``path``.

        For tests and speed benchmarks (speed does not depend on the weights). Written atomically.

        Returns:
            ``path`` as a Path.
        """
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_model(model_type)
        return save_checkpoint(model, path)

    # ------------------------------------------------------------------------------------------ cache

    def _embed(self, frame: np.ndarray) -> _Embedding:
        """Run the image encoder on ``frame`` (RGB uint8) and capture the predictor's state."""
        predictor = self._predictor
        predictor.set_image(frame, image_format="RGB")
        return _Embedding(
            features=predictor.features,
            interm_features=[predictor.interm_features[0]],
            original_size=tuple(predictor.original_size),
            input_size=tuple(predictor.input_size),
            fingerprint=_fingerprint(frame),
        )

    def _restore(self, emb: _Embedding) -> None:
        predictor = self._predictor
        predictor.features = emb.features
        predictor.interm_features = emb.interm_features
        predictor.original_size = emb.original_size
        predictor.input_size = emb.input_size
        predictor.is_image_set = True

    def _embedding_for(self, frame: np.ndarray, frame_key: str | None) -> _Embedding:
        if frame_key is None or self._cache_size == 0:
            return self._embed(frame)
        emb = self._cache.get(frame_key)
        if emb is not None and emb.fingerprint == _fingerprint(frame):
            self._cache.move_to_end(frame_key)
            self._restore(emb)
            return emb
        emb = self._embed(frame)
        self._cache[frame_key] = emb
        self._cache.move_to_end(frame_key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return emb

    def clear_cache(self) -> None:
        """Drop every cached image embedding."""
        with self._lock:
            self._cache.clear()

    @property
    def cached_keys(self) -> list[str]:
        """frame_keys with a cached embedding, least recently used first."""
        with self._lock:
            return list(self._cache)

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
        """Segment one object with HQ-SAM (single-mask output, SAM's choice for several prompts).

        Args:
            frame: ``(H, W, 3)`` uint8 RGB.
            points: ``(N, 2)`` (x, y) pixels; labels ``(N,)`` 1 positive / 0 negative.
            box: ``(4,)`` XYXY pixels.
            mask_prior: ``(H, W)`` bool; enters SAM as low-res logits (see :func:`prior_to_lowres_logits`).
                A prior alone is a weak prompt for SAM; pass clicks or a box with it.
            frame_key: embedding-cache key; None computes the embedding without caching it.

        Returns:
            :class:`RefineResult` with an ``(H, W)`` bool mask and HQ-SAM's predicted IoU clipped to [0, 1].

        Raises:
            ValueError: invalid prompts (see :func:`rvos_core.refiners.registry.validate_prompts`).
        """
        prompts = validate_prompts(frame, points, labels, box, mask_prior)
        with self._lock, torch.inference_mode():
            emb = self._embedding_for(frame, frame_key)
            masks, scores, _ = self._predictor.predict(**self._predict_kwargs(prompts, emb), multimask_output=False)
        mask = np.asarray(masks[0], dtype=bool)
        return RefineResult(mask=mask, score=float(np.clip(scores[0], 0.0, 1.0)))

    @staticmethod
    def _predict_kwargs(prompts: Prompts, emb: _Embedding) -> dict[str, np.ndarray | None]:
        return {
            "point_coords": prompts.points,
            "point_labels": prompts.labels,
            "box": prompts.box,
            "mask_input": None if prompts.mask_prior is None else prior_to_lowres_logits(prompts.mask_prior, emb.input_size),
        }
