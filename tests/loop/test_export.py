import json
import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from kefu.artifacts.run import TrainRun
from kefu.cli import app
from kefu.loop import export
from kefu.serve.build import load_trim
from kefu.train.models import load_model
from kefu.train.vocab import VOCAB_FILE
from kefu.types import KefuError


def test_merge_parity_int8_and_vllm(tiny_run, tmp_path):
    report = export.merge(tiny_run, tmp_path / "merged")
    assert report["parity_max_abs_diff"] <= 1e-3
    assert (tmp_path / "merged" / "config.json").is_file()

    # the merged folder loads as a plain model and matches base + adapter
    base, adapter = export.run_parts(tiny_run)
    peft_model, tok = load_model(base, adapter, dtype=torch.float32)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval()
    ids = tok("你好，在吗？", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(peft_model(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-4)

    q = export.int8(tmp_path / "merged", tmp_path / "int8")
    assert q["int8_ms_per_token"] > 0 and 0 <= q["top1_agreement"] <= 1
    assert q["quality_ok"] == (q["top1_agreement"] >= 0.9)
    model, _ = export.load_int8(tmp_path / "int8")
    quantised = export._quantize(AutoModelForCausalLM.from_pretrained(tmp_path / "merged", dtype=torch.float32).eval())
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        assert torch.equal(logits, quantised(input_ids=ids).logits)  # the saved build reloads exactly
    assert torch.isfinite(logits).all()

    v = export.vllm_adapter(tiny_run, tmp_path / "vllm", name="shop")
    assert "--enable-lora" in v["command"] and "shop=" in v["command"]
    rank = TrainRun(tiny_run).adapter_config().rank
    assert f"--max-lora-rank {export.vllm_max_lora_rank(rank)} " in v["command"]
    assert f"--served-model-name {v['base_model']} " in v["command"]  # the name `kefu serve --engine remote` asks for
    assert (tmp_path / "vllm" / "shop" / "adapter_config.json").is_file()
    assert v["command"] in (tmp_path / "vllm" / "serve_vllm.sh").read_text(encoding="utf-8")


def test_vllm_max_lora_rank_rounds_up_to_a_rank_vllm_accepts():
    assert [export.vllm_max_lora_rank(r) for r in (1, 4, 8, 9, 12, 16, 17, 64, 200, 300, 320, 321, 512)] == \
        [8, 8, 8, 16, 16, 16, 32, 64, 256, 320, 320, 512, 512]
    with pytest.raises(KefuError, match="above the largest rank vLLM serves"):
        export.vllm_max_lora_rank(513)


def test_vllm_export_refuses_dora(tiny_run, tmp_path):
    run = tmp_path / "dora_run"
    shutil.copytree(tiny_run, run)
    config_file = run / "adapter" / "adapter_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config_file.write_text(json.dumps({**config, "use_dora": True, "r": 12}), encoding="utf-8")
    with pytest.raises(KefuError, match="DoRA"):
        export.vllm_adapter(run, tmp_path / "vllm")
    assert not (tmp_path / "vllm").exists()
    config_file.write_text(json.dumps({**config, "use_dora": False, "r": 12}), encoding="utf-8")
    assert "--max-lora-rank 16 " in export.vllm_adapter(run, tmp_path / "vllm")["command"]


def test_trim_vocab_export_checks_quality_and_serves(tiny_run, prepared_old, tmp_path):
    report = export.trim_vocab(tiny_run, prepared_old, tmp_path / "vocab", max_prompts=4, max_new_tokens=6)
    assert report["prompts"] == 4 and 0 < report["kept_tokens"] < report["vocab_size"]
    assert 0.0 <= report["token_agreement"] <= 1.0 and report["reference_coverage"] == 1.0  # same tiny corpus
    assert report["quality_ok"] == (report["token_agreement"] >= 0.9)
    assert report["full_ms_per_token"] > 0 and report["trimmed_ms_per_token"] > 0
    trim = load_trim(str(tmp_path / "vocab"))
    assert trim.quality["token_agreement"] == report["token_agreement"]
    assert (tmp_path / "vocab" / VOCAB_FILE).is_file()
    with pytest.raises(KefuError, match="no train.jsonl"):
        export.trim_vocab(tiny_run, tmp_path / "nothing", tmp_path / "v2")


def test_merge_refuses_drift_and_bad_run(tiny_run, tmp_path):
    with pytest.raises(KefuError, match="drifts"):
        export.merge(tiny_run, tmp_path / "m", atol=1e-12)  # folding LoRA into fp32 weights is never bit-exact
    with pytest.raises(KefuError, match="no trained adapter"):
        export.merge(tmp_path, tmp_path / "m2")
    no_record = tmp_path / "no_record"
    shutil.copytree(tiny_run / "adapter", no_record / "adapter")
    with pytest.raises(KefuError, match="config.yaml: missing"):
        export.run_parts(no_record)


def test_export_cli_trim_vocab(tiny_run, prepared_old, tmp_path):
    result = CliRunner().invoke(app, ["export", "--run", str(tiny_run), "--out", str(tmp_path / "out"),
                                      "--trim-vocab", str(prepared_old)])
    assert result.exit_code == 0, result.output
    assert "vocabulary trim" in result.output and (tmp_path / "out" / "vocab" / VOCAB_FILE).is_file()
