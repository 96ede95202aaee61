"""Tests for rvos_core.weights: registry data, local lookup, offline errors, download + checksum (network mocked)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError

from rvos_core import weights


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An isolated RVOS_HOME; the weights directory is RVOS_HOME/weights."""
    monkeypatch.setenv("RVOS_HOME", str(tmp_path / "rvos_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # belt and braces: no test may reach the network
    return tmp_path / "rvos_home"


class FakeHub:
    """Stands in for huggingface_hub.hf_hub_download: records calls, writes ``payload`` into local_dir."""

    def __init__(self, payload: bytes = b"fake checkpoint bytes", error: Exception | None = None) -> None:
        self.payload = payload
        self.error = error
        self.calls: list[dict] = []

    def __call__(self, repo_id: str, filename: str, **kwargs) -> str:
        self.calls.append({"repo_id": repo_id, "filename": filename, **kwargs})
        if self.error is not None:
            raise self.error
        local_dir = Path(kwargs["local_dir"])
        local_dir.mkdir(parents=True, exist_ok=True)
        path = local_dir / filename
        path.write_bytes(self.payload)
        return str(path)


@pytest.fixture
def fake_hub(monkeypatch) -> FakeHub:
    fake = FakeHub()
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    return fake


def test_registry_has_the_hq_sam_checkpoints_from_the_authors_repo():
    for model_type in ("vit_tiny", "vit_b", "vit_l", "vit_h"):
        spec = weights.get_spec(f"hq_sam_{model_type}")
        assert spec.kind == "hf_file"
        assert spec.repo_id == "lkeab/hq-sam"
        assert spec.filename == f"sam_hq_{model_type}.pth"
        assert spec.sha256 is None  # not pinned: never invented
    sizes = [weights.get_spec(f"hq_sam_{m}").size_mb for m in ("vit_tiny", "vit_b", "vit_l", "vit_h")]
    assert sizes == sorted(sizes)


def test_open_clip_entry_matches_what_open_clip_resolves():
    from open_clip import pretrained as oc_pretrained

    spec = weights.get_spec("convnext_large_d_320")
    assert (spec.kind, spec.model, spec.tag) == ("open_clip", "convnext_large_d_320", "laion2b_s29b_b131k_ft_soup")
    cfg = oc_pretrained.get_pretrained_cfg(spec.model, spec.tag)
    assert cfg["hf_hub"].rstrip("/") == spec.repo_id


def test_weights_dir_follows_rvos_home_and_defaults_to_user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RVOS_HOME", str(tmp_path / "h"))
    assert weights.weights_dir() == tmp_path / "h" / "weights"
    monkeypatch.delenv("RVOS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert weights.weights_dir() == tmp_path / "user" / ".cache" / "rvos_workbench" / "weights"


def test_lookups_never_create_the_cache_dir(home):
    assert weights.local_path("hq_sam_vit_b") is None
    assert weights.local_path("convnext_large_d_320") is None
    assert all(status.path is None for status in weights.list_weights())
    with pytest.raises(weights.WeightsNotAvailable):
        weights.require("hq_sam_vit_b")
    assert not home.exists()


def test_local_path_finds_cached_file_and_explicit_paths(home, tmp_path):
    target = home / "weights" / "sam_hq_vit_tiny.pth"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"x")
    assert weights.local_path("hq_sam_vit_tiny") == target
    assert weights.require("hq_sam_vit_tiny") == target
    explicit = tmp_path / "mine.pth"
    explicit.write_bytes(b"y")
    assert weights.local_path(explicit) == explicit
    assert weights.require(str(explicit)) == explicit
    assert weights.local_path(tmp_path / "absent.pth") is None


def test_require_message_names_weight_place_and_command(home):
    with pytest.raises(weights.WeightsNotAvailable) as info:
        weights.require("hq_sam_vit_b")
    message = str(info.value)
    assert "'hq_sam_vit_b'" in message
    assert str(home / "weights" / "sam_hq_vit_b.pth") in message
    assert "python -m rvos_core download hq_sam_vit_b" in message
    assert isinstance(info.value, FileNotFoundError)


def test_require_missing_path_and_unknown_name(home, tmp_path):
    with pytest.raises(weights.WeightsNotAvailable, match="does not exist"):
        weights.require(tmp_path / "nope.pth")
    with pytest.raises(ValueError) as info:
        weights.require("hq_sam_vit_q")
    for name in weights.WEIGHTS:
        assert name in str(info.value)


def test_download_hf_file_into_cache(home, fake_hub):
    paths = weights.download("hq_sam_vit_tiny", progress=False)
    assert paths == [home / "weights" / "sam_hq_vit_tiny.pth"]
    assert paths[0].read_bytes() == fake_hub.payload
    (call,) = fake_hub.calls
    assert (call["repo_id"], call["filename"]) == ("lkeab/hq-sam", "sam_hq_vit_tiny.pth")
    assert Path(call["local_dir"]) == home / "weights"
    assert weights.local_path("hq_sam_vit_tiny") == paths[0]
    assert weights.require("hq_sam_vit_tiny") == paths[0]


def test_download_verifies_pinned_checksum(home, fake_hub, monkeypatch):
    good = hashlib.sha256(fake_hub.payload).hexdigest()
    spec = dataclasses.replace(weights.get_spec("hq_sam_vit_b"), sha256=good)
    monkeypatch.setitem(weights.WEIGHTS, "hq_sam_vit_b", spec)
    (path,) = weights.download(["hq_sam_vit_b"], progress=False)
    assert path.is_file()


def test_download_checksum_mismatch_raises_and_removes_file(home, fake_hub, monkeypatch):
    spec = dataclasses.replace(weights.get_spec("hq_sam_vit_b"), sha256="0" * 64)
    monkeypatch.setitem(weights.WEIGHTS, "hq_sam_vit_b", spec)
    with pytest.raises(weights.WeightsChecksumError) as info:
        weights.download("hq_sam_vit_b", progress=False)
    assert "0" * 64 in str(info.value)
    assert hashlib.sha256(fake_hub.payload).hexdigest() in str(info.value)
    assert weights.local_path("hq_sam_vit_b") is None


def test_download_unknown_name_lists_valid_names_and_fetches_nothing(home, fake_hub):
    with pytest.raises(ValueError) as info:
        weights.download(["hq_sam_vit_b", "sam3_giant"])
    assert "sam3_giant" in str(info.value)
    for name in weights.WEIGHTS:
        assert name in str(info.value)
    assert fake_hub.calls == []
    with pytest.raises(ValueError, match="no weight name"):
        weights.download([])


def test_download_offline_gives_clear_error(home, monkeypatch):
    fake = FakeHub(error=LocalEntryNotFoundError("connection error: cannot reach huggingface.co"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    with pytest.raises(weights.WeightsOffline) as info:
        weights.download("hq_sam_vit_l", progress=False)
    message = str(info.value)
    assert "offline" in message
    assert "python -m rvos_core download hq_sam_vit_l" in message
    assert isinstance(info.value, ConnectionError)


def test_download_open_clip_uses_open_clips_helper(home, monkeypatch):
    from open_clip import pretrained as oc_pretrained

    seen: dict = {}

    def fake_download_pretrained(cfg, prefer_hf_hub=True, cache_dir=None):
        seen.update(cfg=cfg, cache_dir=cache_dir)
        spec = weights.get_spec("convnext_large_d_320")
        snapshot = Path(cache_dir) / ("models--" + spec.repo_id.replace("/", "--")) / "snapshots" / "abc123"
        snapshot.mkdir(parents=True)
        (Path(cache_dir) / ("models--" + spec.repo_id.replace("/", "--")) / "refs").mkdir()
        (Path(cache_dir) / ("models--" + spec.repo_id.replace("/", "--")) / "refs" / "main").write_text("abc123")
        path = snapshot / "open_clip_model.safetensors"
        path.write_bytes(b"clip")
        return str(path)

    monkeypatch.setattr(oc_pretrained, "download_pretrained", fake_download_pretrained)
    (path,) = weights.download("convnext_large_d_320", progress=False)
    assert seen["cfg"]["hf_hub"].startswith("laion/CLIP-convnext_large_d_320.laion2B-s29B-b131K-ft-soup")
    assert Path(seen["cache_dir"]) == home / "weights" / "open_clip"
    assert weights.local_path("convnext_large_d_320") == path


def test_download_open_clip_offline(home, monkeypatch):
    from open_clip import pretrained as oc_pretrained

    def failing(cfg, prefer_hf_hub=True, cache_dir=None):
        raise FileNotFoundError("Failed to download file (open_clip_pytorch_model.bin) for laion/...")

    monkeypatch.setattr(oc_pretrained, "download_pretrained", failing)
    with pytest.raises(weights.WeightsOffline, match="offline"):
        weights.download("convnext_large_d_320")


def test_listing_mentions_every_weight_and_unpinned_checksums(home):
    table = weights.format_weights_table()
    for name in weights.WEIGHTS:
        assert name in table
    assert "sha256 not pinned" in table
    assert str(home / "weights") in table


# --- roberta-base: a multi-file Hugging Face folder --------------------------------------------------

ROBERTA_FILES = ("config.json", "vocab.json", "merges.txt", "model.safetensors")


def _missing_entry(filename: str) -> Exception:
    """What hf_hub_download raises for a file the repository does not have (HTTP 404)."""
    from types import SimpleNamespace

    from huggingface_hub.errors import RemoteEntryNotFoundError

    return RemoteEntryNotFoundError(f"404: {filename} not in repo", response=SimpleNamespace(headers={}, request=None))


def test_roberta_base_entry_is_the_facebookai_folder():
    spec = weights.get_spec("roberta-base")
    assert (spec.kind, spec.repo_id) == ("hf_folder", "FacebookAI/roberta-base")
    assert spec.filenames == ROBERTA_FILES and spec.optional_filenames == ("tokenizer.json",)
    assert spec.sha256 is None


def test_download_roberta_base_fetches_every_file_into_its_folder(home, fake_hub):
    (path,) = weights.download("roberta-base", progress=False)
    folder = home / "weights" / "roberta-base"
    assert path == folder
    assert [(c["repo_id"], c["filename"]) for c in fake_hub.calls] == [
        ("FacebookAI/roberta-base", f) for f in (*ROBERTA_FILES, "tokenizer.json")]
    assert all(Path(c["local_dir"]) == folder for c in fake_hub.calls)
    assert sorted(p.name for p in folder.iterdir()) == sorted((*ROBERTA_FILES, "tokenizer.json"))
    assert weights.local_path("roberta-base") == folder == weights.require("roberta-base")


def test_download_roberta_base_skips_an_optional_file_the_repo_lacks(home, monkeypatch):
    class NoTokenizerJson(FakeHub):
        def __call__(self, repo_id: str, filename: str, **kwargs) -> str:
            if filename == "tokenizer.json":
                self.calls.append({"repo_id": repo_id, "filename": filename, **kwargs})
                raise _missing_entry(filename)
            return super().__call__(repo_id, filename, **kwargs)

    fake = NoTokenizerJson()
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    (path,) = weights.download("roberta-base", progress=False)
    assert sorted(p.name for p in path.iterdir()) == sorted(ROBERTA_FILES)
    assert weights.local_path("roberta-base") == path
    # a required file the repo lacks is an error, naming the file
    def missing_config(repo_id, filename, **kwargs):
        raise _missing_entry(filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", missing_config)
    with pytest.raises(weights.WeightsError, match=r"'roberta-base' \(config.json\)"):
        weights.download("roberta-base", progress=False)


def test_roberta_base_offline_and_incomplete_folder_messages(home, monkeypatch):
    fake = FakeHub(error=LocalEntryNotFoundError("connection error: cannot reach huggingface.co"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    with pytest.raises(weights.WeightsOffline) as info:
        weights.download("roberta-base", progress=False)
    assert "offline" in str(info.value) and "python -m rvos_core download roberta-base" in str(info.value)
    assert len(fake.calls) == 1  # stops at the first file
    with pytest.raises(weights.WeightsNotAvailable) as info:
        weights.require("roberta-base")
    message = str(info.value)
    assert "FacebookAI/roberta-base" in message and "python -m rvos_core download roberta-base" in message
    assert str(home / "weights" / "roberta-base") in message and not home.exists()
    folder = home / "weights" / "roberta-base"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"w")
    assert weights.local_path("roberta-base") is None
    with pytest.raises(weights.WeightsNotAvailable,
                       match=r"lacks \['tokenizer.json or vocab.json', 'tokenizer.json or merges.txt'\]"):
        weights.require("roberta-base")
    (folder / "tokenizer.json").write_text("{}")  # the fast-tokenizer file stands in for the BPE pair
    assert weights.local_path("roberta-base") == folder == weights.require("roberta-base")


def test_roberta_base_completeness_matches_what_the_model_loader_accepts():
    from rvos_core.engines.clip_rvos_model import ROBERTA_FILES as LOADER_FILES

    spec = weights.get_spec("roberta-base")
    assert {frozenset(g) for g in spec.required_files} == {frozenset(g) for g in LOADER_FILES}
    assert all(any(f in spec.filenames for f in g) for g in spec.required_files)  # a download satisfies it


def test_download_command_fetches_roberta_base(home, fake_hub, capsys):
    from rvos_core.cli import main

    assert main(["download", "roberta-base"]) == 0
    assert capsys.readouterr().out.strip() == str(home / "weights" / "roberta-base")
    assert {c["filename"] for c in fake_hub.calls} == {*ROBERTA_FILES, "tokenizer.json"}
    assert main(["download", "--list"]) == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("roberta-base ")]
    assert f"downloaded ({home / 'weights' / 'roberta-base'})" in line


def test_download_command_offline_is_one_line_naming_the_command(home, monkeypatch, capsys):
    from rvos_core.cli import main

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", FakeHub(error=LocalEntryNotFoundError("no network")))
    assert main(["download", "roberta-base"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "python -m rvos_core download roberta-base" in err[0]
