"""bench/vllm_shop.py is for a lent GPU machine: anywhere else it refuses before exporting or starting anything."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "vllm_shop.py"


def test_refuses_cleanly_without_a_gpu_or_vllm(tmp_path):
    if shutil.which("nvidia-smi") and importlib.util.find_spec("vllm"):
        pytest.skip("a GPU machine with vLLM: the script would run the benchmark")
    done = subprocess.run([sys.executable, str(SCRIPT), "--run", str(tmp_path / "no_run"), "--out",
                           str(tmp_path / "out.json"), "--export-dir", str(tmp_path / "export")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "vllm_shop: refused: " in done.stderr
    assert ("no GPU" in done.stderr) or ("vllm not installed" in done.stderr)
    assert not (tmp_path / "export").exists() and not (tmp_path / "out.json").exists()  # nothing was started
