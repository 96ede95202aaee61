"""Train loop for clip-rvos models (the ``train`` subcommand).

Data: either procedural clips generated on the fly (:mod:`rvos_core.synthetic`, infinite, never
repeating) or a MeViS-layout split (``train`` / ``valid_u``: ``JPEGImages/``, ``meta_expressions.json``,
``mask_dict.json``). Each sample is (T frames sampled from the clip — globally by default, seed 003, or
as a local window —, one expression, the masks of its referred objects). Optimiser AdamW with linear
warm-up + cosine decay, gradient clipping, Hungarian-matched set losses (:mod:`rvos_core.training.losses`). Checkpoints (with optimizer state)
are written atomically to ``OUT/last.pt`` so an interrupted run resumes; ``OUT/metrics.jsonl`` logs
every ``log_every`` steps.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from rvos_core.engines.clip_rvos import (build_net, checkpoint_excluded_prefixes, load_config, read_checkpoint,
                                        save_checkpoint, to_tensor)
from rvos_core.engines.clip_rvos_model import make_text_tokenizer
from rvos_core.training.losses import LossWeights, model_loss


#: Frame-sampling strategies of seed 003 (§3.2): global (segments over the whole clip) or local (a window).
SAMPLINGS = ("global", "local")


@dataclass
class TrainOptions:
    """Options of one training run (all recorded in the checkpoint's ``train_info``)."""

    config: str = "clip-rvos-tiny"
    out_dir: str = "runs/clip-rvos-tiny"
    data: str = "synthetic"  # "synthetic" or a MeViS split directory
    steps: int = 2000
    batch_size: int = 4
    lr: float = 4e-4
    weight_decay: float = 0.05
    warmup: int = 100
    clip_grad: float = 1.0
    seed: int = 0
    image_size: int = 128
    device: str = "cpu"
    log_every: int = 25
    ckpt_every: int = 250
    threads: int = 0
    jpeg_prob: float = 0.5
    amp: bool = False
    compile: bool = False
    init_from: str = ""  # warm start: a clip-rvos checkpoint whose weights seed a new run (see load_warm_start)
    time_budget_min: float = 0.0  # > 0: stop after this much training wall time; the LR schedule follows time
    sampling: str = "global"  # "global" (seed 003 §3.2: one frame per segment of the clip) or "local" (a window)
    synthetic_frames: int = 0  # length of generated synthetic clips; 0 = the config's T (sampling then has no effect)
    vocabulary: str = "basic"  # synthetic motion vocabulary (rvos_core.synthetic.VOCABULARIES): "basic" or "full"

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"TrainOptions.sampling must be one of {list(SAMPLINGS)}, got {self.sampling!r}")
        if self.synthetic_frames < 0:
            raise ValueError(f"TrainOptions.synthetic_frames must be >= 0, got {self.synthetic_frames}")
        from rvos_core.synthetic import VOCABULARIES

        if self.vocabulary not in VOCABULARIES:
            raise ValueError(f"TrainOptions.vocabulary must be one of {list(VOCABULARIES)}, got {self.vocabulary!r}")


Sample = tuple[np.ndarray, str, np.ndarray]  # frames (T,H,W,3) uint8, expression, object masks (K,T,H,W) bool


def sample_frames(num_frames: int, num_samples: int, sampling: str, rng: np.random.Generator) -> list[int]:
    """Training frame indices: :func:`rvos_core.video.sample_global` (``"global"``), or ``num_samples``
    consecutive frames from a uniformly random start (``"local"``, :func:`rvos_core.video.sample_local`),
    the two strategies compared in seed 003 §3.2.

    Raises:
        ValueError: unknown ``sampling`` (and bad counts, from the video helpers).
    """
    from rvos_core.video import sample_global, sample_local

    if sampling == "global":
        return sample_global(num_frames, num_samples, rng)
    if sampling == "local":
        return sample_local(num_frames, num_samples, int(rng.integers(0, max(1, num_frames - num_samples + 1))))
    raise ValueError(f"sampling must be one of {list(SAMPLINGS)}, got {sampling!r}")


