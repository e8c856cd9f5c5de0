import json
import os
import socket
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from kefu.artifacts.run import TrainRun
from kefu.cli import app
from kefu.safety import audit, consent
from kefu.train import trainer
from kefu.train.config import TrainConfig
from kefu.train.models import load_model
from kefu.types import KefuError
from tiny import AGENT, CUSTOMER, make_dialogues, write_jsonl


def _config(model_dir, **kw):
    base = dict(model=str(model_dir), batch_size=8, max_len=128, max_steps=4, save_steps=0, learning_rate=1e-2,
                tensorboard=False, seed=3, precision="fp32")
    base.update(kw)
    return TrainConfig(**base)


def _adapter(run):
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def train(*args, **kwargs):
    """``kefu.train.trainer.train`` on synthetic dialogues, which have no consent record: an audited override."""
    kwargs.setdefault("consent_override", "tests: synthetic dialogues (kefu.testing), no consent record")
    return trainer.train(*args, **kwargs)


def _assert_same_adapter(a, b, atol=1e-5):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=1e-4)


@pytest.fixture
def data(tmp_path):
    write_jsonl(tmp_path / "data" / "train.jsonl", make_dialogues(48, system=True))
    write_jsonl(tmp_path / "data" / "val.jsonl", make_dialogues(8, seed=9))
    return tmp_path / "data"


