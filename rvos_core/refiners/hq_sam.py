"""HQ-SAM refiner: clicks / box / mask prior → one high-quality mask.

Method: HQ-SAM (Ke et al., "Segment Anything in High Quality", NeurIPS 2023), a SAM (Kirillov et al.,
ICCV 2023) whose mask decoder adds a high-quality output token fed with early ViT features. The model code
is the authors' ``segment-anything-hq`` package; this module is an adapter that

- loads safely and strictly: the architecture is built without a checkpoint, the file is read with
  ``torch.load(map_location="cpu", weights_only=True)``, keys and shapes must match exactly, then ``.eval()``;
- caches, per ``frame_key`` (bounded LRU), everything the HQ decoder needs from the image alone (the image
  embedding and the HQ features), so a second click on the same frame skips the image encoder and costs only
  the prompt encoder + mask decoder, which it runs itself with less arithmetic than the package (see the
  "decoder" section below; same results up to float32 rounding);
- guards the model with a lock so one instance can serve several threads.

``import`` of this module loads no model and touches no file.
"""

from __future__ import annotations

import functools
import logging
import math
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
import torch.nn.functional as F

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


# ---------------------------------------------------------------------------------------------- decoder
#
# The per-click path below computes HQ-SAM's prompt encoder + HQ mask decoder (``MaskDecoderHQ`` with its
# ``TwoWayTransformer``, single-mask output, SAM token + HQ token logits summed) + SAM's mask
# post-processing, from the modules' own parameters, with the same mathematics as the package but less work:
#
# 1. Image-only work is done once per frame and cached: the image embedding as (4096, 256) tokens and the
#    HQ features ``embedding_encoder(embedding) + compress_vit_feat(early ViT features)``; the dense
#    positional encoding once per model.
# 2. Only the rows / columns of the 256 × 256 low-res mask that cover the image are decoded: the encoder
#    input is the frame resized to (h', w') and padded to 1024², and SAM post-processing crops the padding
#    away, so for a 854 × 480 frame only 145 of 256 rows matter. The up-sampling convolutions run on that
#    crop plus the context rows their 3 × 3 kernels need.
# 3. Attention between the 4096 image tokens X and the T ≈ 6–12 prompt/output tokens is re-associated so no
#    (4096 × 128) projection of the image is formed: e.g. per head of token → image attention,
#    softmax(q (X W_k^T + b_k)^T) (X W_v^T + b_v) = (P X) W_v^T + b_v with P = softmax((q W_k) X^T)
#    (b_k adds a constant to each softmax row; softmax rows sum to 1). Cost 8·T·4096·256 instead of
#    4096·256·128 per projection; measured ~35 % faster than the plain form for T = 6…26.
# 4. The final token → image attention runs only for the three tokens used (IoU, SAM mask 0, HQ), and the
#    last 3 × 3 convolution of the HQ branch is merged with the HQ hypernetwork vector h
#    (h · conv(x; W) = conv(x; Σ_c h_c W_c)), a 1-channel convolution instead of 32 channels. Kernel-2
#    stride-2 transposed convolutions are matrix products; the image side is kept channels-last.
# 5. The image-sized matrix products run through oneDNN on CPU when available (see :func:`_linear`).
#
# The results equal the package's up to float32 rounding: the decoder's low-res logits differ by ~1e-6 and
# the post-processing (OpenCV instead of torch resampling) by up to ~1e-4, so a mask pixel can only flip where
# the logit is within ~1e-4 of 0 (tested against ``SamPredictor.predict``).