def successor_flow(frame_at, idx: list[int], num_frames: int) -> np.ndarray:
    """``(T, 2, H, W)`` float32 optical flow of each sampled frame to its video successor, scaled by
    ``FLOW_SCALE`` (:mod:`rvos_core.engines.motion`); ``frame_at(i)`` gives frame ``i`` as ``(H, W, 3)`` uint8."""
    from rvos_core.engines.motion import FLOW_SCALE, flow_field, successor_pairs

    return np.stack([flow_field(frame_at(a), frame_at(b)) for a, b in successor_pairs(idx, num_frames)]) / FLOW_SCALE


def _load_resume_state(net: torch.nn.Module, state: dict[str, torch.Tensor], excluded: tuple[str, ...],
                       path: Path) -> None:
    """Load ``OUT/last.pt``'s weights into ``net``: every key must match, except the frozen pretrained
    weights that checkpoints leave out (``excluded`` prefixes, see ``checkpoint_excluded_prefixes``).

    Raises:
        ValueError: missing (not excluded) or unexpected keys, naming ``path`` and a few keys.
    """
    result = net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()},
                                 strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(excluded)]  # startswith(()) is False
    if missing or result.unexpected_keys:
        raise ValueError(f"{path}: cannot resume, the checkpoint does not fit the config: "
                         f"missing {missing[:5]}, unexpected {list(result.unexpected_keys)[:5]}")


def synthetic_samples(seed: int, num_frames: int, size: int, jpeg_prob: float, clip_frames: int = 0,
                      sampling: str = "global", with_flow: bool = False, vocabulary: str = "basic") -> Iterator[Sample]:
    """Infinite stream of on-the-fly synthetic samples (see :func:`rvos_core.synthetic.generate_video`).

    With ``clip_frames > num_frames`` each generated clip has ``clip_frames`` frames, of which
    ``num_frames`` are chosen by :func:`sample_frames` (``sampling``); with ``with_flow`` such a sample then
    carries each chosen frame's flow to its clip successor as a 4th element (see :func:`collate`).
    Otherwise clips have ``num_frames`` frames, all used (the original stream, unchanged).
    ``vocabulary`` picks the generator's motion vocabulary (``"basic"``: the first version, ``"full"``:
    the MeViS motion vocabulary; see :mod:`rvos_core.synthetic`).
    """
    import cv2

    from rvos_core.synthetic import generate_video

    rng = np.random.default_rng(seed)
    sampled = clip_frames > num_frames
    while True:
        v = generate_video(rng, num_frames=clip_frames if sampled else num_frames, size=(size, size),
                           vocabulary=vocabulary)
        if not v.expressions:
            continue
        e = v.expressions[int(rng.integers(len(v.expressions)))]
        frames = np.asarray(v.frames)
        if rng.random() < jpeg_prob:  # the held-out split is stored as JPEG: learn its artefacts too
            q = int(rng.integers(70, 96))
            frames = np.stack([cv2.imdecode(cv2.imencode(".jpg", f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])[1], cv2.IMREAD_COLOR)[..., ::-1]
                               for f in frames])
        masks = np.asarray(v.masks)[list(e.obj_ids)] if e.obj_ids else np.zeros((0,) + frames.shape[:3], dtype=bool)
        if not sampled:
            yield frames, e.text, masks
            continue
        idx = sample_frames(len(frames), num_frames, sampling, rng)
        sample = (frames[idx], e.text, masks[:, idx])
        yield (*sample, successor_flow(lambda i: frames[i], idx, len(frames))) if with_flow else sample


def mevis_samples(split_dir: str, seed: int, num_frames: int, size: int, with_flow: bool = False,
                  sampling: str = "global") -> Iterator[Sample]:
    """Infinite stream of samples from a MeViS-layout split: a random (video, expression), T frames
    sampled globally (one uniformly random frame per segment, seed 003) or as a local window
    (``sampling``, see :func:`sample_frames`), resized to ``size × size``; ``with_flow`` adds each frame's
    optical flow to its video successor (:mod:`rvos_core.engines.motion`)."""
    import cv2

    from rvos_core.formats.mevis import read_mevis_split

    split = read_mevis_split(split_dir)
    if not split.has_masks:
        raise ValueError(f"{split_dir}: split has no mask_dict.json; training needs masks (train or valid_u split)")
    pairs = [(v, e) for v in split.videos for e in split.expressions(v)]
    if not pairs:
        raise ValueError(f"{split_dir}: no expressions found in meta_expressions.json")
    rng = np.random.default_rng(seed)
    while True:
        video, exp_id = pairs[int(rng.integers(len(pairs)))]
        n = len(split.frame_names(video))
        idx = sample_frames(n, num_frames, sampling, rng)
        frames = np.stack([cv2.resize(split.frame(video, i), (size, size), interpolation=cv2.INTER_AREA) for i in idx])
        exp = split.expressions(video)[exp_id]
        objs = []
        for anno in exp.anno_id:
            per_frame = split.object_masks(anno)
            m = np.stack([cv2.resize((per_frame[i] if per_frame[i] is not None else np.zeros(frames.shape[1:3], bool)).astype(np.uint8),
                                     (size, size), interpolation=cv2.INTER_NEAREST).astype(bool) for i in idx])
            objs.append(m)
        masks = np.stack(objs) if objs else np.zeros((0, num_frames, size, size), dtype=bool)
        if not with_flow:
            yield frames, exp.exp, masks
            continue

        def small(i: int) -> np.ndarray:
            return cv2.resize(split.frame(video, i), (size, size), interpolation=cv2.INTER_AREA)

        yield frames, exp.exp, masks, successor_flow(small, idx, n)


