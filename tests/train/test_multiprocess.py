"""``kefu train`` under torchrun: two gloo processes on a fresh $KEFU_HOME, through the real CLI."""

import json
import os
import subprocess
import sys

import pytest

from kefu.safety import consent
from kefu.types import KefuError
from tiny import make_dialogues, write_jsonl


def _env(home, **extra):
    return {**os.environ, "KEFU_HOME": str(home), "KEFU_ACTOR": "", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            **extra}


@pytest.mark.slow
def test_torchrun_two_processes_train_through_the_cli_on_a_fresh_home(tiny_model_dir, tmp_path, monkeypatch):
    home = tmp_path / "fresh_home"  # new: nothing in it but the consent record the data needs
    monkeypatch.setenv("KEFU_HOME", str(home))
    write_jsonl(tmp_path / "data" / "train.jsonl", make_dialogues(16, system=True))
    consent.register(tmp_path / "data" / "train.jsonl", source="tests", legal_basis="contract", consent=True)
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "kefu.cli", "train", "--data", str(tmp_path / "data"), "--out", str(run),
         "--model", str(tiny_model_dir), "--max-steps", "2", "--batch-size", "4", "--max-len", "128",
         "--precision", "fp32", "--no-progress"],
        capture_output=True, text=True, env=_env(home), timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((run / "train_report.json").read_text())
    assert report["world_size"] == 2 and report["steps"] == 2 and report["final_loss"] > 0
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert done.stdout.count('"steps": 2') == 2  # both ranks finished and printed their summary


def _resolve_worker(rank, port, models_dir, log_file):
    """One rank of a fresh machine asking for an embedded model; rank 1 asks first, rank 0 a second later."""
    import time

    import torch.distributed as dist

    from kefu.testing import make_model_dir
    from kefu.train import models, trainer

    os.environ.update({"KEFU_MODELS_DIR": models_dir, "OMP_NUM_THREADS": "1"})

    def convert(spec, tmp):  # stands in for the GGUF dequantisation (a minute on the real model): who converts
        with open(log_file, "a") as handle:
            handle.write(f"{rank}\n")
        make_model_dir(tmp)

    models._convert = convert
    models._check_package = lambda spec: None
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        if rank == 0:
            time.sleep(1.0)
        path = trainer.resolve_on_rank0_first(models.DEFAULT_MODEL)
        assert models._cache_problem(path, deep=True) is None
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_rank0_converts_while_the_other_ranks_wait(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log_file = tmp_path / "converted_by.txt"
    mp.spawn(_resolve_worker, args=(port, str(tmp_path / "models"), str(log_file)), nprocs=2, join=True)
    assert log_file.read_text().split() == ["0"]  # rank 1 came first but waited at the barrier


@pytest.mark.slow
def test_accelerate_launch_use_fsdp_shards_and_matches_one_process(tiny_model_dir, tmp_path, monkeypatch):
    """``accelerate launch --use_fsdp`` runs ``kefu train`` sharded (FSDP2 over gloo); with dropout off the adapter
    equals a one-process run's, though the two processes pack different numbers of rows (padded passes)."""
    from safetensors.torch import load_file
    from torch.testing import assert_close

    from kefu.train.config import TrainConfig
    from kefu.train.trainer import train

    home = tmp_path / "home"
    monkeypatch.setenv("KEFU_HOME", str(home))
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", make_dialogues(20, system=True))
    write_jsonl(data / "val.jsonl", make_dialogues(3, seed=9))  # 2 + 1: the processes' shares differ
    consent.register(data / "train.jsonl", source="tests", legal_basis="contract", consent=True)
    settings = dict(max_steps=3, batch_size=5, max_len=64, lora_dropout=0.0, learning_rate=1e-2, seed=3)
    train(TrainConfig(model=str(tiny_model_dir), precision="fp32", save_steps=0, tensorboard=False, **settings),
          data, tmp_path / "single", progress=False)
    done = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
         "--use_fsdp", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "kefu.cli", "train",
         "--data", str(data), "--out", str(tmp_path / "fsdp"), "--model", str(tiny_model_dir), "--precision", "fp32",
         "--max-steps", "3", "--batch-size", "5", "--max-len", "64", "--lora-dropout", "0", "--lr", "0.01",
         "--seed", "3", "--save-steps", "1", "--no-progress"],
        capture_output=True, text=True, env=_env(home), timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((tmp_path / "fsdp" / "train_report.json").read_text())
    single = json.loads((tmp_path / "single" / "train_report.json").read_text())
    assert report["world_size"] == 2 and report["fsdp"] is True
    assert report["final_loss"] == pytest.approx(single["final_loss"], rel=1e-4)
    assert report["val_loss"] == pytest.approx(single["val_loss"], rel=1e-4)
    assert not (tmp_path / "fsdp" / "checkpoints").exists()  # no sharded optimiser state is written
    sharded = load_file(str(tmp_path / "fsdp" / "adapter" / "adapter_model.safetensors"))
    whole = load_file(str(tmp_path / "single" / "adapter" / "adapter_model.safetensors"))
    assert sharded.keys() == whole.keys()
    for key in whole:
        assert_close(sharded[key], whole[key], atol=1e-4, rtol=1e-4)


def test_a_deepspeed_launch_is_refused_not_silently_run_as_ddp(tiny_model_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from kefu.cli import app

    monkeypatch.setenv("KEFU_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # what accelerate launch --use_deepspeed sets
    write_jsonl(tmp_path / "data" / "train.jsonl", make_dialogues(4))
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                                      "--model", str(tiny_model_dir), "--consent-override", "tests"])
    assert isinstance(result.exception, KefuError)
    assert "does not run DeepSpeed" in str(result.exception) and "--use_fsdp" in str(result.exception)
    assert not (tmp_path / "run" / "adapter").exists()
