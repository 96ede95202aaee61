"""The ``clip-rvos`` network: a CLIP (open_clip ConvNeXt) backbone with cross-modal fusion,
spatio-temporal attention and text-initialised video queries.

Design after seed 000 (3rd place, MeViS track, CVPR 2024 PVUW): a convolutional CLIP backbone
(open_clip ConvNeXt) gives spatially aligned multi-scale image features and text token features;
vision–language fusion is applied at several scales; the video queries are initialised from the
sentence embedding. Temporal modelling: joint spatio-temporal self-attention on the stride-16
features of all sampled frames, and temporal self-attention between the per-frame
instances of every query in the decoder. Masks follow the Mask2Former-style dot product between
query embeddings and stride-4 mask features.

Components of the other seed systems are config options (see :class:`ClipRvosConfig`; every default
is the design above, so default configs build exactly the same network): a RoBERTa text encoder
(seed 002), bidirectional vision–language fusion (seeds 000 / 004), cube-frame attention (seed 001)
or language-guided dynamic filtering (seed 004) as the temporal module, and query initialisation
from pooled instance masks (seed 003).

Shapes: ``B`` clips, ``T`` sampled frames, ``Q`` queries, ``L`` text tokens, ``D`` hidden width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

#: ``text_encoder`` values: open_clip's CLIP text tower, or RoBERTa through transformers (seed 002).
TEXT_ENCODERS = ("clip", "roberta")
#: ``fusion`` values: visual tokens attend to text (one way), or text also attends to vision (seeds 000, 004).
FUSIONS = ("one_way", "bidirectional")
#: ``temporal`` values (how information moves between the sampled frames).
TEMPORAL_MODULES = ("none", "attention", "cube", "dynamic_filter")
#: ``query_init`` values: queries from the sentence, or also from pooled instance masks (seed 003).
QUERY_INITS = ("text", "pooled_mask")
#: open_clip's BPE vocabulary: 49408 ids, ``<start_of_text>`` 49406, ``<end_of_text>`` 49407, padding 0.
CLIP_BPE_VOCAB, CLIP_BPE_SOT, CLIP_BPE_PAD = 49408, 49406, 0
#: Keys of a ``roberta`` spec with ``"source": "config"`` (passed to ``transformers.RobertaConfig``).
ROBERTA_CONFIG_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                       "hidden_dropout_prob", "attention_probs_dropout_prob")
#: Files a pretrained RoBERTa folder needs (the Hugging Face ``FacebookAI/roberta-base`` layout): each
#: entry is satisfied by any one of its alternatives (tokenizer: ``tokenizer.json`` or the BPE file pair).
ROBERTA_FILES = (("config.json",), ("tokenizer.json", "vocab.json"), ("tokenizer.json", "merges.txt"),
                 ("model.safetensors", "pytorch_model.bin"))


@dataclass
class ClipRvosConfig:
    """Architecture + preprocessing of one clip-rvos model (loaded from ``rvos_core/configs/<name>.json``).

    Attributes:
        name: model name, e.g. ``"clip-rvos-tiny"``.
        clip: backbone spec. Either ``{"source": "config", "embed_dim", "vision_cfg", "text_cfg"}``
            (an open_clip CLIP built from this architecture, random init) or
            ``{"source": "open_clip", "model": "convnext_large_d_320", "pretrained": "<tag>", "weight": "<weights.py name>"}``.
        freeze_backbone: keep the CLIP weights frozen (no gradients, eval mode).
        input_size: short side, in pixels, that frames are resized to at inference (both sides rounded to
            multiples of 32); the DIS flow of ``motion_input`` is computed at that size too. Training clips
            have their own size (``TrainOptions.image_size``); a model may run best at a larger size than
            it was trained at (the shipped ``clip-rvos-tiny``: trained at 128 px, run at 160 px, chosen on
            a validation split, see ``assets/MODEL_CARD.md``).
        num_frames: T, frames sampled per clip (global sampling, seed 003).
        hidden_dim: D.
        num_queries: Q.
        dec_layers: decoder layers.
        nheads: attention heads.
        context_length: text tokens L.
        mean, std: per-channel RGB normalisation of [0, 1] pixels (CLIP's constants).
        score_threshold: a query whose score probability exceeds this is reported as a referred object.
        checkpoint: default trained-checkpoint path (relative to the repository root) or weight name.
        motion_input: the network also takes per-frame optical flow (:mod:`rvos_core.engines.motion`),
            encoded by a small conv stem and added (zero-initialised) to the stride-8 and stride-16 features.
        st_layers: joint spatio-temporal attention blocks at stride 16 (≥ 1).
        motion_fusion: after those blocks, the clip's tokens attend to the text tokens once more, so that
            words about motion meet features that already relate frames (added in the second training stage
            of the demo model; zero-initialised so a model trained without it is unchanged).

    Seed-component options (each default is the original design; a config without these keys builds the
    same network, with the same state-dict keys, as one that spells out the defaults):

        text_encoder: ``"clip"`` (default: the CLIP text tower of ``clip``) or ``"roberta"``
            (seed 002, SOC/SOC++: RoBERTa-base as the text backbone, via ``transformers.RobertaModel``;
            the CLIP text tower is then removed). Token features are RoBERTa's last hidden states, the
            sentence feature their mean over non-padding tokens.
        roberta: the RoBERTa spec (only with ``text_encoder == "roberta"``). Either
            ``{"source": "pretrained", "weight": "roberta-base"}``: a folder with the Hugging Face
            ``FacebookAI/roberta-base`` files (``config.json``, ``tokenizer.json`` or ``vocab.json`` +
            ``merges.txt``, ``model.safetensors``), given as a path, a :mod:`rvos_core.weights` registry name, or a folder
            name under :func:`rvos_core.weights.weights_dir`; its own BPE tokenizer is used
            (:func:`make_text_tokenizer`). Or ``{"source": "config", <RobertaConfig fields from
            ROBERTA_CONFIG_KEYS>}``: a random-init RoBERTa over open_clip's BPE ids (vocabulary 49408,
            padding id 0, dropout 0 unless given) — same tokens as the CLIP tower, so a from-scratch
            ablation compares encoders only; also what tests use (no download).
        fusion: ``"one_way"`` (default: at strides 8/16/32 the visual tokens attend to the text tokens,
            then a sentence gate) or ``"bidirectional"`` (seed 004 DITS "vision-language mutual guidance",
            seed 000 "more cross-modal fusion": at each level the text tokens also attend to that level's
            visual tokens; the guided text goes on to the next level, the decoder and ``motion_fusion``;
            zero-initialised, so it starts as ``"one_way"``).
        temporal: ``"attention"`` (default: ``st_layers`` joint spatio-temporal self-attention blocks
            at stride 16 + temporal self-attention between a query's per-frame instances in every decoder
            layer); ``"none"`` (frames are processed independently; only the clip-mean referring score
            and a ``motion_input`` flow see several frames); ``"cube"`` (seed 001 VLP-RVOS cube-frame
            attention: in every decoder layer each query instance first attends to the whole
            spatio-temporal cube — the decoder level's tokens of all T frames with 3-D positions —
            then to its own frame; no encoder block); ``"dynamic_filter"`` (seed 004 DITS LMDF:
            language-guided multi-scale dynamic filtering — at strides 8, 16 and 32, language-gated
            features of frames t-1, t, t+1 generate position-specific softmax filters over a 3x3
            window of those three frames that update frame t; no decoder temporal attention).
            ``st_layers`` other than 1 needs ``"attention"``.
        query_init: ``"text"`` (default: learned query + projected sentence feature) or
            ``"pooled_mask"`` (seed 003, §2.3: instance masks are pooled into per-frame instance
            features, which a cross-attention + self-attention + FFN block folds into the queries one
            instance after another, Q_i = Block(Q_{i-1}, F_i)). Seed 003 takes the masks from a separate
            VIS model (DVIS); here they are the network's own class-agnostic proposals (``proposal_masks``
            output, trained by a matched mask loss) unless ``forward`` is given ``instance_masks``.
            The block is zero-initialised, so it starts as ``"text"``.
    """

    name: str
    clip: dict[str, Any]
    freeze_backbone: bool = False
    input_size: int = 128
    num_frames: int = 8
    hidden_dim: int = 128
    num_queries: int = 4
    dec_layers: int = 3
    nheads: int = 4
    context_length: int = 24
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    score_threshold: float = 0.5
    checkpoint: str | None = None
    st_layers: int = 1
    motion_fusion: bool = False
    motion_input: bool = False
    text_encoder: str = "clip"
    roberta: dict[str, Any] = field(default_factory=dict)
    fusion: str = "one_way"
    temporal: str = "attention"
    query_init: str = "text"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, valid in (("text_encoder", TEXT_ENCODERS), ("fusion", FUSIONS), ("temporal", TEMPORAL_MODULES),
                            ("query_init", QUERY_INITS)):
            value = getattr(self, name)
            if value not in valid:
                raise ValueError(f"clip-rvos config {self.name!r}: {name} must be one of {list(valid)}, got {value!r}")
        if not isinstance(self.roberta, dict):
            raise ValueError(f"clip-rvos config {self.name!r}: roberta must be a JSON object, got {self.roberta!r}")
        if self.text_encoder == "roberta" and self.roberta.get("source") not in ("config", "pretrained"):
            raise ValueError(f"clip-rvos config {self.name!r}: text_encoder 'roberta' needs roberta.source "
                             f"'config' or 'pretrained', got {self.roberta.get('source')!r}")
        if self.text_encoder != "roberta" and self.roberta:
            raise ValueError(f"clip-rvos config {self.name!r}: a roberta spec is given but text_encoder is "
                             f"{self.text_encoder!r}; set text_encoder to 'roberta' or drop the spec")
        if self.temporal != "attention" and self.st_layers != 1:
            raise ValueError(f"clip-rvos config {self.name!r}: st_layers={self.st_layers} applies to "
                             f"temporal='attention' only; use st_layers=1 with temporal={self.temporal!r}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ClipRvosConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"clip-rvos config {d.get('name', '?')!r}: unknown fields {unknown}; expected some of {sorted(known)}")
        if "name" not in d or "clip" not in d:
            raise ValueError("clip-rvos config needs the fields 'name' and 'clip'")
        d = dict(d)
        for k in ("mean", "std"):
            if k in d:
                d[k] = tuple(float(v) for v in d[k])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def sine_pos_2d(h: int, w: int, dim: int, device: torch.device) -> torch.Tensor:
    """``(h*w, dim)`` 2-D sine positional encoding of normalised (y, x) in [0, 1] (DETR-style)."""
    quarter = dim // 4
    freqs = torch.exp(torch.arange(quarter, device=device, dtype=torch.float32) * (-math.log(1000.0) / max(quarter, 1)))
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 * math.pi
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 * math.pi
    py = ys[:, None] * freqs[None] * 8
    px = xs[:, None] * freqs[None] * 8
    py = torch.cat([py.sin(), py.cos()], dim=-1)[:, None, :].expand(h, w, 2 * quarter)
    px = torch.cat([px.sin(), px.cos()], dim=-1)[None, :, :].expand(h, w, 2 * quarter)
    pos = torch.cat([py, px], dim=-1).reshape(h * w, 4 * quarter)
    if pos.shape[1] < dim:
        pos = F.pad(pos, (0, dim - pos.shape[1]))
    return pos


def sine_pos_1d(n: int, dim: int, device: torch.device) -> torch.Tensor:
    """``(n, dim)`` sine encoding of normalised positions (i + 0.5) / n in [0, 1] (frame order in the sample)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * (-math.log(1000.0) / max(half, 1)))
    t = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n * 2 * math.pi * 8
    p = t[:, None] * freqs[None]
    pos = torch.cat([p.sin(), p.cos()], dim=-1)
    if pos.shape[1] < dim:
        pos = F.pad(pos, (0, dim - pos.shape[1]))
    return pos


