"""The real-weights path of ``clip-rvos-convnext-large``, without real weights and without the network.

A random-init open_clip ``convnext_large_d_320`` (≈352 M parameters) stands in for the pretrained
backbone: ``python -m rvos_core download convnext_large_d_320`` fetches it from a fake Hugging Face Hub
(open_clip's own ``download_pretrained`` runs, only ``hf_hub_download`` is replaced), so the file lands
where a real download puts it. Then the same public loading code as with real weights: the backbone
equals the file and is frozen, a head checkpoint written by ``save_checkpoint`` leaves the backbone out,
``load_clip_rvos(..., checkpoint=head)`` reproduces the network's outputs exactly, and ``train`` on a
MeViS-layout split resumes a run whose ``last.pt`` holds only the head. Without the backbone every entry
point fails with one message naming the download command, and creates no weights folder.

Cost: the backbone is built and saved once per module; three networks are built from the file, never two
at once (peak RSS ≈ 3.7 GB; ≈ 24 s of CPU). Inputs are 2 frames at 64×64 (8 in the training step).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import io
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from rvos_core import weights
from rvos_core.cli import main
from rvos_core.engines.clip_rvos import (
    build_net,
    load_clip_rvos,
    load_config,
    make_tokenizer,
    read_checkpoint,
    save_checkpoint,
)
from rvos_core.engines.registry import engine_status, get_engine
from rvos_core.training.losses import model_loss
from rvos_core.training.train import TrainOptions, train

MODEL = "clip-rvos-convnext-large"
BACKBONE = "convnext_large_d_320"
COMMAND = f"python -m rvos_core download {BACKBONE}"
#: what open_clip 3 resolves the config's pretrained tag to (the weights registry records the same repo)
HUB_REPO = "laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup"
HUB_FILE = "open_clip_model.safetensors"  # open_clip asks the Hub for the safetensors file first
EXPRESSION = "the dog running to the left"


def _set_home(mp: pytest.MonkeyPatch, home: Path) -> None:
    mp.setenv("RVOS_HOME", str(home))
    mp.setenv("HF_HUB_OFFLINE", "1")  # belt and braces: nothing here may reach the network


@pytest.fixture
def empty_home(tmp_path, monkeypatch) -> Path:
    """An RVOS_HOME with nothing downloaded (the folder does not even exist)."""
    home = tmp_path / "rvos_home"
    _set_home(monkeypatch, home)
    return home


@pytest.fixture(scope="module")
def served_file(tmp_path_factory) -> Iterator[Path]:
    """The file the fake Hub serves: a random-init open_clip ``convnext_large_d_320`` state dict, each float
    tensor scaled by 1 + 2⁻⁸ so that no fresh random init can coincide with it. Removed after the module
    (pytest keeps its last temp folders: 1.4 GB each otherwise)."""
    import open_clip
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model(BACKBONE, pretrained=None, device="cpu")
    state = model.state_dict()
    with torch.no_grad():
        for v in state.values():
            if v.is_floating_point():
                v.mul_(1.0 + 2.0 ** -8)
    path = tmp_path_factory.mktemp("hub") / HUB_FILE
    save_file(state, str(path))
    del model, state
    _release_memory()
    yield path
    path.unlink(missing_ok=True)


class FakeHub:
    """Stands in for open_clip's ``hf_hub_download``: serves ``served_file`` as ``HUB_REPO/HUB_FILE`` into the
    Hub cache layout (``models--org--name/snapshots/<rev>/<file>`` + ``refs/main``), by hard link."""

    revision = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, served: Path) -> None:
        self.served = served
        self.calls: list[tuple[str, str]] = []

    def __call__(self, repo_id: str, filename: str, cache_dir: str | None = None, **kwargs) -> str:
        self.calls.append((repo_id, filename))
        if (repo_id, filename) != (HUB_REPO, HUB_FILE):
            raise FileNotFoundError(f"fake hub has no {repo_id}/{filename}")
        repo = Path(str(cache_dir)) / ("models--" + repo_id.replace("/", "--"))
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(self.revision)
        target = repo / "snapshots" / self.revision / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(self.served, target)
        return str(target)


@dataclass
class Download:
    """What ``python -m rvos_core download convnext_large_d_320`` did against the fake Hub."""

    home: Path
    exit_code: int
    stdout: str
    hub_calls: list[tuple[str, str]]


@pytest.fixture(scope="module")
def downloaded(served_file, tmp_path_factory) -> Iterator[Download]:
    """An RVOS_HOME filled by the ``download`` CLI (network replaced by :class:`FakeHub`); removed afterwards."""
    from open_clip import pretrained as oc_pretrained

    home = tmp_path_factory.mktemp("installed") / "rvos_home"
    hub = FakeHub(served_file)
    with pytest.MonkeyPatch.context() as mp:
        _set_home(mp, home)
        mp.setattr(oc_pretrained, "hf_hub_download", hub)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["download", BACKBONE])
    yield Download(home=home, exit_code=code, stdout=out.getvalue(), hub_calls=hub.calls)
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def installed_home(downloaded, monkeypatch) -> Path:
    _set_home(monkeypatch, downloaded.home)
    return downloaded.home


def _tiny_input(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames ``(1, 2, 3, 64, 64)`` (the smallest useful multiple of the stride 32) and the expression's tokens."""
    g = torch.Generator().manual_seed(7)
    return torch.randn(1, 2, 3, 64, 64, generator=g), make_tokenizer(cfg)([EXPRESSION])