def test_cli_trains_and_writes_every_output(tiny_model_dir, data, tmp_path, kefu_home):
    consent.register(data / "train.jsonl", source="tests", legal_basis="contract", consent=True)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(run), "--model", str(tiny_model_dir),
                                      "--max-steps", "6", "--batch-size", "8", "--lr", "0.01", "--no-progress",
                                      "--max-len", "128", "--precision", "fp32", "--no-gradient-checkpointing",
                                      "--lora-dropout", "0.05", "--logit-grad-floor", "0"])
    assert result.exit_code == 0, result.output
    record = yaml.safe_load((run / "config.yaml").read_text())
    assert record["gradient_checkpointing"] is False and record["train"]["lora_dropout"] == 0.05
    assert record["train"]["logit_grad_floor"] == 0.0
    report = json.loads((run / "train_report.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # what eval, export, serve and the registry read back is what was written
    written = TrainRun(run).require_finished()
    assert written.base_model() == str(tiny_model_dir) and written.report() == report and written.metrics() == metrics
    assert written.adapter_config().rank == 16
    assert Path(written.adapter_config().base_model_path).resolve() == Path(tiny_model_dir).resolve()
    assert [m["step"] for m in metrics] == list(range(1, 7)) and report["steps"] == 6
    assert {"loss", "lr", "tokens_per_s"} <= metrics[0].keys()
    assert metrics[-1]["loss"] < metrics[0]["loss"]  # it learns
    assert report["supervised_tokens"] == sum(m["supervised_tokens"] for m in metrics) > 0
    assert report["val_loss"] is not None and len(report["data_sha256"]) == 64
    assert "train" in (run / "config.yaml").read_text()
    info = json.loads((run / "adapter" / "kefu_adapter.json").read_text())
    assert info["template"] == "gemma" and info["stop"] == ["<end_of_turn>"]
    adapter_config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["r"] == 16 and adapter_config["lora_alpha"] == 32
    assert set(adapter_config["target_modules"]) >= {"q_proj", "down_proj"}
    tuned, _ = load_model(str(tiny_model_dir), run / "adapter")
    base, _ = load_model(str(tiny_model_dir))
    ids = torch.tensor([[2, 10, 11, 12, 13]])
    with torch.no_grad():
        assert not torch.allclose(tuned(ids).logits, base(ids).logits, atol=1e-4)
    entry = list(audit.entries())[-1]
    assert entry["action"] == "train" and entry["data_digest"] == report["data_sha256"]


def test_resume_after_a_crash_matches_an_uninterrupted_run(tiny_model_dir, data, tmp_path):
    config = _config(tiny_model_dir, max_steps=6, save_steps=2)  # dropout 0.1: the RNG state must be restored too
    train(config, data, tmp_path / "straight", progress=False)

    def crash(step, metrics):
        if step == 3:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        train(config, data, tmp_path / "crashed", on_step=crash, progress=False)
    assert not (tmp_path / "crashed" / "adapter").exists()
    report = train(config, data, tmp_path / "crashed", resume=True, progress=False)
    assert report["resumed_from_step"] == 2 and report["steps"] == 6
    _assert_same_adapter(_adapter(tmp_path / "straight"), _adapter(tmp_path / "crashed"))
    metrics = [json.loads(line) for line in (tmp_path / "crashed" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]


def test_init_adapter_continues_from_previous_weights(tiny_model_dir, data, tmp_path):
    train(_config(tiny_model_dir), data, tmp_path / "first", progress=False)
    first = _adapter(tmp_path / "first")
    train(_config(tiny_model_dir, init_adapter=str(tmp_path / "first" / "adapter"), max_steps=1,
                  learning_rate=1e-9), data, tmp_path / "second", progress=False)
    second = _adapter(tmp_path / "second")
    _assert_same_adapter(first, second, atol=1e-6)
    assert any(v.abs().max() > 1e-3 for k, v in second.items() if "lora_B" in k)  # not a fresh (B=0) init


def test_overlong_dialogues_are_split_or_truncated_and_counted(tiny_model_dir, tmp_path):
    exchange = [{"role": "user", "content": CUSTOMER[1]}, {"role": "assistant", "content": AGENT[1]}]
    long = [{"id": "long", "messages": exchange * 10}]  # ~10x the length of one exchange
    short = [{"id": f"s{i}", "messages": exchange} for i in range(8)]
    write_jsonl(tmp_path / "d" / "train.jsonl", long + short)
    split = train(_config(tiny_model_dir, max_len=128, max_steps=1), tmp_path / "d", tmp_path / "s", progress=False)
    assert split["split"] == 1 and split["truncated"] == 0 and split["examples"] > split["dialogues"]
    cut = train(_config(tiny_model_dir, max_len=128, max_steps=1, overlong="truncate"), tmp_path / "d",
                tmp_path / "t", progress=False)
    assert cut["split"] == 0 and cut["truncated"] >= 1 and cut["examples"] == cut["dialogues"]


def test_bad_inputs_fail_early_with_clear_errors(tiny_model_dir, tiny_llama_dir, tmp_path):
    cfg = _config(tiny_model_dir)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "train.jsonl").write_text("")
    with pytest.raises(KefuError, match="no dialogues"):
        train(cfg, tmp_path / "empty", tmp_path / "r1", progress=False)
    write_jsonl(tmp_path / "noagent" / "train.jsonl", [{"id": "a", "messages": [{"role": "user", "content": "hi"}]}])
    with pytest.raises(KefuError, match="agent"):
        train(cfg, tmp_path / "noagent", tmp_path / "r2", progress=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.jsonl").write_text('{"messages": []}\n{oops\n')
    with pytest.raises(KefuError, match=r"train.jsonl:2: not valid JSON"):
        train(cfg, tmp_path / "bad", tmp_path / "r3", progress=False)
    write_jsonl(tmp_path / "ok" / "train.jsonl", make_dialogues(8))
    with pytest.raises(KefuError, match="not found"):
        train(_config(tmp_path / "no-model"), tmp_path / "ok", tmp_path / "r4", progress=False)
    with pytest.raises(KefuError, match="no checkpoint"):
        train(cfg, tmp_path / "ok", tmp_path / "r5", resume=True, progress=False)
    train(_config(tiny_llama_dir, max_steps=1), tmp_path / "ok", tmp_path / "llama", progress=False)
    with pytest.raises(KefuError, match="incompatible adapter"):
        train(_config(tiny_model_dir, init_adapter=str(tmp_path / "llama" / "adapter")), tmp_path / "ok",
              tmp_path / "r6", progress=False)
    with pytest.raises(KefuError, match="already holds a finished run"):
        train(_config(tiny_llama_dir, max_steps=1), tmp_path / "ok", tmp_path / "llama", progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank, world, port, config_json, data, out):
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)
    import torch.distributed as dist

    try:
        train(TrainConfig.model_validate_json(config_json), data, out, progress=False)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_gloo_processes_equal_one_process(tiny_model_dir, data, tmp_path):
    import torch.multiprocessing as mp

    # no dropout: each process draws its own dropout masks, which is right for training but not comparable
    config = _config(tiny_model_dir, max_steps=3, lora_dropout=0.0)
    train(config, data, tmp_path / "single", progress=False)
    mp.spawn(_ddp_worker, args=(2, _free_port(), config.model_dump_json(), str(data), str(tmp_path / "ddp")),
             nprocs=2, join=True)
    report = json.loads((tmp_path / "ddp" / "train_report.json").read_text())
    assert report["world_size"] == 2
    _assert_same_adapter(_adapter(tmp_path / "single"), _adapter(tmp_path / "ddp"), atol=1e-4)


# ------------------------------------------------------------------------------------- time estimate and progress
def _registered(data):
    consent.register(data / "train.jsonl", source="tests", legal_basis="contract", consent=True)
    return data


def test_estimate_is_printed_before_the_first_step_and_corrected_after_step_two(tiny_model_dir, data, tmp_path,
                                                                               kefu_home, capsys):
    report = train(_config(tiny_model_dir), _registered(data), tmp_path / "run", progress=False)
    err = capsys.readouterr().err
    timing = report["time_estimate"]
    before, measured = timing["before"], timing["measured"]
    # the loader's counts, the steps this run takes, and an expected time, before any step
    assert "kefu train: estimate (prior for cpu fp32, 1 thread; corrected after step 2)" in err
    assert (f"per epoch: {report['examples']:,} examples, {report['data_tokens']:,} tokens, "
            f"{report['data_supervised_tokens']:,} supervised tokens") in err
    assert "this run: 4 steps of 8 examples" in err and "expected time: " in err
    assert err.index("kefu train: estimate") < err.index("kefu train: measured on step 2")
    assert before["steps"] == 4 and before["examples_per_epoch"] == report["examples"]
    assert before["tokens"] == round(report["data_tokens"] * 4 * 8 / report["examples"]) and before["seconds"] >= 0
    assert measured["throughput"] == "measured on step 2" and measured["flops"] == before["flops"]
    # measured on one step, the estimate of the run is the right order of magnitude (tiny runs are noisy)
    assert 0.1 * timing["actual_train_seconds"] < measured["seconds"] < 10 * timing["actual_train_seconds"]
    assert report["tokens"] / 3 < measured["tokens"] < report["tokens"] * 3
    assert "WARNING" not in err and timing["warned"] is False and timing["warn_after_s"] == 3600


def test_warning_with_shorter_settings_over_the_threshold(tiny_model_dir, data, tmp_path, kefu_home, capsys):
    config = _config(tiny_model_dir, max_steps=None, epochs=3.0, max_len=128)
    report = train(config, _registered(data), tmp_path / "run", progress=False, warn_after_s=1e-6)
    err = capsys.readouterr().err
    timing = report["time_estimate"]
    assert "kefu train: WARNING: this run is expected to take" in err and "It goes on" in err
    flags = [offer["flags"] for offer in timing["suggestions"]]
    assert flags[0] == "--max-steps 1" and "--epochs 1" in flags
    assert any(f.startswith("--last-turn-only") for f in flags)
    assert all(f"  {f} " in err for f in flags) and timing["warned"] is True
    assert report["steps"] == timing["before"]["steps"] and (tmp_path / "run" / "adapter").is_dir()  # not blocked


def test_suggestions_fit_the_target_on_a_jddc_sized_run():
    from kefu.train.estimate import Cost, Workload, prior_rate, suggestions, warning_lines

    # the JDDC sample prepared with the defaults (batch 32, 1,024-token rows), Gemma 3 270M's shapes
    work = Workload(examples=728, tokens=171_830, supervised_tokens=88_717, steps=23, batch_size=32)
    cost = Cost.of_shapes(body_params=100_000_000, vocab_hidden=262_144 * 640)
    rate = prior_rate("cpu", "bf16", threads=2) / 10  # a slow machine: the epoch is over an hour
    assert work.seconds(cost, rate) > 3600
    offers = suggestions(work, cost, rate, 1800, max_len=1024)
    assert [o["flags"].rsplit(" ", 1)[0] for o in offers] == ["--max-steps", "--batch-size 8 --max-len 512 --max-steps"]
    assert all(o["seconds"] <= 1800 for o in offers)
    lines = warning_lines({"seconds": work.seconds(cost, rate)}, 3600, "cpu", offers)
    assert "over 1:00:00" in lines[0] and "or train on a GPU" in lines[-1]


def test_cli_prints_plain_progress_lines_when_stderr_is_a_file(tiny_model_dir, data, tmp_path, kefu_home):
    import subprocess
    import sys

    _registered(data)
    log = tmp_path / "train.log"
    env = {**os.environ, "KEFU_HOME": str(kefu_home), "OMP_NUM_THREADS": "1", "KEFU_ACTOR": ""}
    with open(log, "w") as stderr:
        done = subprocess.run([sys.executable, "-m", "kefu.cli", "train", "--data", str(data), "--out",
                               str(tmp_path / "run"), "--model", str(tiny_model_dir), "--max-steps", "3",
                               "--batch-size", "8", "--max-len", "128", "--precision", "fp32"],
                              stdout=subprocess.PIPE, stderr=stderr, env=env, text=True, timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text
    lines = [line for line in text.splitlines() if line.startswith("train: ")]
    assert [line.split()[1] for line in lines] == ["1/3", "2/3", "3/3"]
    assert all(" eta " in line and " loss " in line and line.endswith(" tok/s") for line in lines)
    assert text.index("kefu train: estimate") < text.index("train: 1/3")
    assert "time: estimated" in text and '"steps": 3' in done.stdout