def _zero_linear(layer: nn.Linear) -> None:
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class FFN(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class VisionLanguageFusion(nn.Module):
    """Visual tokens attend to text tokens, then a sentence-conditioned channel gate (seed 000: more fusion)."""

    def __init__(self, dim: int, heads: int, zero_init: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.gate = nn.Linear(dim, dim)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        if zero_init:  # starts as the identity (added to a trained model without changing it)
            _zero_linear(self.attn.out_proj)

    def forward(self, v: torch.Tensor, pos: torch.Tensor, txt: torch.Tensor, txt_pad: torch.Tensor, sent: torch.Tensor) -> torch.Tensor:
        """v: (N, S, D) visual tokens; pos: (S, D); txt: (N, L, D); txt_pad: (N, L) bool (True = padding); sent: (N, D)."""
        a = self.attn(self.norm(v) + pos, txt, txt, key_padding_mask=txt_pad, need_weights=False)[0]
        v = v + a
        return v * (1.0 + torch.tanh(self.gate(sent)))[:, None, :]


class SpatioTemporalBlock(nn.Module):
    """Joint self-attention over all ``T·h·w`` tokens of the coarsest level (relates positions across frames)."""

    def __init__(self, dim: int, heads: int, zero_init: bool = False):
        super().__init__()
        self.n1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.n2 = nn.LayerNorm(dim)
        self.ffn = FFN(dim, 2)
        if zero_init:  # starts as the identity (added to a trained model without changing it)
            _zero_linear(self.attn.out_proj)
            _zero_linear(self.ffn.net[-1])

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """x: (B, T·h·w, D); pos: (T·h·w, D)."""
        h = self.n1(x) + pos
        x = x + self.attn(h, h, self.n1(x), need_weights=False)[0]
        return x + self.ffn(self.n2(x))


class MotionStem(nn.Module):
    """Optical flow ``(N, 2, H, W)`` → motion features at strides 8 and 16 (``(N, D, H/8, W/8)``,
    ``(N, D, H/16, W/16)``); the output convolutions start at zero so adding the stem to a trained
    network does not change it."""

    def __init__(self, dim: int):
        super().__init__()
        c = max(32, dim // 2)
        self.body = nn.Sequential(nn.Conv2d(2, c // 2, 3, 2, 1), nn.GELU(), nn.Conv2d(c // 2, c, 3, 2, 1), nn.GELU(),
                                  nn.Conv2d(c, dim, 3, 2, 1), nn.GroupNorm(8, dim), nn.GELU())
        self.down = nn.Sequential(nn.Conv2d(dim, dim, 3, 2, 1), nn.GroupNorm(8, dim), nn.GELU())
        self.out8, self.out16 = nn.Conv2d(dim, dim, 1), nn.Conv2d(dim, dim, 1)
        for conv in (self.out8, self.out16):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f8 = self.body(flow)
        return self.out8(f8), self.out16(self.down(f8))


class TextFromVision(nn.Module):
    """The language half of bidirectional fusion: text tokens attend to one level's visual tokens
    (seed 004 DITS "vision-language mutual guidance"; seed 000 "more cross-modal fusion").
    The output projection starts at zero, so the module starts as the identity (one-way fusion)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        _zero_linear(self.attn.out_proj)

    def forward(self, txt: torch.Tensor, v: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """txt: (N, L, D) text tokens; v: (N, S, D) visual tokens; pos: (S, D) → (N, L, D) guided text."""
        return txt + self.attn(self.norm(txt), v + pos, v, need_weights=False)[0]


class LanguageGuidedDynamicFilter(nn.Module):
    """Seed 004 (DITS) LMDF: language-guided spatio-temporal features generate position-specific dynamic
    filters that update the current frame's features.

    For frame t, the features of frames t-1, t, t+1 (clamped at the clip ends) are mixed by a 1x1
    convolution and gated channel-wise by the sentence; a 3x3 convolution of that turns every position
    into ``groups`` softmax filters over the ``3 × 3 × 3`` window (3 frames × 3x3 neighbourhood), which
    aggregate the three frames' features (channel groups share a filter). The aggregate goes through
    a zero-initialised 1x1 convolution and is added to frame t (identity at initialisation).
    """

    def __init__(self, dim: int, groups: int, kernel: int = 3, span: int = 1):
        super().__init__()
        if dim % groups:
            raise ValueError(f"LMDF: hidden width {dim} is not divisible by groups {groups}")
        self.groups, self.kernel, self.span = groups, kernel, span
        frames = 2 * span + 1
        self.context = nn.Sequential(nn.Conv2d(dim * frames, dim, 1), nn.GroupNorm(8, dim), nn.GELU())
        self.lang = nn.Linear(dim, dim)
        self.filters = nn.Conv2d(dim, groups * frames * kernel * kernel, 3, padding=1)
        self.out = nn.Conv2d(dim, dim, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, f: torch.Tensor, sent: torch.Tensor) -> torch.Tensor:
        """f: (B, T, D, h, w) features; sent: (B, D) sentence feature → (B, T, D, h, w)."""
        b, t, d, h, w = f.shape
        k, g = self.kernel, self.groups
        near = torch.stack([f[:, [min(max(i + o, 0), t - 1) for i in range(t)]] for o in range(-self.span, self.span + 1)], 2)
        n = near.shape[2]  # (B, T, n, D, h, w)
        ctx = self.context(near.reshape(b * t, n * d, h, w))
        ctx = ctx * self.lang(sent).repeat_interleave(t, dim=0)[:, :, None, None]
        wts = self.filters(ctx).reshape(b * t, g, 1, n * k * k, h, w).softmax(dim=3)
        cols = F.unfold(near.reshape(b * t * n, d, h, w), k, padding=k // 2)  # (B·T·n, D·k·k, h·w)
        cols = cols.reshape(b * t, n, g, d // g, k * k, h, w).permute(0, 2, 3, 1, 4, 5, 6).reshape(b * t, g, d // g, n * k * k, h, w)
        agg = (cols * wts).sum(dim=3).reshape(b * t, d, h, w)
        return f + self.out(agg).reshape(b, t, d, h, w)


class InstanceQueryBlock(nn.Module):
    """Seed 003 (§2.3, Eq. 4) block that folds one instance into the queries: cross-attention from the
    queries to the instance's per-frame features, query self-attention, FFN (pre-norm residuals whose
    output layers start at zero, so the block starts as the identity)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.n_cross = nn.LayerNorm(dim)
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.n_self = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.n_ffn = nn.LayerNorm(dim)
        self.ffn = FFN(dim, 2)
        for layer in (self.cross.out_proj, self.self_attn.out_proj, self.ffn.net[-1]):
            _zero_linear(layer)

    def forward(self, q: torch.Tensor, inst: torch.Tensor, tpos: torch.Tensor) -> torch.Tensor:
        """q: (B, Q, D) queries; inst: (B, T, D) one instance's per-frame features; tpos: (T, D) → (B, Q, D)."""
        q = q + self.cross(self.n_cross(q), inst + tpos, inst, need_weights=False)[0]
        h = self.n_self(q)
        q = q + self.self_attn(h, h, h, need_weights=False)[0]
        return q + self.ffn(self.n_ffn(q))


def resolve_roberta_dir(ref: str) -> Path:
    """The local folder of a pretrained RoBERTa (Hugging Face ``FacebookAI/roberta-base`` layout).

    Looked up, in order: ``ref`` as a folder path; a :mod:`rvos_core.weights` registry entry named ``ref``
    (its file's folder); the folder ``weights_dir()/ref``. Never touches the network.

    Raises:
        rvos_core.weights.WeightsNotAvailable: nothing found, or a folder lacks one of :data:`ROBERTA_FILES`
            or the weights file; the message names the places looked at and how to install the files.
    """
    from rvos_core import weights

    candidates = [Path(ref).expanduser()]
    if ref in weights.WEIGHTS:
        found = weights.require(ref)
        candidates.insert(0, found if found.is_dir() else found.parent)
    candidates.append(weights.weights_dir() / ref)
    for folder in candidates:
        if folder.is_dir():
            missing = [" or ".join(alts) for alts in ROBERTA_FILES if not any((folder / f).is_file() for f in alts)]
            if missing:
                raise weights.WeightsNotAvailable(f"RoBERTa folder {folder} lacks {missing}; it needs the files of the "
                                                  f"Hugging Face repository FacebookAI/roberta-base")
            return folder
    raise weights.WeightsNotAvailable(
        f"RoBERTa text encoder {ref!r} is not installed (looked for the folders {[str(c) for c in candidates]}). "
        f"On a machine with network, fetch config.json, vocab.json, merges.txt and model.safetensors of the Hugging "
        f"Face repository FacebookAI/roberta-base into {weights.weights_dir() / 'roberta-base'} (e.g. `hf download "
        f"FacebookAI/roberta-base config.json vocab.json merges.txt model.safetensors --local-dir <that folder>`), "
        f"or set the config's roberta.weight to a folder holding them.")


class RobertaTextEncoder(nn.Module):
    """RoBERTa as the text backbone (seed 002, SOC/SOC++; ``transformers.RobertaModel`` without pooler).

    ``forward(tokens)``: tokens ``(B, L)`` int64 ids whose first column is the BOS id → token features
    ``(B, L, W)`` float32, padding mask ``(B, L)`` bool (True = padding), sentence feature ``(B, W)``
    (mean of the non-padding token features). ``W`` = ``hidden_size``.
    """

    def __init__(self, model: nn.Module, pad_id: int, bos_id: int):
        super().__init__()
        self.model = model
        self.pad_id, self.bos_id = pad_id, bos_id
        self.width = int(model.config.hidden_size)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], context_length: int) -> "RobertaTextEncoder":
        """Build from a config's ``roberta`` spec (see :class:`ClipRvosConfig`).

        Raises:
            ValueError: unknown spec keys, or ``context_length`` beyond the model's positions.
            rvos_core.weights.WeightsNotAvailable: pretrained files missing (see :func:`resolve_roberta_dir`).
        """
        from transformers import RobertaConfig, RobertaModel

        if spec.get("source") == "pretrained":
            folder = resolve_roberta_dir(str(spec.get("weight", "roberta-base")))
            model = RobertaModel.from_pretrained(str(folder), add_pooling_layer=False, local_files_only=True,
                                                 dtype=torch.float32)
            limit = model.config.max_position_embeddings - model.config.pad_token_id - 1
            if context_length > limit:
                raise ValueError(f"context_length {context_length} exceeds the {limit} positions of RoBERTa {folder}")
            return cls(model, pad_id=int(model.config.pad_token_id), bos_id=int(model.config.bos_token_id))
        unknown = sorted(set(spec) - set(ROBERTA_CONFIG_KEYS) - {"source"})
        if unknown:
            raise ValueError(f"roberta spec: unknown keys {unknown}; expected 'source' and some of {list(ROBERTA_CONFIG_KEYS)}")
        kwargs = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
                  **{k: spec[k] for k in ROBERTA_CONFIG_KEYS if k in spec}}
        config = RobertaConfig(vocab_size=CLIP_BPE_VOCAB, pad_token_id=CLIP_BPE_PAD, bos_token_id=CLIP_BPE_SOT,
                               eos_token_id=CLIP_BPE_SOT + 1, max_position_embeddings=context_length + CLIP_BPE_PAD + 1,
                               type_vocab_size=1, **kwargs)
        return cls(RobertaModel(config, add_pooling_layer=False), pad_id=CLIP_BPE_PAD, bos_id=CLIP_BPE_SOT)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if tokens.ndim != 2 or not bool((tokens[:, 0] == self.bos_id).all()):
            raise ValueError(f"text_encoder 'roberta': token rows must start with the BOS id {self.bos_id}, got "
                             f"{tokens[:, 0].tolist() if tokens.ndim == 2 else tuple(tokens.shape)}; tokenize with "
                             f"rvos_core.engines.clip_rvos_model.make_text_tokenizer(cfg)")
        keep = tokens != self.pad_id
        x = self.model(input_ids=tokens, attention_mask=keep.long()).last_hidden_state
        k = keep[..., None].to(x.dtype)
        pooled = (x * k).sum(1) / k.sum(1).clamp(min=1.0)
        return x, ~keep, pooled


