import pytest
import torch
import torch.nn.functional as F

from kefu.train.data import Example, collate, pack, step_indices
from kefu.train.template import encode_dialogue
from kefu.train.trainer import SupervisedLM
from tiny import make_dialogues, make_model, make_tokenizer


def _examples(n=4, seed=0):
    tok = make_tokenizer()
    out = []
    for d in make_dialogues(n, seed=seed):
        ids, labels = encode_dialogue(tok, d["messages"])
        out.append(Example(ids, labels, d["id"]))
    return out


@pytest.mark.parametrize("arch", ["gemma3", "llama", "qwen2", "deepseek_v3"])
def test_packed_row_logits_equal_each_dialogue_alone(arch):
    model = make_model(arch).eval()
    examples = _examples(4)
    if arch == "gemma3":  # the row is longer than the sliding window, so sliding layers are exercised too
        assert sum(len(e.input_ids) for e in examples) > 2 * model.config.sliding_window
    batch = collate([examples], pad_id=0)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        at = 0
        for example in examples:
            alone = model(input_ids=torch.tensor([example.input_ids]), use_cache=False).logits[0]
            n = len(example.input_ids)
            torch.testing.assert_close(packed[at:at + n], alone, atol=1e-5, rtol=1e-4)
            at += n
        # the same row without restarting positions mixes dialogues: the check above can fail
        naive = model(input_ids=batch["input_ids"], use_cache=False).logits[0]
    n0 = len(examples[0].input_ids)
    assert not torch.allclose(naive[n0:], packed[n0:], atol=1e-3)


def test_padded_rows_match_too():
    model = make_model("gemma3").eval()
    examples = _examples(5, seed=3)
    rows = [examples[:3], examples[3:]]  # second row shorter: a padding tail
    batch = collate(rows, pad_id=0)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        second = examples[3]
        alone = model(input_ids=torch.tensor([second.input_ids]), use_cache=False).logits[0]
    torch.testing.assert_close(packed[1, :len(second.input_ids)], alone, atol=1e-5, rtol=1e-4)


def test_supervised_loss_equals_full_vocabulary_loss():
    model = make_model("gemma3").eval()
    examples = _examples(3, seed=1)
    wrapper = SupervisedLM(model)
    batch = collate([examples], pad_id=0)
    with torch.no_grad():
        loss_sum, count = wrapper(**batch)
        expected_sum, expected_count = 0.0, 0
        for example in examples:
            labels = torch.tensor([example.labels])
            n = int((labels[:, 1:] != -100).sum())
            out = model(input_ids=torch.tensor([example.input_ids]), labels=labels, use_cache=False)
            expected_sum += float(out.loss) * n
            expected_count += n
    assert int(count) == expected_count
    assert float(loss_sum) == pytest.approx(expected_sum, rel=1e-5)


def test_pack_first_fit_keeps_every_example_within_rows():
    examples = [Example([1] * n, [-100] * n, str(i)) for i, n in enumerate([90, 60, 50, 40, 30, 10, 100])]
    rows = pack(examples, 100)
    assert sorted(e.source for row in rows for e in row) == sorted(e.source for e in examples)
    assert all(sum(len(e.input_ids) for e in row) <= 100 for row in rows)
    assert len(rows) == 4  # 380 tokens in 100-token rows: first-fit-decreasing is optimal here


def test_step_indices_cover_each_epoch_once_and_are_deterministic():
    n, batch = 10, 4
    seen = [i for step in range(5) for i in step_indices(n, batch, step, seed=7)]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert step_indices(n, batch, 3, seed=7) == step_indices(n, batch, 3, seed=7)
    assert seen[:10] != list(range(10))


