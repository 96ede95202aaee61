"""The command line contract: segment, synth, download, evaluate-model (python -m rvos_core …)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rvos_core.cli import main

ROOT = Path(__file__).resolve().parents[1]
from _paths import SHARED_DATA as SHARED
BLACKSWAN = SHARED / "davis2016_blackswan" / "blackswan.mp4"


def _tree_hash(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(d)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_segment_blackswan_writes_one_png_per_frame(tmp_path, capsys):
    out = tmp_path / "masks"
    overlay = tmp_path / "overlay.mp4"
    rc = main(["segment", str(BLACKSWAN), "--expression", "the black swan swimming in the pond",
               "--out", str(out), "--overlay", str(overlay)])
    assert rc == 0
    pngs = sorted(out.glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(50)]
    im = Image.open(pngs[0])
    assert im.mode == "L" and im.size == (854, 480)
    vals = np.unique(np.concatenate([np.unique(np.asarray(Image.open(p))) for p in pngs]))
    assert set(vals.tolist()) <= {0, 255}
    assert overlay.stat().st_size > 1000
    from rvos_core.video import open_video

    assert len(open_video(overlay)) == 50
    assert "50 masks written" in capsys.readouterr().out


def test_segment_with_grabcut_refiner_on_frame_folder(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, src in enumerate(sorted((SHARED / "davis2016_blackswan" / "JPEGImages").glob("*.jpg"))[:6]):
        (frames / f"{i}.jpg").write_bytes(src.read_bytes())
    rc = main(["segment", str(frames), "--expression", "the swan", "--out", str(tmp_path / "m"), "--refiner", "grabcut"])
    assert rc == 0
    assert len(list((tmp_path / "m").glob("*.png"))) == 6


def test_segment_errors_are_one_clear_line(tmp_path, capsys):
    rc = main(["segment", str(tmp_path / "missing.mp4"), "--expression", "x", "--out", str(tmp_path / "o")])
    assert rc != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.mp4" in err[0]
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    assert main(["segment", str(bad), "--expression", "x", "--out", str(tmp_path / "o")]) != 0
    assert "bad.mp4" in capsys.readouterr().err
    assert main(["segment", str(BLACKSWAN), "--expression", "  ", "--out", str(tmp_path / "o")]) != 0
    assert "expression is empty" in capsys.readouterr().err
    assert main(["segment", str(BLACKSWAN), "--expression", "x", "--out", str(tmp_path / "o"), "--model", "nope"]) != 0
    assert "clip-rvos-tiny" in capsys.readouterr().err


def test_synth_is_byte_identical_per_seed(tmp_path):
    for name in ("a", "b"):
        assert main(["synth", "--out", str(tmp_path / name), "--videos", "3", "--seed", "7", "--frames", "4", "--size", "64x96"]) == 0
    assert _tree_hash(tmp_path / "a") == _tree_hash(tmp_path / "b")
    assert main(["synth", "--out", str(tmp_path / "c"), "--videos", "3", "--seed", "8", "--frames", "4", "--size", "64x96"]) == 0
    assert _tree_hash(tmp_path / "a") != _tree_hash(tmp_path / "c")
    assert (tmp_path / "a" / "meta_expressions.json").exists() and (tmp_path / "a" / "mask_dict.json").exists()
    assert main(["synth", "--out", str(tmp_path / "d"), "--videos", "1", "--seed", "1", "--size", "64by64"]) != 0


def test_download_list_offline_does_not_touch_network(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("RVOS_HOME", str(tmp_path / "home"))
    assert main(["download", "--list"]) == 0
    out = capsys.readouterr().out
    assert "hq_sam_vit_b" in out and "convnext_large_d_320" in out and "not downloaded" in out
    assert main(["download", "no_such_weight"]) != 0
    assert "hq_sam_vit_b" in capsys.readouterr().err  # lists the valid names


def test_help_is_fast_and_lists_commands():
    r = subprocess.run([sys.executable, "-m", "rvos_core", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0
    for cmd in ("segment", "synth", "download", "train"):
        assert cmd in r.stdout


def test_evaluate_model_on_synthetic_split(tmp_path, capsys):
    split = tmp_path / "split"
    assert main(["synth", "--out", str(split), "--videos", "2", "--seed", "3"]) == 0
    assert main(["evaluate-model", str(split), "--out", str(tmp_path / "r.json")]) == 0
    import json

    res = json.loads((tmp_path / "r.json").read_text())
    assert 0.0 <= res["J&F"] <= 1.0 and res["num_expressions"] == len(res["per_expression"]) > 0
