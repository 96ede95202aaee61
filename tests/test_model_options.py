"""Seed-component options of the clip-rvos model (text encoder, fusion, temporal module, query
initialisation) and the training-time frame sampling: defaults change nothing, every option builds,
runs, trains and round-trips through a checkpoint (tiny random-init configs, no network)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_model import micro_config

from rvos_core.engines.clip_rvos import build_net, load_config, read_checkpoint, save_checkpoint
from rvos_core.engines.clip_rvos_model import ClipRvosConfig, make_text_tokenizer
from rvos_core.training.losses import model_loss
from rvos_core.training.train import TrainOptions, load_warm_start, sample_frames, synthetic_samples, train
from rvos_core.weights import WeightsNotAvailable

REPO = Path(__file__).resolve().parents[1]
OPTION_DEFAULTS = {"text_encoder": "clip", "roberta": {}, "fusion": "one_way", "temporal": "attention", "query_init": "text"}
TINY_ROBERTA = {"source": "config", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
#: one config per non-default option value
VARIANTS = {
    "roberta": {"text_encoder": "roberta", "roberta": TINY_ROBERTA},
    "bidirectional": {"fusion": "bidirectional"},
    "temporal_none": {"temporal": "none"},
    "cube": {"temporal": "cube"},
    "dynamic_filter": {"temporal": "dynamic_filter"},
    "pooled_mask": {"query_init": "pooled_mask"},
}
#: parameters that only the option adds (trained by the loss-reduction test)
OPTION_MODULES = {"roberta": "roberta.model.", "bidirectional": "fusion_t2v.", "cube": "layers.0.ca_cube.",
                  "dynamic_filter": "lmdf.", "pooled_mask": "instance_block."}
ALL_NON_DEFAULT = {"text_encoder": "roberta", "roberta": TINY_ROBERTA, "fusion": "bidirectional", "temporal": "cube",
                   "query_init": "pooled_mask", "motion_fusion": True}
TEXTS = ["the red circle moving left", "the two squares"]


def _inputs(b: int = 2, h: int = 64, w: int = 96) -> torch.Tensor:
    return torch.randn(b, 4, 3, h, w, generator=torch.Generator().manual_seed(7))


def _targets(boxes=(((2, 8, 2, 8),), ((9, 14, 9, 14), (1, 5, 10, 15)))) -> list[torch.Tensor]:
    """Per sample, one static box mask ``(K, 4, 16, 16)`` per (y0, y1, x0, x1) box."""
    out = []
    for sample in boxes:
        m = torch.zeros(len(sample), 4, 16, 16)
        for k, (y0, y1, x0, x1) in enumerate(sample):
            m[k, :, y0:y1, x0:x1] = 1.0
        out.append(m)
    return out


def _fit(net: torch.nn.Module, x: torch.Tensor, tok: torch.Tensor, steps: int = 10) -> list[dict[str, torch.Tensor]]:
    """``steps`` AdamW steps on one fixed batch; the loss terms of every step."""
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    history = []
    for _ in range(steps):
        parts = model_loss(net(x, tok), _targets())
        opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        opt.step()
        history.append({k: v.detach() for k, v in parts.items()})
    return history


@pytest.fixture(scope="module")
def roberta_dir(tmp_path_factory) -> Path:
    """A tiny 'pretrained' RoBERTa folder in the Hugging Face layout: random weights + a byte-level BPE
    tokenizer (the 256 byte symbols, no merges) with roberta-base's special-token ids."""
    from tokenizers import pre_tokenizers
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    folder = tmp_path_factory.mktemp("roberta-tiny")
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    vocab["<mask>"] = len(vocab)
    RobertaTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    cfg = RobertaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=40, pad_token_id=1, bos_token_id=0,
                        eos_token_id=2, type_vocab_size=1)
    torch.manual_seed(3)
    RobertaModel(cfg, add_pooling_layer=False).save_pretrained(folder)
    return folder


# --- defaults change nothing ---------------------------------------------------------------------


