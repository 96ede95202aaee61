"""``train`` on a MeViS-layout ``train`` split (generated in the real dataset's layout, without the synthetic
``"kind"`` field): metrics log, ``last.pt`` / ``final.pt``, resume from ``last.pt`` (steps, weights and
optimizer state carried over), the final checkpoint loads through ``load_clip_rvos``, the CLI path, and
clear errors for splits training cannot use. A random-init micro config keeps every run to a few seconds.

("A few training steps reduce the loss on a fixed batch" is tested in ``test_model.py``.)
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rvos_core.cli import main
from rvos_core.engines.clip_rvos import build_net, load_clip_rvos, read_checkpoint
from rvos_core.synthetic import write_split
from rvos_core.training.train import TrainOptions, train
from rvos_core.video import VideoSource
from test_model import micro_config
from test_model_options import roberta_dir  # noqa: F401  (a pytest fixture: tiny "pretrained" RoBERTa folder)

FRAMES, SIZE = 6, 64
#: Expression fields of the real MeViS ``meta_expressions.json`` (the synthetic ``"kind"`` is dropped).
MEVIS_EXPRESSION_FIELDS = {"exp", "obj_id", "anno_id"}


def _mevis_train_split(root: Path, vocabulary: str, seed: int) -> Path:
    """A 3-video, 6-frame, 64×64 split with ``mask_dict.json``, its expressions reduced to MeViS's own fields."""
    split = write_split(root / f"train_{vocabulary}", videos=3, seed=seed, frames=FRAMES, size=(SIZE, SIZE),
                        progress=False, vocabulary=vocabulary)
    meta_path = split / "meta_expressions.json"
    meta = json.loads(meta_path.read_text())
    for video in meta["videos"].values():
        for exp in video["expressions"].values():
            exp.pop("kind", None)
    meta_path.write_text(json.dumps(meta))
    return split


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train_mevis")


@pytest.fixture(scope="module")
def split_basic(root) -> Path:
    return _mevis_train_split(root, "basic", seed=5)


@pytest.fixture(scope="module")
def split_full(root) -> Path:
    return _mevis_train_split(root, "full", seed=5)


@pytest.fixture(scope="module")
def config_json(root) -> Path:
    """A random-init micro clip-rvos config (T = 4 frames sampled from each 6-frame video) as a JSON file."""
    path = root / "micro.json"
    path.write_text(json.dumps(micro_config().to_dict()))
    return path


def _options(config_json: Path, split: Path, out: Path, steps: int) -> TrainOptions:
    return TrainOptions(config=str(config_json), data=str(split), out_dir=str(out), steps=steps, batch_size=2,
                        threads=1, ckpt_every=2, log_every=1, warmup=2, image_size=SIZE, seed=0)


@pytest.fixture(scope="module")
def run4(root, split_basic, config_json) -> Path:
    """The output folder of a 4-step run on the basic split (do not modify: copy it first)."""
    out = root / "run4"
    final = train(_options(config_json, split_basic, out, steps=4), progress=False)
    assert final == out / "final.pt"
    return out


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _adam_steps(ck: dict) -> set[int]:
    """The distinct AdamW ``step`` counters over all parameters of a checkpoint's optimizer state."""
    return {int(s["step"]) for s in ck["optimizer"]["state"].values()}


def test_generated_split_has_the_real_mevis_fields_only(split_basic, split_full):
    for split in (split_basic, split_full):
        meta = json.loads((split / "meta_expressions.json").read_text())
        for video in meta["videos"].values():
            assert video["frames"] == [f"{i:05d}" for i in range(FRAMES)]
            assert all(set(e) == MEVIS_EXPRESSION_FIELDS for e in video["expressions"].values())
    # the full vocabulary has objects that leave the frame: null RLE entries must be handled in training
    mask_dict = json.loads((split_full / "mask_dict.json").read_text())
    assert any(rle is None for per_frame in mask_dict.values() for rle in per_frame)


def test_train_logs_every_step_and_writes_checkpoints(run4, split_basic):
    rows = _metrics(run4)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert {"lr", "wall_seconds", "total", "dice"} <= set(r)
        assert math.isfinite(r["total"]) and r["total"] > 0 and r["lr"] > 0
    assert rows[0]["lr"] < rows[1]["lr"]  # linear warm-up over warmup=2 steps
    last = read_checkpoint(run4 / "last.pt")
    assert last["train_info"]["step"] == 4
    assert last["train_info"]["options"]["data"] == str(split_basic)
    assert _adam_steps(last) == {4}
    final = read_checkpoint(run4 / "final.pt")
    assert final["train_info"]["step"] == 4
    assert "optimizer" not in final
    assert all(v.dtype == torch.float16 for v in final["state_dict"].values() if v.is_floating_point())


def test_training_moved_the_weights_away_from_the_seeded_init(run4):
    torch.manual_seed(0)  # train() seeds torch with opts.seed before building the network
    init = build_net(micro_config()).state_dict()
    trained = read_checkpoint(run4 / "last.pt")["state_dict"]
    changed = [k for k, v in trained.items() if v.is_floating_point() and not torch.equal(v, init[k])]
    assert "score_head.weight" in changed and len(changed) > len(trained) // 2