def _lora_grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ["gemma3", "llama", "qwen2", "deepseek_v3"])
def test_fast_path_gives_the_plain_loss_and_gradients(arch):
    """Per-dialogue attention + chunked loss (the trainer's default) vs transformers' masked SDPA + full logits."""
    from peft import LoraConfig, get_peft_model

    from kefu.train.attention import PACKED_ATTENTION

    examples = _examples(5, seed=2)
    batch = collate([examples[:3], examples[3:]], pad_id=0)  # two rows, the second with a padding tail
    results = []
    for fast in (False, True):
        model = get_peft_model(make_model(arch), LoraConfig(r=4, lora_dropout=0.0, target_modules="all-linear",
                                                            init_lora_weights=False))
        wrapper = SupervisedLM(model, fast=fast)
        assert wrapper.packed == wrapper.fused_loss == fast
        assert (model.config._attn_implementation == PACKED_ATTENTION) == fast
        loss, count = wrapper(**batch)
        loss.backward()
        results.append((loss.detach(), int(count), _lora_grads(model)))
    (plain, n_plain, g_plain), (fast, n_fast, g_fast) = results
    if arch == "gemma3":  # dialogues longer than the sliding window: the band mask per dialogue is exercised
        assert max(len(e.input_ids) for e in examples) > make_model(arch).config.sliding_window
    assert n_plain == n_fast
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-4)
    for name in g_plain:  # float32 sums in another order: the roundoff scales with the gradient (Intel vs AMD differ)
        scale = g_plain[name].abs().max().item()
        torch.testing.assert_close(g_fast[name], g_plain[name], rtol=1e-4, atol=1e-6 + 2e-5 * scale, msg=name)


def test_a_switched_model_still_generates_padded_batches():
    from transformers import GenerationConfig

    from kefu.train.attention import use_packed_attention

    model = make_model("gemma3").eval()
    ids = torch.tensor([[0, 0, 0, 5, 6, 7, 8, 9, 10, 11, 12, 13], [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]])
    mask = (torch.arange(12)[None, :] >= torch.tensor([[3], [0]])).long()
    config = GenerationConfig(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
    before = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    assert use_packed_attention(model)
    after = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    assert torch.equal(before, after)


def test_models_not_on_sdpa_keep_their_attention():
    """Eager (which may soft-cap attention logits) is left alone; the loss path still packs correctly."""
    from kefu.train.attention import use_packed_attention

    model = make_model("gemma3")
    model.set_attn_implementation("eager")
    assert not use_packed_attention(model) and model.config._attn_implementation == "eager"
    wrapper = SupervisedLM(model)
    assert not wrapper.packed and wrapper.fused_loss
    examples = _examples(3, seed=1)
    with torch.no_grad():
        loss, count = wrapper(**collate([examples], pad_id=0))
        plain, _ = SupervisedLM(make_model("gemma3"), fast=False)(**collate([examples], pad_id=0))
    torch.testing.assert_close(loss, plain, rtol=1e-5, atol=1e-4)


def _reference_varlen(q, k, v, cu_q, cu_k, max_q, max_k, *, scale=None, window_size=None, is_causal=None,
                      enable_gqa=False):
    """torch's ``varlen_attn`` calling convention, on CPU: (tokens, heads, dim) inputs cut by offsets ``cu_q``."""
    assert torch.equal(cu_q, cu_k) and cu_q.dtype == torch.int32
    bounds = cu_q.tolist()
    assert max_q == max_k == max(e - s for s, e in zip(bounds, bounds[1:]))
    left = window_size[0] if window_size is not None else -1
    assert window_size is None or window_size[1] == 0
    assert is_causal in (None, True)
    out = torch.full_like(q, float("nan"))
    for s, e in zip(bounds, bounds[1:]):
        i = torch.arange(e - s)
        mask = i[None, :] <= i[:, None]
        if left >= 0:
            mask &= i[None, :] >= i[:, None] - left
        qs, ks, vs = (t[s:e].transpose(0, 1) for t in (q, k, v))
        out[s:e] = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, scale=scale,
                                                  enable_gqa=enable_gqa).transpose(0, 1)
    return out


