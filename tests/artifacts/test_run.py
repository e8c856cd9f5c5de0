"""TrainRun: the training run folder's layout, what the trainer writes and what eval/export/serve/registry read."""

from __future__ import annotations

import json

import pytest

from kefu.artifacts.run import STATE_FILE, AdapterConfig, TrainRun, is_adapter
from kefu.types import KefuError


def _adapter(folder, **config):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"],
                                                            "use_dora": False, **config}), encoding="utf-8")
    return folder


def test_layout_record_and_base_model(tmp_path):
    run = TrainRun(tmp_path / "run")
    assert run.adapter_dir == tmp_path / "run" / "adapter" and run.record_file.name == "config.yaml"
    assert run.metrics_file.name == "metrics.jsonl" and run.report_file.name == "train_report.json"
    assert run.checkpoints_dir.name == "checkpoints" and run.report() is None and run.metrics() == []
    with pytest.raises(KefuError, match=r"run[/\\]config.yaml: missing"):
        run.base_model()
    run.write_record({"train": {"model": "gemma3-270m", "lora_r": 8}, "model_path": "/models/gemma"})
    assert run.base_model() == "gemma3-270m" and run.record()["model_path"] == "/models/gemma"
    run.write_record({"model": "top-level keys are not the run record's"})
    with pytest.raises(KefuError, match="no train.model"):
        run.base_model()
    run.record_file.write_text("train: [unclosed", encoding="utf-8")
    with pytest.raises(KefuError, match="config.yaml: not valid YAML"):
        run.record()
    run.record_file.write_text("- a list\n", encoding="utf-8")
    with pytest.raises(KefuError, match="must be a mapping"):
        run.record()


def test_finished_run_and_adapter_config(tmp_path):
    with pytest.raises(KefuError, match="run folder not found"):
        TrainRun(tmp_path / "nope").require_finished()
    run = TrainRun(tmp_path / "run")
    run.write_record({"train": {"model": "m"}})
    assert not run.is_finished()
    with pytest.raises(KefuError, match=r"no trained adapter at .*adapter.*pass --base-only"):
        run.require_finished("pass --base-only")
    _adapter(run.adapter_dir, r=16, use_dora=True, base_model_name_or_path="/models/m")
    assert run.require_finished() is run and is_adapter(run.adapter_dir)
    config = run.adapter_config()
    assert (config.rank, config.alpha, config.target_modules, config.dora) == (16, 16, ["q_proj"], True)
    assert config.base_model_path == "/models/m" and config.raw["r"] == 16
    with pytest.raises(KefuError, match="not a PEFT adapter folder"):
        AdapterConfig.read(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{oops", encoding="utf-8")
    with pytest.raises(KefuError, match="adapter_config.json: not valid JSON"):
        AdapterConfig.read(tmp_path)


def test_named_finds_a_folder_or_a_name_under_kefu_home(tmp_path, kefu_home):
    (kefu_home / "runs" / "shop-v1").mkdir(parents=True)
    assert TrainRun.named("shop-v1").path == kefu_home / "runs" / "shop-v1"
    assert TrainRun.named(str(tmp_path)).path == tmp_path
    with pytest.raises(KefuError, match="no such run folder"):
        TrainRun.named("shop-v2")


def test_metrics_restart_and_resume(tmp_path):
    run = TrainRun(tmp_path)
    run.start_metrics()
    for step in (1, 2, 3, 4):
        run.append_metrics({"step": step, "loss": 1.0 / step})
    assert [m["step"] for m in run.metrics()] == [1, 2, 3, 4]
    run.start_metrics(resumed_step=2)  # steps logged after the checkpoint go
    assert [m["step"] for m in run.metrics()] == [1, 2]
    run.start_metrics()
    assert run.metrics() == []
    run.metrics_file.write_text('{"step": 1}\n{bad\n', encoding="utf-8")
    with pytest.raises(KefuError, match=r"metrics.jsonl:2: not valid JSON"):
        run.metrics()
    run.write_report({"steps": 4, "final_loss": 0.25})
    assert run.report() == {"steps": 4, "final_loss": 0.25}


def test_checkpoints_are_atomic_and_pruned(tmp_path):
    run = TrainRun(tmp_path)
    assert run.latest_checkpoint() is None
    for step in (2, 4, 6):
        with run.writing_checkpoint(step, keep=2) as folder:
            (folder / STATE_FILE).write_bytes(b"state")
    assert sorted(p.name for p in run.checkpoints_dir.iterdir()) == ["step-4", "step-6"]
    assert run.latest_checkpoint() == run.checkpoints_dir / "step-6"
    with pytest.raises(RuntimeError):
        with run.writing_checkpoint(8, keep=2) as folder:
            (folder / STATE_FILE).write_bytes(b"half")
            raise RuntimeError("killed while saving")
    assert run.latest_checkpoint() == run.checkpoints_dir / "step-6"  # the half-written one never counts
    (run.checkpoints_dir / "step-10").mkdir()  # no trainer state: incomplete
    assert run.latest_checkpoint() == run.checkpoints_dir / "step-6"


def test_adapter_is_replaced_atomically(tmp_path):
    run = TrainRun(tmp_path)
    with run.writing_adapter() as folder:
        _adapter(folder, r=4)
    assert run.adapter_config().rank == 4
    with pytest.raises(RuntimeError):
        with run.writing_adapter() as folder:
            _adapter(folder, r=32)
            raise RuntimeError("killed while saving")
    assert run.adapter_config().rank == 4 and run.is_finished()
