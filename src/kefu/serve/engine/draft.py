"""Prompt-lookup drafting: cheap guesses of the next tokens that a decode step verifies (speculation)."""

from __future__ import annotations


def lookup_draft(tokens: list[int], max_tokens: int, max_ngram: int = 3) -> list[int]:
    """Prompt-lookup drafting: the tokens that followed the latest earlier occurrence of the sequence's last
    ``n``-gram (``n`` from ``max_ngram`` down to 1), at most ``max_tokens``. Customer-service answers repeat the
    facts, names and phrases of their prompt, so these guesses are often right; a wrong one costs a little width in
    one decode step (the same idea as vLLM's n-gram speculation and transformers' ``prompt_lookup_num_tokens``)."""
    if max_tokens <= 0:
        return []
    for n in range(min(max_ngram, len(tokens) - 1), 0, -1):
        tail = tokens[-n:]
        first = tail[0]
        for start in range(len(tokens) - n - 1, -1, -1):
            if tokens[start] == first and tokens[start:start + n] == tail:
                return tokens[start + n:start + n + max_tokens]
    return []
