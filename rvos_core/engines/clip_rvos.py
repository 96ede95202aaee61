"""The ``clip-rvos`` engine: config + checkpoint loading, preprocessing and whole-video inference.

The union of the referred objects on a frame is the network's dense referring map (language-guided
dynamic filter, seed 004); the selected queries split it into per-object masklets (each referred pixel
goes to the selected query with the highest mask logit), so the masklets add up exactly to the map.

Inference covers every frame with global sampling (seed 003): a clip of ``N`` frames is split into
``G = ceil(N / T)`` interleaved groups ``{j, j+G, j+2G, …}``; each group spans the whole clip, so every
forward pass sees the clip's global motion, and every frame is predicted by exactly one pass. Referred
queries (score probability ≥ ``score_threshold``; the best query if none passes) of consecutive
groups are linked into masklets by mask IoU between neighbouring frames (Hungarian matching).
"""

from __future__ import annotations

import json
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from rvos_core.engines.base import Masklet, ProgressFn, SegmentResult
from rvos_core.fileio import atomic_output_path
from rvos_core.engines.clip_rvos_model import ClipRvosConfig, ClipRvosNet, build_clip

#: Checkpoint format tag written into every checkpoint (checked on load).
CHECKPOINT_FORMAT = "rvos-workbench/clip-rvos/v1"

REPO_ROOT = Path(__file__).resolve().parents[2]


class CheckpointError(ValueError):
    """A checkpoint file is not a clip-rvos checkpoint of the expected config (names the file)."""


#: architecture fields added after the first checkpoints were written, with the value those checkpoints imply
_ARCH_DEFAULTS = {"st_layers": 1, "motion_fusion": False, "motion_input": False}


def list_configs() -> list[str]:
    """Names of the JSON model configs shipped in ``rvos_core/configs``."""
    files = resources.files("rvos_core") / "configs"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".json"))


def load_config(name_or_path: str | Path) -> ClipRvosConfig:
    """Load a config by name (``"clip-rvos-tiny"``) or from a JSON file path.

    Raises:
        ValueError: unknown name (lists the valid ones) or a malformed config.
        FileNotFoundError: a path that does not exist.
    """
    p = Path(name_or_path)
    if p.suffix == ".json":
        if not p.exists():
            raise FileNotFoundError(f"model config not found: {p}")
        text = p.read_text()
    else:
        names = list_configs()
        if str(name_or_path) not in names:
            raise ValueError(f"unknown model {name_or_path!r}; valid models: {', '.join(names)}")
        text = (resources.files("rvos_core") / "configs" / f"{name_or_path}.json").read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"model config {name_or_path}: invalid JSON ({e})") from None
    return ClipRvosConfig.from_dict(data)


