"""Baselines every evaluation reports beside the model: the shop's own past replies, and one stock reply.

* **retrieval** — for each test sample, the reply of the best match in a :class:`~kefu.kg.replies.ReplyIndex` built
  from the *train* data (the conversation so far as the query); an empty prediction when nothing matches.
* **consensus** — of the 20 best distinct past replies (to somewhat alike questions), the one that agrees most with
  the others (:meth:`~kefu.kg.replies.ReplyIndex.consensus`; the best match when none is alike enough): what the
  shop's agents usually say there, still without a model. The system answers this way where the shop's data says
  nothing about the turn, so a model is measured against it too.
* **stock** — the single most frequent agent reply of the train data, answered to every question.

A tuned model that does not beat both has learnt nothing the logs did not already hold. Scores are LLaMA-Factory's
per-sample BLEU-4 / ROUGE-L means (:func:`kefu.eval.metrics.similarity_scores`, the same scorer as the model's
``bleu4``/``rougeL``), and ``vs_retrieval_*`` / ``vs_stock_*`` are the model's score divided by the baseline's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from kefu.artifacts.dialogues import read_dialogues
from kefu.artifacts.run import TrainRun
from kefu.eval.metrics import similarity_scores
from kefu.kg.replies import ReplyIndex
from kefu.types import KefuError

BASELINE_KEYS = ("bleu4", "rougeL")


def retrieval_predictions(index: ReplyIndex, samples: Sequence[dict]) -> list[str]:
    """The best past reply for each sample's ``context`` (messages before the agent turn); '' when none matches."""
    out = []
    for sample in samples:
        matches = index.search(sample.get("context") or [], k=1)
        out.append(matches[0].reply if matches else "")
    return out


def consensus_predictions(index: ReplyIndex, samples: Sequence[dict]) -> list[str]:
    """The most agreed of the best past replies (``ReplyIndex.consensus``, as serving ranks them) for each sample's
    ``context``; '' when none is alike enough to vote."""
    out = []
    for sample in samples:
        ranked = index.consensus(sample.get("context") or [])
        out.append(ranked[0].text if ranked else "")
    return out


def stock_predictions(index: ReplyIndex, samples: Sequence[dict]) -> list[str]:
    """The train data's most frequent agent reply, for every sample."""
    reply = index.most_common_reply()
    return [reply] * len(samples)


def train_data_of_run(run: str | Path) -> Path | None:
    """The train file a run was trained on, from its run record (``data.files[0]``, else ``data.path``); None when
    the record does not name one that exists."""
    try:
        record = TrainRun(run).record()
    except KefuError:
        return None
    data = record.get("data")
    if not isinstance(data, dict):
        return None
    files = data.get("files")
    candidates = ([files[0]] if isinstance(files, list) and files else []) + [data.get("path")]
    for candidate in candidates:
        if isinstance(candidate, str) and candidate and Path(candidate).exists():
            return Path(candidate)
    return None


def baseline_metrics(index: ReplyIndex, samples: Sequence[dict], model_metrics: dict[str, Any] | None = None
                     ) -> tuple[dict[str, Any], list[str]]:
    """(``retrieval_*``, ``consensus_*``, ``stock_*`` and, given the model's metrics, ``vs_retrieval_*``,
    ``vs_consensus_*`` and ``vs_stock_*`` keys;
    the retrieval predictions, one per sample)."""
    refs = [list(s["references"]) for s in samples]
    retrieval = retrieval_predictions(index, samples)
    stock = stock_predictions(index, samples)
    # the best match where no past reply is alike enough to vote
    consensus = [c or r for c, r in zip(consensus_predictions(index, samples), retrieval)]
    out: dict[str, Any] = {"retrieval_index_replies": len(index), "stock_reply": stock[0] if stock else ""}
    for name, preds in (("retrieval", retrieval), ("consensus", consensus), ("stock", stock)):
        summary, _ = similarity_scores(preds, refs)
        for key in BASELINE_KEYS:
            out[f"{name}_{key}"] = summary[key]
            if model_metrics is not None and model_metrics.get(key) is not None:
                base = summary[key]
                out[f"vs_{name}_{key}"] = (model_metrics[key] / base) if base else None
    out["retrieval_matched_rate"] = (sum(1 for p in retrieval if p) / len(retrieval)) if retrieval else 0.0
    return out, retrieval
