"""Serve test support: a tiny random causal LM + offline character tokenizer, fake KG/tools, a service factory."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from kefu.loop.feedback import FeedbackStore
from kefu.serve.config import ServeConfig
from kefu.serve.engine import LocalEngine
from kefu.serve.pipeline import ChatService

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


REPO_SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"
API_KEY = "test-key-0123456789abcdef"


@dataclass
class FakeFacts:
    entities: list[dict[str, Any]] = field(default_factory=list)
    facts: list[dict[str, Any]] = field(default_factory=list)
    prompt_block: str = ""
    answer: str | None = None


PRODUCTS = {"SL-10001": ("山岚冲锋衣", 39900), "SL-10002": ("轻量羽绒服", 59900)}
ORDERS = {"1234567890123456": ("C0001", "已发货"), "6543210987654321": ("C0002", "待发货")}


def fake_retriever(text: str, customer_id: str | None):
    """A stand-in for kefu.kg.retrieval.retrieve over two products and one FAQ entry."""
    for sku, (name, price) in PRODUCTS.items():
        if sku in text or name in text:
            ent = {"sku": sku, "name": name, "price_fen": price}
            block = f"{name}（{sku}）价格 ¥{price // 100}"
            answer = f"{name}的价格是¥{price // 100}。" if ("多少钱" in text or "价格" in text) else None
            return FakeFacts([ent], [], block, answer)
    if "发票" in text:
        return FakeFacts([], [], "下单后可在订单详情申请电子发票", "您可以在订单详情页申请电子发票。")
    return FakeFacts()


def fake_order_lookup(order_no: str, customer_id: str | None, text: str):
    owner, status = ORDERS.get(order_no, (None, None))
    if owner is None:
        return {"error": "没有找到这个订单号，请核对。"}
    if owner != customer_id:
        return {"error": "这个订单不属于当前账号，无法查询。"}
    return {"order_no": order_no, "status": status, "paid_fen": 39900}


def make_service(tiny, *, engine=None, config_overrides: dict | None = None, feedback=True, **kwargs):
    """A ChatService on the tiny random model, served as the base model (``allow_base_model``: it stands for a
    trained one here) unless ``config_overrides`` say otherwise."""
    config = ServeConfig(**{"max_new_tokens": 8, "batch_wait_ms": 5, "allow_base_model": True,
                            **(config_overrides or {})})
    if engine is None:
        model, tok = tiny
        engine = LocalEngine(model, tok, base_name="tiny", max_new_tokens=config.max_new_tokens,
                             batch_wait_ms=config.batch_wait_ms, max_batch_size=config.max_batch_size)
    kwargs.setdefault("retriever", fake_retriever)  # pass retriever=None / order_lookup=None for the real KG ones
    kwargs.setdefault("order_lookup", fake_order_lookup)
    return ChatService(engine, config=config, feedback=FeedbackStore.open() if feedback else None,
                       base_model="tiny", **kwargs)




@contextmanager
def live_uvicorn(app) -> Iterator[str]:
    """``app`` on a real uvicorn at 127.0.0.1:<free port>, in a thread; yields its base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)


class Drafts:
    """Stands in for the model: one fixed draft per call (the last one repeats); records what it was asked."""

    name = "drafts"

    def __init__(self, *drafts):
        self.drafts, self.calls = list(drafts), []

    def models(self):
        return ["tiny"]

    async def stream(self, messages, **kwargs):
        self.calls.append(kwargs)
        draft = self.drafts[min(len(self.calls) - 1, len(self.drafts) - 1)]
        for i in range(0, len(draft), 3):
            yield draft[i:i + 3]

    async def close(self):
        pass


def full_path_service(tiny, kg, engine):
    """The sample shop with the light path switched off, so every turn goes through the model and verification."""
    from kefu.kg.tools import SQLiteOrderBackend

    service = make_service(tiny, engine=engine, kg=kg, order_backend=SQLiteOrderBackend(kg), retriever=None,
                           order_lookup=None)
    service.router.light_path = False
    return service
