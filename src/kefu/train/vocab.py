"""Vocabulary trimming: decode over the tokens a shop actually uses, not the model's whole vocabulary.

Gemma 3 has 262,144 tokens; its output matrix (262k × 640, 670 MB in fp32) is read for every generated token and
costs more than the whole transformer body. A shop's replies use a few tens of thousands of those tokens. A
:class:`TrimmedHead` keeps only their rows and scores only them; the other logits are set to the lowest finite
value, so ``generate`` (greedy, sampling, streaming, stop tokens) works unchanged and can never pick a dropped
token. Input embeddings stay whole, so any customer text is still read exactly as before.

The kept set (:func:`corpus_vocab`) is every token of the shop's texts (prepared dialogues, knowledge-graph
facts), every special and chat-template token, and every token of one printable ASCII character or byte fallback,
so digits, order numbers and unseen characters can still be written. ``kefu.eval.trim.trim_quality`` measures what the trim
costs — greedy agreement with the full head on held-out prompts — and the export refuses to call a trim good below
a threshold. ``VocabTrim`` files are JSON (``vocab_trim.json``) tied to the tokenizer by a fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from kefu.train.template import render_prompt, stop_token_ids
from kefu.types import KefuError

__all__ = ["TrimmedHead", "VocabTrim", "corpus_vocab", "trim_model", "untrim_model",
           "tokenizer_fingerprint"]

VOCAB_FILE = "vocab_trim.json"


def tokenizer_fingerprint(tokenizer) -> str:
    """Short hash of the tokenizer's vocabulary (a trim made for one tokenizer is meaningless for another)."""
    vocab = tokenizer.get_vocab()
    digest = hashlib.sha256()
    for token, idx in sorted(vocab.items(), key=lambda kv: kv[1]):
        digest.update(f"{idx}\t{token}\n".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


@dataclass
class VocabTrim:
    """The kept token ids (sorted) of one tokenizer, with where they came from and the measured quality."""

    keep_ids: list[int]
    vocab_size: int
    tokenizer: str
    sources: dict[str, int] = field(default_factory=dict)  # source -> texts read
    quality: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        if path.is_dir() or not path.suffix:
            path = path / VOCAB_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "VocabTrim":
        path = Path(path)
        if path.is_dir():
            path = path / VOCAB_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            trim = cls(**raw)
        except FileNotFoundError:
            raise KefuError(f"{path}: no vocabulary trim file (make one with `kefu export --trim-vocab`)") from None
        except (json.JSONDecodeError, TypeError) as exc:
            raise KefuError(f"{path}: not a vocabulary trim file: {exc}") from exc
        if not trim.keep_ids or any(not 0 <= i < trim.vocab_size for i in trim.keep_ids):
            raise KefuError(f"{path}: keep_ids must be non-empty ids below vocab_size={trim.vocab_size}")
        return trim

    def check(self, tokenizer, where: str = "vocabulary trim") -> None:
        """Refuse a trim made for another tokenizer."""
        got = tokenizer_fingerprint(tokenizer)
        if got != self.tokenizer:
            raise KefuError(f"{where}: made for tokenizer {self.tokenizer}, this model's tokenizer is {got}")


def _always_kept(tokenizer) -> set[int]:
    """Special and template tokens, single printable ASCII characters and byte-fallback tokens."""
    keep = set(tokenizer.all_special_ids) | set(stop_token_ids(tokenizer))
    for attr in ("eos_token_id", "bos_token_id", "pad_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if isinstance(value, int):
            keep.add(value)
    vocab = tokenizer.get_vocab()
    for ch in map(chr, range(32, 127)):
        for form in (ch, "▁" + ch, "Ġ" + ch):
            if form in vocab:
                keep.add(vocab[form])
    for b in range(256):
        token = f"<0x{b:02X}>"
        if token in vocab:
            keep.add(vocab[token])
    return keep


def corpus_vocab(tokenizer, texts: Iterable[str], *, sources: dict[str, int] | None = None,
                 chat_messages: Iterable[list[dict]] = ()) -> VocabTrim:
    """The trim for a shop: every token of ``texts`` and of the rendered ``chat_messages`` (so template tokens
    and the tokenisation of whole turns are covered), plus :func:`_always_kept`."""
    keep = _always_kept(tokenizer)
    batch: list[str] = []

    def flush() -> None:
        if not batch:
            return
        for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]:
            keep.update(ids)
        batch.clear()

    for text in texts:
        if text:
            batch.append(text)
            if len(batch) >= 512:
                flush()
    for messages in chat_messages:
        batch.append(render_prompt(tokenizer, messages, add_generation_prompt=False))
        if len(batch) >= 512:
            flush()
    flush()
    size = len(tokenizer)
    return VocabTrim(keep_ids=sorted(i for i in keep if 0 <= i < size), vocab_size=size,
                     tokenizer=tokenizer_fingerprint(tokenizer), sources=dict(sources or {}))


class TrimmedHead(nn.Module):
    """An output projection over kept rows only, scattered back into a full-size logits tensor.

    The kept rows live in ``kept_weight`` (not ``weight``) so that a later ``tie_weights`` of the host model cannot
    swap the full embedding matrix back in. Dropped tokens get the dtype's lowest finite logit: softmax gives them
    probability 0 and argmax never picks them, and no ``inf - inf`` NaN can appear in logits processors.
    """

    def __init__(self, head: nn.Module, keep_ids: list[int] | torch.Tensor):
        super().__init__()
        dequantized = getattr(head, "dequantized", None)  # an INT8 head (kefu.train.quant): its float values
        weight = dequantized(torch.float32) if callable(dequantized) else head.weight
        self.vocab_size = weight.shape[0]
        keep = torch.as_tensor(keep_ids, dtype=torch.long, device=weight.device)
        self.register_buffer("keep_ids", keep, persistent=False)
        self.register_buffer("kept_weight", weight.detach()[keep].clone(), persistent=False)
        bias = getattr(head, "bias", None)
        self.register_buffer("kept_bias", None if bias is None else bias.detach()[keep].clone(), persistent=False)
        self.full_head = [head]  # the original (kept out of the module tree: not a parameter of the trimmed model)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        kept = nn.functional.linear(hidden, self.kept_weight.to(hidden.dtype),
                                    None if self.kept_bias is None else self.kept_bias.to(hidden.dtype))
        out = kept.new_full((*kept.shape[:-1], self.vocab_size), torch.finfo(kept.dtype).min)
        out[..., self.keep_ids] = kept
        return out


def _host(model):
    """The transformers model that owns the output embeddings (under a PeftModel too)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def trim_model(model, trim: VocabTrim | list[int]) -> nn.Module:
    """Swap ``model``'s output projection for a :class:`TrimmedHead` (in place; returns the model)."""
    keep = trim.keep_ids if isinstance(trim, VocabTrim) else list(trim)
    host = _host(model)
    head = host.get_output_embeddings()
    if isinstance(head, TrimmedHead):
        head = head.full_head[0]
    if head is None or not hasattr(head, "weight"):
        raise KefuError(f"{type(host).__name__}: no output projection to trim")
    if max(keep) >= head.weight.shape[0]:
        raise KefuError(f"vocabulary trim keeps id {max(keep)} but the model has {head.weight.shape[0]} outputs")
    host.set_output_embeddings(TrimmedHead(head, keep))
    return model


def untrim_model(model) -> nn.Module:
    """Put the full output projection back."""
    host = _host(model)
    head = host.get_output_embeddings()
    if isinstance(head, TrimmedHead):
        host.set_output_embeddings(head.full_head[0])
    return model