class _RobertaTokenizer:
    """list[str] → ``(B, context_length)`` int64 ids of a pretrained RoBERTa's own BPE tokenizer (padded with
    its pad id, truncated; first id ``<s>``)."""

    def __init__(self, folder: Path, context_length: int):
        from transformers import RobertaTokenizer

        self.tokenizer = RobertaTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.context_length = context_length

    def __call__(self, texts: str | list[str]) -> torch.Tensor:
        texts = [texts] if isinstance(texts, str) else list(texts)
        enc = self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.context_length,
                             return_tensors="pt")
        return enc["input_ids"].long()


def make_text_tokenizer(cfg: "ClipRvosConfig") -> Callable[[str | list[str]], torch.Tensor]:
    """The tokenizer matching a config's text encoder: texts → ``(B, cfg.context_length)`` int64 ids.

    open_clip's BPE (vocabulary shipped inside open_clip) for ``text_encoder == "clip"`` and for a
    ``roberta`` spec with ``"source": "config"``; a pretrained RoBERTa's own tokenizer (from its folder,
    offline) for ``"source": "pretrained"``.

    Raises:
        rvos_core.weights.WeightsNotAvailable: the pretrained RoBERTa folder is missing (names the fix).
    """
    if cfg.text_encoder == "roberta" and cfg.roberta.get("source") == "pretrained":
        return _RobertaTokenizer(resolve_roberta_dir(str(cfg.roberta.get("weight", "roberta-base"))), cfg.context_length)
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=cfg.context_length)