def test_final_checkpoint_loads_through_load_clip_rvos_and_segments(run4, split_basic, config_json):
    engine = load_clip_rvos(str(config_json), checkpoint=run4 / "final.pt")
    video = VideoSource(split_basic / "JPEGImages" / "synth_00000")
    result = engine.segment(video, "the object moving to the left")
    assert result.num_frames == FRAMES and (result.height, result.width) == (SIZE, SIZE)
    assert result.masklets and all(m.masks.shape == (FRAMES, SIZE, SIZE) for m in result.masklets)


def test_resume_continues_from_the_last_step(run4, root, split_basic, config_json):
    out = root / "resumed6"
    shutil.copytree(run4, out)
    train(_options(config_json, split_basic, out, steps=6), progress=False)
    assert [r["step"] for r in _metrics(out)] == [1, 2, 3, 4, 5, 6]  # two new steps, appended
    last = read_checkpoint(out / "last.pt")
    assert last["train_info"]["step"] == 6
    assert _adam_steps(last) == {6}  # the optimizer state was restored, not restarted (which would give 2)
    assert read_checkpoint(out / "final.pt")["train_info"]["step"] == 6


def test_resume_restores_the_saved_weights(run4, root, split_basic, config_json):
    """Resuming a finished run takes no step: its new final checkpoint holds exactly the saved weights."""
    out = root / "resumed4"
    shutil.copytree(run4, out)
    train(_options(config_json, split_basic, out, steps=4), progress=False)
    assert len(_metrics(out)) == 4
    before = read_checkpoint(run4 / "final.pt")["state_dict"]
    after = read_checkpoint(out / "final.pt")["state_dict"]
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_resume_a_run_that_leaves_a_frozen_pretrained_backbone_out(root, split_basic, roberta_dir):
    """Checkpoints of a frozen pretrained text encoder hold only the rest; resuming reads it from its folder again."""
    cfg = micro_config(text_encoder="roberta", roberta={"source": "pretrained", "weight": str(roberta_dir)},
                       freeze_backbone=True)
    config = root / "frozen_roberta.json"
    config.write_text(json.dumps(cfg.to_dict()))
    out = root / "frozen_roberta"
    train(_options(config, split_basic, out, steps=1), progress=False)
    train(_options(config, split_basic, out, steps=2), progress=False)
    assert [r["step"] for r in _metrics(out)] == [1, 2]
    last = read_checkpoint(out / "last.pt")
    assert last["train_info"]["step"] == 2 and _adam_steps(last) == {2}
    assert not any(k.startswith("roberta.") for k in last["state_dict"])
    engine = load_clip_rvos(str(config), checkpoint=out / "final.pt")
    assert not any(p.requires_grad for p in engine.net.roberta.parameters())


def test_train_on_the_full_vocabulary_split(root, split_full, config_json):
    out = root / "full"
    opts = _options(config_json, split_full, out, steps=2)
    opts.sampling = "local"
    final = train(opts, progress=False)
    assert [r["step"] for r in _metrics(out)] == [1, 2]
    assert all(math.isfinite(r["total"]) for r in _metrics(out))
    assert read_checkpoint(final)["train_info"]["options"]["sampling"] == "local"


def test_cli_train_on_a_split_then_evaluates_it(root, split_basic, config_json, capsys):
    out = root / "cli"
    code = main(["train", "--data", str(split_basic), "--model", str(config_json), "--out", str(out),
                 "--steps", "2", "--batch-size", "2", "--threads", "1", "--image-size", str(SIZE),
                 "--eval-split", str(split_basic)])
    assert code == 0
    stdout = capsys.readouterr().out
    first, _, rest = stdout.partition("\n")
    assert first == f"checkpoint: {out / 'final.pt'}"
    scores = json.loads(rest)
    meta = json.loads((split_basic / "meta_expressions.json").read_text())
    assert scores["num_expressions"] == sum(len(v["expressions"]) for v in meta["videos"].values())
    assert 0.0 <= scores["J&F"] <= 1.0 and 0.0 <= scores["J"] <= 1.0 and 0.0 <= scores["F"] <= 1.0
    assert read_checkpoint(out / "last.pt")["train_info"]["step"] == 2


def test_cli_train_errors_name_the_split(root, split_basic, config_json, capsys):
    missing = root / "no_such_split"
    assert main(["train", "--data", str(missing), "--model", str(config_json), "--out", str(root / "e1"),
                 "--steps", "1", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and str(missing) in err[-1]
    valid_style = root / "valid_style"  # the MeViS `valid` split ships without mask_dict.json
    shutil.copytree(split_basic, valid_style)
    (valid_style / "mask_dict.json").unlink()
    assert main(["train", "--data", str(valid_style), "--model", str(config_json), "--out", str(root / "e2"),
                 "--steps", "1", "--threads", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error:") and "mask_dict.json" in err[-1] and str(valid_style) in err[-1]
    assert not (root / "e2" / "last.pt").exists()


def test_train_samples_come_from_the_split(split_full):
    """The stream ``train`` draws from: frames of the split at the training size, masks with nulls as empty."""
    from rvos_core.training.train import mevis_samples

    meta = json.loads((split_full / "meta_expressions.json").read_text())
    texts = {e["exp"] for v in meta["videos"].values() for e in v["expressions"].values()}
    stream = mevis_samples(str(split_full), seed=3, num_frames=4, size=32)
    for _ in range(12):
        frames, text, masks = next(stream)
        assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
        assert text in texts
        assert masks.dtype == bool and masks.shape[1:] == (4, 32, 32) and masks.shape[0] >= 1