@pytest.mark.parametrize("window", [None, 6])
@pytest.mark.parametrize("kernel_api", ["window_size+gqa", "is_causal"])
def test_variable_length_kernel_layout_equals_the_per_dialogue_loop(window, kernel_api):
    """The GPU path's offsets, flattening and GQA handling, checked against the CPU loop with a reference kernel
    in torch's ``varlen_attn`` convention (bench/gpu_train.py checks the real flash kernel on a GPU)."""
    from kefu.train.attention import Segments, cu_seqlens, packed_attention, varlen_attention

    if window is not None and kernel_api == "is_causal":
        pytest.skip("torch 2.10's varlen API has no window: those calls take the loop")
    torch.manual_seed(0)
    query = torch.randn(2, 4, 24, 8)
    key, value = torch.randn(2, 2, 24, 8), torch.randn(2, 2, 24, 8)
    segments = [[(0, 10), (10, 24)], [(0, 5), (5, 17), (17, 24)]]
    cu, longest = cu_seqlens(segments, 24, "cpu")
    assert cu.tolist() == [0, 10, 24, 29, 41, 48] and longest == 14
    once = Segments(segments)  # what row_segments returns: every layer of a forward reuses its offsets
    assert once.offsets(24, "cpu")[0] is once.offsets(24, "cpu")[0]
    assert once.offsets(12, "cpu")[0].tolist() == [0, 10, 24, 17, 29, 36]
    expected, _ = packed_attention(None, query, key, value, None, scaling=0.3, sliding_window=window,
                                   kefu_segments=segments)
    kernel = (_reference_varlen, kernel_api != "is_causal", kernel_api != "is_causal")
    got = varlen_attention(query, key, value, segments, 0.3, window, kernel=kernel)
    assert got.shape == (2, 24, 4, 8)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_lora_inputs_stay_bf16_under_autocast_with_the_same_loss_and_gradients():
    """``keep_lora_input_dtype`` drops PEFT's fp32 copy of every LoRA input; the numbers must not move."""
    from peft import LoraConfig, get_peft_model

    from kefu.train.trainer import keep_lora_input_dtype

    examples = _examples(3, seed=4)
    batch = collate([examples], pad_id=0)
    results, seen = [], []
    for keep in (False, True):
        torch.manual_seed(0)
        model = get_peft_model(make_model("llama").to(torch.bfloat16),
                               LoraConfig(r=4, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False))
        assert next(p for p in model.parameters() if p.requires_grad).dtype == torch.float32
        if keep:
            assert keep_lora_input_dtype(model) == 7 * model.config.num_hidden_layers
        lora_a = model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"]
        handle = lora_a.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = SupervisedLM(model)(**batch)
        loss.backward()
        handle.remove()
        results.append((loss.detach(), _lora_grads(model)))
    assert seen == [torch.float32, torch.bfloat16]
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=0)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("window", [None, 6])
def test_cpu_bf16_attention_is_as_exact_as_bf16_allows(window):
    """On CPU in bf16 each dialogue takes the eager arithmetic (bf16 scores, fp32 softmax); it must agree with the
    fp32 computation to bf16 precision, with the causal window applied."""
    from kefu.train.attention import packed_attention

    torch.manual_seed(1)
    query, key, value = torch.randn(2, 4, 24, 16), torch.randn(2, 1, 24, 16), torch.randn(2, 1, 24, 16)
    segments = [[(0, 10), (10, 24)], [(0, 5), (5, 17), (17, 24)]]
    exact, _ = packed_attention(None, query, key, value, None, scaling=0.25, sliding_window=window,
                                kefu_segments=segments)
    half, _ = packed_attention(None, query.bfloat16(), key.bfloat16(), value.bfloat16(), None, scaling=0.25,
                               sliding_window=window, kefu_segments=segments)
    assert half.dtype == torch.bfloat16
    assert float((half.float() - exact).norm() / exact.norm()) < 1e-2
    other, _ = packed_attention(None, query, key, value, None, scaling=0.25, sliding_window=3 if window else 6,
                                kefu_segments=segments)
    assert float((half.float() - other).norm() / other.norm()) > 5e-2  # the window is visible at this tolerance


def test_dora_layers_keep_peft_input_cast():
    from peft import LoraConfig, get_peft_model

    from kefu.train.trainer import keep_lora_input_dtype

    model = get_peft_model(make_model("llama"), LoraConfig(r=4, target_modules="all-linear", use_dora=True))
    assert keep_lora_input_dtype(model) == 0


