"""The real embedded model, end to end. Slow: the first run converts the GGUF (~1 min), later runs reuse it."""

import json
import tempfile
from pathlib import Path

import pytest

from tiny import write_jsonl

# one conversion per machine, not per test session: a fixed folder outside the per-test $KEFU_HOME
CACHE = Path(tempfile.gettempdir()) / "kefu-test-models"


@pytest.mark.slow
def test_gemma_converts_once_and_trains_one_step(monkeypatch, tmp_path):
    import torch

    from kefu.train.config import TrainConfig
    from kefu.train.models import DEFAULT_MODEL, EMBEDDED, load_model, resolve_model
    from kefu.train.template import encode_dialogue, encode_prompt, template_kind
    from kefu.train.trainer import train

    monkeypatch.setenv("KEFU_MODELS_DIR", str(CACHE))
    torch.set_num_threads(2)
    path = resolve_model(DEFAULT_MODEL)
    assert path.name == EMBEDDED[DEFAULT_MODEL].gguf_sha256
    assert json.loads((path / "config.json").read_text())["vocab_size"] == 262144
    assert "quantization_config" not in json.loads((path / "config.json").read_text())
    assert resolve_model(DEFAULT_MODEL) == path  # reused, not converted again

    model, tok = load_model(DEFAULT_MODEL)
    assert type(model).__name__ == "Gemma3ForCausalLM" and template_kind(tok) == "gemma"
    messages = [{"role": "system", "content": "你是山岚户外旗舰店的客服。"},
                {"role": "user", "content": "这件冲锋衣有M码吗？"},
                {"role": "assistant", "content": "有的亲，M码还有12件。"}]
    ids, labels = encode_dialogue(tok, messages)
    prompt = encode_prompt(tok, messages[:2])
    assert ids[:len(prompt)] == prompt and ids[0] == tok.bos_token_id
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits
    assert torch.isfinite(logits).all()

    write_jsonl(tmp_path / "data" / "train.jsonl", [{"id": f"d{i}", "messages": messages[1:]} for i in range(2)])
    report = train(TrainConfig(batch_size=2, max_steps=1, max_len=128, save_steps=0, tensorboard=False),
                   tmp_path / "data", tmp_path / "run", progress=False,
                   consent_override="tests: a synthetic dialogue, no consent record")
    assert report["steps"] == 1 and report["final_loss"] > 0 and "Gemma" in report["license"]
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