@dataclass
class TrainedHead:
    """Facts measured on the network built from the downloaded backbone, and the head checkpoint it wrote."""

    head: Path
    run: Path
    backbone_file: Path
    backbone_keys_net: set[str] = field(default_factory=set)
    backbone_keys_file: set[str] = field(default_factory=set)
    backbone_mismatches: list[str] = field(default_factory=list)
    trainable_backbone: list[str] = field(default_factory=list)
    backbone_in_train_mode: list[str] = field(default_factory=list)
    head_in_train_mode: bool = False
    backbone_with_grad: list[str] = field(default_factory=list)
    head_params_moved: int = 0
    head_keys: set[str] = field(default_factory=set)
    head_bytes: int = 0
    reference: dict[str, torch.Tensor] = field(default_factory=dict)


def _compare_backbone(net, path: Path, facts: TrainedHead) -> None:
    """Compare the net's CLIP tensors with the safetensors file, one tensor at a time (bounded memory)."""
    from safetensors import safe_open

    own = net.clip.state_dict()
    facts.backbone_keys_net = set(own)
    with safe_open(str(path), framework="pt") as f:
        facts.backbone_keys_file = set(f.keys())
        for k in sorted(facts.backbone_keys_file & facts.backbone_keys_net):
            if not torch.equal(f.get_tensor(k), own[k]):
                facts.backbone_mismatches.append(k)


def _one_head_step(net, cfg) -> tuple[int, dict]:
    """One AdamW step on a fixed sample over the parameters that require grad (as ``train`` sets up its
    optimizer); returns how many parameters moved and the optimizer state."""
    x, tok = _tiny_input(cfg)
    target = torch.zeros(1, 2, 16, 16)
    target[..., 4:10, 3:9] = 1.0
    params = [p for p in net.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=1e-3)
    model_loss(net(x, tok), [target])["total"].backward()
    opt.step()
    return sum(not torch.equal(b, p) for b, p in zip(before, params)), opt.state_dict()


def _release_memory() -> None:
    """Free the dropped 1.4 GB network for real: collect, then hand glibc's freed heap back to the OS
    (without the trim, the next build's peak adds to what the heap still holds)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


@pytest.fixture(scope="module")
def trained_head(downloaded, tmp_path_factory) -> TrainedHead:
    """Build the net from the downloaded backbone the way ``train`` does, train its head one step, save the
    head with ``save_checkpoint``, record reference outputs; the 1.4 GB network is freed afterwards."""
    cfg = load_config(MODEL)
    with pytest.MonkeyPatch.context() as mp:
        _set_home(mp, downloaded.home)
        backbone_file = weights.require(BACKBONE)
        net = build_net(cfg, backbone_path=backbone_file)
    folder = tmp_path_factory.mktemp("head")
    facts = TrainedHead(head=folder / "head.pt", run=folder / "run", backbone_file=backbone_file)
    _compare_backbone(net, backbone_file, facts)
    facts.trainable_backbone = [n for n, p in net.clip.named_parameters() if p.requires_grad]
    net.train()
    facts.backbone_in_train_mode = [n or "clip" for n, m in net.clip.named_modules() if m.training]
    facts.head_in_train_mode = net.training and net.layers.training and net.score_head.training
    facts.head_params_moved, optimizer_state = _one_head_step(net, cfg)
    facts.backbone_with_grad = [n for n, p in net.clip.named_parameters() if p.grad is not None]
    save_checkpoint(net, facts.head, {"step": 1}, half=False)
    # the same network as a `train` run folder after step 1 (what train writes to OUT/last.pt)
    save_checkpoint(net, facts.run / "last.pt", {"step": 1, "wall_seconds": 0.0}, half=False,
                    optimizer_state=optimizer_state)
    facts.head_keys = set(read_checkpoint(facts.head)["state_dict"])
    facts.head_bytes = facts.head.stat().st_size
    net.eval()
    x, tok = _tiny_input(cfg)
    with torch.no_grad():
        out = net(x, tok)
    facts.reference = {k: out[k].clone() for k in ("pred_masks", "pred_logits", "dense")}
    del net, out
    _release_memory()
    return facts


# --- without the backbone -------------------------------------------------------------------------

def test_missing_backbone_one_clear_error_and_nothing_written(empty_home, tmp_path):
    for load in (lambda: load_clip_rvos(MODEL), lambda: get_engine(MODEL)):
        with pytest.raises(weights.WeightsNotAvailable) as info:
            load()
        assert COMMAND in str(info.value)
    with pytest.raises(weights.WeightsNotAvailable, match=COMMAND):
        train(TrainOptions(config=MODEL, data="synthetic", out_dir=str(tmp_path / "run"), steps=1, threads=1),
              progress=False)
    assert not empty_home.exists()


def test_segment_cli_without_backbone_exits_with_one_line(empty_home, tmp_path, capsys):
    from rvos_core.synthetic import write_split

    split = write_split(tmp_path / "split", videos=1, seed=0, frames=2, size=(64, 64), progress=False)
    frames = next((split / "JPEGImages").iterdir())
    out = tmp_path / "masks"
    assert main(["segment", str(frames), "--expression", EXPRESSION, "--out", str(out), "--model", MODEL]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and COMMAND in err[0]
    assert not out.exists() and not empty_home.exists()


def test_engine_status_names_the_download_command(empty_home):
    """The UI's one-line engine status must say how to install the model, not raise."""
    status = engine_status(MODEL)
    assert "not installed" in status and COMMAND in status