def collate(samples: list[Sample], cfg, tokenizer) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor | None]:
    """Samples → frames ``(B, T, 3, S, S)``, tokens ``(B, L)``, per-sample targets ``(K, T, S/4, S/4)`` float
    (area-pooled), and for ``motion_input`` configs the flow ``(B, T, 2, S, S)`` (else None). A sample may carry
    its flow ``(T, 2, S, S)`` as a 4th element (globally sampled frames); otherwise its frames are consecutive."""
    x = torch.stack([to_tensor(s[0], cfg) for s in samples])
    tok = tokenizer([s[1] for s in samples])
    flow = None
    if cfg.motion_input:
        from rvos_core.engines.motion import clip_flow

        flow = torch.stack([torch.from_numpy(s[3] if len(s) > 3 else clip_flow(s[0])) for s in samples])
    h4, w4 = x.shape[-2] // 4, x.shape[-1] // 4
    targets = []
    for s in samples:
        m = s[2]
        mt = torch.from_numpy(np.ascontiguousarray(m)).float()
        if mt.shape[0]:
            mt = F.interpolate(mt, size=(h4, w4), mode="area")
        else:
            mt = torch.zeros((0, x.shape[1], h4, w4))
        targets.append(mt)
    return x, tok, targets, flow


def lr_at(step: int, opts: TrainOptions, elapsed_s: float = 0.0) -> float:
    """Linear warm-up then cosine decay to 5 % of ``opts.lr``. With a time budget, progress is the
    larger of the step fraction and the fraction of the budget already spent."""
    if step < opts.warmup:
        return opts.lr * (step + 1) / opts.warmup
    p = (step - opts.warmup) / max(1, opts.steps - opts.warmup)
    if opts.time_budget_min > 0:
        p = max(p, elapsed_s / (opts.time_budget_min * 60.0))
    return opts.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, p))))


