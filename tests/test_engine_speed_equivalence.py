"""The optimised clip-rvos inference path gives the same masks as the original one.

``_reference_segment`` below is the engine's ``segment`` as it was before the speed work (issue 5,
part 6), kept here as the reference: frames read with ``get_frame`` for every use (each group, each
flow pair), every flow-pair frame resized again from the original frame and flowed with a fresh DIS
instance, the expression tokenised per group, and the per-pixel owner taken with ``torch.argmax``
over the selected queries' upsampled logits. Both paths run in one process with one thread count, so
the masks must be identical bit for bit (no tolerance is needed). Note that the network's logits do
depend on the thread count (oneDNN picks other kernels): on blackswan, 1 and 2 threads differ by one
pixel in one frame, in the old code as in the new.
"""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from _paths import SHARED_DATA
from rvos_core.engines.clip_rvos import (
    ClipRvosEngine,
    StageTimer,
    _first_argmax,
    _iou,
    _suppress_duplicates,
    build_net,
    frame_groups,
    load_clip_rvos,
    load_config,
    read_model_frames,
    referred_masks,
    resize_for_model,
    to_tensor,
)
from rvos_core.engines.clip_rvos_model import ClipRvosConfig
from rvos_core.engines.motion import FLOW_SCALE, flow_field, grey_frames, successor_flow, successor_pairs
from rvos_core.video import open_video

BLACKSWAN = SHARED_DATA / "davis2016_blackswan"


# ---------------------------------------------------------------- the reference (pre-optimisation) path

def _reference_flow(video, a: int, b: int, size: int) -> np.ndarray:
    """Old motion input of one pair: both frames decoded and resized again, fresh DIS instance."""
    grey = [cv2.cvtColor(resize_for_model(video.get_frame(i), size), cv2.COLOR_RGB2GRAY) for i in (a, b)]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    return np.ascontiguousarray(dis.calc(grey[0], grey[1], None).transpose(2, 0, 1), dtype=np.float32)


def _reference_group(engine: ClipRvosEngine, video, idx: list[int], expression: str):
    """Old per-group inference → (selected masks (S, T, H, W) bool, their scores (S,))."""
    cfg, meta = engine.cfg, video.meta
    small = np.stack([resize_for_model(video.get_frame(i), cfg.input_size) for i in idx])
    flow = None
    if cfg.motion_input:
        pairs = successor_pairs(idx, meta.num_frames)
        flow = torch.from_numpy(np.stack([_reference_flow(video, a, b, cfg.input_size) for a, b in pairs]) / FLOW_SCALE)[None]
    with torch.inference_mode():
        out = engine.net(to_tensor(small, cfg)[None], engine.tokenizer([expression]), flow)
    logits, probs, dense = out["pred_masks"][0], out["pred_logits"][0].sigmoid(), out["dense"][0]
    selected = [int(q) for q in torch.nonzero(probs >= cfg.score_threshold).flatten()] or [int(probs.argmax())]
    size = (meta.height, meta.width)
    union = (F.interpolate(dense[None], size=size, mode="bilinear", align_corners=False)[0] > 0).numpy()
    owner = F.interpolate(logits[selected], size=size, mode="bilinear", align_corners=False).argmax(dim=0).numpy()
    return np.stack([union & (owner == k) for k in range(len(selected))]), probs[selected].numpy()


def _reference_segment(engine: ClipRvosEngine, video, expression: str) -> list[tuple[np.ndarray, float]]:
    """Old whole-video inference → [(masks (N, H, W) bool, score)] in masklet order."""
    n, h, w = video.meta.num_frames, video.meta.height, video.meta.width
    tracks: list[dict] = []
    for idx in frame_groups(n, engine.cfg.num_frames):
        masks, scores = _reference_group(engine, video, idx, expression)
        keep = _suppress_duplicates(masks, scores)
        ClipRvosEngine._link(tracks, masks[keep], [float(scores[k]) for k in keep], idx, n, h, w)
    found = [(tr["masks"], float(np.mean(tr["scores"]))) for tr in tracks]
    return [m for m in found if m[0].any()] or found