def test_trained_head_without_backbone_names_the_download_command(empty_home, trained_head):
    with pytest.raises(weights.WeightsNotAvailable, match=COMMAND):
        load_clip_rvos(MODEL, checkpoint=trained_head.head)
    assert not empty_home.exists()


# --- download + the same loading code -----------------------------------------------------------

def test_download_cli_fetches_the_backbone_where_the_loader_looks(downloaded, installed_home):
    assert downloaded.exit_code == 0
    assert downloaded.hub_calls == [(HUB_REPO, HUB_FILE)]
    found = weights.local_path(BACKBONE)
    assert found is not None and found.name == HUB_FILE
    assert found.is_relative_to(installed_home / "weights" / "open_clip")
    assert downloaded.stdout.strip().splitlines()[-1] == str(found)


def test_backbone_equals_the_downloaded_file(trained_head):
    assert trained_head.backbone_keys_net == trained_head.backbone_keys_file
    assert len(trained_head.backbone_keys_file) > 300
    assert trained_head.backbone_mismatches == []


def test_backbone_is_frozen_and_stays_in_eval_mode(trained_head):
    assert trained_head.trainable_backbone == []
    assert trained_head.backbone_in_train_mode == []  # even after net.train()
    assert trained_head.head_in_train_mode
    assert trained_head.backbone_with_grad == []  # a training step leaves no gradient on the backbone
    assert trained_head.head_params_moved > 10


def test_head_checkpoint_leaves_the_backbone_out(trained_head):
    assert trained_head.head_keys and not any(k.startswith("clip.") for k in trained_head.head_keys)
    assert {"score_head.weight", "query_embed.weight", "lateral.0.0.weight"} <= trained_head.head_keys
    assert trained_head.head_bytes < trained_head.backbone_file.stat().st_size / 20


def test_head_checkpoint_reloads_to_identical_outputs(installed_home, trained_head):
    engine = load_clip_rvos(MODEL, checkpoint=trained_head.head)
    net = engine.net
    assert not net.training and not any(p.requires_grad for p in net.clip.parameters())
    x, tok = _tiny_input(engine.cfg)
    with torch.no_grad():
        out = net(x, tok)
    for k, ref in trained_head.reference.items():
        assert torch.equal(out[k], ref), k
    assert out["pred_masks"].shape == (1, engine.cfg.num_queries, 2, 16, 16)
    del engine, net, out
    _release_memory()


def test_default_head_not_installed_is_a_clear_error(installed_home):
    """Backbone installed, no trained head: a FileNotFoundError naming the head (not an 'unknown weight')."""
    head_name = load_config(MODEL).checkpoint
    with pytest.raises(FileNotFoundError) as info:
        load_clip_rvos(MODEL)
    assert head_name in str(info.value)


def test_train_resumes_a_frozen_backbone_run_on_a_mevis_split(installed_home, trained_head, tmp_path):
    """``train`` on a MeViS-layout split resumes a run whose ``last.pt`` holds only the head: the backbone comes
    from the downloaded file again, the head and the optimizer state from ``last.pt``; one more step."""
    from rvos_core.synthetic import write_split

    split = write_split(tmp_path / "train", videos=1, seed=1, frames=8, size=(64, 64), progress=False)
    opts = TrainOptions(config=MODEL, data=str(split), out_dir=str(trained_head.run), steps=2, batch_size=1,
                        threads=1, ckpt_every=1, log_every=1, warmup=1, image_size=64)
    final = train(opts, progress=False)
    _release_memory()
    rows = [json.loads(line) for line in (trained_head.run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2]  # resumed after step 1, not restarted
    last = read_checkpoint(trained_head.run / "last.pt")
    assert last["train_info"]["step"] == 2
    assert {int(s["step"]) for s in last["optimizer"]["state"].values()} == {2}  # AdamW state carried over
    for ck in (last, read_checkpoint(final)):
        assert set(ck["state_dict"]) == trained_head.head_keys  # still no backbone tensor