def _drop_clip_text_tower(clip_model: nn.Module) -> None:
    """Remove the CLIP text tower's parameters (unused when another text encoder is configured)."""
    for name in ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection"):
        if hasattr(clip_model, name):
            delattr(clip_model, name)


class DecoderLayer(nn.Module):
    """Per-frame query instances: frame cross-attention → temporal self-attention (per query, over T)
    → query self-attention (per frame) → text cross-attention → FFN (pre-norm residuals).

    ``temporal`` (see :class:`ClipRvosConfig`): ``"attention"`` has the temporal self-attention step;
    ``"cube"`` replaces it by cube attention before the frame step (seed 001 cube-frame attention: every
    instance attends to the level's tokens of all frames, then to its own frame); the other values have
    no temporal step.
    """

    def __init__(self, dim: int, heads: int, temporal: str = "attention"):
        super().__init__()
        self.temporal = temporal
        self.n_frame = nn.LayerNorm(dim)
        self.ca_frame = nn.MultiheadAttention(dim, heads, batch_first=True)
        if temporal == "attention":
            self.n_time = nn.LayerNorm(dim)
            self.sa_time = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.n_query = nn.LayerNorm(dim)
        self.sa_query = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.n_text = nn.LayerNorm(dim)
        self.ca_text = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.n_ffn = nn.LayerNorm(dim)
        self.ffn = FFN(dim, 4)
        if temporal == "cube":
            self.n_cube = nn.LayerNorm(dim)
            self.ca_cube = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, q: torch.Tensor, mem: torch.Tensor, mem_pos: torch.Tensor, tpos: torch.Tensor,
                txt: torch.Tensor, txt_pad: torch.Tensor) -> torch.Tensor:
        """q: (B, T, Q, D); mem: (B·T, S, D); mem_pos: (S, D); tpos: (T, D); txt: (B, L, D); txt_pad: (B, L)."""
        b, t, nq, d = q.shape
        if self.temporal == "cube":
            q = self._cube(q, mem, mem_pos, tpos)
        x = q.reshape(b * t, nq, d)
        x = x + self.ca_frame(self.n_frame(x), mem + mem_pos, mem, need_weights=False)[0]
        if self.temporal == "attention":
            x = x.reshape(b, t, nq, d).permute(0, 2, 1, 3).reshape(b * nq, t, d)
            h = self.n_time(x) + tpos
            x = x + self.sa_time(h, h, self.n_time(x), need_weights=False)[0]
            x = x.reshape(b, nq, t, d).permute(0, 2, 1, 3).reshape(b * t, nq, d)
        h = self.n_query(x)
        x = x + self.sa_query(h, h, h, need_weights=False)[0]
        x = x.reshape(b, t * nq, d)
        x = x + self.ca_text(self.n_text(x), txt, txt, key_padding_mask=txt_pad, need_weights=False)[0]
        x = x + self.ffn(self.n_ffn(x))
        return x.reshape(b, t, nq, d)

    def _cube(self, q: torch.Tensor, mem: torch.Tensor, mem_pos: torch.Tensor, tpos: torch.Tensor) -> torch.Tensor:
        """Cube step: q (B, T, Q, D) instances (frame position added) attend to all ``T·S`` tokens of the clip."""
        b, t, nq, d = q.shape
        s = mem.shape[1]
        cube = mem.reshape(b, t * s, d)
        cube_pos = (tpos[:, None, :] + mem_pos[None]).reshape(t * s, d)
        h = (self.n_cube(q) + tpos[None, :, None, :]).reshape(b, t * nq, d)
        return q + self.ca_cube(h, cube + cube_pos, cube, need_weights=False)[0].reshape(b, t, nq, d)