def make_tokenizer(cfg: ClipRvosConfig):
    """open_clip's BPE tokenizer (vocabulary shipped inside open_clip; no download) with the config's context length."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=cfg.context_length)


def _backbone_excluded(cfg: ClipRvosConfig) -> bool:
    """Checkpoints of configs with a frozen *pretrained* backbone omit it (it comes from open_clip)."""
    return cfg.freeze_backbone and cfg.clip.get("source") == "open_clip"


def save_checkpoint(net: ClipRvosNet, path: str | Path, train_info: dict[str, Any] | None = None,
                    half: bool = True, optimizer_state: dict | None = None) -> Path:
    """Write a checkpoint atomically (temp file + rename).

    Stores ``{"format", "config", "state_dict", "train_info"}``; fp16 tensors when ``half`` (the
    demo model must stay ≤ 25 MB). The frozen pretrained backbone of an ``open_clip`` config is not
    stored (only the RVOS head is).
    """
    path = Path(path)
    sd = net.state_dict()
    if _backbone_excluded(net.cfg):
        sd = {k: v for k, v in sd.items() if not k.startswith("clip.")}
    if half:
        sd = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    payload: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "config": net.cfg.to_dict(), "state_dict": sd,
                               "train_info": train_info or {}}
    if optimizer_state is not None:
        payload["optimizer"] = optimizer_state
    with atomic_output_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict safely (``map_location="cpu"``, ``weights_only=True``) and check its format.

    Raises:
        FileNotFoundError: missing file. CheckpointError: not a clip-rvos checkpoint / unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt files
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a clip-rvos checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return ck


def build_net(cfg: ClipRvosConfig, checkpoint: str | Path | None = None, backbone_path: str | Path | None = None) -> ClipRvosNet:
    """Build the network of ``cfg`` and load weights.

    Args:
        cfg: the architecture.
        checkpoint: a clip-rvos checkpoint file, or None for random init (tests, training from scratch).
        backbone_path: local open_clip weights for ``source == "open_clip"`` configs; when None, the
            weights registry is asked (and raises with the ``download`` command when they are missing).
            Ignored for ``source == "config"``.

    Raises:
        CheckpointError: config mismatch or missing/unexpected keys (strict loading; names a few keys).
        rvos_core.weights.WeightsNotAvailable: pretrained backbone not installed.
    """
    if cfg.clip.get("source") == "open_clip" and backbone_path is None and (checkpoint is not None):
        from rvos_core.weights import require

        backbone_path = require(cfg.clip["weight"])
    clip_model = build_clip(cfg.clip, pretrained_path=str(backbone_path) if backbone_path else None)
    net = ClipRvosNet(cfg, clip_model)
    if checkpoint is not None:
        ck = read_checkpoint(checkpoint)
        ck_cfg = ck.get("config", {})
        mismatched = [k for k in ("clip", "hidden_dim", "num_queries", "dec_layers", "nheads", "st_layers", "motion_fusion", "motion_input")
                      if ck_cfg.get(k, _ARCH_DEFAULTS.get(k)) != cfg.to_dict().get(k)]
        if mismatched:
            raise CheckpointError(f"{checkpoint}: checkpoint was trained with a different config (fields {mismatched})")
        sd = {k: v.float() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
        expected = net.state_dict()
        if _backbone_excluded(cfg):
            expected = {k: v for k, v in expected.items() if not k.startswith("clip.")}
        missing = sorted(set(expected) - set(sd))
        unexpected = sorted(set(sd) - set(expected))
        if missing or unexpected:
            raise CheckpointError(f"{checkpoint}: key mismatch — missing {missing[:5]} ({len(missing)} total), "
                                  f"unexpected {unexpected[:5]} ({len(unexpected)} total)")
        bad_shape = [k for k in sd if sd[k].shape != expected[k].shape]
        if bad_shape:
            raise CheckpointError(f"{checkpoint}: shape mismatch for {bad_shape[:5]}")
        net.load_state_dict(sd, strict=not _backbone_excluded(cfg))
    return net.eval()


def resize_for_model(frame: np.ndarray, input_size: int) -> np.ndarray:
    """Resize an ``(H, W, 3)`` uint8 frame so its short side is ≈ ``input_size`` and both sides are
    multiples of 32 (aspect ratio kept up to that rounding). Returns uint8 ``(h, w, 3)``."""
    import cv2

    h, w = frame.shape[:2]
    s = input_size / min(h, w)
    nh = max(32, int(round(h * s / 32)) * 32)
    nw = max(32, int(round(w * s / 32)) * 32)
    interp = cv2.INTER_AREA if nh < h else cv2.INTER_LINEAR
    return cv2.resize(frame, (nw, nh), interpolation=interp)


def to_tensor(frames: np.ndarray, cfg: ClipRvosConfig) -> torch.Tensor:
    """``(T, h, w, 3)`` uint8 RGB → ``(T, 3, h, w)`` float32 normalised with the config's mean/std."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    return (x - mean) / std


