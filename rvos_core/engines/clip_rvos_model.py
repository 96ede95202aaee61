"""The ``clip-rvos`` network: a CLIP (open_clip ConvNeXt) backbone with cross-modal fusion,
spatio-temporal attention and text-initialised video queries.

Design after seed 000 (3rd place, MeViS track, CVPR 2024 PVUW): a convolutional CLIP backbone
(open_clip ConvNeXt) gives spatially aligned multi-scale image features and text token features;
vision–language fusion is applied at several scales; the video queries are initialised from the
sentence embedding. Temporal modelling: joint spatio-temporal self-attention on the coarsest
(stride-32) features of all sampled frames, and temporal self-attention between the per-frame
instances of every query in the decoder. Masks follow the Mask2Former-style dot product between
query embeddings and stride-4 mask features.

Shapes: ``B`` clips, ``T`` sampled frames, ``Q`` queries, ``L`` text tokens, ``D`` hidden width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ClipRvosConfig:
    """Architecture + preprocessing of one clip-rvos model (loaded from ``rvos_core/configs/<name>.json``).

    Attributes:
        name: model name, e.g. ``"clip-rvos-tiny"``.
        clip: backbone spec. Either ``{"source": "config", "embed_dim", "vision_cfg", "text_cfg"}``
            (an open_clip CLIP built from this architecture, random init) or
            ``{"source": "open_clip", "model": "convnext_large_d_320", "pretrained": "<tag>", "weight": "<weights.py name>"}``.
        freeze_backbone: keep the CLIP weights frozen (no gradients, eval mode).
        input_size: short side, in pixels, that frames are resized to (rounded to a multiple of 32).
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
    extra: dict[str, Any] = field(default_factory=dict)

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


