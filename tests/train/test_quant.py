"""Weight-only INT8: close to fp32, both kernels agree, the model still generates, LoRA adapters load on top."""

import pytest
import torch
from torch import nn

from kefu.testing import CUSTOMER, make_model, make_tokenizer
from kefu.train.quant import Int8Linear, quantize_int8_weights


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm()).item()


@pytest.mark.parametrize("rows", [1, 3, 40])  # int8 kernel (<= small_batch rows) and the dequantised GEMM path
def test_int8_linear_close_to_fp32(rows):
    torch.manual_seed(0)
    linear = nn.Linear(96, 80, bias=True)
    q = Int8Linear(linear, small_batch=16)
    x = torch.randn(2, rows, 96)
    want = linear(x)
    got = q(x)
    assert got.dtype == x.dtype and got.shape == want.shape
    assert _relative_error(got, want) < 0.02  # int8 weights + bf16 activations: about 1% on random data
    assert q.weight.dtype == torch.int8 and not any(p.requires_grad for p in q.parameters())


def test_both_paths_compute_the_same_product():
    torch.manual_seed(1)
    linear = nn.Linear(64, 48, bias=False)
    x = torch.randn(5, 64)
    kernel = Int8Linear(linear, small_batch=16)(x)
    dense = Int8Linear(linear, small_batch=0)(x)
    copied = Int8Linear(linear, small_batch=0, prefill_copy=True)
    assert torch.allclose(kernel, dense, rtol=2e-2, atol=2e-2)
    assert torch.equal(copied(x), dense)  # the kept bf16 copy is exactly the per-call dequantisation
    assert "prefill_weight" not in copied.state_dict()  # derived, never saved


def test_scales_round_trip_exactly():
    """Quantised with the stored (bf16) scale, so dequantising reproduces each weight within half a step."""
    torch.manual_seed(2)
    linear = nn.Linear(32, 16)
    q = Int8Linear(linear)
    step = q.weight_scale.float()[:, None]
    assert ((q.dequantized(torch.float32) - linear.weight).abs() <= step / 2 + 1e-6).all()


def test_retying_the_head_cannot_replace_the_int8_matrix():
    tok = make_tokenizer()
    model = make_model(vocab_size=len(tok)).eval()  # tied input embedding and output projection
    ids = tok(CUSTOMER[2], return_tensors="pt")
    with torch.no_grad():
        want = model(**ids).logits
        quantize_int8_weights(model, head=True)  # the output projection too
        assert isinstance(model.lm_head, Int8Linear)
        before = model(**ids).logits
        model.tie_weights()
        after = model(**ids).logits
    assert torch.equal(before, after)
    assert _relative_error(after, want) < 0.05


def test_quantized_model_generates_like_fp32():
    tok = make_tokenizer()
    model = make_model(vocab_size=len(tok)).eval()
    ids = tok(CUSTOMER[0], return_tensors="pt")
    with torch.no_grad():
        want = model(**ids).logits
        replaced = quantize_int8_weights(model)
        got = model(**ids).logits
        out = model.generate(**ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    layers = model.config.num_hidden_layers
    assert replaced == layers * 7  # q, k, v, o, gate, up, down per layer; lm_head left alone
    assert type(model.lm_head) is nn.Linear
    assert _relative_error(got, want) < 0.05
    assert out.shape[1] == ids["input_ids"].shape[1] + 5


def test_lora_adapter_loads_on_int8_base(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    tok = make_tokenizer()
    ids = tok(CUSTOMER[1], return_tensors="pt")
    trained = get_peft_model(make_model(vocab_size=len(tok)), LoraConfig(r=4, target_modules="all-linear"))
    for name, p in trained.named_parameters():
        if "lora_B" in name:  # a non-zero update, so the adapter changes the output
            nn.init.normal_(p, std=0.5)
    trained.save_pretrained(tmp_path / "adapter")
    with torch.no_grad():
        want = trained.eval()(**ids).logits
        base = make_model(vocab_size=len(tok)).eval()
        quantize_int8_weights(base)
        served = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
        got = served(**ids).logits
        with served.disable_adapter():
            bare = served(**ids).logits
    assert _relative_error(got, want) < 0.05
    assert _relative_error(bare, want) > 0.05  # the adapter really is applied
    assert all(p.dtype == torch.float32 for n, p in served.named_parameters() if "lora_" in n)


def test_a_vocabulary_trim_over_an_int8_head_scores_its_values():
    """Trimming after INT8 keeps the quantised head's scores (its float values, not raw int8 codes)."""
    from kefu.train.vocab import trim_model

    tok = make_tokenizer()
    model = make_model(vocab_size=len(tok)).eval()
    ids = tok(CUSTOMER[3], return_tensors="pt")
    with torch.no_grad():
        quantize_int8_weights(model, head=True)
        want = model(**ids).logits
        trim_model(model, list(range(len(tok))))
        got = model(**ids).logits
    assert _relative_error(got, want) < 0.02
