"""The converted-model cache: built once by concurrent processes, written atomically, broken ones rebuilt."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from kefu.train import models
from kefu.train.models import CACHE_MARKER, DEFAULT_MODEL, cached_build, resolve_model
from tiny import make_model_dir

# one racer: waits for the start file, then asks for the cache; its build takes a second and counts itself
RACER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from kefu.testing import make_model_dir
    from kefu.train.models import cached_build

    target, start, builds = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])

    def build(tmp):
        with open(builds, "a") as handle:
            handle.write(f"{os.getpid()}\\n")
        time.sleep(1.0)  # a slow conversion: the other process arrives while this one is still writing
        make_model_dir(tmp)

    while not start.exists():
        time.sleep(0.01)
    print(cached_build(target, build))
""")


def _build_tiny(tmp):
    make_model_dir(tmp)


def test_two_processes_racing_build_the_cache_once(tmp_path):
    target, start, builds = tmp_path / "models" / "abc", tmp_path / "go", tmp_path / "builds.txt"
    target.parent.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    racers = [subprocess.Popen([sys.executable, "-c", RACER, str(target), str(start), str(builds)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    start.touch()
    outputs = [racer.communicate(timeout=120) for racer in racers]
    assert [racer.returncode for racer in racers] == [0, 0], outputs
    assert [out.strip() for out, _ in outputs] == [str(target)] * 2
    assert len(builds.read_text().split()) == 1  # the second process waited on the lock and found it complete
    assert models._cache_problem(target, deep=True) is None
    assert sorted(p.name for p in target.parent.iterdir()) == [".abc.lock", "abc"]  # no temp folder left behind
    files = json.loads((target / CACHE_MARKER).read_text())["files"]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)


@pytest.mark.parametrize("damage", ["no marker", "truncated", "altered", "missing", "bad marker"])
def test_a_broken_cache_is_rebuilt_with_a_log_line(tmp_path, caplog, damage):
    target = tmp_path / "abc"
    cached_build(target, _build_tiny)
    weights = target / "model.safetensors"
    if damage == "no marker":  # what a process killed before the rename of the old code could leave
        (target / CACHE_MARKER).unlink()
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "altered":  # same size, other bytes: only the sha256 tells
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "missing":
        (target / "tokenizer.json").unlink()
    else:
        (target / CACHE_MARKER).write_text("{not json")
    models._verified.clear()  # a fresh process: the sha256 is checked once
    builds = []
    with caplog.at_level(logging.WARNING, logger="kefu.train.models"):
        assert cached_build(target, lambda tmp: (builds.append(tmp), _build_tiny(tmp))) == target
    assert len(builds) == 1
    assert f"model cache {target} is broken" in caplog.text and "building it again" in caplog.text
    assert models._cache_problem(target, deep=True) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [".abc.lock", "abc"]


def test_a_failed_build_leaves_no_cache_and_the_next_call_builds(tmp_path):
    target = tmp_path / "abc"

    def half_then_fail(tmp):
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("killed mid-conversion")

    with pytest.raises(RuntimeError, match="mid-conversion"):
        cached_build(target, half_then_fail)
    assert not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == [".abc.lock"]
    assert cached_build(target, _build_tiny) == target and models._cache_problem(target, deep=True) is None


def test_a_complete_cache_is_reused_without_building_or_touching_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("KEFU_MODELS_DIR", str(tmp_path))
    target = tmp_path / models.EMBEDDED[DEFAULT_MODEL].gguf_sha256
    cached_build(target, _build_tiny)
    monkeypatch.setattr(models, "_convert", lambda *a: pytest.fail("must not convert again"))
    monkeypatch.setattr(models, "_check_package", lambda *a: pytest.fail("must not look at the package"))
    assert resolve_model(DEFAULT_MODEL) == target


def test_an_embedded_model_with_a_broken_cache_is_converted_again(monkeypatch, tmp_path):
    monkeypatch.setenv("KEFU_MODELS_DIR", str(tmp_path))
    target = tmp_path / models.EMBEDDED[DEFAULT_MODEL].gguf_sha256
    make_model_dir(target)  # config.json and weights but no marker: the old code's rank-1 leftover
    converted = []
    monkeypatch.setattr(models, "_check_package", lambda spec: None)
    monkeypatch.setattr(models, "_convert", lambda spec, tmp: (converted.append(spec.name), _build_tiny(tmp)))
    assert resolve_model(DEFAULT_MODEL) == target
    assert converted == [DEFAULT_MODEL] and (target / CACHE_MARKER).is_file()
