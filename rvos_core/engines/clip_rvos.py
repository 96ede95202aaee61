"""The ``clip-rvos`` engine: config + checkpoint loading, preprocessing and whole-video inference.

The union of the referred objects on a frame is the network's dense referring map (language-guided
dynamic filter, seed 004); the selected queries split it into per-object masklets (each referred pixel
goes to the selected query with the highest mask logit), so the masklets add up exactly to the map.

Inference covers every frame with global sampling (seed 003): a clip of ``N`` frames is split into
``G = ceil(N / T)`` interleaved groups ``{j, j+G, j+2G, …}``; each group spans the whole clip, so every
forward pass sees the clip's global motion, and every frame is predicted by exactly one pass. Referred
queries (score probability ≥ ``score_threshold``; the best query if none passes) of consecutive
groups are linked into masklets by mask IoU between neighbouring frames (Hungarian matching).

Cost (CPU; ``bench/engine_speed.py`` has the figures): every frame is decoded once, in order, and
resized to the model's input size straight away (only the small frames are kept); the optical flow of
``motion_input`` configs is computed once per frame, on the small greyscale frames; the expression is
tokenised once per call. Logits are upsampled to the original size per group; when a group selects a
single query its masklet *is* the union, so the per-pixel owner (an argmax over the selected queries'
upsampled logits) is only computed when several queries are selected.
"""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from rvos_core.engines.base import Masklet, ProgressFn, SegmentResult
from rvos_core.engines.motion import FLOW_SCALE, clip_flow, flow_field, grey_frames, successor_flow
from rvos_core.fileio import atomic_output_path
from rvos_core.engines.clip_rvos_model import ClipRvosConfig, ClipRvosNet, build_clip, make_text_tokenizer

#: Checkpoint format tag written into every checkpoint (checked on load).
CHECKPOINT_FORMAT = "rvos-workbench/clip-rvos/v1"

REPO_ROOT = Path(__file__).resolve().parents[2]


class CheckpointError(ValueError):
    """A checkpoint file is not a clip-rvos checkpoint of the expected config (names the file)."""


#: Config fields that fix the network's architecture: a checkpoint loads only into a config with the same values.
ARCH_FIELDS = ("clip", "hidden_dim", "num_queries", "dec_layers", "nheads", "st_layers", "motion_fusion", "motion_input",
               "text_encoder", "fusion", "temporal", "query_init", "roberta")
#: architecture fields added after the first checkpoints were written, with the value those checkpoints imply
#: (each equal to :class:`ClipRvosConfig`'s default, the original design)
_ARCH_DEFAULTS: dict[str, Any] = {"st_layers": 1, "motion_fusion": False, "motion_input": False, "text_encoder": "clip",
                                  "fusion": "one_way", "temporal": "attention", "query_init": "text", "roberta": {}}


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


def make_tokenizer(cfg: ClipRvosConfig) -> Callable[[str | list[str]], torch.Tensor]:
    """The tokenizer of the config's text encoder: texts → ``(B, cfg.context_length)`` int64 ids.

    Delegates to :func:`rvos_core.engines.clip_rvos_model.make_text_tokenizer`: open_clip's BPE
    (vocabulary shipped inside open_clip; no download) for the CLIP text tower and for a random-init
    RoBERTa (``roberta.source == "config"``); a pretrained RoBERTa's own BPE tokenizer, read offline
    from its folder, for ``roberta.source == "pretrained"``.

    Raises:
        rvos_core.weights.WeightsNotAvailable: the pretrained RoBERTa folder is missing or incomplete
            (the message names ``python -m rvos_core download roberta-base``).
    """
    return make_text_tokenizer(cfg)


def checkpoint_excluded_prefixes(cfg: ClipRvosConfig) -> tuple[str, ...]:
    """State-dict key prefixes that checkpoints of ``cfg`` do not store: frozen *pretrained* backbones,
    which are loaded from their own weights instead.

    ``"clip."`` for a frozen ``clip.source == "open_clip"`` backbone (from open_clip's weights);
    ``"roberta."`` for a frozen ``text_encoder == "roberta"`` with ``roberta.source == "pretrained"``
    (from the RoBERTa folder, see :func:`rvos_core.engines.clip_rvos_model.resolve_roberta_dir`).
    Random-init (``"config"``) backbones are always stored, frozen or not. Empty tuple: everything is stored.
    """
    if not cfg.freeze_backbone:
        return ()
    prefixes = []
    if cfg.clip.get("source") == "open_clip":
        prefixes.append("clip.")
    if cfg.text_encoder == "roberta" and cfg.roberta.get("source") == "pretrained":
        prefixes.append("roberta.")
    return tuple(prefixes)