def train(opts: TrainOptions, progress: bool = True) -> Path:
    """Run (or resume) training; returns the path of the final fp16 checkpoint ``OUT/final.pt``.

    Resumes from ``OUT/last.pt`` when it exists (same config required).
    """
    from tqdm import tqdm

    if opts.threads:
        torch.set_num_threads(opts.threads)
    torch.manual_seed(opts.seed)
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(opts.config)
    device = torch.device(opts.device)
    last = out / "last.pt"
    net = build_net(cfg, checkpoint=None, backbone_path=_backbone_for_training(cfg))
    start_step, elapsed = 0, 0.0
    params = [p for p in net.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=opts.lr, weight_decay=opts.weight_decay)
    if last.exists():
        ck = read_checkpoint(last)
        _load_resume_state(net, ck["state_dict"], checkpoint_excluded_prefixes(cfg), last)
        if "optimizer" in ck:
            optim.load_state_dict(ck["optimizer"])
        start_step = int(ck["train_info"].get("step", 0))
        elapsed = float(ck["train_info"].get("wall_seconds", 0.0))
    elif opts.init_from:
        load_warm_start(net, opts.init_from)
    net.to(device).train()
    model = torch.compile(net) if (opts.compile and device.type == "cuda") else net
    tokenizer = make_text_tokenizer(cfg)
    if opts.data == "synthetic":
        stream = synthetic_samples(opts.seed * 1000 + start_step, cfg.num_frames, opts.image_size, opts.jpeg_prob,
                                   clip_frames=opts.synthetic_frames, sampling=opts.sampling, with_flow=cfg.motion_input,
                                   vocabulary=opts.vocabulary)
    else:
        stream = mevis_samples(opts.data, opts.seed * 1000 + start_step, cfg.num_frames, opts.image_size,
                               with_flow=cfg.motion_input, sampling=opts.sampling)
    weights = LossWeights()
    log = (out / "metrics.jsonl").open("a")
    bar = tqdm(range(start_step, opts.steps), initial=start_step, total=opts.steps, disable=not progress, desc="train")
    t_last = time.perf_counter()
    running: dict[str, float] = {}
    for step in bar:
        samples = [next(stream) for _ in range(opts.batch_size)]
        x, tok, targets, flow = collate(samples, cfg, tokenizer)
        x, tok = x.to(device), tok.to(device)
        flow = flow.to(device) if flow is not None else None
        targets = [t.to(device) for t in targets]
        now_elapsed = elapsed + (time.perf_counter() - t_last)
        lr = lr_at(step, opts, now_elapsed)
        for g in optim.param_groups:
            g["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=opts.amp):
            outp = model(x, tok, flow)
        outp = _to_float(outp)
        losses = model_loss(outp, targets, weights)
        optim.zero_grad(set_to_none=True)
        losses["total"].backward()
        torch.nn.utils.clip_grad_norm_(params, opts.clip_grad)
        optim.step()
        for k, v in losses.items():
            running[k] = running.get(k, 0.0) + float(v.detach())
        if (step + 1) % opts.log_every == 0:
            now = time.perf_counter()
            elapsed += now - t_last
            t_last = now
            rec = {"step": step + 1, "lr": lr, "wall_seconds": round(elapsed, 1),
                   **{k: round(v / opts.log_every, 5) for k, v in running.items()}}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{rec['total']:.3f}", dice=f"{rec['dice']:.3f}", score=f"{rec['score']:.3f}")
            running = {}
        out_of_time = opts.time_budget_min > 0 and now_elapsed >= opts.time_budget_min * 60.0
        if (step + 1) % opts.ckpt_every == 0 or step + 1 == opts.steps or out_of_time:
            elapsed += time.perf_counter() - t_last
            t_last = time.perf_counter()
            info = {"step": step + 1, "wall_seconds": elapsed, "options": asdict(opts)}
            save_checkpoint(net, last, info, half=False, optimizer_state=optim.state_dict())
            if out_of_time:
                break
    log.close()
    ck = read_checkpoint(last)
    net.eval()
    return save_checkpoint(net, out / "final.pt", ck["train_info"], half=True)


def load_warm_start(net: torch.nn.Module, path: str | Path) -> list[str]:
    """Seed ``net`` with the weights of an earlier clip-rvos checkpoint (a second training stage).

    Every tensor of the checkpoint must exist in ``net`` with the same shape; parameters of ``net`` that the
    checkpoint lacks keep their initialisation — modules added for a second stage are zero-initialised
    residuals (``st_extra``, ``motion_fusion``), so the warm-started network computes exactly what the old
    one did until training moves them.

    Returns:
        The names of the parameters that were not in the checkpoint.

    Raises:
        CheckpointError: a checkpoint tensor has no counterpart in ``net`` or a different shape (names them).
    """
    from rvos_core.engines.clip_rvos import CheckpointError

    sd = {k: v.float() if v.is_floating_point() else v for k, v in read_checkpoint(path)["state_dict"].items()}
    own = net.state_dict()
    unexpected = sorted(k for k in sd if k not in own)
    bad_shape = sorted(k for k in sd if k in own and own[k].shape != sd[k].shape)
    if unexpected or bad_shape:
        raise CheckpointError(f"{path}: cannot warm-start this config — unexpected {unexpected[:5]} "
                              f"({len(unexpected)} total), shape mismatch {bad_shape[:5]}")
    net.load_state_dict(sd, strict=False)
    return sorted(k for k in own if k not in sd)


def _to_float(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.float()
    if isinstance(o, dict):
        return {k: _to_float(v) for k, v in o.items()}
    if isinstance(o, list):
        return [_to_float(v) for v in o]
    return o


def _backbone_for_training(cfg) -> str | None:
    if cfg.clip.get("source") != "open_clip":
        return None
    from rvos_core.weights import require

    return str(require(cfg.clip["weight"]))
