"""Tiny, offline, random-initialised models and a char-level tokenizer, for tests and quick benchmark modes.

Built in-process in seconds, never downloaded; `make_model_dir` saves one as a local Hugging Face folder that
`--model PATH` accepts everywhere (train, eval, serve, export).
"""

from __future__ import annotations

import random
from pathlib import Path

from kefu.artifacts.dialogues import write_jsonl  # noqa: F401  (tests write their JSONL with the one writer)

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
CUSTOMER = ["你好，在吗？", "这件冲锋衣有M码吗？", "什么时候发货？", "可以退货吗？", "满300减50怎么算？",
            "订单1234567890123456到哪了？", "颜色有黑色吗", "好的谢谢"]
AGENT = ["亲，在的，请问有什么可以帮您？", "有的亲，M码还有12件。", "亲，48小时内发货哦。",
         "支持7天无理由退货，吊牌完好即可。", "满300元减50元，可以和店铺券叠加。", "已为您查询，包裹在杭州中转。",
         "有黑色和蓝色两种。", "不客气，祝您生活愉快！"]
SYSTEM = "你是山岚户外旗舰店的客服。"
ASCII = "".join(chr(c) for c in range(32, 127)) + "\n"


def vocab() -> dict[str, int]:
    chars = sorted(set(ASCII + "".join(CUSTOMER + AGENT) + SYSTEM + "¥～"))
    return {tok: i for i, tok in enumerate(SPECIALS + chars)}


def make_tokenizer(chat_template: str | None = None, gemma_markers: bool = True):
    """A char-level fast tokenizer that adds <bos>; offsets work, so encode_dialogue can label spans."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    table = vocab()
    if not gemma_markers:
        table = {k: v for k, v in table.items() if k not in ("<start_of_turn>", "<end_of_turn>")}
        table = {k: i for i, k in enumerate(table)}
    core = Tokenizer(models.WordLevel(table, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", table["<bos>"])])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                  unk_token="<unk>")
    if gemma_markers:
        tok.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    if chat_template:
        tok.chat_template = chat_template
    return tok


def make_model(arch: str = "gemma3", vocab_size: int | None = None, seed: int = 0, layers: int = 2):
    """A tiny random ``arch`` model: gemma3, llama, qwen2, or deepseek_v3 (multi-head latent attention; its first
    layer dense, the others mixture-of-experts with 4 routed experts, 2 per token, and a shared one)."""
    import torch
    from transformers import (DeepseekV3Config, DeepseekV3ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig,
                              LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM)

    torch.manual_seed(seed)
    n = vocab_size or len(vocab())
    if arch == "gemma3":
        config = Gemma3TextConfig(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                                  num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=8,
                                  layer_types=["sliding_attention", "full_attention"][:layers] * (layers // 2 or 1),
                                  max_position_embeddings=512, pad_token_id=0, eos_token_id=1, bos_token_id=2,
                                  tie_word_embeddings=True)
        model = Gemma3ForCausalLM(config)
    elif arch == "qwen2":
        config = Qwen2Config(vocab_size=n, hidden_size=48, intermediate_size=64, num_hidden_layers=layers,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                             pad_token_id=0, eos_token_id=1, bos_token_id=2, tie_word_embeddings=False)
        model = Qwen2ForCausalLM(config)
    elif arch == "deepseek_v3":
        config = DeepseekV3Config(vocab_size=n, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                                  num_hidden_layers=layers, first_k_dense_replace=1, n_routed_experts=4,
                                  num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1,
                                  num_attention_heads=2, num_key_value_heads=2, q_lora_rank=16, kv_lora_rank=16,
                                  qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, max_position_embeddings=512,
                                  pad_token_id=0, eos_token_id=1, bos_token_id=2)
        model = DeepseekV3ForCausalLM(config)
    elif arch == "llama":
        config = LlamaConfig(vocab_size=n, hidden_size=48, intermediate_size=64, num_hidden_layers=layers,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                             pad_token_id=0, eos_token_id=1, bos_token_id=2)
        model = LlamaForCausalLM(config)
    else:
        raise ValueError(f"no tiny {arch!r} model: gemma3, llama, qwen2 or deepseek_v3")
    return model.float()


def make_model_dir(path: Path, arch: str = "gemma3", seed: int = 0) -> Path:
    """Save a tiny model + tokenizer as a local Hugging Face folder (what --model PATH accepts)."""
    path.mkdir(parents=True, exist_ok=True)
    make_model(arch, seed=seed).save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return path


def make_dialogues(n: int, seed: int = 0, system: bool = False) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        messages = [{"role": "system", "content": SYSTEM}] if system else []
        for _ in range(rng.randint(1, 3)):
            k = rng.randrange(len(CUSTOMER))
            messages += [{"role": "user", "content": CUSTOMER[k]}, {"role": "assistant", "content": AGENT[k]}]
        out.append({"id": f"d{i:04d}", "messages": messages, "meta": {"source": "tiny"}})
    return out
