"""How much a vocabulary trim (``kefu.train.vocab``) changes what the model says: greedy replies with the full head
and with the trim on the same prompts. Lives in eval because it measures; the trim itself is a train-stage artifact."""

from __future__ import annotations

import time
from typing import Any

from kefu.eval.generate import generate_replies
from kefu.train.vocab import VocabTrim, trim_model, untrim_model


def token_agreement(reference: list[list[int]], other: list[list[int]]) -> float:
    """Share of token positions where ``other`` repeats ``reference`` up to each pair's first difference, over the
    longer of each pair (so a reply that stops early or runs on is not counted as agreeing)."""
    same = total = 0
    for a, b in zip(reference, other):
        total += max(len(a), len(b))
        same += next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return same / total if total else 1.0


def trim_quality(model, tokenizer, trim: VocabTrim, prompts_messages: list[list[dict]], *,
                 references: list[str] = (), max_new_tokens: int = 32, batch_size: int = 8) -> dict[str, Any]:
    """Greedy replies with the full head and with the trim, on the same prompts.

    Returns ``exact_match`` (share of replies identical token for token), ``token_agreement``
    (:func:`token_agreement`: how much of each full-vocabulary reply survives up to the first difference),
    ``reference_coverage`` (share of reference-reply tokens the trim keeps) and the timings of both.
    """
    def replies() -> tuple[list[list[int]], float]:
        began = time.perf_counter()
        texts = [r.text for r in generate_replies(model, tokenizer, prompts_messages, batch_size, max_new_tokens)]
        ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        return ids, time.perf_counter() - began

    untrim_model(model)
    full, full_s = replies()
    trim_model(model, trim)
    try:
        trimmed, trimmed_s = replies()
    finally:
        untrim_model(model)
    keep = set(trim.keep_ids)
    ref_ids = [i for ids in tokenizer(list(references), add_special_tokens=False)["input_ids"] for i in ids] \
        if references else []
    return {
        "prompts": len(prompts_messages),
        "kept_tokens": len(trim.keep_ids),
        "vocab_size": trim.vocab_size,
        "exact_match": sum(a == b for a, b in zip(full, trimmed)) / len(full) if full else 1.0,
        "token_agreement": token_agreement(full, trimmed),
        "reference_coverage": (sum(i in keep for i in ref_ids) / len(ref_ids)) if ref_ids else None,
        "full_s": full_s,
        "trimmed_s": trimmed_s,
    }
