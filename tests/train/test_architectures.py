"""DeepSeek V3 (MLA + mixture of experts), Qwen2 and Llama end to end on tiny random models saved as local folders:
LoRA on the right layers, kefu's trainer, a merge whose logits match base + adapter, kefu's local engine
answering from both, and the vLLM adapter export."""

import asyncio
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from kefu.loop import export
from kefu.serve.engine.local import LocalEngine
from kefu.train.config import TrainConfig
from kefu.train.models import load_model
from kefu.train.targets import lora_targets
from kefu.train.template import prompt_add_special_tokens, render_prompt
from kefu.train.trainer import train
from kefu.types import KefuError
from tiny import make_dialogues, make_model, make_model_dir, write_jsonl

MLA = ["kv_a_proj_with_mqa", "kv_b_proj", "o_proj", "q_a_proj", "q_b_proj"]
DENSE = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
EXPERTS = ["mlp.experts.down_proj", "mlp.experts.gate_up_proj"]

CASES = {  # id: (arch, lora_experts, target_modules, target_parameters)
    "deepseek_v3": ("deepseek_v3", False, MLA, []),
    "deepseek_v3-experts": ("deepseek_v3", True, MLA, EXPERTS),
    "qwen2": ("qwen2", False, DENSE, []),
    "llama": ("llama", False, DENSE, []),
}
QUESTION = [{"role": "user", "content": "这件冲锋衣有M码吗？"}]


def _answer(engine: LocalEngine, model: str | None = None) -> tuple[str, int]:
    """The engine's greedy answer to QUESTION and how many tokens it generated."""
    async def run():
        generation = engine.stream(QUESTION, model=model, max_new_tokens=8)
        try:
            pieces = [piece async for piece in generation]
        finally:
            await engine.close()
        return "".join(pieces), generation.completion_tokens

    return asyncio.run(run())


def _engine(model, tok, **kw) -> LocalEngine:
    return LocalEngine(model, tok, max_new_tokens=8, repetition_penalty=1.0, no_repeat_ngram_size=0, draft_tokens=0,
                       **kw)


@pytest.mark.parametrize("case", list(CASES))
def test_train_merge_serve_and_export(case, tmp_path, kefu_home):
    arch, experts, modules, parameters = CASES[case]
    model_dir = make_model_dir(tmp_path / "model", arch=arch)
    write_jsonl(tmp_path / "data" / "train.jsonl", make_dialogues(16, seed=1))
    config = TrainConfig(model=str(model_dir), max_steps=8, batch_size=4, max_len=128, save_steps=0,
                         learning_rate=2e-2, tensorboard=False, precision="fp32", lora_experts=experts,
                         lora_dropout=0.0 if experts else 0.1)
    report = train(config, tmp_path / "data", tmp_path / "run", progress=False,
                   consent_override="tests: synthetic dialogues (kefu.testing), no consent record")
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert report["steps"] == len(losses) == 8 and losses[-1] < losses[0], losses  # it learns

    # the adapter covers exactly the layers kefu.train.targets chose, and they all hold trained weights
    adapter_dir = tmp_path / "run" / "adapter"
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["target_modules"] == modules
    assert sorted(adapter_config.get("target_parameters") or []) == parameters
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    for name in modules:
        assert any(f".{name}.lora_B" in key and value.abs().max() > 0 for key, value in weights.items()), name
    assert not any(".mlp.gate." in key or "shared_experts" in key for key in weights)  # router, shared MLP frozen
    assert any(".experts." in key for key in weights) == experts

    # merged: its logits equal base + adapter, and differ from the base's (the adapter is not a no-op)
    merged_dir = tmp_path / "merged"
    assert export.merge(tmp_path / "run", merged_dir)["parity_max_abs_diff"] <= 1e-3
    with_adapter, tok = load_model(str(model_dir), adapter_dir, dtype=torch.float32)
    base, _ = load_model(str(model_dir), dtype=torch.float32)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    assert type(merged).__name__ == type(base).__name__
    ids = tok("亲，M码还有12件。满300减50", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = with_adapter(input_ids=ids).logits
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, atol=1e-4, rtol=1e-4)
        assert (base(input_ids=ids).logits - expected).abs().max() > 1e-2

    # served by kefu's local engine: the merged folder answers as base + adapter does; it generates text unless
    # the model's greedy first token is a stop token (a tiny model may well say nothing)
    engine = _engine(merged, tok)
    prompt = tok(render_prompt(tok, QUESTION), add_special_tokens=prompt_add_special_tokens(tok),
                 return_tensors="pt")["input_ids"]
    with torch.no_grad():
        first = int(with_adapter(input_ids=prompt).logits[0, -1].argmax())
    answer = _answer(engine)
    assert (answer[1] == 0) == (first in engine.eos_ids), (answer, tok.convert_ids_to_tokens(first))
    if not experts:  # PEFT's parameter-level LoRA cannot run the engine's per-row adapter batches: serve merged
        assert _answer(_engine(base, tok, adapters={"shop": str(adapter_dir)}), model="shop") == answer

    # the vLLM export: the adapter as trained plus the serve command naming it
    vllm = export.vllm_adapter(tmp_path / "run", tmp_path / "vllm", name="shop")
    copied = tmp_path / "vllm" / "shop"
    assert json.loads((copied / "adapter_config.json").read_text())["target_modules"] == modules
    assert load_file(str(copied / "adapter_model.safetensors")).keys() == weights.keys()
    assert "--enable-lora" in vllm["command"] and f"shop={copied.resolve()}" in vllm["command"]


def test_all_linear_leaves_routers_and_expert_block_names_to_the_experts_option():
    deepseek = make_model("deepseek_v3")
    config = TrainConfig(model="unused")
    assert lora_targets(deepseek, config).modules == MLA and lora_targets(deepseek, config).parameters == []
    experts = lora_targets(deepseek, config.model_copy(update={"lora_experts": True, "lora_dropout": 0.0}))
    assert experts.parameters == EXPERTS
    assert lora_targets(make_model("llama"), config).modules == DENSE
    with pytest.raises(KefuError, match="lora_dropout 0"):
        lora_targets(deepseek, config.model_copy(update={"lora_experts": True}))
    with pytest.raises(KefuError, match="no fused routed experts"):
        lora_targets(make_model("qwen2"), config.model_copy(update={"lora_experts": True, "lora_dropout": 0.0}))
    with pytest.raises(KefuError, match=r"\['q_proj'\] are not layers of DeepseekV3ForCausalLM"):
        lora_targets(deepseek, config.model_copy(update={"target_modules": ["q_proj", "q_a_proj"]}))
