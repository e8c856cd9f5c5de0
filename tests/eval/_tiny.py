"""A tiny random-initialised Llama and a char-level tokenizer: offline, built in-process, seconds to run."""

from __future__ import annotations

import json
from pathlib import Path

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
TEXT = ("你好在吗这件冲锋衣有码什么时候发货可以退吗满减怎么算订单到哪了颜色黑白蓝谢谢亲的请问帮您小时内支持天无理由吊牌完好即"
        "元和店铺券叠加已为查询包裹杭州中转两种不客气祝生活愉快转人工客服")
ASCII = "".join(chr(c) for c in range(32, 127))


def make_tokenizer():
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    table = {tok: i for i, tok in enumerate(SPECIALS + sorted(set(ASCII + TEXT + "，。？！～¥：")))}
    core = Tokenizer(models.WordLevel(table, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")


def make_model(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         pad_token_id=0, eos_token_id=1, bos_token_id=2)
    return LlamaForCausalLM(config).float().eval()


DIALOGUES = [
    {"id": "d1", "messages": [{"role": "user", "content": "你好在吗"}, {"role": "assistant", "content": "亲，在的，请问有什么可以帮您？"},
                              {"role": "user", "content": "什么时候发货"}, {"role": "assistant", "content": "亲，48小时内发货。"}],
     "meta": {"intents": ["greeting", "order_status"]}},
    {"id": "d2", "messages": [{"role": "user", "content": "这件冲锋衣可以退吗"},
                              {"role": "assistant", "content": "支持7天无理由退货，吊牌完好即可。"}],
     "meta": {"intents": ["return_request"], "facts": [{"type": "days", "value": 7}]}},
    {"id": "d3", "messages": [{"role": "system", "content": "你是客服"}, {"role": "user", "content": "满300减50怎么算"},
                              {"role": "assistant", "content": "满300元减50元，可以和店铺券叠加。<sep>满300减50哦"}],
     "meta": {"intents": ["promotion_inquiry"]}},
    {"id": "d4", "messages": [{"role": "user", "content": "转人工"}, {"role": "assistant", "content": "好的，为您转人工客服"}],
     "meta": {"intents": ["human_handoff"]}},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path