def build_clip(spec: dict[str, Any], pretrained_path: str | None = None) -> nn.Module:
    """Build the open_clip CLIP backbone of a config.

    Args:
        spec: the config's ``clip`` field (see :class:`ClipRvosConfig`).
        pretrained_path: local file with the open_clip pretrained weights for ``source == "open_clip"``;
            None builds it with random init (tests, or a trained checkpoint that carries the backbone).

    Returns:
        An ``open_clip.model.CLIP`` whose ``visual`` is a ``TimmModel`` (ConvNeXt trunk).
    """
    import open_clip
    from open_clip.model import CLIP

    source = spec.get("source")
    if source == "config":
        return CLIP(embed_dim=spec["embed_dim"], vision_cfg=spec["vision_cfg"], text_cfg=spec["text_cfg"])
    if source == "open_clip":
        model = open_clip.create_model(spec["model"], pretrained=pretrained_path, device="cpu")
        return model
    raise ValueError(f"clip spec 'source' must be 'config' or 'open_clip', got {source!r}")


class ClipRvosNet(nn.Module):
    """The clip-rvos network.

    ``forward(frames, tokens, flow=None, instance_masks=None)``:
        frames: ``(B, T, 3, H, W)`` float32, CLIP-normalised RGB; H and W multiples of 32.
        tokens: ``(B, L)`` int64 ids from :func:`make_text_tokenizer` (open_clip BPE: 0 = padding, EOT =
            highest id in the row; a pretrained RoBERTa: its own ids, first ``<s>``).
        flow: ``(B, T, 2, H, W)`` float32 optical flow (pixels / ``FLOW_SCALE``), required with ``motion_input``.
        instance_masks: optional ``(B, K, T, H/4, W/4)`` float in [0, 1], instance masks from an external
            VIS model for ``query_init == "pooled_mask"`` (an all-zero instance is skipped); None → the
            network's own proposals.

    Returns a dict:
        ``pred_masks``: ``(B, Q, T, H/4, W/4)`` mask logits;
        ``pred_logits``: ``(B, Q)`` referring-score logits (sigmoid → probability the query is a referred object);
        ``dense``: ``(B, T, H/4, W/4)`` logits of the dense referring map (union of all referred objects);
        ``aux``: list of ``{"pred_masks", "pred_logits"}`` from earlier decoder layers (deep supervision);
        ``proposal_masks`` (``query_init == "pooled_mask"`` without ``instance_masks`` only):
        ``(B, Q, T, H/4, W/4)`` logits of the class-agnostic instance proposals that were pooled.
    """

    def __init__(self, cfg: ClipRvosConfig, clip_model: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.clip = clip_model
        d = cfg.hidden_dim
        trunk = self.clip.visual.trunk
        chans = [fi["num_chs"] for fi in trunk.feature_info][-4:]
        self.roberta = RobertaTextEncoder.from_spec(cfg.roberta, cfg.context_length) if cfg.text_encoder == "roberta" else None
        if self.roberta is not None:
            _drop_clip_text_tower(self.clip)
            text_width = embed_dim = self.roberta.width
        else:
            text_width = self.clip.token_embedding.weight.shape[1]
            embed_dim = self.clip.text_projection.shape[1] if isinstance(self.clip.text_projection, torch.Tensor) else self.clip.text_projection.out_features
        self.lateral = nn.ModuleList([nn.Sequential(nn.Conv2d(c, d, 1), nn.GroupNorm(8, d)) for c in chans])
        self.text_proj = nn.Linear(text_width, d)
        self.sent_proj = nn.Linear(embed_dim, d)
        self.fusion = nn.ModuleList([VisionLanguageFusion(d, cfg.nheads) for _ in range(3)])  # strides 8, 16, 32
        self.fusion_t2v = nn.ModuleList([TextFromVision(d, cfg.nheads) for _ in range(3)]) if cfg.fusion == "bidirectional" else None
        self._build_temporal(cfg)
        self.motion_fusion = VisionLanguageFusion(d, cfg.nheads, zero_init=True) if cfg.motion_fusion else None
        self.motion_stem = MotionStem(d) if cfg.motion_input else None
        self.fpn = nn.ModuleList([nn.Sequential(nn.Conv2d(d, d, 3, padding=1), nn.GroupNorm(8, d), nn.GELU()) for _ in range(3)])
        self.mask_feat = nn.Conv2d(d, d, 1)
        self.query_embed = nn.Embedding(cfg.num_queries, d)
        self.query_from_text = nn.Linear(d, d)
        self.layers = nn.ModuleList([DecoderLayer(d, cfg.nheads, cfg.temporal) for _ in range(cfg.dec_layers)])
        self.out_norm = nn.LayerNorm(d)
        self.mask_mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.score_head = nn.Linear(d, 1)
        self.dyn_filter = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d + 1))
        self._build_instance_queries(cfg)
        if cfg.freeze_backbone:
            for p in self._backbones():
                for prm in p.parameters():
                    prm.requires_grad_(False)

    def _build_temporal(self, cfg: ClipRvosConfig) -> None:
        """Encoder-side temporal modules: ``st_block`` + ``st_extra`` (``"attention"``) or ``lmdf`` (``"dynamic_filter"``)."""
        d = cfg.hidden_dim
        self.st_block = self.st_extra = self.lmdf = None
        if cfg.temporal == "attention":
            self.st_block = SpatioTemporalBlock(d, cfg.nheads)
            if cfg.st_layers < 1:
                raise ValueError(f"clip-rvos config {cfg.name!r}: st_layers must be >= 1, got {cfg.st_layers}")
            self.st_extra = nn.ModuleList([SpatioTemporalBlock(d, cfg.nheads, zero_init=True) for _ in range(cfg.st_layers - 1)])
        elif cfg.temporal == "dynamic_filter":
            self.lmdf = nn.ModuleList([LanguageGuidedDynamicFilter(d, cfg.nheads) for _ in range(3)])  # strides 8, 16, 32

    def _build_instance_queries(self, cfg: ClipRvosConfig) -> None:
        """Modules of ``query_init == "pooled_mask"``: proposal kernels, instance projection, the Eq. 4 block."""
        d = cfg.hidden_dim
        self.proposal_embed = self.proposal_mlp = self.instance_proj = self.instance_block = None
        if cfg.query_init == "pooled_mask":
            self.proposal_embed = nn.Embedding(cfg.num_queries, d)
            self.proposal_mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
            self.instance_proj = nn.Linear(d, d)
            self.instance_block = InstanceQueryBlock(d, cfg.nheads)

    def _backbones(self) -> list[nn.Module]:
        return [self.clip] + ([self.roberta] if self.roberta is not None else [])

    def train(self, mode: bool = True) -> "ClipRvosNet":
        super().train(mode)
        if self.cfg.freeze_backbone:
            for m in self._backbones():
                m.eval()
        return self

    # --- backbone -----------------------------------------------------------------------------
    def encode_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (B, L) → token features (B, L, D), padding mask (B, L) bool, sentence feature (B, D)."""
        if self.roberta is not None:
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze_backbone):
                x, pad, pooled = self.roberta(tokens)
            return self.text_proj(x), pad, self.sent_proj(pooled)
        from open_clip.transformer import text_global_pool

        c = self.clip
        n = tokens.shape[1]
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze_backbone):
            x = c.token_embedding(tokens) + c.positional_embedding[:n]
            mask = c.attn_mask[:n, :n] if c.attn_mask is not None else None
            x = c.transformer(x, attn_mask=mask)
            x = c.ln_final(x)
            pooled = text_global_pool(x, tokens, c.text_pool_type)
            pooled = c.text_projection(pooled) if isinstance(c.text_projection, nn.Linear) else pooled @ c.text_projection
        eot = tokens.argmax(dim=-1)
        pad = torch.arange(n, device=tokens.device)[None, :] > eot[:, None]
        return self.text_proj(x), pad, self.sent_proj(pooled)

    def encode_frames(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (N, 3, H, W) → 4 trunk feature maps at strides 4, 8, 16, 32, projected to D channels."""
        trunk = self.clip.visual.trunk
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.freeze_backbone):
            h = trunk.stem(images)
            feats = []
            for stage in trunk.stages:
                h = stage(h)
                feats.append(h)
        return [lat(f) for lat, f in zip(self.lateral, feats[-4:])]

    # --- forward ------------------------------------------------------------------------------
    def _check_inputs(self, frames: torch.Tensor, tokens: torch.Tensor, flow: torch.Tensor | None,
                      instance_masks: torch.Tensor | None) -> None:
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be (B, T, 3, H, W), got {tuple(frames.shape)}")
        b, t, _, hh, ww = frames.shape
        if self.motion_stem is not None and (flow is None or tuple(flow.shape) != (b, t, 2, hh, ww)):
            raise ValueError(f"config {self.cfg.name!r} has motion_input: pass flow (B, T, 2, H, W) = "
                             f"{(b, t, 2, hh, ww)}, got {None if flow is None else tuple(flow.shape)}")
        if hh % 32 or ww % 32:
            raise ValueError(f"frame height/width must be multiples of 32, got {hh}x{ww}")
        if tokens.shape[0] != b:
            raise ValueError(f"tokens batch {tokens.shape[0]} != frames batch {b}")
        if instance_masks is not None:
            if self.cfg.query_init != "pooled_mask":
                raise ValueError(f"config {self.cfg.name!r}: instance_masks need query_init 'pooled_mask', "
                                 f"not {self.cfg.query_init!r}")
            if instance_masks.ndim != 5 or tuple(instance_masks.shape[:1] + instance_masks.shape[2:]) != (b, t, hh // 4, ww // 4):
                raise ValueError(f"instance_masks must be (B, K, T, H/4, W/4) with (B, T, H/4, W/4) = "
                                 f"{(b, t, hh // 4, ww // 4)}, got {tuple(instance_masks.shape)}")
            if instance_masks.numel() and not (0.0 <= float(instance_masks.min()) and float(instance_masks.max()) <= 1.0):
                raise ValueError(f"instance_masks must lie in [0, 1], got [{float(instance_masks.min())}, "
                                 f"{float(instance_masks.max())}]")

    def forward(self, frames: torch.Tensor, tokens: torch.Tensor, flow: torch.Tensor | None = None,
                instance_masks: torch.Tensor | None = None) -> dict[str, Any]:
        self._check_inputs(frames, tokens, flow, instance_masks)
        b, t, _, hh, ww = frames.shape
        dev = frames.device
        d = self.cfg.hidden_dim
        txt, pad, sent = self.encode_text(tokens)
        feats = self.encode_frames(frames.reshape(b * t, 3, hh, ww))
        fused, txt = self._fuse(feats, txt, pad, sent, t)
        if self.motion_stem is not None:
            m8, m16 = self.motion_stem(flow.reshape(b * t, 2, hh, ww))
            fused[1] = fused[1] + m8
            fused[2] = fused[2] + m16
        if self.lmdf is not None:
            for lvl in range(1, 4):
                f = fused[lvl]
                fused[lvl] = self.lmdf[lvl - 1](f.reshape(b, t, *f.shape[1:]), sent).reshape(f.shape)
        # FPN top-down to stride 4, with joint spatio-temporal attention at stride 16
        # (stride 16 keeps small objects' displacements visible; T·h·w tokens of all sampled frames)
        p5 = fused[3]
        pyr = [p5]
        x = p5
        for i, lvl in enumerate((2, 1, 0)):
            lat = fused[lvl]
            x = F.interpolate(x, size=lat.shape[-2:], mode="nearest") + lat
            x = self.fpn[i](x)
            if lvl == 2:
                x = self._clip_tokens(x, b, t, txt, pad, sent)
            pyr.append(x)
        mask_features = self.mask_feat(x)  # (B·T, D, H/4, W/4)
        mf = mask_features.reshape(b, t, d, *mask_features.shape[-2:])
        # language-guided dynamic filter (seed 004, LMDF): a sentence-generated 1x1 kernel over the
        # mask features gives a dense referring map shared by all queries
        kern = self.dyn_filter(sent)  # (B, D + 1)
        dense = torch.einsum("bd,btdhw->bthw", kern[:, :d], mf) + kern[:, d, None, None, None]
        # memories for the decoder: strides 32, 16, 8 (cycled)
        mems = []
        for m in pyr[:3]:
            mems.append((m.flatten(2).transpose(1, 2), sine_pos_2d(m.shape[-2], m.shape[-1], d, dev)))
        tpos = sine_pos_1d(t, d, dev)
        extra: dict[str, Any] = {}
        if self.instance_block is None:
            q = self.query_embed.weight[None, None] + self.query_from_text(sent)[:, None, None, :] + tpos[None, :, None, :]
        else:
            q0, extra = self._pooled_mask_queries(sent, mf, tpos, instance_masks)
            q = q0[:, None] + tpos[None, :, None, :]
        q = q.expand(b, t, -1, -1).contiguous()
        outs = []
        for i, layer in enumerate(self.layers):
            mem, mpos = mems[i % 3]
            q = layer(q, mem, mpos, tpos, txt, pad)
            outs.append(self._predict(q, mf, dense))
        final = outs[-1]
        return {"pred_masks": final["pred_masks"], "pred_logits": final["pred_logits"], "dense": dense, "aux": outs[:-1], **extra}

    def _fuse(self, feats: list[torch.Tensor], txt: torch.Tensor, pad: torch.Tensor, sent: torch.Tensor,
              t: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Vision–language fusion at strides 8, 16, 32 → (fused maps [(B·T, D, h, w)] × 4, text (B, L, D)).
        With bidirectional fusion the returned text is the vision-guided text averaged over the T frames."""
        d = self.cfg.hidden_dim
        # text per frame (B·T, ...)
        txt_bt = txt.repeat_interleave(t, dim=0)
        pad_bt = pad.repeat_interleave(t, dim=0)
        sent_bt = sent.repeat_interleave(t, dim=0)
        fused = [feats[0]]
        for lvl in range(1, 4):
            f = feats[lvl]
            n, _, h, w = f.shape
            tok = f.flatten(2).transpose(1, 2)
            pos = sine_pos_2d(h, w, d, f.device)
            guided = self.fusion_t2v[lvl - 1](txt_bt, tok, pos) if self.fusion_t2v is not None else txt_bt
            tok = self.fusion[lvl - 1](tok, pos, txt_bt, pad_bt, sent_bt)
            txt_bt = guided
            fused.append(tok.transpose(1, 2).reshape(n, d, h, w))
        if self.fusion_t2v is not None:
            txt = txt_bt.reshape(-1, t, *txt_bt.shape[1:]).mean(dim=1)
        return fused, txt

    def _clip_tokens(self, x: torch.Tensor, b: int, t: int, txt: torch.Tensor, pad: torch.Tensor,
                     sent: torch.Tensor) -> torch.Tensor:
        """Clip-level step on the stride-16 map ``(B·T, D, h, w)``: joint spatio-temporal attention
        (``temporal == "attention"``), then ``motion_fusion``; identity when neither is configured."""
        if self.st_block is None and self.motion_fusion is None:
            return x
        d = self.cfg.hidden_dim
        _, _, h4_, w4_ = x.shape
        tok = x.reshape(b, t, d, h4_ * w4_).permute(0, 1, 3, 2).reshape(b, t * h4_ * w4_, d)
        st_pos = (sine_pos_1d(t, d, x.device)[:, None, :] + sine_pos_2d(h4_, w4_, d, x.device)[None]).reshape(-1, d)
        if self.st_block is not None:
            tok = self.st_block(tok, st_pos)
            for blk in self.st_extra:
                tok = blk(tok, st_pos)
        if self.motion_fusion is not None:
            tok = self.motion_fusion(tok, st_pos, txt, pad, sent)
        return tok.reshape(b, t, h4_ * w4_, d).permute(0, 1, 3, 2).reshape(b * t, d, h4_, w4_)

    def _pooled_mask_queries(self, sent: torch.Tensor, mf: torch.Tensor, tpos: torch.Tensor,
                             instance_masks: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, Any]]:
        """Seed 003 query initialisation → queries (B, Q, D) and extra outputs (``proposal_masks``).

        Instance masks (given, or the network's proposals as sigmoid probabilities) are pooled over
        space into per-frame instance features (masked mean of the mask features, then a projection),
        and folded into the text-initialised queries one instance at a time (Q_i = Block(Q_{i-1}, F_i))."""
        extra: dict[str, Any] = {}
        if instance_masks is None:
            kern = self.proposal_mlp(self.proposal_embed.weight)  # (Q, D)
            logits = torch.einsum("qd,btdhw->bqthw", kern, mf)
            extra["proposal_masks"] = logits
            masks = logits.sigmoid()
        else:
            masks = instance_masks.to(mf.dtype)
        area = masks.sum(dim=(-1, -2))  # (B, K, T)
        feats = torch.einsum("bkthw,btdhw->bktd", masks, mf) / (area[..., None] + 1e-6)
        feats = self.instance_proj(feats)
        present = area.sum(dim=-1) > 0  # (B, K)
        q = self.query_embed.weight[None] + self.query_from_text(sent)[:, None, :]  # (B, Q, D)
        for k in range(feats.shape[1]):
            q = torch.where(present[:, k, None, None], self.instance_block(q, feats[:, k], tpos), q)
        return q, extra

    def _predict(self, q: torch.Tensor, mf: torch.Tensor, dense: torch.Tensor) -> dict[str, torch.Tensor]:
        qn = self.out_norm(q)  # (B, T, Q, D)
        emb = self.mask_mlp(qn)
        # query masks refine the dense referring map: queries only have to split it into objects
        masks = torch.einsum("btqd,btdhw->bqthw", emb, mf) + dense[:, None]
        scores = self.score_head(qn.mean(dim=1)).squeeze(-1)
        return {"pred_masks": masks, "pred_logits": scores}
