"""Experience metrics: is the reply fluent, varied, the right length, and would a customer be satisfied?

- ``distinct_1``/``distinct_2``: unique character n-grams / all character n-grams over every prediction (Li et al.
  2016, on characters because Chinese has no spaces); low values mean the model says the same thing to everyone.
- ``repeat_4gram_rate``: per reply, the share of its character 4-grams that already occurred earlier in that reply,
  averaged — catches "亲亲亲亲亲..." loops.
- Lengths in characters (``len_mean``, ``len_p50``, ``len_p95``), reference mean length, their ratio, empty replies.
- ``perplexity``: exp of the mean token negative log-likelihood of the predictions given their context under the
  base model (adapter disabled), when a local model is loaded.
- ``judge_satisfaction``: optional 1–5 rubric score from any OpenAI-compatible chat endpoint (off by default).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any, Sequence

import httpx

from kefu.eval.business import percentile
from kefu.eval.generate import reply_perplexity
from kefu.text import iter_ngrams
from kefu.types import KefuError

JUDGE_RUBRIC = (
    "你是电商客服质检员。根据对话上下文，给客服的回复打 1 到 5 分的顾客满意度：\n"
    "5 = 准确解决问题、信息正确、礼貌简洁；4 = 基本解决，有小瑕疵；3 = 部分相关但没解决；"
    "2 = 答非所问或含糊；1 = 错误信息、冒犯或违规承诺。\n"
    '只输出 JSON：{"score": 整数1-5, "reason": "一句话理由"}'
)


def experience_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[dict, list[dict]]:
    """Corpus experience metrics and per-sample ``len``/``repeat_4gram``."""
    rows, uni, bi = [], [], []
    for pred in predictions:
        chars = list(pred)
        uni.extend(chars)
        bi.extend(iter_ngrams(chars, 2))
        grams = list(iter_ngrams(chars, 4))
        repeated = len(grams) - len(set(grams))
        rows.append({"len": len(pred), "repeat_4gram": repeated / len(grams) if grams else 0.0})
    lengths = [r["len"] for r in rows]
    ref_lengths = [sum(len(r) for r in refs) / len(refs) for refs in references if refs]
    n = len(predictions)
    ref_mean = sum(ref_lengths) / len(ref_lengths) if ref_lengths else 0.0
    len_mean = sum(lengths) / n if n else 0.0
    return {
        "distinct_1": len(set(uni)) / len(uni) if uni else 0.0,
        "distinct_2": len(set(bi)) / len(bi) if bi else 0.0,
        "repeat_4gram_rate": sum(r["repeat_4gram"] for r in rows) / n if n else 0.0,
        "len_mean": len_mean, "len_p50": percentile(lengths, 50) if n else 0.0,
        "len_p95": percentile(lengths, 95) if n else 0.0,
        "ref_len_mean": ref_mean, "len_ratio": len_mean / ref_mean if ref_mean else None,
        "empty_rate": sum(1 for p in predictions if not p.strip()) / n if n else 0.0,
    }, rows


def perplexity(model: Any, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], predictions: Sequence[str],
               batch_size: int = 8) -> tuple[float | None, list[float | None]]:
    """Perplexity of each prediction given its prompt token ids, and of all prediction tokens together (pooled).

    Only prediction tokens are scored; empty predictions get ``None``; a PEFT adapter is disabled, so fluency is
    judged by the base model. Computed by ``kefu.eval.generate.reply_perplexity`` (memory bounded by the batch);
    ``batch_size`` is kept for callers and bounds rows per batch through the token budget."""
    rows = reply_perplexity(model, tokenizer, prompt_ids, predictions)
    nll, tokens = sum(r[1] for r in rows), sum(r[2] for r in rows)
    return (math.exp(nll / tokens) if tokens else None), [r[0] for r in rows]


def _judge_messages(context: str, prediction: str) -> list[dict]:
    return [{"role": "system", "content": JUDGE_RUBRIC},
            {"role": "user", "content": f"【对话上下文】\n{context}\n\n【客服回复】\n{prediction}"}]


def _parse_score(text: str) -> int | None:
    try:
        value = json.loads(re.search(r"\{.*\}", text, re.S).group(0)).get("score")  # type: ignore[union-attr]
    except (AttributeError, ValueError, TypeError):
        match = re.search(r"[1-5]", text)
        value = int(match.group(0)) if match else None
    try:
        value = int(value)
    except (TypeError, ValueError):
        return None
    return value if 1 <= value <= 5 else None


async def _judge_all(endpoint: str, model: str, api_key: str | None, items: list[tuple[str, str]],
                     concurrency: int, timeout_s: float, transport: httpx.AsyncBaseTransport | None) -> list[int | None]:
    sem = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = endpoint.rstrip("/") + "/chat/completions"
    async with httpx.AsyncClient(timeout=timeout_s, transport=transport, headers=headers) as client:
        async def one(ctx: str, pred: str) -> int | None:
            async with sem:
                body = {"model": model, "messages": _judge_messages(ctx, pred), "temperature": 0, "max_tokens": 128}
                try:
                    resp = await client.post(url, json=body)
                except httpx.HTTPError as exc:
                    raise KefuError(f"judge endpoint {url}: request failed: {exc}") from exc
                if resp.status_code != 200:
                    raise KefuError(f"judge endpoint {url}: HTTP {resp.status_code}: {resp.text[:200]}")
                try:
                    content = resp.json()["choices"][0]["message"]["content"]
                except (ValueError, KeyError, IndexError, TypeError) as exc:
                    raise KefuError(f"judge endpoint {url}: not an OpenAI chat completion response") from exc
                return _parse_score(content or "")

        return await asyncio.gather(*(one(c, p) for c, p in items))


def judge_satisfaction(endpoint: str, contexts: Sequence[str], predictions: Sequence[str], *, model: str = "judge",
                       api_key: str | None = None, concurrency: int = 4, timeout_s: float = 60.0,
                       transport: httpx.AsyncBaseTransport | None = None) -> tuple[dict, list[int | None]]:
    """Rubric satisfaction scores (1–5) from an OpenAI-compatible judge; unparsable answers count as missing."""
    scores = asyncio.run(_judge_all(endpoint, model, api_key, list(zip(contexts, predictions)), concurrency,
                                    timeout_s, transport))
    valid = [s for s in scores if s is not None]
    return {"judge_satisfaction": sum(valid) / len(valid) if valid else None, "judge_n": len(valid),
            "judge_unparsed": len(scores) - len(valid), "judge_model": model}, scores
