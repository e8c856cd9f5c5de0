"""The CUDA path of training: the variable-length flash-attention kernel against the per-dialogue loop and
transformers' masked attention. Skipped without a GPU (CI); run on a lent GPU with ``pytest tests/train``."""

import contextlib

import pytest
import torch

from kefu.train.data import Example, collate
from kefu.train.template import encode_dialogue
from kefu.train.trainer import SupervisedLM, keep_lora_input_dtype
from tiny import make_dialogues, make_model, make_tokenizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _run(arch, variant, batch, monkeypatch):
    from peft import LoraConfig, get_peft_model

    import kefu.train.attention as attention

    model = get_peft_model(make_model(arch).to("cuda", torch.bfloat16),
                           LoraConfig(r=4, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False))
    keep_lora_input_dtype(model)
    calls = []
    real = attention.varlen_attention
    monkeypatch.setattr(attention, "varlen_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    loop = attention.per_dialogue_loop() if variant == "loop" else contextlib.nullcontext()
    with loop, torch.autocast("cuda", dtype=torch.bfloat16):
        loss, count = SupervisedLM(model, fast=variant != "masked")(**batch)
    (loss / count).backward()
    monkeypatch.undo()
    grads = torch.cat([p.grad.float().flatten() for p in model.parameters() if p.requires_grad])
    return float(loss / count), grads, len(calls)


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_variable_length_kernel_matches_loop_and_masked_attention(arch, monkeypatch):
    tok = make_tokenizer()
    examples = [Example(*encode_dialogue(tok, d["messages"]), d["id"]) for d in make_dialogues(6, seed=2)]
    batch = {k: v.cuda() for k, v in collate([examples[:3], examples[3:]], pad_id=0).items()}
    if arch == "gemma3":  # dialogues longer than the sliding window: the kernel's window is exercised
        assert max(len(e.input_ids) for e in examples) > make_model(arch).config.sliding_window
    masked, loop, varlen = (_run(arch, v, batch, monkeypatch) for v in ("masked", "loop", "varlen"))
    assert varlen[2] > 0 and loop[2] == 0
    for got in (loop, varlen):
        assert abs(got[0] - masked[0]) < 1e-2 * abs(masked[0])
        assert float((got[1] - masked[1]).norm() / masked[1].norm()) < 3e-2
    assert float((varlen[1] - loop[1]).norm() / loop[1].norm()) < 3e-2