def test_compiled_body_does_not_recompile_for_each_batch_of_dialogues():
    """``compile: true`` compiles the model body; the per-dialogue attention is a graph break, so a new packing
    layout (other dialogue boundaries) reuses the compiled graphs instead of specialising a new one per batch."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    from kefu.train.attention import row_segments

    torch._dynamo.reset()
    counters.clear()
    wrapper = SupervisedLM(make_model("gemma3"))
    object.__setattr__(wrapper, "body", torch.compile(wrapper.body, backend="eager", dynamic=True))
    graphs = []
    layouts = []
    for seed in range(4):
        batch = collate(pack(_examples(5, seed=seed), 256), pad_id=0)
        layouts.append(str(row_segments(batch["position_ids"])))
        loss, _ = wrapper(**batch)
        loss.backward()
        graphs.append(counters["stats"]["unique_graphs"])
    torch._dynamo.reset()
    assert len(set(layouts)) == 4  # four different packings
    assert graphs[3] == graphs[1]  # the third and fourth layouts compiled nothing new


def test_collate_pads_to_a_fixed_width_with_a_separate_padding_sequence():
    examples = _examples(2, seed=5)
    used = sum(len(e.input_ids) for e in examples)
    batch = collate([examples], pad_id=0, width=used + 7)
    assert batch["input_ids"].shape == (1, used + 7)
    assert batch["position_ids"][0, used:].tolist() == list(range(7))  # the tail restarts: its own "dialogue"
    assert (batch["labels"][0, used:] == -100).all()
    assert collate([examples], pad_id=0, width=3)["input_ids"].shape == (1, used)  # never cuts a row


def test_filtered_loss_keeps_the_output_mean_until_the_weight_changes():
    """SupervisedLM hands the loss the output projection's mean row, computed once and again when it changes; the
    loss of a batch is the same with and without the filter."""
    model = make_model("gemma3")
    tok = make_tokenizer()
    examples = [Example(*encode_dialogue(tok, d["messages"]), str(i)) for i, d in enumerate(make_dialogues(3))]
    batch = collate([examples], pad_id=0)
    filtered, plain = SupervisedLM(model, grad_floor=2 ** -16), SupervisedLM(model)
    head = filtered.lm_head.weight
    first = filtered.head_mean()
    assert filtered.head_mean() is first
    torch.testing.assert_close(first, head.detach().float().mean(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(filtered(**batch)[0], plain(**batch)[0])
    with torch.no_grad():
        head.add_(1.0)
    torch.testing.assert_close(filtered.head_mean(), first + 1.0)


@pytest.mark.parametrize("window", [None, 5, 11])
def test_cpu_eager_attention_in_query_blocks_equals_one_block(window):
    """Blocks of queries see only the keys they can attend to; every output row equals the single masked block's."""
    from kefu.train.attention import _eager_causal

    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 4, 29, 8, dtype=torch.float64) for _ in range(3))
    one = _eager_causal(q, k, v, 0.3, window, block=29)
    for block in (4, 7, 16):
        torch.testing.assert_close(_eager_causal(q, k, v, 0.3, window, block=block), one, rtol=1e-4, atol=1e-6)  # fp32 softmax
    reference = F.scaled_dot_product_attention(q, k, v, scale=0.3, attn_mask=~__import__(
        "kefu.train.attention", fromlist=["_hidden_keys"])._hidden_keys(29, window))
    torch.testing.assert_close(one, reference)


def test_per_dialogue_loop_switches_the_variable_length_kernel_off_within_its_block(monkeypatch):
    """Where the kernel could run (faked here: CUDA, bf16, Ampere), the switch sends packed rows through the loop,
    and only inside its block."""
    from types import SimpleNamespace

    import kefu.train.attention as attention

    monkeypatch.setattr(attention, "_varlen_kernel", lambda: (None, True, True))
    monkeypatch.setattr(attention, "_flash_capable", lambda index: True)
    query = SimpleNamespace(is_cuda=True, dtype=torch.bfloat16, shape=(1, 4, 8, 64), device=SimpleNamespace(index=0))
    assert attention.varlen_available(query, 0.0, None)
    with attention.per_dialogue_loop():
        assert not attention.varlen_available(query, 0.0, None)
    assert attention.varlen_available(query, 0.0, None)
