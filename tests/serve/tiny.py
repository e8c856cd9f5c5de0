"""A tiny random-initialised causal LM and an offline character tokenizer, built in-process for fast tests."""

from __future__ import annotations

CORPUS = ("您好亲，这款冲锋衣价格是399元，有黑色蓝色，尺码S M L XL。订单已发货，顺丰速运。退货退款七天无理由。"
          "请问还有什么可以帮您？谢谢 亲 好的 的 了 吗 呢 是 有 没 不 别 无 我 你 他 这 那 个 件 码 色 钱 价 格"
          "abcdefghijklmnopqrstuvwxyz0123456789 .,!?¥-")

CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<eos>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
    chars = sorted(set(CORPUS))
    vocab = {tok: i for i, tok in enumerate(specials + chars + ["▁"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>",
                                   additional_special_tokens=specials[3:])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_model(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.convert_tokens_to_ids("<|end|>"),
                         bos_token_id=None)
    return LlamaForCausalLM(config).eval()