def _lowres_extent(input_size: tuple[int, int]) -> tuple[int, int]:
    """``(rows, cols)`` of the 256 × 256 low-res mask that SAM post-processing reads for an image of
    ``input_size`` = (h', w') inside the 1024² encoder input.

    Bilinear 4× up-sampling (half-pixel centres) of row y ∈ [0, h') reads low-res rows
    ⌊(y + 0.5)/4 − 0.5⌋ and the one below, so rows < ⌈h'/4⌉ + 1 suffice (clamped to 256).
    """
    return tuple(min(SAM_LOWRES_SIDE, -(-side // 4) + 1) for side in input_size)  # type: ignore[return-value]


def _grid_extent(lowres: tuple[int, int]) -> tuple[int, int]:
    """``(rows, cols)`` of the 64 × 64 embedding grid to up-sample so that two 3 × 3 convolutions (zero
    padding at the crop edge) are exact on the ``lowres`` rows / columns: 4·n ≥ lowres + 2."""
    grid = SAM_LOWRES_SIDE // 4
    return tuple(min(grid, -(-(side + 2) // 4)) for side in lowres)  # type: ignore[return-value]


@dataclass
class _Embedding:
    """The image-only decoder inputs of one frame (on the model's device).

    ``image_tokens``: (4096, 256) float32 image embedding, row ``64·y + x`` = embedding cell (y, x);
    ``hq_features``: (4·gh, 4·gw, 32) float32 HQ features (channels last) on the grid crop (gh, gw);
    ``original_size``: (H, W) of the frame; ``input_size``: (h', w') after resizing the longer side to 1024;
    ``lowres``: (rows, cols) of the low-res mask that post-processing reads; ``grid``: (gh, gw) embedding
    cells decoded; ``fingerprint``: cheap check that the frame under a key has not changed.
    """

    image_tokens: torch.Tensor
    hq_features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]
    lowres: tuple[int, int]
    grid: tuple[int, int]
    fingerprint: int


def _fingerprint(frame: np.ndarray) -> int:
    """crc32 of the frame shape and a strided subsample; catches a frame_key reused for a different frame."""
    sample = np.ascontiguousarray(frame[::7, ::7])
    return zlib.crc32(sample.tobytes(), zlib.crc32(np.asarray(frame.shape, np.int64).tobytes()))


@functools.cache
def _onednn_linear_available() -> bool:
    """Whether ``torch.ops.mkldnn._linear_pointwise`` (oneDNN's inner product, the op ``torch.compile`` emits
    for CPU linear layers) exists here and agrees with ``F.linear``; checked once, on first use."""
    try:
        x, w = torch.arange(6.0).view(2, 3), torch.arange(12.0).view(4, 3)
        return bool(
            torch.backends.mkldnn.is_available()
            and torch.equal(torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], ""), F.linear(x, w))
        )
    except (AttributeError, RuntimeError):
        return False


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias`` for 2-D float tensors ``(M, K)``, ``(N, K)`` → ``(M, N)``, like ``F.linear``.

    Inference on CPU goes through oneDNN when available: on AMD CPUs with AVX-512 it is ~2× faster than
    PyTorch's default BLAS (MKL, which runs its AVX2 code there) for the image-sized products below.
    """
    if x.device.type == "cpu" and not torch.is_grad_enabled() and _onednn_linear_available():
        try:
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
        except RuntimeError:  # a layout oneDNN has no primitive for: the plain path below
            pass
    return F.linear(x, weight, bias)


def _attend_tokens(attn: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The package's attention module on 2-D ``(T, 256)`` token inputs (token self-attention)."""
    return attn(q=q[None], k=k[None], v=v[None])[0]


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(T, heads·d)`` → ``(heads, T, d)``."""
    return x.view(x.shape[0], heads, -1).transpose(0, 1)


def _token_to_image(
    attn: torch.nn.Module, tokens: torch.Tensor, image_k: torch.Tensor, image_v: torch.Tensor
) -> torch.Tensor:
    """The package's ``Attention`` ``attn(q=tokens, k=image_k, v=image_v)`` without projecting the image.

    tokens ``(T, C)``; image_k, image_v ``(N, C)`` float32; returns ``(T, C)``. Per head h with d channels and
    q_h = the projected tokens: scores = (q_h W_k,h / √d) X_k^T (the key bias adds a constant to each softmax
    row, which softmax ignores), P_h = softmax over the N image tokens, output_h = (P_h X_v) W_v,h^T + b_v,h
    (each row of P_h sums to 1); then the module's output projection.
    """
    heads = attn.num_heads
    q = _heads(attn.q_proj(tokens), heads)  # (h, T, d)
    t, d, c = tokens.shape[0], q.shape[-1], image_k.shape[-1]
    w_k = attn.k_proj.weight.view(heads, d, c)
    w_v = attn.v_proj.weight.view(heads, d, c)
    probs = torch.softmax(_linear(torch.matmul(q / math.sqrt(d), w_k).reshape(heads * t, c), image_k), dim=-1)
    pooled = (probs @ image_v).view(heads, t, c)  # (h, T, C)
    out = torch.matmul(pooled, w_v.transpose(1, 2)) + attn.v_proj.bias.view(heads, 1, d)
    return attn.out_proj(out.transpose(0, 1).reshape(t, heads * d))


def _image_to_token(
    attn: torch.nn.Module, image_q: torch.Tensor, tokens_k: torch.Tensor, tokens_v: torch.Tensor
) -> torch.Tensor:
    """The package's ``Attention`` ``attn(q=image_q, k=tokens_k, v=tokens_v)`` without projecting the image.

    image_q ``(N, C)``; tokens_k, tokens_v ``(T, C)`` float32; returns ``(N, C)``. Per head h with k_h, v_h
    the projected tokens: scores = X_q (W_q,h^T k_h^T / √d) + b_q,h k_h^T / √d, P_h = softmax over the T
    tokens, and output = Σ_h P_h (v_h W_o,h^T) + b_o, the head recombination and output projection folded
    into one (N × h·T) @ (h·T × C) product.
    """
    heads = attn.num_heads
    k = _heads(attn.k_proj(tokens_k), heads)  # (h, T, d)
    v = _heads(attn.v_proj(tokens_v), heads)
    t, d, c = tokens_k.shape[0], k.shape[-1], image_q.shape[-1]
    k = k / math.sqrt(d)
    w_q = attn.q_proj.weight.view(heads, d, c)
    bias = torch.matmul(k, attn.q_proj.bias.view(heads, d, 1)).reshape(heads * t, 1)
    scores = _linear(torch.matmul(k, w_q).reshape(heads * t, c), image_q) + bias  # (h·T, N)
    probs = torch.softmax(scores.view(heads, t, -1), dim=1).view(heads * t, -1)
    w_o = attn.out_proj.weight.view(c, heads, d).permute(1, 2, 0)  # (h, d, C)
    values = torch.matmul(v, w_o).reshape(heads * t, c)
    return _linear(probs.t(), values.t(), attn.out_proj.bias)


def _two_way_transformer(
    transformer: torch.nn.Module, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor, keep: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The package's ``TwoWayTransformer`` on 2-D inputs; the final attention only for the ``keep`` tokens.

    image, image_pe ``(N, C)``; tokens ``(T, C)`` (output tokens then prompt tokens).
    Returns (``(len(keep), C)`` tokens, ``(N, C)`` image tokens).
    """
    queries, keys = tokens, image
    for layer in transformer.layers:
        if layer.skip_first_layer_pe:
            queries = _attend_tokens(layer.self_attn, queries, queries, queries)
        else:
            q = queries + tokens
            queries = queries + _attend_tokens(layer.self_attn, q, q, queries)
        queries = layer.norm1(queries)
        image_q = keys + image_pe
        attn_out = _token_to_image(layer.cross_attn_token_to_image, queries + tokens, image_q, keys)
        queries = layer.norm2(queries + attn_out)
        queries = layer.norm3(queries + layer.mlp(queries))
        attn_out = _image_to_token(layer.cross_attn_image_to_token, image_q, queries + tokens, queries)
        keys = layer.norm4(keys + attn_out)
    queries, tokens = queries[keep], tokens[keep]
    attn_out = _token_to_image(transformer.final_attn_token_to_image, queries + tokens, keys + image_pe, keys)
    return transformer.norm_final_attn(queries + attn_out), keys


def _conv_transpose_2x2(x: torch.Tensor, conv: torch.nn.ConvTranspose2d) -> torch.Tensor:
    """A kernel-2 stride-2 transposed convolution on channels-last ``(R, C, Cin)`` → ``(2R, 2C, Cout)``.

    Without overlap each input pixel writes its own 2 × 2 output block: one matrix product and a shuffle.
    """
    c_in, c_out = conv.weight.shape[:2]
    weight = conv.weight.permute(2, 3, 1, 0).reshape(4 * c_out, c_in)  # rows ordered (dy, dx, c_out)
    rows, cols = x.shape[:2]
    y = _linear(x.reshape(rows * cols, c_in), weight, conv.bias.repeat(4)).view(rows, cols, 2, 2, c_out)
    return y.permute(0, 2, 1, 3, 4).reshape(2 * rows, 2 * cols, c_out)


def _layer_norm_channels(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    """The package's ``LayerNorm2d`` (normalise over channels) on channels-last ``(..., C)``."""
    return F.layer_norm(x, (x.shape[-1],), norm.weight, norm.bias, norm.eps)


def _conv3x3_one_channel(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A 3 × 3 convolution (cross-correlation, zero padding 1) with one output channel.

    x ``(R, C, Cin)`` channels-last, weight ``(Cin, 3, 3)``, bias scalar tensor → ``(R, C)``: one
    ``(9 × Cin) @ (Cin × R·C)`` product, then the nine taps' maps added at their offsets.
    """
    rows, cols, c_in = x.shape
    taps = _linear(weight.reshape(c_in, 9).t(), x.reshape(rows * cols, c_in)).view(9, rows, cols)
    taps = F.pad(taps, (1, 1, 1, 1))
    out = taps[0, :rows, :cols] + bias
    for tap in range(1, 9):
        dy, dx = divmod(tap, 3)
        out += taps[tap, dy : dy + rows, dx : dx + cols]
    return out


def _check_decoder_layout(decoder: torch.nn.Module) -> None:
    """The cached decoder relies on these convolution shapes of ``MaskDecoderHQ``.

    Raises:
        RuntimeError: a package update changed them.
    """
    upscaling, feature = decoder.output_upscaling, decoder.embedding_maskfeature
    shapes = [(m.kernel_size, m.stride, m.padding) for m in (upscaling[0], upscaling[3], feature[0], feature[3])]
    kinds = [type(m) for m in (upscaling[0], upscaling[3], feature[0], feature[3])]
    expected = [((2, 2), (2, 2), (0, 0))] * 2 + [((3, 3), (1, 1), (1, 1))] * 2
    if kinds != [torch.nn.ConvTranspose2d] * 2 + [torch.nn.Conv2d] * 2 or shapes != expected:
        raise RuntimeError(
            f"segment_anything_hq's MaskDecoderHQ layout changed (convolutions {shapes}, expected {expected}); "
            "the cached HQ-SAM decoder does not fit it"
        )


class _CachedDecoder:
    """HQ-SAM's prompt encoder + HQ mask decoder + post-processing with per-frame image-only inputs cached.

    Args:
        model: an HQ-SAM ``Sam`` in eval mode (the package's modules are called or their weights used;
            nothing in the package is modified).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        from segment_anything_hq.utils.transforms import ResizeLongestSide

        self.model = model
        self.decoder = model.mask_decoder
        _check_decoder_layout(self.decoder)
        self.transform = ResizeLongestSide(model.image_encoder.img_size)
        with torch.inference_mode():
            self.image_pe = model.prompt_encoder.get_dense_pe()[0].flatten(1).t().contiguous()  # (4096, 256)

    def embed(self, predictor: Any, frame: np.ndarray) -> _Embedding:
        """Run the image encoder (``SamPredictor.set_image``) and the image-only HQ branch on ``frame``.

        Args:
            predictor: a ``SamPredictor`` of the same model (only its ``set_image`` is used).
            frame: ``(H, W, 3)`` uint8 RGB.
        """
        predictor.set_image(frame, image_format="RGB")
        features, interm = predictor.features, predictor.interm_features[0]
        input_size = tuple(predictor.input_size)
        predictor.reset_image()
        predictor.interm_features = None
        lowres = _lowres_extent(input_size)
        grid = _grid_extent(lowres)
        hq = self.decoder.embedding_encoder(features) + self.decoder.compress_vit_feat(interm.permute(0, 3, 1, 2))
        hq = hq[0, :, : 4 * grid[0], : 4 * grid[1]].permute(1, 2, 0).contiguous()
        return _Embedding(
            image_tokens=features[0].flatten(1).t().contiguous(),
            hq_features=hq,
            original_size=tuple(frame.shape[:2]),
            input_size=input_size,
            lowres=lowres,
            grid=grid,
            fingerprint=_fingerprint(frame),
        )

    def _encode_prompts(
        self, prompts: Prompts, emb: _Embedding, mask_input: np.ndarray | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The package's ``PromptEncoder`` on the prompts mapped into the 1024² input frame as
        ``SamPredictor.predict`` maps them → (sparse ``(T', C)``, dense ``(N, C)``)."""
        device = emb.image_tokens.device
        points = box = masks = None
        if prompts.points is not None:
            coords = self.transform.apply_coords(prompts.points, emb.original_size)
            points = (
                torch.as_tensor(coords, dtype=torch.float, device=device)[None],
                torch.as_tensor(prompts.labels, dtype=torch.int, device=device)[None],
            )
        if prompts.box is not None:
            box = self.transform.apply_boxes(prompts.box, emb.original_size)
            box = torch.as_tensor(box, dtype=torch.float, device=device)[None]
        if mask_input is not None:
            masks = torch.as_tensor(mask_input, dtype=torch.float, device=device)[None]
        sparse, dense = self.model.prompt_encoder(points=points, boxes=box, masks=masks)
        return sparse[0], dense[0].flatten(1).t()

    def _hq_branch(self, upscaled: torch.Tensor, hyper_hq: torch.Tensor, emb: _Embedding) -> torch.Tensor:
        """HQ logits ``h · (embedding_maskfeature(upscaled) + hq_features)`` on the crop, ``(R, C)``."""
        conv1, norm, act, conv2 = self.decoder.embedding_maskfeature
        weight = conv1.weight.contiguous(memory_format=torch.channels_last)  # → channels-last output
        x = F.conv2d(upscaled.permute(2, 0, 1)[None], weight, conv1.bias, padding=1)[0].permute(1, 2, 0)
        x = act(_layer_norm_channels(x, norm))
        merged_weight = torch.einsum("c,cikl->ikl", hyper_hq, conv2.weight)
        return _conv3x3_one_channel(x, merged_weight, hyper_hq @ conv2.bias) + emb.hq_features @ hyper_hq

    def decode(self, prompts: Prompts, emb: _Embedding, mask_input: np.ndarray | None) -> tuple[np.ndarray, float]:
        """Single-mask HQ-SAM output for ``prompts`` on the cached frame ``emb``.

        Args:
            prompts: validated prompts in original-frame pixels.
            emb: the frame's cached :class:`_Embedding`.
            mask_input: ``(1, 256, 256)`` float32 low-res mask logits, or None.

        Returns:
            ``(H, W)`` float32 mask logits at the frame size (mask = logits > 0) and the predicted IoU (unclipped).
        """
        dec = self.decoder
        sparse, dense = self._encode_prompts(prompts, emb, mask_input)
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight, dec.hf_token.weight], dim=0)
        hq_index = output_tokens.shape[0] - 1
        tokens = torch.cat([output_tokens, sparse], dim=0)
        image = emb.image_tokens + dense
        hs, keys = _two_way_transformer(dec.transformer, image, self.image_pe, tokens, [0, 1, hq_index])
        upscaled = self._upscale(keys, emb.grid)
        logits = upscaled @ dec.output_hypernetworks_mlps[0](hs[1]) + self._hq_branch(upscaled, dec.hf_mlp(hs[2]), emb)
        score = float(dec.iou_prediction_head(hs[0:1])[0, 0])
        return self._to_frame(logits, emb), score

    def _upscale(self, keys: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``output_upscaling`` of the transformer's image tokens ``(4096, C)`` on the grid crop ``(gh, gw)``
        → ``(4·gh, 4·gw, C/8)`` channels-last."""
        side = SAM_LOWRES_SIDE // 4
        x = keys.view(side, side, -1)[: grid[0], : grid[1]]
        conv_a, norm, act_a, conv_b, act_b = self.decoder.output_upscaling
        x = act_a(_layer_norm_channels(_conv_transpose_2x2(x, conv_a), norm))
        return act_b(_conv_transpose_2x2(x, conv_b))

    @staticmethod
    def _to_frame(lowres_logits: torch.Tensor, emb: _Embedding) -> np.ndarray:
        """SAM's post-processing on the needed crop only: bilinear ×4 (half-pixel centres) → crop to (h', w')
        → bilinear to (H, W) → ``(H, W)`` float32 logits. With OpenCV, 5× faster than torch here; same formula,
        the logits agree with torch's to ~2e-5 (torch computes the resampling scale in float32)."""
        rows, cols = emb.lowres
        low = np.ascontiguousarray(lowres_logits[:rows, :cols].float().cpu().numpy())
        x = cv2.resize(low, (4 * cols, 4 * rows), interpolation=cv2.INTER_LINEAR)
        x = x[: emb.input_size[0], : emb.input_size[1]]
        return cv2.resize(x, emb.original_size[::-1], interpolation=cv2.INTER_LINEAR)


class HQSamRefiner:
    """Promptable segmentation with HQ-SAM, behind the :class:`~rvos_core.refiners.base.Refiner` protocol.

    Args:
        model_type: ``"vit_tiny"`` (Light HQ-SAM), ``"vit_b"``, ``"vit_l"`` or ``"vit_h"``.
        checkpoint: None → the weights-registry file ``hq_sam_<model_type>`` (must be downloaded);
            a registry name; or a path to a state-dict file.
        device: torch device string (``"cpu"``, ``"cuda"``, ``"cuda:0"``…).
        cache_size: how many frames' image-only decoder inputs to keep (LRU); 0 disables the cache. One entry
            holds the 64×64 image embedding (4 MB) and the HQ features on the part of the 256×256 low-res grid
            that covers the frame (≤ 8.4 MB; 4.8 MB for 16:9), the same for every model type, in float32.

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

        self._predictor = SamPredictor(self.model)  # image encoder input handling (set_image) only
        self._decoder = _CachedDecoder(self.model)
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

    def _embedding_for(self, frame: np.ndarray, frame_key: str | None) -> _Embedding:
        if frame_key is None or self._cache_size == 0:
            return self._decoder.embed(self._predictor, frame)
        emb = self._cache.get(frame_key)
        if emb is not None and emb.fingerprint == _fingerprint(frame):
            self._cache.move_to_end(frame_key)
            return emb
        emb = self._decoder.embed(self._predictor, frame)
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
            frame_key: embedding-cache key; None computes the embedding without caching it. On a cache hit
                only the prompt encoder and mask decoder run (30–37 ms CPU on one core for an 854×480 frame,
                any model type; see ``bench/hq_sam_decoder.py``); a miss runs the image encoder first.

        Returns:
            :class:`RefineResult` with an ``(H, W)`` bool mask and HQ-SAM's predicted IoU clipped to [0, 1]; both
            equal ``SamPredictor.predict(…, multimask_output=False)`` of the package up to float32 rounding
            (a mask pixel can differ only where the logit is within ~1e-4 of 0).

        Raises:
            ValueError: invalid prompts (see :func:`rvos_core.refiners.registry.validate_prompts`).
        """
        prompts = validate_prompts(frame, points, labels, box, mask_prior)
        with self._lock, torch.inference_mode():
            emb = self._embedding_for(frame, frame_key)
            prior = prompts.mask_prior
            mask_input = None if prior is None else prior_to_lowres_logits(prior, emb.input_size)
            logits, score = self._decoder.decode(prompts, emb, mask_input)
            mask = logits > self.model.mask_threshold
        return RefineResult(mask=mask, score=float(np.clip(score, 0.0, 1.0)))