class DecoderLayer(nn.Module):
    """Per-frame query instances: frame cross-attention → temporal self-attention (per query, over T)
    → query self-attention (per frame) → text cross-attention → FFN (pre-norm residuals)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.n_frame = nn.LayerNorm(dim)
        self.ca_frame = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.n_time = nn.LayerNorm(dim)
        self.sa_time = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.n_query = nn.LayerNorm(dim)
        self.sa_query = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.n_text = nn.LayerNorm(dim)
        self.ca_text = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.n_ffn = nn.LayerNorm(dim)
        self.ffn = FFN(dim, 4)

    def forward(self, q: torch.Tensor, mem: torch.Tensor, mem_pos: torch.Tensor, tpos: torch.Tensor,
                txt: torch.Tensor, txt_pad: torch.Tensor) -> torch.Tensor:
        """q: (B, T, Q, D); mem: (B·T, S, D); mem_pos: (S, D); tpos: (T, D); txt: (B, L, D); txt_pad: (B, L)."""
        b, t, nq, d = q.shape
        x = q.reshape(b * t, nq, d)
        x = x + self.ca_frame(self.n_frame(x), mem + mem_pos, mem, need_weights=False)[0]
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

    ``forward(frames, tokens)``:
        frames: ``(B, T, 3, H, W)`` float32, CLIP-normalised RGB; H and W multiples of 32.
        tokens: ``(B, L)`` int64 open_clip BPE token ids (0 = padding, EOT = highest id in the row).

    Returns a dict:
        ``pred_masks``: ``(B, Q, T, H/4, W/4)`` mask logits;
        ``pred_logits``: ``(B, Q)`` referring-score logits (sigmoid → probability the query is a referred object);
        ``dense``: ``(B, T, H/4, W/4)`` logits of the dense referring map (union of all referred objects);
        ``aux``: list of ``{"pred_masks", "pred_logits"}`` from earlier decoder layers (deep supervision).
    """

    def __init__(self, cfg: ClipRvosConfig, clip_model: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.clip = clip_model
        d = cfg.hidden_dim
        trunk = self.clip.visual.trunk
        chans = [fi["num_chs"] for fi in trunk.feature_info][-4:]
        text_width = self.clip.token_embedding.weight.shape[1]
        embed_dim = self.clip.text_projection.shape[1] if isinstance(self.clip.text_projection, torch.Tensor) else self.clip.text_projection.out_features
        self.lateral = nn.ModuleList([nn.Sequential(nn.Conv2d(c, d, 1), nn.GroupNorm(8, d)) for c in chans])
        self.text_proj = nn.Linear(text_width, d)
        self.sent_proj = nn.Linear(embed_dim, d)
        self.fusion = nn.ModuleList([VisionLanguageFusion(d, cfg.nheads) for _ in range(3)])  # strides 8, 16, 32
        self.st_block = SpatioTemporalBlock(d, cfg.nheads)
        if cfg.st_layers < 1:
            raise ValueError(f"clip-rvos config {cfg.name!r}: st_layers must be >= 1, got {cfg.st_layers}")
        self.st_extra = nn.ModuleList([SpatioTemporalBlock(d, cfg.nheads, zero_init=True) for _ in range(cfg.st_layers - 1)])
        self.motion_fusion = VisionLanguageFusion(d, cfg.nheads, zero_init=True) if cfg.motion_fusion else None
        self.motion_stem = MotionStem(d) if cfg.motion_input else None
        self.fpn = nn.ModuleList([nn.Sequential(nn.Conv2d(d, d, 3, padding=1), nn.GroupNorm(8, d), nn.GELU()) for _ in range(3)])
        self.mask_feat = nn.Conv2d(d, d, 1)
        self.query_embed = nn.Embedding(cfg.num_queries, d)
        self.query_from_text = nn.Linear(d, d)
        self.layers = nn.ModuleList([DecoderLayer(d, cfg.nheads) for _ in range(cfg.dec_layers)])
        self.out_norm = nn.LayerNorm(d)
        self.mask_mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.score_head = nn.Linear(d, 1)
        self.dyn_filter = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d + 1))
        if cfg.freeze_backbone:
            for p in self.clip.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "ClipRvosNet":
        super().train(mode)
        if self.cfg.freeze_backbone:
            self.clip.eval()
        return self

    # --- backbone -----------------------------------------------------------------------------
    def encode_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """tokens (B, L) → token features (B, L, D), padding mask (B, L) bool, sentence feature (B, D)."""
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
    def forward(self, frames: torch.Tensor, tokens: torch.Tensor, flow: torch.Tensor | None = None) -> dict[str, Any]:
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
        dev = frames.device
        d = self.cfg.hidden_dim
        txt, pad, sent = self.encode_text(tokens)
        feats = self.encode_frames(frames.reshape(b * t, 3, hh, ww))
        # text per frame (B·T, ...)
        txt_bt = txt.repeat_interleave(t, dim=0)
        pad_bt = pad.repeat_interleave(t, dim=0)
        sent_bt = sent.repeat_interleave(t, dim=0)
        fused = [feats[0]]
        for lvl in range(1, 4):
            f = feats[lvl]
            n, _, h, w = f.shape
            tok = f.flatten(2).transpose(1, 2)
            tok = self.fusion[lvl - 1](tok, sine_pos_2d(h, w, d, dev), txt_bt, pad_bt, sent_bt)
            fused.append(tok.transpose(1, 2).reshape(n, d, h, w))
        if self.motion_stem is not None:
            m8, m16 = self.motion_stem(flow.reshape(b * t, 2, hh, ww))
            fused[1] = fused[1] + m8
            fused[2] = fused[2] + m16
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
                _, _, h4_, w4_ = x.shape
                tok = x.reshape(b, t, d, h4_ * w4_).permute(0, 1, 3, 2).reshape(b, t * h4_ * w4_, d)
                st_pos = (sine_pos_1d(t, d, dev)[:, None, :] + sine_pos_2d(h4_, w4_, d, dev)[None]).reshape(-1, d)
                tok = self.st_block(tok, st_pos)
                for blk in self.st_extra:
                    tok = blk(tok, st_pos)
                if self.motion_fusion is not None:
                    tok = self.motion_fusion(tok, st_pos, txt, pad, sent)
                x = tok.reshape(b, t, h4_ * w4_, d).permute(0, 1, 3, 2).reshape(b * t, d, h4_, w4_)
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
        q = self.query_embed.weight[None, None] + self.query_from_text(sent)[:, None, None, :] + tpos[None, :, None, :]
        q = q.expand(b, t, -1, -1).contiguous()
        outs = []
        for i, layer in enumerate(self.layers):
            mem, mpos = mems[i % 3]
            q = layer(q, mem, mpos, tpos, txt, pad)
            outs.append(self._predict(q, mf, dense))
        final = outs[-1]
        return {"pred_masks": final["pred_masks"], "pred_logits": final["pred_logits"], "dense": dense, "aux": outs[:-1]}

    def _predict(self, q: torch.Tensor, mf: torch.Tensor, dense: torch.Tensor) -> dict[str, torch.Tensor]:
        qn = self.out_norm(q)  # (B, T, Q, D)
        emb = self.mask_mlp(qn)
        # query masks refine the dense referring map: queries only have to split it into objects
        masks = torch.einsum("btqd,btdhw->bqthw", emb, mf) + dense[:, None]
        scores = self.score_head(qn.mean(dim=1)).squeeze(-1)
        return {"pred_masks": masks, "pred_logits": scores}