def test_shipped_checkpoint_loads_strictly_and_explicit_defaults_give_identical_outputs():
    """The shipped config (no option keys) and the same config with every option spelled out at its
    default build the same keys as the shipped checkpoint (strict load) and bit-identical outputs."""
    shipped = load_config("clip-rvos-tiny")
    ck_path = REPO / "assets" / "clip-rvos-tiny.pt"
    explicit = ClipRvosConfig.from_dict({**json.loads(json.dumps(shipped.to_dict())), **OPTION_DEFAULTS})
    a, b = build_net(shipped, checkpoint=ck_path), build_net(explicit, checkpoint=ck_path)
    ck_keys = set(read_checkpoint(ck_path)["state_dict"])
    assert set(a.state_dict()) == ck_keys and set(b.state_dict()) == ck_keys
    x = torch.randn(1, 8, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    flow = torch.randn(1, 8, 2, 128, 128, generator=torch.Generator().manual_seed(2))
    tok = make_text_tokenizer(shipped)(["the white square moving up"])
    with torch.no_grad():
        oa, ob = a(x, tok, flow), b(x, tok, flow)
    for k in ("pred_masks", "pred_logits", "dense"):
        assert torch.equal(oa[k], ob[k]), k
    assert set(oa) == {"pred_masks", "pred_logits", "dense", "aux"}


def test_default_options_build_identical_random_init():
    """Without option keys vs. with explicit defaults: same keys, same random init under one seed."""
    plain = micro_config()
    explicit = micro_config(**OPTION_DEFAULTS)
    torch.manual_seed(0)
    sa = build_net(plain).state_dict()
    torch.manual_seed(0)
    sb = build_net(explicit).state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("variant", ["bidirectional", "pooled_mask"])
def test_zero_initialised_options_warm_start_from_a_default_checkpoint(tmp_path, variant):
    """Bidirectional fusion and pooled-mask queries are added as zero-initialised residuals: a model
    warm-started from a default checkpoint computes what the default model computed."""
    torch.manual_seed(0)
    base = build_net(micro_config()).eval()
    path = save_checkpoint(base, tmp_path / "base.pt", half=False)
    torch.manual_seed(5)
    net = build_net(micro_config(**VARIANTS[variant]))
    added = load_warm_start(net, path)
    assert added and all(k.startswith(("fusion_t2v.", "proposal_", "instance_")) for k in added)
    x, tok = _inputs(), make_text_tokenizer(base.cfg)(TEXTS)
    with torch.no_grad():
        a, b = base(x, tok), net.eval()(x, tok)
    torch.testing.assert_close(b["pred_masks"], a["pred_masks"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b["pred_logits"], a["pred_logits"], rtol=1e-5, atol=1e-5)


# --- each option value: shapes, dtypes, keys -----------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_forward_shapes_and_dtypes_per_option(variant):
    torch.manual_seed(0)
    cfg = micro_config(**VARIANTS[variant])
    net = build_net(cfg)
    with torch.no_grad():
        out = net(_inputs(), make_text_tokenizer(cfg)(TEXTS))
    assert out["pred_masks"].shape == (2, 3, 4, 16, 24) and out["pred_masks"].dtype == torch.float32
    assert out["pred_logits"].shape == (2, 3) and out["pred_logits"].dtype == torch.float32
    assert out["dense"].shape == (2, 4, 16, 24)
    assert len(out["aux"]) == 1 and out["aux"][0]["pred_masks"].shape == (2, 3, 4, 16, 24)
    assert ("proposal_masks" in out) == (variant == "pooled_mask")
    if variant == "pooled_mask":
        assert out["proposal_masks"].shape == (2, 3, 4, 16, 24)
    keys = set(net.state_dict())
    if variant in OPTION_MODULES:
        assert any(k.startswith(OPTION_MODULES[variant]) for k in keys)
    if variant == "roberta":  # the CLIP text tower is gone
        assert not any(k.startswith(("clip.transformer.", "clip.token_embedding")) for k in keys)
    has_attention = any(k.startswith(("st_block.", "layers.0.sa_time.")) for k in keys)
    assert has_attention == (variant not in ("temporal_none", "dynamic_filter", "cube"))


def test_temporal_none_treats_frames_independently_and_cube_does_not():
    """With ``temporal='none'`` a frame's masks do not depend on the other frames; with every temporal
    module they do."""
    for temporal, independent in (("none", True), ("cube", False), ("dynamic_filter", False), ("attention", False)):
        torch.manual_seed(0)
        cfg = micro_config(temporal=temporal)
        net = build_net(cfg).eval()
        if net.lmdf is not None:  # its output convolutions start at zero (identity)
            with torch.no_grad():
                for m in net.lmdf:
                    m.out.weight.add_(0.05)
        x, tok = _inputs(1, 64, 64), make_text_tokenizer(cfg)(TEXTS[:1])
        y = x.clone()
        y[:, 1:] = torch.randn_like(y[:, 1:])
        with torch.no_grad():
            a, b = net(x, tok), net(y, tok)
        same_frame0 = torch.allclose(a["pred_masks"][:, :, 0], b["pred_masks"][:, :, 0], atol=1e-5)
        assert same_frame0 == independent, temporal


def test_pooled_mask_accepts_external_instance_masks():
    torch.manual_seed(0)
    cfg = micro_config(query_init="pooled_mask")
    net = build_net(cfg).eval()
    with torch.no_grad():  # make the instance block matter (it starts as the identity)
        for p in net.instance_block.cross.out_proj.parameters():
            p.add_(0.1)
    x, tok = _inputs(), make_text_tokenizer(cfg)(TEXTS)
    inst = torch.zeros(2, 2, 4, 16, 24)
    inst[0, 0, :, 2:8, 2:8] = 1.0
    inst[1, 1, :, 8:12, 10:20] = 1.0
    with torch.no_grad():
        a = net(x, tok, instance_masks=inst)
        b = net(x, tok, instance_masks=torch.zeros_like(inst))  # every instance empty → text-only queries
        c = net(x, tok)
    assert "proposal_masks" not in a and "proposal_masks" in c
    assert a["pred_masks"].shape == (2, 3, 4, 16, 24)
    assert not torch.allclose(a["pred_masks"], b["pred_masks"])
    with pytest.raises(ValueError, match="instance_masks must be"):
        net(x, tok, instance_masks=torch.zeros(2, 2, 4, 8, 8))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        net(x, tok, instance_masks=inst * 255)
    plain = build_net(micro_config())
    with pytest.raises(ValueError, match="pooled_mask"):
        plain(x, tok, instance_masks=inst)


def test_pretrained_roberta_folder_uses_its_own_tokenizer(roberta_dir):
    cfg = micro_config(text_encoder="roberta", roberta={"source": "pretrained", "weight": str(roberta_dir)})
    tok = make_text_tokenizer(cfg)(TEXTS)
    assert tok.shape == (2, 24) and tok.dtype == torch.int64
    assert (tok[:, 0] == 0).all() and tok[1, -1] == 1  # <s> first, <pad> = 1 at the end of the short row
    net = build_net(cfg).eval()
    assert net.roberta.pad_id == 1 and net.roberta.width == 32
    with torch.no_grad():
        out = net(_inputs(), tok)
    assert out["pred_masks"].shape == (2, 3, 4, 16, 24)
    clip_tokens = make_text_tokenizer(micro_config())(TEXTS)
    with pytest.raises(ValueError, match="make_text_tokenizer"):
        net(_inputs(), clip_tokens)


# --- training, checkpoints ------------------------------------------------------------------------


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_training_steps_reduce_loss_per_option(variant):
    torch.manual_seed(1)
    cfg = micro_config(**VARIANTS[variant])
    net = build_net(cfg).train()
    history = _fit(net, _inputs(2, 64, 64), make_text_tokenizer(cfg)(TEXTS))
    assert ("proposal" in history[-1]) == (variant == "pooled_mask")
    losses = [float(h["total"]) for h in history]
    assert losses[-1] < 0.5 * losses[0], losses
    # the option's own modules take part: every one of their parameters gets a gradient
    own = {k: p.grad for k, p in net.named_parameters() if k.startswith(OPTION_MODULES.get(variant, "-"))}
    assert (variant == "temporal_none") == (not own)
    assert [k for k, g in own.items() if g is None or not g.abs().sum() > 0] == []


def test_non_default_checkpoint_round_trip_identical_outputs(tmp_path):
    torch.manual_seed(2)
    cfg = micro_config(**ALL_NON_DEFAULT)
    net = build_net(cfg).eval()
    path = save_checkpoint(net, tmp_path / "variant.pt", {"step": 1}, half=False)
    saved = read_checkpoint(path)["config"]
    assert {k: saved[k] for k in ALL_NON_DEFAULT} == ALL_NON_DEFAULT
    net2 = build_net(ClipRvosConfig.from_dict(saved), checkpoint=path)
    x, tok = _inputs(), make_text_tokenizer(cfg)(TEXTS)
    with torch.no_grad():
        a, b = net(x, tok), net2(x, tok)
    for k in ("pred_masks", "pred_logits", "dense", "proposal_masks"):
        assert torch.equal(a[k], b[k]), k


def test_option_values_are_validated():
    with pytest.raises(ValueError, match=r"temporal must be one of .*'cube'.*got 'lstm'"):
        micro_config(temporal="lstm")
    with pytest.raises(ValueError, match="fusion must be one of"):
        micro_config(fusion="both")
    with pytest.raises(ValueError, match="st_layers=2 applies to temporal='attention' only"):
        micro_config(temporal="cube", st_layers=2)
    with pytest.raises(ValueError, match="roberta spec is given but text_encoder"):
        micro_config(roberta=TINY_ROBERTA)
    with pytest.raises(ValueError, match="roberta.source"):
        micro_config(text_encoder="roberta")
    with pytest.raises(ValueError, match="unknown keys"):
        build_net(micro_config(text_encoder="roberta", roberta={**TINY_ROBERTA, "vocab": 5}))


def test_missing_pretrained_roberta_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("RVOS_HOME", str(tmp_path))
    cfg = micro_config(text_encoder="roberta", roberta={"source": "pretrained", "weight": "roberta-base"})
    with pytest.raises(WeightsNotAvailable, match="FacebookAI/roberta-base"):
        build_net(cfg)
    with pytest.raises(WeightsNotAvailable, match="not installed"):
        make_text_tokenizer(cfg)
    (tmp_path / "weights" / "roberta-base").mkdir(parents=True)
    (tmp_path / "weights" / "roberta-base" / "config.json").write_text("{}")
    with pytest.raises(WeightsNotAvailable, match="lacks"):
        make_text_tokenizer(cfg)


# --- frame sampling (seed 003 §3.2) --------------------------------------------------------------


def test_sample_frames_global_spans_the_clip_and_local_is_a_window():
    rng = np.random.default_rng(0)
    for _ in range(20):
        g = sample_frames(24, 8, "global", rng)
        loc = sample_frames(24, 8, "local", rng)
        assert len(g) == 8 and g[0] <= 2 and g[-1] >= 21  # one frame per 3-frame segment
        assert loc == list(range(loc[0], loc[0] + 8)) and 0 <= loc[0] <= 16
    with pytest.raises(ValueError, match="sampling must be one of"):
        sample_frames(24, 8, "random", rng)
    with pytest.raises(ValueError, match="TrainOptions.sampling"):
        TrainOptions(sampling="dense")


def test_synthetic_samples_from_longer_clips_carry_flow():
    stream = synthetic_samples(0, num_frames=4, size=64, jpeg_prob=0.0, clip_frames=12, sampling="local", with_flow=True)
    frames, text, masks, flow = next(stream)
    assert frames.shape == (4, 64, 64, 3) and frames.dtype == np.uint8 and isinstance(text, str)
    assert masks.shape[1:] == (4, 64, 64) and masks.dtype == bool
    assert flow.shape == (4, 2, 64, 64) and flow.dtype == np.float32
    plain = next(synthetic_samples(0, num_frames=4, size=64, jpeg_prob=0.0))
    assert len(plain) == 3 and plain[0].shape == (4, 64, 64, 3)


def test_train_runs_a_non_default_variant_with_local_sampling(tmp_path):
    cfg_path = tmp_path / "variant.json"
    cfg_path.write_text(json.dumps(micro_config(temporal="dynamic_filter", motion_input=True).to_dict()))
    opts = TrainOptions(config=str(cfg_path), out_dir=str(tmp_path / "run"), steps=2, batch_size=1, image_size=64,
                        warmup=1, log_every=1, sampling="local", synthetic_frames=10, jpeg_prob=0.0)
    final = train(opts, progress=False)
    info = read_checkpoint(final)["train_info"]
    assert info["step"] == 2 and info["options"]["sampling"] == "local"
    assert read_checkpoint(final)["config"]["temporal"] == "dynamic_filter"


# --- the ablation runner (bench/ablation.py) -----------------------------------------------------


def _load_ablation():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ablation_bench", REPO / "bench" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


def test_ablation_variants_are_valid_configs_of_the_shipped_base():
    ablation = _load_ablation()
    base = load_config("clip-rvos-tiny")
    for v in ablation.VARIANTS:
        cfg = ClipRvosConfig.from_dict({**base.to_dict(), **v.config(base)})
        TrainOptions(**v.train)
        changed = {k for k in OPTION_DEFAULTS if getattr(cfg, k) != OPTION_DEFAULTS[k]}
        assert len(changed) <= 2 and (v.name == "baseline") == (not changed and not v.train), v.name
    assert [v.name for v in ablation.select_variants("temporal=cube,baseline")] == ["temporal=cube", "baseline"]
    with pytest.raises(ValueError, match="valid names: baseline"):
        ablation.select_variants("temporal=lstm")


def test_ablation_runs_end_to_end_on_a_tiny_budget(tmp_path, capsys):
    from rvos_core.synthetic import write_split

    ablation = _load_ablation()
    heldout = tmp_path / "heldout"
    write_split(heldout, videos=1, seed=1000, frames=4, size=(64, 64))
    base = tmp_path / "micro.json"
    base.write_text(json.dumps(micro_config().to_dict()))
    out = tmp_path / "runs"
    args = ["--heldout", str(heldout), "--out", str(out), "--minutes", "0.004", "--base", str(base),
            "--variants", "baseline,query_init=pooled_mask", "--synthetic-frames", "8", "--batch-size", "1", "--quiet",
            "--image-size", "64", "--input-size", "96"]
    assert ablation.main(args) == 0
    table = (out / "ablation.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| baseline") or line.startswith("| query_init")]
    assert len(rows) == 2 and "J&F motion" in table
    result = json.loads((out / "query_init-pooled_mask" / "result.json").read_text())
    assert result["steps"] >= 1 and 0.0 <= result["J&F"] <= 1.0 and result["config_overrides"] == {"query_init": "pooled_mask"}
    # training and evaluation sizes are the options', not the base config's (64), and part of the protocol
    assert json.loads((out / "baseline" / "config.json").read_text())["input_size"] == 96
    assert (result["protocol"]["image_size"], result["protocol"]["input_size"]) == (64, 96)
    assert "at 64 px, evaluated at 96 px" in table
    assert ablation.main(["--heldout", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "error:" in capsys.readouterr().err


def test_ablation_paired_delta_interval_on_hand_cases():
    ablation = _load_ablation()

    def rec(values):
        return {"per_expression": {f"v/{i}": {"J&F": v} for i, v in enumerate(values)}}

    base = rec([0.2, 0.4, 0.6, 0.8])
    assert ablation.paired_delta_ci(rec([0.3, 0.5, 0.7, 0.9]), base) == pytest.approx((0.1, 0.1, 0.1))
    mean, low, high = ablation.paired_delta_ci(rec([0.3, 0.3, 0.7, 0.7]), base)  # +0.1, -0.1, +0.1, -0.1
    assert mean == pytest.approx(0.0, abs=1e-12) and low < 0.0 < high and low >= -0.1 - 1e-12 and high <= 0.1 + 1e-12
    only_shared = rec([0.5]) | {"per_expression": {"v/0": {"J&F": 0.5}, "other/9": {"J&F": 1.0}}}
    assert ablation.paired_delta_ci(only_shared, base) == pytest.approx((0.3, 0.3, 0.3))  # v/0 only


def test_training_stream_vocabulary():
    from rvos_core.training.train import TrainOptions, synthetic_samples

    basic = next(synthetic_samples(3, num_frames=4, size=64, jpeg_prob=0.0))
    again = next(synthetic_samples(3, num_frames=4, size=64, jpeg_prob=0.0, vocabulary="basic"))
    full = next(synthetic_samples(3, num_frames=4, size=64, jpeg_prob=0.0, vocabulary="full"))
    assert basic[1] == again[1] and np.array_equal(basic[0], again[0])  # default = basic, unchanged
    assert full[0].shape == basic[0].shape and not np.array_equal(full[0], basic[0])
    with pytest.raises(ValueError, match="vocabulary"):
        TrainOptions(vocabulary="huge")


# --- the engine with the options: tokenizer, config-mismatch check, checkpoints without frozen weights ---


class _FrameVideo:
    """A tiny in-memory clip: ``(N, H, W, 3)`` uint8 frames behind the engine's video interface."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames
        self.video_id = "tiny"
        n, h, w = frames.shape[:3]
        self.meta = type("Meta", (), {"num_frames": n, "height": h, "width": w, "fps": 10.0})()

    def get_frame(self, i: int) -> np.ndarray:
        return self.frames[i]


def _pretrained_roberta_config(roberta_dir: Path, **over) -> ClipRvosConfig:
    return micro_config(text_encoder="roberta", roberta={"source": "pretrained", "weight": str(roberta_dir)}, **over)


def test_engine_tokenizer_is_the_text_encoders_and_a_roberta_config_segments(roberta_dir):
    from open_clip.tokenizer import SimpleTokenizer

    from rvos_core.engines.clip_rvos import ClipRvosEngine, make_tokenizer

    clip_cfg = micro_config()
    assert torch.equal(make_tokenizer(clip_cfg)(TEXTS), SimpleTokenizer(context_length=24)(TEXTS))
    cfg = _pretrained_roberta_config(roberta_dir)
    ids = make_tokenizer(cfg)(TEXTS)
    assert torch.equal(ids, make_text_tokenizer(cfg)(TEXTS)) and (ids[:, 0] == 0).all()  # RoBERTa's <s>
    torch.manual_seed(0)
    engine = ClipRvosEngine(cfg, build_net(cfg))
    frames = np.random.default_rng(0).integers(0, 256, (6, 64, 80, 3), dtype=np.uint8)
    result = engine.segment(_FrameVideo(frames), "the red circle moving left")
    assert (result.num_frames, result.height, result.width) == (6, 64, 80) and result.masklets
    assert all(m.masks.shape == (6, 64, 80) and m.masks.dtype == bool for m in result.masklets)


def test_arch_defaults_are_the_config_defaults():
    """A field missing from an older checkpoint must mean the original design, i.e. the dataclass default."""
    import dataclasses

    from rvos_core.engines.clip_rvos import _ARCH_DEFAULTS, ARCH_FIELDS

    fields = {f.name: f for f in dataclasses.fields(ClipRvosConfig)}
    for name, value in _ARCH_DEFAULTS.items():
        f = fields[name]
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        assert value == default, name
    assert set(OPTION_DEFAULTS) <= set(_ARCH_DEFAULTS) and set(_ARCH_DEFAULTS) <= set(ARCH_FIELDS)


@pytest.fixture(scope="module")
def default_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(build_net(micro_config()), tmp_path_factory.mktemp("ck") / "default.pt", half=False)


@pytest.mark.parametrize("variant", ["bidirectional", "temporal_none", "pooled_mask", "roberta"])
def test_checkpoint_of_another_option_value_is_rejected_naming_the_field(default_checkpoint, variant):
    from rvos_core.engines.clip_rvos import CheckpointError

    over = VARIANTS[variant]
    with pytest.raises(CheckpointError, match="different config") as info:
        build_net(micro_config(**over), checkpoint=default_checkpoint)
    named = {"roberta": ["text_encoder", "roberta"]}.get(variant, list(over))
    assert f"fields {named}" in str(info.value)


def test_checkpoint_of_another_roberta_spec_is_rejected(tmp_path):
    from rvos_core.engines.clip_rvos import CheckpointError

    torch.manual_seed(0)
    path = save_checkpoint(build_net(micro_config(**VARIANTS["roberta"])), tmp_path / "r.pt", half=False)
    wider = {**TINY_ROBERTA, "intermediate_size": 96}
    with pytest.raises(CheckpointError, match=r"fields \['roberta'\]"):
        build_net(micro_config(text_encoder="roberta", roberta=wider), checkpoint=path)


def test_checkpoint_without_the_option_fields_loads_as_the_defaults(tmp_path, default_checkpoint):
    """A checkpoint written before the options existed (no such keys in its config) loads strictly into
    a default config, and still refuses a non-default one."""
    from rvos_core.engines.clip_rvos import CheckpointError

    ck = read_checkpoint(default_checkpoint)
    ck["config"] = {k: v for k, v in ck["config"].items() if k not in OPTION_DEFAULTS}
    old = tmp_path / "old.pt"
    torch.save(ck, old)
    net = build_net(micro_config(), checkpoint=old)
    ref = build_net(micro_config(), checkpoint=default_checkpoint)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), ref.state_dict().values()))
    with pytest.raises(CheckpointError, match=r"fields \['temporal'\]"):
        build_net(micro_config(temporal="cube"), checkpoint=old)


def test_frozen_pretrained_roberta_is_left_out_of_checkpoints_and_reloads_identically(tmp_path, roberta_dir):
    from rvos_core.engines.clip_rvos import checkpoint_excluded_prefixes

    cfg = _pretrained_roberta_config(roberta_dir, freeze_backbone=True)
    assert checkpoint_excluded_prefixes(cfg) == ("roberta.",)  # the random-init CLIP is still stored
    torch.manual_seed(4)
    net = build_net(cfg).eval()
    path = save_checkpoint(net, tmp_path / "frozen.pt", half=False)
    stored = set(read_checkpoint(path)["state_dict"])
    assert not any(k.startswith("roberta.") for k in stored)
    assert stored == {k for k in net.state_dict() if not k.startswith("roberta.")} and any(k.startswith("clip.") for k in stored)
    torch.manual_seed(9)  # another init: everything but the RoBERTa must come from the checkpoint
    net2 = build_net(ClipRvosConfig.from_dict(read_checkpoint(path)["config"]), checkpoint=path)
    x, tok = _inputs(), make_text_tokenizer(cfg)(TEXTS)
    with torch.no_grad():
        a, b = net(x, tok), net2(x, tok)
    for k in ("pred_masks", "pred_logits", "dense"):
        assert torch.equal(a[k], b[k]), k
    # trained (not frozen) RoBERTa weights are stored, and a pretrained one is never dropped unless frozen
    trainable = _pretrained_roberta_config(roberta_dir)
    assert checkpoint_excluded_prefixes(trainable) == ()
    torch.manual_seed(4)
    kept = save_checkpoint(build_net(trainable), tmp_path / "trained.pt", half=False)
    assert any(k.startswith("roberta.model.") for k in read_checkpoint(kept)["state_dict"])
    assert checkpoint_excluded_prefixes(micro_config(**VARIANTS["roberta"], freeze_backbone=True)) == ()


def test_registry_name_roberta_base_finds_the_downloaded_folder(tmp_path, monkeypatch, roberta_dir):
    """``roberta.weight: "roberta-base"`` resolves through the weights registry to ``weights_dir()/roberta-base``
    (where ``python -m rvos_core download roberta-base`` puts the files)."""
    import shutil

    from rvos_core.engines.clip_rvos import make_tokenizer

    monkeypatch.setenv("RVOS_HOME", str(tmp_path))
    shutil.copytree(roberta_dir, tmp_path / "weights" / "roberta-base")
    cfg = micro_config(text_encoder="roberta", roberta={"source": "pretrained", "weight": "roberta-base"})
    by_path = _pretrained_roberta_config(roberta_dir)
    assert torch.equal(make_tokenizer(cfg)(TEXTS), make_tokenizer(by_path)(TEXTS))
    net = build_net(cfg)
    assert net.roberta.width == 32 and net.roberta.pad_id == 1