def _assert_same_result(engine: ClipRvosEngine, video, expression: str) -> list[tuple[np.ndarray, float]]:
    expected = _reference_segment(engine, video, expression)
    result = engine.segment(video, expression)
    assert len(result.masklets) == len(expected), "masklet count differs from the reference path"
    for m, (masks, score) in zip(result.masklets, expected):
        assert m.masks.dtype == bool and m.masks.shape == masks.shape
        differing = np.flatnonzero((m.masks != masks).any(axis=(1, 2)))
        assert differing.size == 0, f"masklet {m.obj_id}: masks differ on frames {differing.tolist()}"
        assert m.score == score
    return expected


# ---------------------------------------------------------------- fixtures

class _ArrayVideo:
    """VideoSource stand-in over an in-memory array (``get_frame`` only); counts frame reads."""

    def __init__(self, frames: np.ndarray):
        self.frames = frames
        self.meta = SimpleNamespace(num_frames=len(frames), height=frames.shape[1], width=frames.shape[2], fps=10.0)
        self.reads = 0

    def get_frame(self, i: int) -> np.ndarray:
        self.reads += 1
        return self.frames[i].copy()


def _moving_squares(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """``(n, h, w, 3)`` uint8: a smooth textured background and two squares moving in opposite directions."""
    rng = np.random.default_rng(seed)
    bg = cv2.resize(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    frames = np.repeat(bg[None], n, axis=0)
    s = h // 4
    for t in range(n):
        x0, x1 = 2 + 2 * t, w - s - 2 - 3 * t
        frames[t, s:2 * s, x0:x0 + s] = (230, 40, 40)
        frames[t, 2 * s:3 * s, max(x1, 0):max(x1, 0) + s] = (40, 40, 230)
    return frames


def _micro_config(**over) -> ClipRvosConfig:
    """The shipped tiny architecture (motion input, 2 spatio-temporal blocks, motion fusion), shrunk."""
    d = json.loads(json.dumps(load_config("clip-rvos-tiny").to_dict()))
    d["clip"]["text_cfg"].update({"width": 32, "heads": 2, "layers": 1})
    d["clip"]["embed_dim"] = 32
    d.update({"name": "clip-rvos-micro", "hidden_dim": 32, "num_queries": 3, "dec_layers": 2, "nheads": 2,
              "num_frames": 4, "input_size": 64, "checkpoint": None})
    d.update(over)
    return ClipRvosConfig.from_dict(d)


@pytest.fixture(scope="module")
def micro_engine() -> ClipRvosEngine:
    cfg = _micro_config(score_threshold=0.0)  # every query is referred: the multi-query owner path runs
    torch.manual_seed(0)
    net = build_net(cfg)
    with torch.no_grad():  # the motion stem and motion fusion start at zero: give them weight
        for p in (*net.motion_stem.parameters(), *net.motion_fusion.parameters()):
            p.add_(0.05 * torch.randn_like(p))
    return ClipRvosEngine(cfg, net)


# ---------------------------------------------------------------- equivalence

def test_micro_model_masks_identical_to_reference(micro_engine):
    video = _ArrayVideo(_moving_squares(13, 72, 100))  # 13 frames: groups of 4 and 3 frames
    expected = _assert_same_result(micro_engine, video, "the red square moving right")
    assert len(expected) >= 2, "several queries selected: the per-pixel owner decides the masklets"
    union = np.logical_or.reduce([m for m, _ in expected])
    assert 0.02 < union.mean() < 0.98, "a non-trivial referring map"


def test_micro_model_single_query_path_identical_to_reference():
    cfg = _micro_config(score_threshold=1.1)  # nothing passes: the best query alone is the union
    torch.manual_seed(1)
    engine = ClipRvosEngine(cfg, build_net(cfg))
    expected = _assert_same_result(engine, _ArrayVideo(_moving_squares(9, 64, 96, seed=1)), "the blue square")
    assert len(expected) == 1


def test_shipped_model_on_blackswan_frames_identical_to_reference(tmp_path):
    clip = tmp_path / "blackswan16"
    clip.mkdir()
    for src in sorted((BLACKSWAN / "JPEGImages").glob("*.jpg"))[:16]:
        shutil.copy(src, clip / src.name)
    engine = load_clip_rvos("clip-rvos-tiny")  # assets/clip-rvos-tiny.pt
    expected = _assert_same_result(engine, open_video(clip), "the black swan swimming in the pond")
    assert expected and expected[0][0].shape == (16, 480, 854)
    assert 0.01 < np.logical_or.reduce([m for m, _ in expected]).mean() < 0.5, "the swan is found"


# ---------------------------------------------------------------- the parts

def test_read_model_frames_decodes_each_frame_once_in_order():
    video = open_video(BLACKSWAN / "blackswan.mp4")
    small = read_model_frames(video, 128)  # iter_frames: sequential runs, the cache untouched
    assert small.shape == (50, 128, 224, 3) and small.dtype == np.uint8
    for i in (0, 1, 31, 32, 49):
        assert np.array_equal(small[i], resize_for_model(video.get_frame(i), 128))
    frames = _moving_squares(40, 48, 64)
    stand_in, seen = _ArrayVideo(frames), []
    small = read_model_frames(stand_in, 32, progress=lambda d, t, m: seen.append((d, t, m)))
    assert stand_in.reads == 40 and np.array_equal(small[39], resize_for_model(frames[39], 32))
    assert seen == [(0, 40, "clip-rvos: decoding 32/40")]


def test_read_model_frames_reports_a_short_video():
    class Short:
        meta = SimpleNamespace(num_frames=5, height=32, width=32)
        path = "short.mp4"

        def iter_frames(self):
            yield from np.zeros((3, 32, 32, 3), np.uint8)

    with pytest.raises(ValueError, match=r"short\.mp4: ended after 3 frames; its metadata says 5"):
        read_model_frames(Short(), 32)


def test_successor_flow_equals_flow_field_on_each_pair():
    frames = np.stack([resize_for_model(f, 64) for f in _moving_squares(6, 72, 100)])
    idx = [1, 4, 5]
    expected = np.stack([flow_field(frames[a], frames[b]) for a, b in successor_pairs(idx, 6)]) / FLOW_SCALE
    got = successor_flow(grey_frames(frames), idx)
    assert got.dtype == np.float32 and got.shape == (3, 2, 64, 96)
    assert np.array_equal(got, expected)
    assert np.abs(got).max() > 0.1, "the squares move"
    with pytest.raises(ValueError, match="uint8"):
        grey_frames(frames.astype(np.float32))
    with pytest.raises(ValueError, match="out of range"):
        successor_flow(grey_frames(frames), [6])


def test_first_argmax_is_torch_argmax_including_ties():
    x = torch.randint(0, 3, (4, 5, 7, 9)).float()  # many ties
    assert torch.equal(_first_argmax(x).long(), x.argmax(dim=0))
    y = torch.randn(3, 2, 6, 6)
    assert torch.equal(_first_argmax(y).long(), y.argmax(dim=0))


def test_referred_masks_split_the_union():
    torch.manual_seed(3)
    logits, dense = torch.randn(3, 2, 8, 12), torch.randn(2, 8, 12)
    masks = referred_masks(logits, dense, (30, 50))
    union = (F.interpolate(dense[None], size=(30, 50), mode="bilinear", align_corners=False)[0] > 0).numpy()
    assert masks.shape == (3, 2, 30, 50) and masks.dtype == bool
    assert np.array_equal(masks.sum(axis=0), union.astype(int)), "disjoint, adding up to the union"
    assert np.array_equal(referred_masks(logits[:1], dense, (30, 50))[0], union)


def test_iou_counts_like_the_definition():
    rng = np.random.default_rng(0)
    a, b = rng.random((3, 20, 30)) > 0.5, rng.random((3, 20, 30)) > 0.7
    assert _iou(a, b) == (a & b).sum() / (a | b).sum()
    assert _iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0


def test_stage_timer_covers_every_stage(micro_engine):
    timer = StageTimer()
    micro_engine.segment(_ArrayVideo(_moving_squares(9, 64, 96)), "the red square", timer=timer)
    assert set(timer.cpu) == {"decode", "resize", "flow", "text", "forward", "upsample", "link"}
    assert timer.calls["forward"] == len(frame_groups(9, 4)) and timer.calls["decode"] == 9
    assert all(v >= 0 for v in (*timer.wall.values(), *timer.cpu.values()))