def _without(sd: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """``sd`` without the keys starting with one of ``prefixes``."""
    return {k: v for k, v in sd.items() if not k.startswith(prefixes)} if prefixes else sd


def save_checkpoint(net: ClipRvosNet, path: str | Path, train_info: dict[str, Any] | None = None,
                    half: bool = True, optimizer_state: dict | None = None) -> Path:
    """Write a checkpoint atomically (temp file + rename).

    Stores ``{"format", "config", "state_dict", "train_info"}``; fp16 tensors when ``half`` (the
    demo model must stay ≤ 25 MB). Frozen pretrained backbones (an ``open_clip`` CLIP, a pretrained
    RoBERTa) are not stored (see :func:`checkpoint_excluded_prefixes`).
    """
    path = Path(path)
    sd = _without(net.state_dict(), checkpoint_excluded_prefixes(net.cfg))
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
        backbone_path: local open_clip weights for ``source == "open_clip"`` configs; when None and a
            ``checkpoint`` is given, the weights registry is asked (and raises with the ``download`` command
            when they are missing); with neither, the backbone stays randomly initialised (training from
            scratch, tests). Ignored for ``source == "config"``.

    A pretrained RoBERTa text encoder (``roberta.source == "pretrained"``) is always read from its local
    folder; a checkpoint of a config that trained it (not frozen) then overwrites it.

    Raises:
        CheckpointError: config mismatch (any of :data:`ARCH_FIELDS`; a field missing from an older
            checkpoint counts as the value in ``_ARCH_DEFAULTS``) or missing/unexpected keys (strict
            loading; names a few keys).
        rvos_core.weights.WeightsNotAvailable: pretrained backbone or RoBERTa folder not installed.
    """
    if cfg.clip.get("source") == "open_clip" and backbone_path is None and (checkpoint is not None):
        from rvos_core.weights import require

        backbone_path = require(cfg.clip["weight"])
    clip_model = build_clip(cfg.clip, pretrained_path=str(backbone_path) if backbone_path else None)
    net = ClipRvosNet(cfg, clip_model)
    if checkpoint is not None:
        ck = read_checkpoint(checkpoint)
        mismatched = _mismatched_fields(ck.get("config", {}), cfg)
        if mismatched:
            raise CheckpointError(f"{checkpoint}: checkpoint was trained with a different config (fields {mismatched})")
        sd = {k: v.float() if v.is_floating_point() else v for k, v in ck["state_dict"].items()}
        excluded = checkpoint_excluded_prefixes(cfg)
        expected = _without(net.state_dict(), excluded)
        missing = sorted(set(expected) - set(sd))
        unexpected = sorted(set(sd) - set(expected))
        if missing or unexpected:
            raise CheckpointError(f"{checkpoint}: key mismatch — missing {missing[:5]} ({len(missing)} total), "
                                  f"unexpected {unexpected[:5]} ({len(unexpected)} total)")
        bad_shape = [k for k in sd if sd[k].shape != expected[k].shape]
        if bad_shape:
            raise CheckpointError(f"{checkpoint}: shape mismatch for {bad_shape[:5]}")
        net.load_state_dict(sd, strict=not excluded)
    return net.eval()


def _mismatched_fields(ck_cfg: dict[str, Any], cfg: ClipRvosConfig) -> list[str]:
    """The :data:`ARCH_FIELDS` whose value in a checkpoint's config (``_ARCH_DEFAULTS`` where an older
    checkpoint lacks the field) differs from ``cfg``'s."""
    current = cfg.to_dict()
    return [k for k in ARCH_FIELDS if ck_cfg.get(k, _ARCH_DEFAULTS.get(k)) != current.get(k)]


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


