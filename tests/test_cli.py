"""The command line contract: segment, synth, download, evaluate-model (python -m rvos_core …)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rvos_core.cli import main
from _files import tree_hash

ROOT = Path(__file__).resolve().parents[1]
from _paths import SHARED_DATA as SHARED
BLACKSWAN = SHARED / "davis2016_blackswan" / "blackswan.mp4"


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
    assert tree_hash(tmp_path / "a") == tree_hash(tmp_path / "b")
    assert main(["synth", "--out", str(tmp_path / "c"), "--videos", "3", "--seed", "8", "--frames", "4", "--size", "64x96"]) == 0
    assert tree_hash(tmp_path / "a") != tree_hash(tmp_path / "c")
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
    for cmd in ("segment", "synth", "download", "train", "evaluate"):
        assert cmd in r.stdout


def test_evaluate_model_on_synthetic_split(tmp_path, capsys):
    split = tmp_path / "split"
    assert main(["synth", "--out", str(split), "--videos", "2", "--seed", "3"]) == 0
    assert main(["evaluate-model", str(split), "--out", str(tmp_path / "r.json")]) == 0
    import json

    res = json.loads((tmp_path / "r.json").read_text())
    assert 0.0 <= res["J&F"] <= 1.0 and res["num_expressions"] == len(res["per_expression"]) > 0


def _split_and_perfect_predictions(tmp_path: Path) -> tuple[Path, Path]:
    from rvos_core.formats.mevis import read_mevis_split, write_prediction_pngs

    split, pred = tmp_path / "split", tmp_path / "pred"
    assert main(["synth", "--out", str(split), "--videos", "2", "--seed", "4", "--frames", "4", "--size", "48x64"]) == 0
    with read_mevis_split(split) as s:
        for v in s.videos:
            for e in s.expressions(v):
                write_prediction_pngs(pred, v, e, s.expression_masks(v, e), s.frame_names(v))
    return split, pred


def test_evaluate_perfect_predictions_writes_the_contract_json(tmp_path, capsys):
    import json

    split, pred = _split_and_perfect_predictions(tmp_path)
    capsys.readouterr()
    out = tmp_path / "res" / "r.json"
    assert main(["evaluate", "--gt", str(split), "--pred", str(pred), "--out", str(out), "--strict",
                 "--workers", "2", "--start-method", "spawn"]) == 0
    res = json.loads(out.read_text())
    assert res["J"] == res["F"] == res["J&F"] == 1.0 and res["problems"] == []
    assert all(k.startswith("synth_0000") and v["J"] == v["F"] == 1.0 for k, v in res["per_expression"].items())
    stdout = capsys.readouterr().out
    assert f"evaluated {len(res['per_expression'])} expressions (2 videos" in stdout
    assert "kind: " in stdout and "single-object" in stdout and "problems: 0" in stdout and str(out) in stdout


def test_evaluate_strict_exits_non_zero_after_writing_the_json(tmp_path, capsys):
    import json

    split, pred = _split_and_perfect_predictions(tmp_path)
    victim = sorted(pred.rglob("00002.png"))[0]
    victim.unlink()
    name = victim.relative_to(pred).as_posix()
    out = tmp_path / "r.json"
    assert main(["evaluate", "--gt", str(split), "--pred", str(pred), "--out", str(out), "--workers", "2"]) == 0
    capsys.readouterr()
    out.unlink()
    assert main(["evaluate", "--gt", str(split), "--pred", str(pred), "--out", str(out), "--strict"]) == 1
    res = json.loads(out.read_text())
    assert res["problems"] == [f"{name}: missing; scored as an empty mask"] and res["J"] < 1.0
    captured = capsys.readouterr()
    assert "problems: 1" in captured.out
    assert captured.err.strip().splitlines()[-1].startswith("error: --strict: 1 problem(s)")


def test_evaluate_errors_are_one_clear_line(tmp_path, capsys):
    import shutil
    import zipfile

    split, pred = _split_and_perfect_predictions(tmp_path)
    capsys.readouterr()
    out = tmp_path / "r.json"
    unsafe = tmp_path / "unsafe.zip"
    with zipfile.ZipFile(unsafe, "w") as zf:
        zf.writestr("../../etc/x.png", b"")
    cases = [(["--gt", str(tmp_path / "no_split"), "--pred", str(pred)], "no_split"),
             (["--gt", str(split), "--pred", str(tmp_path / "no_pred")], "no_pred"),
             (["--gt", str(split), "--pred", str(unsafe)], "unsafe entry"),
             (["--gt", str(split), "--pred", str(pred), "--workers", "0"], "workers"),
             (["--gt", str(tmp_path / "valid"), "--pred", str(pred)], "no mask_dict.json")]
    shutil.copytree(split, tmp_path / "valid", ignore=shutil.ignore_patterns("mask_dict.json"))
    for args, phrase in cases:
        assert main(["evaluate", *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and phrase in err[0], (args, err)
    assert not out.exists()


def test_convert_mevis_to_ytvos_and_back_keeps_masks_and_expressions(tmp_path, capsys):
    from rvos_core.formats.mevis import read_mevis_split

    src = tmp_path / "mevis"
    assert main(["synth", "--out", str(src), "--videos", "2", "--seed", "5", "--frames", "4", "--size", "64x96"]) == 0
    yt, back = tmp_path / "ytvos", tmp_path / "back"
    assert main(["convert", str(src), str(yt), "--from", "mevis", "--to", "ytvos", "--on-overlap", "last"]) == 0
    assert (yt / "meta_expressions.json").exists() and any((yt / "Annotations").iterdir())
    assert main(["convert", str(yt), str(back), "--from", "ytvos", "--to", "mevis"]) == 0
    with read_mevis_split(src) as a, read_mevis_split(back) as b:
        assert a.videos == b.videos
        for v in a.videos:
            assert {k: e.exp for k, e in a.expressions(v).items()} == {k: e.exp for k, e in b.expressions(v).items()}
            for k in a.expressions(v):
                assert np.array_equal(a.expression_masks(v, k), b.expression_masks(v, k))
    capsys.readouterr()
    assert main(["convert", str(src), str(yt), "--from", "mevis", "--to", "mevis"]) == 2
    assert "not supported" in capsys.readouterr().err


def test_bench_clicks_writes_the_contract_json(tmp_path, capsys):
    import json

    src = SHARED / "davis2016_blackswan"
    frames, masks = tmp_path / "frames", tmp_path / "masks"
    frames.mkdir(), masks.mkdir()
    for name in ("00000", "00001", "00002"):
        Image.open(src / "JPEGImages" / f"{name}.jpg").crop((60, 40, 620, 440)).save(frames / f"{name}.jpg", quality=95)
        Image.open(src / "Annotations" / f"{name}.png").crop((60, 40, 620, 440)).save(masks / f"{name}.png")
    out = tmp_path / "clicks.json"
    assert main(["bench-clicks", "--frames", str(frames), "--masks", str(masks), "--out", str(out),
                 "--max-clicks", "4", "--clip-budget", "6"]) == 0
    res = json.loads(out.read_text())
    assert {"noc85", "noc90", "mean_j_at_k", "clip_clicks_to_085", "latency_ms", "refiner"} <= set(res)
    assert res["refiner"] == "grabcut" and len(res["mean_j_at_k"]) == 4
    assert 1 <= res["noc85"] <= 4 and res["latency_ms"]["p50"] > 0
    assert res["mean_j_at_k"][-1] >= res["mean_j_at_k"][0]
    capsys.readouterr()
    assert main(["bench-clicks", "--frames", str(frames), "--masks", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "nope" in capsys.readouterr().err


def test_train_parses_sampling_and_synthetic_frames():
    from rvos_core.cli import build_parser
    from rvos_core.training.train import SAMPLINGS, TrainOptions

    a = build_parser().parse_args(["train", "--out", "run"])
    assert (a.sampling, a.synthetic_frames) == (TrainOptions.sampling, TrainOptions.synthetic_frames) == ("global", 0)
    a = build_parser().parse_args(["train", "--out", "run", "--sampling", "local", "--synthetic-frames", "24"])
    assert (a.sampling, a.synthetic_frames) == ("local", 24)
    for sampling in SAMPLINGS:  # every strategy of the train loop is reachable from the command line
        assert build_parser().parse_args(["train", "--out", "run", "--sampling", sampling]).sampling == sampling
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--out", "run", "--sampling", "random"])
    from rvos_core.synthetic import VOCABULARIES

    assert build_parser().parse_args(["train", "--out", "run"]).vocabulary == TrainOptions.vocabulary == "basic"
    for vocabulary in VOCABULARIES:
        assert build_parser().parse_args(["train", "--out", "run", "--vocabulary", vocabulary]).vocabulary == vocabulary


def test_train_two_steps_with_local_sampling_records_the_options(tmp_path, capsys):
    import json

    from rvos_core.engines.clip_rvos import read_checkpoint
    from test_model import micro_config

    cfg = tmp_path / "micro.json"
    cfg.write_text(json.dumps(micro_config().to_dict()))
    run = tmp_path / "run"
    assert main(["train", "--model", str(cfg), "--out", str(run), "--steps", "2", "--batch-size", "1",
                 "--image-size", "64", "--threads", "1", "--sampling", "local", "--synthetic-frames", "10"]) == 0
    assert f"checkpoint: {run / 'final.pt'}" in capsys.readouterr().out
    options = read_checkpoint(run / "final.pt")["train_info"]["options"]
    assert (options["sampling"], options["synthetic_frames"], options["steps"]) == ("local", 10, 2)
    assert main(["train", "--model", str(cfg), "--out", str(tmp_path / "bad"), "--synthetic-frames", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "synthetic_frames must be >= 0" in err[0]
