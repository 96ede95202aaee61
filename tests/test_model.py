"""clip-rvos network, matcher, losses, checkpoints and whole-video inference (tiny random-init configs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rvos_core.engines.clip_rvos import (
    CheckpointError,
    ClipRvosEngine,
    build_net,
    frame_groups,
    load_config,
    make_tokenizer,
    read_checkpoint,
    resize_for_model,
    save_checkpoint,
)
from rvos_core.engines.clip_rvos_model import ClipRvosConfig
from rvos_core.training.losses import hungarian_match, model_loss


def micro_config(**over) -> ClipRvosConfig:
    """A very small clip-rvos config (random init) for fast tests."""
    d = json.loads(json.dumps(load_config("clip-rvos-tiny").to_dict()))
    d["clip"]["text_cfg"].update({"width": 32, "heads": 2, "layers": 1, "vocab_size": 49408})
    d["clip"]["embed_dim"] = 32
    d.update({"name": "clip-rvos-micro", "hidden_dim": 32, "num_queries": 3, "dec_layers": 2, "nheads": 2,
              "num_frames": 4, "input_size": 64, "checkpoint": None,
              "st_layers": 1, "motion_fusion": False, "motion_input": False})
    d.update(over)
    return ClipRvosConfig.from_dict(d)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_net(micro_config())


def test_forward_shapes_and_dtypes(net):
    x = torch.randn(2, 4, 3, 64, 96)
    tok = make_tokenizer(net.cfg)(["the red circle moving left", "the two squares"])
    out = net(x, tok)
    assert out["pred_masks"].shape == (2, 3, 4, 16, 24)
    assert out["pred_logits"].shape == (2, 3)
    assert out["pred_masks"].dtype == torch.float32
    assert len(out["aux"]) == 1 and out["aux"][0]["pred_masks"].shape == (2, 3, 4, 16, 24)


def test_forward_rejects_bad_shapes(net):
    tok = make_tokenizer(net.cfg)(["x"])
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.randn(1, 4, 3, 60, 64), tok)
    with pytest.raises(ValueError, match=r"\(B, T, 3, H, W\)"):
        net(torch.randn(4, 3, 64, 64), tok)


def test_text_changes_output(net):
    """The expression must influence the masks (cross-modal fusion is wired in)."""
    x = torch.randn(1, 4, 3, 64, 64)
    tk = make_tokenizer(net.cfg)
    with torch.no_grad():
        a = net(x, tk(["the red circle"]))["pred_masks"]
        b = net(x, tk(["a big blue square moving up fast"]))["pred_masks"]
    assert not torch.allclose(a, b)


def test_hungarian_match_hand_case():
    # query 0 predicts object B, query 2 predicts object A, query 1 predicts nothing
    a = torch.tensor([1.0, 1.0, 0.0, 0.0])
    b = torch.tensor([0.0, 0.0, 1.0, 1.0])
    big = 10.0
    pred = torch.stack([(b * 2 - 1) * big, -torch.ones(4) * big, (a * 2 - 1) * big])
    qi, ti = hungarian_match(pred, torch.zeros(3), torch.stack([a, b]))
    pairs = dict(zip(ti.tolist(), qi.tolist()))
    assert pairs == {0: 2, 1: 0}


def test_hungarian_match_no_targets():
    qi, ti = hungarian_match(torch.randn(3, 8), torch.randn(3), torch.zeros(0, 8))
    assert len(qi) == 0 and len(ti) == 0


def test_training_steps_reduce_loss_on_fixed_batch():
    torch.manual_seed(1)
    cfg = micro_config()
    net = build_net(cfg).train()
    x = torch.randn(2, 4, 3, 64, 64)
    tok = make_tokenizer(cfg)(["the left square", "the two circles"])
    t1 = torch.zeros(1, 4, 16, 16)
    t1[..., 2:8, 2:8] = 1
    t2 = torch.zeros(2, 4, 16, 16)
    t2[0, ..., 9:14, 9:14] = 1
    t2[1, ..., 1:5, 10:15] = 1
    targets = [t1, t2]
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        loss = model_loss(net(x, tok), targets)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses


def test_checkpoint_round_trip_identical_outputs(tmp_path, net):
    path = save_checkpoint(net, tmp_path / "m.pt", {"step": 3}, half=False)
    net2 = build_net(net.cfg, checkpoint=path)
    x = torch.randn(1, 4, 3, 64, 64)
    tok = make_tokenizer(net.cfg)(["the dog"])
    with torch.no_grad():
        a, b = net.eval()(x, tok), net2(x, tok)
    assert torch.equal(a["pred_masks"], b["pred_masks"])
    assert read_checkpoint(path)["train_info"]["step"] == 3


def test_checkpoint_errors(tmp_path, net):
    path = save_checkpoint(net, tmp_path / "m.pt", half=True)
    ck = torch.load(path, weights_only=True)
    del ck["state_dict"]["score_head.weight"]
    torch.save(ck, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="score_head.weight"):
        build_net(net.cfg, checkpoint=tmp_path / "broken.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        read_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        read_checkpoint(tmp_path / "nope.pt")
    other = micro_config(num_queries=5)
    with pytest.raises(CheckpointError, match="num_queries"):
        build_net(other, checkpoint=path)


def test_warm_start_adds_stage_two_modules_without_changing_outputs(tmp_path, net):
    from rvos_core.training.train import load_warm_start

    path = save_checkpoint(net, tmp_path / "stage1.pt", half=False)
    stage2 = micro_config(st_layers=2, motion_fusion=True)
    torch.manual_seed(1)
    net2 = build_net(stage2)
    new_keys = load_warm_start(net2, path)
    assert new_keys and all(k.startswith(("st_extra.", "motion_fusion.")) for k in new_keys)
    x = torch.randn(1, 4, 3, 64, 64)
    tok = make_tokenizer(stage2)(["the square moving left"])
    with torch.no_grad():
        a, b = net.eval()(x, tok), net2.eval()(x, tok)
    assert torch.equal(a["dense"], b["dense"]) and torch.equal(a["pred_masks"], b["pred_masks"])
    # the added blocks are trainable: one gradient step moves them and changes the output
    net2.train()
    out = net2(x, tok)
    out["dense"].square().mean().backward()
    assert net2.motion_fusion.attn.out_proj.weight.grad.abs().sum() > 0
    # a stage-1 checkpoint cannot be loaded as-is into the stage-2 config (strict), and back
    with pytest.raises(CheckpointError, match="st_layers"):
        build_net(stage2, checkpoint=path)
    big = save_checkpoint(net2, tmp_path / "stage2.pt", half=False)
    with pytest.raises(CheckpointError, match="unexpected"):
        load_warm_start(build_net(micro_config()), big)


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="clip-rvos-tiny"):
        load_config("no-such-model")


def test_frame_groups_cover_every_frame_once_and_span_the_clip():
    for n, t in [(50, 8), (7, 8), (8, 8), (61, 8), (1, 8)]:
        groups = frame_groups(n, t)
        flat = sorted(i for g in groups for i in g)
        assert flat == list(range(n))
        assert all(len(g) <= t for g in groups)
        if n >= t:  # global: every group reaches the last segment of the clip
            assert all(g[-1] >= n - len(groups) for g in groups)


def test_resize_for_model_multiple_of_32():
    out = resize_for_model(np.zeros((480, 854, 3), np.uint8), 128)
    assert out.shape[0] % 32 == 0 and out.shape[1] % 32 == 0 and out.shape[0] == 128
    assert abs(out.shape[1] / out.shape[0] - 854 / 480) < 0.15


class _ArrayVideo:
    """Minimal VideoSource stand-in over an in-memory array."""

    def __init__(self, frames):
        from types import SimpleNamespace

        self.frames = frames
        self.meta = SimpleNamespace(num_frames=len(frames), height=frames.shape[1], width=frames.shape[2], fps=10.0)
        self.video_id = "array"

    def get_frame(self, i):
        return self.frames[i]


def test_engine_segment_gives_a_mask_for_every_frame(net):
    eng = ClipRvosEngine(net.cfg, net)
    frames = np.random.default_rng(0).integers(0, 255, (11, 50, 70, 3), dtype=np.uint8)
    seen = []
    res = eng.segment(_ArrayVideo(frames), "the object", progress=lambda d, t, m: seen.append((d, t)))
    assert res.num_frames == 11 and (res.height, res.width) == (50, 70)
    assert res.masklets, "at least one masklet (the best query) is always reported"
    for m in res.masklets:
        assert m.masks.shape == (11, 50, 70) and m.masks.dtype == bool
        assert 0.0 <= m.score <= 1.0
    assert seen[-1] == (11, 11)
    with pytest.raises(ValueError, match="expression is empty"):
        eng.segment(_ArrayVideo(frames), "   ")


def _textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    import cv2

    noise = np.random.default_rng(seed).integers(0, 255, (h // 4, w // 4, 3), dtype=np.uint8)
    return cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)


def test_flow_field_measures_a_known_translation():
    from rvos_core.engines.motion import flow_field, successor_pairs

    img = _textured(96, 128)
    shifted = np.roll(img, 3, axis=1)  # content moves 3 px to the right
    flow = flow_field(img, shifted)
    assert flow.shape == (2, 96, 128) and flow.dtype == np.float32
    inner = flow[:, 16:-16, 16:-16]
    assert abs(float(np.median(inner[0])) - 3.0) < 0.5 and abs(float(np.median(inner[1]))) < 0.5
    assert successor_pairs([0, 4, 5], 6) == [(0, 1), (4, 5), (4, 5)]
    assert successor_pairs([0], 1) == [(0, 0)]
    with pytest.raises(ValueError, match="out of range"):
        successor_pairs([6], 6)
    with pytest.raises(ValueError, match="uint8"):
        flow_field(img, shifted[:50])


def test_motion_input_config_needs_flow_and_uses_it(tmp_path, net):
    from rvos_core.engines.motion import clip_flow
    from rvos_core.training.train import collate, load_warm_start

    cfg = micro_config(motion_input=True)
    torch.manual_seed(2)
    mnet = build_net(cfg)
    load_warm_start(mnet, save_checkpoint(net, tmp_path / "m.pt", half=False))
    mnet.eval()
    frames = np.stack([np.roll(_textured(64, 64, 1), 2 * t, axis=1) for t in range(4)])
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()[None] / 255.0
    tok = make_tokenizer(cfg)(["the square moving right"])
    with pytest.raises(ValueError, match="motion_input"):
        mnet(x, tok)
    flow = torch.from_numpy(clip_flow(frames))[None]
    with torch.no_grad():  # the stem starts at zero: same output as the network it was seeded from
        assert torch.equal(mnet(x, tok, flow)["dense"], net.eval()(x, tok)["dense"])
        for p in mnet.motion_stem.out8.parameters():
            p.add_(0.05)
        assert not torch.equal(mnet(x, tok, flow)["dense"], mnet(x, tok, torch.zeros_like(flow))["dense"])
    masks = np.zeros((1, 4, 64, 64), bool)
    _, _, targets, batch_flow = collate([(frames, "the square moving right", masks)], cfg, make_tokenizer(cfg))
    assert tuple(batch_flow.shape) == (1, 4, 2, 64, 64) and targets[0].shape == (1, 4, 16, 16)
    res = ClipRvosEngine(cfg, mnet).segment(_ArrayVideo(np.concatenate([frames, frames[::-1]])), "the square")
    assert res.num_frames == 8 and all(m.masks.shape == (8, 64, 64) for m in res.masklets)


def test_resume_state_allows_only_the_excluded_frozen_weights_to_be_missing(tmp_path, net):
    from rvos_core.training.train import _load_resume_state

    state = {k: v.clone() for k, v in net.state_dict().items()}
    clip_keys = [k for k in state if k.startswith("clip.")]
    assert clip_keys and len(clip_keys) < len(state)
    torch.manual_seed(1)
    other = build_net(micro_config())
    partial = {k: v for k, v in state.items() if not k.startswith("clip.")}
    _load_resume_state(other, partial, ("clip.",), tmp_path / "last.pt")  # frozen backbone left out: fine
    assert all(torch.equal(other.state_dict()[k], state[k]) for k in partial)
    with pytest.raises(ValueError, match=r"last\.pt: cannot resume.*missing \['clip\."):
        _load_resume_state(other, partial, (), tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"unexpected \['extra\.weight'\]"):
        _load_resume_state(other, {**state, "extra.weight": torch.zeros(1)}, (), tmp_path / "last.pt")
