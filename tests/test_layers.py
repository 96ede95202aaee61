"""Layer rules: rvos_core never imports gradio and does nothing at import time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_rvos_core_imports_without_gradio_or_side_effects(tmp_path):
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in (ROOT / "rvos_core").rglob("*.py")
        if p.name != "__main__.py"
    )
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = [m for m in sys.modules if m == 'gradio' or m.startswith('gradio.')]\n"
        "assert not bad, bad\n"
        "print(len(sys.modules))\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "RVOS_HOME": str(home / "rvos"), "HF_HOME": str(home / "hf"),
           "PYTHONPATH": str(ROOT)}
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    r = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    # nothing created at import time: no cache dirs, no files in the working directory
    assert list(home.iterdir()) == []
    assert list(cwd.iterdir()) == []


def test_no_gradio_in_rvos_core_sources():
    for p in (ROOT / "rvos_core").rglob("*.py"):
        text = p.read_text()
        assert "import gradio" not in text and "from gradio" not in text, p