def frame_groups(num_frames: int, group_size: int) -> list[list[int]]:
    """Interleaved global groups covering every frame once: ``G = ceil(N / T)``, group j = ``[j, j+G, …]``."""
    if num_frames <= 0 or group_size <= 0:
        raise ValueError(f"num_frames and group_size must be positive, got {num_frames}, {group_size}")
    g = -(-num_frames // group_size)
    return [list(range(j, num_frames, g)) for j in range(g)]


class ClipRvosEngine:
    """The clip-rvos RVOS engine (implements :class:`rvos_core.engines.base.Engine`).

    Args:
        cfg: model config.
        net: the built network (see :func:`build_net`).
        device: ``"cpu"`` or ``"cuda"``.
        batch_groups: how many frame groups go through the network at once.
    """

    def __init__(self, cfg: ClipRvosConfig, net: ClipRvosNet, device: str = "cpu", batch_groups: int = 2):
        self.cfg = cfg
        self.name = cfg.name
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.tokenizer = make_tokenizer(cfg)
        self.batch_groups = max(1, batch_groups)
        self._lock = threading.Lock()

    @torch.inference_mode()
    def predict_group(self, frames: np.ndarray, expression: str,
                      flow_pairs: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the network on one group of frames.

        Args:
            frames: ``(T, H, W, 3)`` uint8 RGB at original size.
            expression: the referring expression.
            flow_pairs: for ``motion_input`` configs, ``(A, B)`` two ``(T, H, W, 3)`` uint8 stacks: frame
                ``t``'s motion is the optical flow ``A[t] → B[t]`` (see :func:`rvos_core.engines.motion.successor_pairs`);
                None → ``frames`` are taken as consecutive video frames.

        Returns:
            ``(mask_logits (Q, T, h/4, w/4) float32, score_prob (Q,) float32, dense_logits (T, h/4, w/4) float32)``
            on CPU; ``dense_logits`` is the referring map of all referred objects together.
        """
        small = np.stack([resize_for_model(f, self.cfg.input_size) for f in frames])
        x = to_tensor(small, self.cfg)[None].to(self.device)
        tok = self.tokenizer([expression]).to(self.device)
        flow = None
        if self.cfg.motion_input:
            flow = torch.from_numpy(self._flow(small, flow_pairs))[None].to(self.device)
        with self._lock:
            out = self.net(x, tok, flow)
        return (out["pred_masks"][0].float().cpu(), out["pred_logits"][0].float().sigmoid().cpu(),
                out["dense"][0].float().cpu())

    def _flow(self, small: np.ndarray, flow_pairs: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        from rvos_core.engines.motion import FLOW_SCALE, clip_flow, flow_field

        if flow_pairs is None:
            return clip_flow(small)
        size = self.cfg.input_size
        return np.stack([flow_field(resize_for_model(a, size), resize_for_model(b, size))
                         for a, b in zip(*flow_pairs)]) / FLOW_SCALE

    def segment(self, video, expression: str, progress: ProgressFn | None = None) -> SegmentResult:
        """Segment ``expression`` in every frame of ``video`` (a :class:`rvos_core.video.VideoSource`).

        Returns masklets of ``(N, H, W)`` bool at the video's original size.

        Raises:
            ValueError: empty expression.
        """
        expression = (expression or "").strip()
        if not expression:
            raise ValueError("expression is empty: type what to segment, e.g. 'the dog running to the left'")
        t0 = time.perf_counter()
        meta = video.meta
        n, h, w = meta.num_frames, meta.height, meta.width
        groups = frame_groups(n, self.cfg.num_frames)
        tracks: list[dict[str, Any]] = []  # each: {"masks": (N,H,W) bool, "scores": [float], "last": {frame: mask}}
        done = 0
        for gi, idx in enumerate(groups):
            frames = np.stack([video.get_frame(i) for i in idx])
            flow_pairs = None
            if self.cfg.motion_input:
                from rvos_core.engines.motion import successor_pairs

                pairs = successor_pairs(idx, n)
                flow_pairs = (np.stack([video.get_frame(a) for a, _ in pairs]), np.stack([video.get_frame(b) for _, b in pairs]))
            logits, probs, dense = self.predict_group(frames, expression, flow_pairs)
            selected = [int(q) for q in torch.nonzero(probs >= self.cfg.score_threshold).flatten()]
            if not selected:
                selected = [int(probs.argmax())]
            # the dense referring map decides *where* the referred objects are (union); the selected
            # queries split it into objects: each referred pixel goes to the query with the highest logit
            union = (F.interpolate(dense[None], size=(h, w), mode="bilinear", align_corners=False)[0] > 0).numpy()
            up = F.interpolate(logits[selected], size=(h, w), mode="bilinear", align_corners=False)  # (S, T, H, W)
            owner = up.argmax(dim=0).numpy()
            sel_masks = np.stack([union & (owner == k) for k in range(len(selected))])
            sel_scores = probs[selected].numpy()
            keep = _suppress_duplicates(sel_masks, sel_scores)
            self._link(tracks, sel_masks[keep], [float(sel_scores[k]) for k in keep], idx, n, h, w)
            done += len(idx)
            if progress is not None:
                progress(done, n, f"clip-rvos: frames {done}/{n}")
        masklets = [Masklet(obj_id=k, masks=tr["masks"], score=float(np.mean(tr["scores"]))) for k, tr in enumerate(tracks)]
        # drop masklets that are empty everywhere (unless nothing else is left)
        nonempty = [m for m in masklets if m.masks.any()]
        if nonempty:
            masklets = [Masklet(obj_id=k, masks=m.masks, score=m.score) for k, m in enumerate(nonempty)]
        return SegmentResult(masklets=masklets, num_frames=n, height=h, width=w,
                             sampled_frames=list(range(n)), engine=self.name, seconds=time.perf_counter() - t0)

    @staticmethod
    def _link(tracks: list[dict[str, Any]], masks: np.ndarray, scores: list[float], idx: list[int], n: int, h: int, w: int) -> None:
        """Attach this group's selected masks (S, T_g, H, W) to existing tracks by IoU on neighbouring frames."""
        s = masks.shape[0]
        assignment: dict[int, int] = {}
        if tracks:
            cost = np.zeros((s, len(tracks)))
            for a in range(s):
                for b, tr in enumerate(tracks):
                    ious = []
                    for ti, f in enumerate(idx):
                        ref = _nearest_filled(tr, f)
                        if ref is not None:
                            ious.append(_iou(masks[a, ti], tr["masks"][ref]))
                    cost[a, b] = -(np.mean(ious) if ious else 0.0)
            ra, rb = linear_sum_assignment(cost)
            for a, b in zip(ra, rb):
                if -cost[a, b] > 0.1:
                    assignment[a] = b
        for a in range(s):
            if a in assignment:
                tr = tracks[assignment[a]]
            else:
                tr = {"masks": np.zeros((n, h, w), dtype=bool), "scores": [], "filled": set()}
                tracks.append(tr)
            for ti, f in enumerate(idx):
                tr["masks"][f] = masks[a, ti]
                tr["filled"].add(f)
            tr["scores"].append(scores[a])


def _nearest_filled(track: dict[str, Any], frame: int) -> int | None:
    filled = track["filled"]
    if not filled:
        return None
    return min(filled, key=lambda f: abs(f - frame))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return 1.0 if u == 0 else float(np.logical_and(a, b).sum() / u)


def _suppress_duplicates(masks: np.ndarray, scores: np.ndarray, iou_thr: float = 0.7) -> list[int]:
    """Indices (best score first) of the query masklets ``(S, T, H, W)`` to keep: drops empty ones and
    those overlapping a higher-scored one (IoU > iou_thr); keeps at least the best one."""
    order = np.argsort(-scores)
    keep: list[int] = []
    for i in order:
        if masks[i].any() and all(_iou(masks[i], masks[j]) <= iou_thr for j in keep):
            keep.append(int(i))
    return keep or [int(order[0])]


def load_clip_rvos(name_or_path: str | Path = "clip-rvos-tiny", checkpoint: str | Path | None = None,
                   device: str = "cpu", random_init: bool = False) -> ClipRvosEngine:
    """Build a clip-rvos engine.

    Args:
        name_or_path: config name or JSON path.
        checkpoint: checkpoint path; None → the config's default (``assets/clip-rvos-tiny.pt`` for the
            demo model; a weights-registry name for large models).
        device: torch device string.
        random_init: skip checkpoint loading (tests / speed benchmarks only).

    Raises:
        FileNotFoundError / rvos_core.weights.WeightsNotAvailable: the checkpoint or backbone is not installed
            (the message names the ``python -m rvos_core download`` command where one applies).
        CheckpointError: the checkpoint does not fit the config.
    """
    cfg = load_config(name_or_path)
    ck_path: Path | None = None
    if not random_init:
        ref = checkpoint if checkpoint is not None else cfg.checkpoint
        if ref is None:
            raise ValueError(f"model {cfg.name}: no checkpoint given and the config names none")
        ck_path = _resolve_checkpoint(str(ref))
    net = build_net(cfg, checkpoint=ck_path)
    return ClipRvosEngine(cfg, net, device=device)


def _resolve_checkpoint(ref: str) -> Path:
    p = Path(ref)
    if p.suffix in (".pt", ".pth", ".bin", ".ckpt") or p.is_absolute() or "/" in ref:
        full = p if p.is_absolute() else REPO_ROOT / p
        if not full.exists():
            raise FileNotFoundError(f"model checkpoint not found: {full}")
        return full
    from rvos_core.weights import require

    return require(ref)