class StageTimer:
    """Wall and process-CPU seconds spent per named stage of a run, summed over calls (for benchmarks).

    ``with timer.stage("forward"): …`` adds the block's ``time.perf_counter()`` difference to
    ``wall["forward"]`` and its ``time.process_time()`` difference (CPU of *all* the process's threads,
    decoder and OpenCV threads included) to ``cpu["forward"]``; ``calls`` counts the blocks. Seconds.
    Stages of :meth:`ClipRvosEngine.segment`: ``decode``, ``resize``, ``flow``, ``text`` (tokenising),
    ``forward`` (the network, its text encoder included), ``upsample`` (logits → masks at the original
    size), ``link`` (duplicate suppression and masklet linking).
    """

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the ``with`` block under ``name`` (nested stages are each timed in full)."""
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - w0
            self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c0
            self.calls[name] = self.calls.get(name, 0) + 1


def read_model_frames(video, input_size: int, timer: StageTimer | None = None,
                      progress: ProgressFn | None = None) -> np.ndarray:
    """Decode every frame of ``video`` once, in order, and resize it to the model's input size.

    Uses ``video.iter_frames()`` (sequential runs: one seek per run) when the video has it, else
    ``video.get_frame(i)`` for each ``i``. Only the resized frames are kept.

    Args:
        video: a :class:`rvos_core.video.VideoSource` (or any object with ``meta.num_frames`` and
            ``get_frame``).
        input_size: the model's short side in pixels (see :func:`resize_for_model`).
        timer: adds the ``decode`` and ``resize`` stages when given.
        progress: called as ``progress(0, N, "decoding i/N")`` every 32 frames (``done`` stays 0:
            no frame is segmented yet).

    Returns:
        ``(N, h, w, 3)`` uint8 RGB, ``h`` and ``w`` multiples of 32.

    Raises:
        rvos_core.video.VideoError: a frame cannot be decoded. ValueError: the video yields fewer
            frames than ``meta.num_frames``.
    """
    timer = timer or StageTimer()
    n = int(video.meta.num_frames)
    if n < 1:
        raise ValueError(f"{getattr(video, 'path', 'video')}: has {n} frames; expected at least 1")
    source = video.iter_frames() if hasattr(video, "iter_frames") else (video.get_frame(i) for i in range(n))
    small: np.ndarray | None = None
    for i in range(n):
        with timer.stage("decode"):
            frame = next(source, None)
        if frame is None:
            raise ValueError(f"{getattr(video, 'path', 'video')}: ended after {i} frames; its metadata says {n}")
        with timer.stage("resize"):
            resized = resize_for_model(frame, input_size)
        if small is None:
            small = np.empty((n, *resized.shape), dtype=np.uint8)
        small[i] = resized
        if progress is not None and (i + 1) % 32 == 0 and i + 1 < n:
            progress(0, n, f"clip-rvos: decoding {i + 1}/{n}")
    return small


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

    Frame groups go through the network one at a time: batching groups of equal length would save
    ~15 % of the network's CPU time but changes the logits by ~1e-5 (oneDNN picks other kernels for
    a larger batch), so masks would no longer be bit-identical to one-group passes.
    """

    def __init__(self, cfg: ClipRvosConfig, net: ClipRvosNet, device: str = "cpu"):
        self.cfg = cfg
        self.name = cfg.name
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.tokenizer = make_tokenizer(cfg)
        self._lock = threading.Lock()

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
        flow = None
        if self.cfg.motion_input:
            flow = clip_flow(small) if flow_pairs is None else self._pair_flow(flow_pairs)
        return self._forward(small, self._tokens(expression), flow)

    def _tokens(self, expression: str) -> torch.Tensor:
        """``(1, L)`` int64 token ids of ``expression`` on the engine's device."""
        return self.tokenizer([expression]).to(self.device)

    def _pair_flow(self, flow_pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        size = self.cfg.input_size
        return np.stack([flow_field(resize_for_model(a, size), resize_for_model(b, size))
                         for a, b in zip(*flow_pairs)]) / FLOW_SCALE

    @torch.inference_mode()
    def _forward(self, small: np.ndarray, tokens: torch.Tensor,
                 flow: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The network on one group: ``small`` ``(T, h, w, 3)`` uint8 at the model's input size, ``tokens``
        ``(1, L)``, ``flow`` ``(T, 2, h, w)`` float32 or None; returns as :meth:`predict_group`."""
        x = to_tensor(small, self.cfg)[None].to(self.device)
        motion = None if flow is None else torch.from_numpy(flow)[None].to(self.device)
        with self._lock:
            out = self.net(x, tokens, motion)
        return (out["pred_masks"][0].float().cpu(), out["pred_logits"][0].float().sigmoid().cpu(),
                out["dense"][0].float().cpu())

    def segment(self, video, expression: str, progress: ProgressFn | None = None,
                timer: StageTimer | None = None) -> SegmentResult:
        """Segment ``expression`` in every frame of ``video`` (a :class:`rvos_core.video.VideoSource`).

        Args:
            video: the clip; each frame is decoded once (see :func:`read_model_frames`).
            expression: the referring expression.
            progress: ``progress(done, N, message)`` after each frame group (``done`` frames segmented;
                0 while decoding).
            timer: collects per-stage wall/CPU seconds when given (see :class:`StageTimer`).

        Returns masklets of ``(N, H, W)`` bool at the video's original size.

        Raises:
            ValueError: empty expression.
        """
        expression = (expression or "").strip()
        if not expression:
            raise ValueError("expression is empty: type what to segment, e.g. 'the dog running to the left'")
        timer = timer or StageTimer()
        t0 = time.perf_counter()
        meta = video.meta
        n, h, w = meta.num_frames, meta.height, meta.width
        small = read_model_frames(video, self.cfg.input_size, timer, progress)
        grey = None
        if self.cfg.motion_input:
            with timer.stage("flow"):
                grey = grey_frames(small)
        with timer.stage("text"):
            tokens = self._tokens(expression)
        tracks: list[dict[str, Any]] = []  # each: {"masks": (N,H,W) bool, "scores": [float], "filled": {frame}}
        done = 0
        for idx in frame_groups(n, self.cfg.num_frames):
            masks, scores = self._segment_group(small, grey, tokens, idx, (h, w), timer)
            with timer.stage("link"):
                keep = _suppress_duplicates(masks, scores)
                self._link(tracks, masks[keep], [float(scores[k]) for k in keep], idx, n, h, w)
            done += len(idx)
            if progress is not None:
                progress(done, n, f"clip-rvos: frames {done}/{n}")
        with timer.stage("link"):
            masklets = _masklets(tracks)
        return SegmentResult(masklets=masklets, num_frames=n, height=h, width=w,
                             sampled_frames=list(range(n)), engine=self.name, seconds=time.perf_counter() - t0)

    def _segment_group(self, small: np.ndarray, grey: np.ndarray | None, tokens: torch.Tensor, idx: list[int],
                       size: tuple[int, int], timer: StageTimer) -> tuple[np.ndarray, np.ndarray]:
        """One frame group: flow, network, masks of the referred queries at the original ``size``.

        ``small`` ``(N, h, w, 3)`` uint8 and ``grey`` ``(N, h, w)`` uint8 (or None) hold every frame of
        the video; returns ``(masks (S, T, H, W) bool, scores (S,) float32)`` of the selected queries.
        """
        flow = None
        if grey is not None:
            with timer.stage("flow"):
                flow = successor_flow(grey, idx)
        with timer.stage("forward"):
            logits, probs, dense = self._forward(small[idx], tokens, flow)
        with timer.stage("upsample"):
            selected = _referred_queries(probs, self.cfg.score_threshold)
            masks = referred_masks(logits[selected], dense, size)
        return masks, probs[selected].numpy()

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


def _referred_queries(probs: torch.Tensor, threshold: float) -> list[int]:
    """Queries whose score probability ``(Q,)`` is ≥ ``threshold``; the best one if none is."""
    selected = [int(q) for q in torch.nonzero(probs >= threshold).flatten()]
    return selected or [int(probs.argmax())]


def referred_masks(logits: torch.Tensor, dense: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Masks of the selected queries of one group at the original frame size.

    The dense referring map decides *where* the referred objects are (their union: bilinear upsampling,
    ``align_corners=False``, then logit > 0); the queries split it into objects: each referred pixel
    goes to the query whose upsampled mask logit is highest (the first such query on a tie, as
    ``torch.argmax``). With one query its mask is the union, and the query logits are not upsampled.

    Args:
        logits: ``(S, T, h, w)`` float32 mask logits of the ``S ≥ 1`` selected queries.
        dense: ``(T, h, w)`` float32 dense referring-map logits.
        size: ``(H, W)`` original frame size in pixels.

    Returns:
        ``(S, T, H, W)`` bool; the masks are disjoint and their union is the referring map.
    """
    union = F.interpolate(dense[None], size=size, mode="bilinear", align_corners=False)[0] > 0
    if logits.shape[0] == 1:
        return union.numpy()[None]
    owner = _first_argmax(F.interpolate(logits, size=size, mode="bilinear", align_corners=False))
    masks = np.empty((logits.shape[0], *union.shape), dtype=bool)
    for k in range(logits.shape[0]):
        torch.logical_and(union, owner == k, out=torch.from_numpy(masks[k]))
    return masks


def _first_argmax(x: torch.Tensor) -> torch.Tensor:
    """``x.argmax(dim=0)`` for finite ``(S, …)`` float values (the first maximum wins), as uint8 (int64 when
    S > 256), by a running maximum: one elementwise pass per query instead of torch's slow dim-0 reduction."""
    best = x[0]
    owner = torch.zeros(x.shape[1:], dtype=torch.uint8 if x.shape[0] <= 256 else torch.int64)
    for k in range(1, x.shape[0]):
        owner.masked_fill_(x[k] > best, k)
        if k + 1 < x.shape[0]:
            best = torch.maximum(best, x[k])
    return owner


def _masklets(tracks: list[dict[str, Any]]) -> list[Masklet]:
    """Tracks → masklets (score: mean over the groups), without the ones empty everywhere (unless
    nothing else is left), numbered from 0."""
    masklets = [Masklet(obj_id=k, masks=tr["masks"], score=float(np.mean(tr["scores"]))) for k, tr in enumerate(tracks)]
    nonempty = [m for m in masklets if m.masks.any()]
    if nonempty:
        masklets = [Masklet(obj_id=k, masks=m.masks, score=m.score) for k, m in enumerate(nonempty)]
    return masklets


def _nearest_filled(track: dict[str, Any], frame: int) -> int | None:
    filled = track["filled"]
    if not filled:
        return None
    return min(filled, key=lambda f: abs(f - frame))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks of one shape; 1 when both are empty."""
    u = np.count_nonzero(a | b)
    return 1.0 if u == 0 else float(np.count_nonzero(a & b) / u)


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
    backbone: Path | None = None
    if not random_init:
        if cfg.clip.get("source") == "open_clip":  # the backbone first: its message names the download command
            from rvos_core.weights import require

            backbone = require(cfg.clip["weight"])
        ref = checkpoint if checkpoint is not None else cfg.checkpoint
        if ref is None:
            raise ValueError(f"model {cfg.name}: no checkpoint given and the config names none")
        ck_path = _resolve_checkpoint(str(ref), cfg.name)
    net = build_net(cfg, checkpoint=ck_path, backbone_path=backbone)
    return ClipRvosEngine(cfg, net, device=device)


def _resolve_checkpoint(ref: str, model: str = "") -> Path:
    """A checkpoint reference → a local file: a path (relative to the repository) or a weights-registry name.

    Raises:
        FileNotFoundError: no such file; or a bare name that is not in the weights registry (the message
            says how to get a head checkpoint: train one, then pass ``--checkpoint``).
        rvos_core.weights.WeightsNotAvailable: a registry name that is not downloaded yet.
    """
    p = Path(ref)
    if p.suffix in (".pt", ".pth", ".bin", ".ckpt") or p.is_absolute() or "/" in ref:
        full = p if p.is_absolute() else REPO_ROOT / p
        if not full.exists():
            raise FileNotFoundError(f"model checkpoint not found: {full}")
        return full
    from rvos_core.weights import WEIGHTS, require

    if ref not in WEIGHTS:
        what = f"model {model}: " if model else ""
        raise FileNotFoundError(
            f"{what}no trained RVOS-head checkpoint {ref!r} is installed (none is published to download): train one "
            f"with `python -m rvos_core train --model {model or 'CONFIG'} --data MEVIS_TRAIN_SPLIT --out RUN`, then "
            f"pass `--checkpoint RUN/final.pt`")
    return require(ref)
