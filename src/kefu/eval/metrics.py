"""Text-similarity metrics, two families, both always reported.

1. LLaMA-Factory's ``ComputeSimilarity`` (``src/llamafactory/train/sft/metric.py``), reproduced exactly so our numbers
   can be put next to a LLaMA-Factory run: per sample, character-level BLEU-4 (NLTK ``sentence_bleu``, default weights
   (0.25,)*4, ``SmoothingFunction().method3``, hypothesis ``list(pred)``), ROUGE-1/2/L F-scores from rouge-chinese on
   ``" ".join(jieba.cut(...))`` (0 for all three when the jieba-cut hypothesis or reference has no non-blank token),
   each score ×100 rounded to 4 places, then the mean over samples. Keys ``bleu4``, ``rouge1``, ``rouge2``,
   ``rougeL``.

   Multi-reference choice: LLaMA-Factory has one label per sample. With one reference we match it exactly. With
   several, BLEU-4 passes all of them to ``sentence_bleu`` (NLTK's own multi-reference BLEU: clipped counts against
   the best reference, closest reference length) and ROUGE uses the first reference only.

   Named by reference use (the same scorers):

   - ``bleu4_single_ref`` / ``rougeL_single_ref`` (and ``rouge1_single_ref``, ``rouge2_single_ref``): against the
     first reference only — how JDDC's human-vs-human agreement (BLEU-4 24.92, ROUGE-L 38.26: first human reply
     against the second) is computed, so these are the figures to set beside it.
   - ``bleu4_multi_ref`` / ``rougeL_multi_ref`` (only when some sample has several references): NLTK's
     multi-reference BLEU-4 over all references, and the best ROUGE-L over them.
   - the unsuffixed keys stay as they were: ``bleu4`` = ``bleu4_multi_ref`` (= ``bleu4_single_ref`` when every sample
     has one reference), ``rouge1``/``rouge2``/``rougeL`` = the ``*_single_ref`` ones.
2. Corpus-level sacreBLEU (``tokenize="zh"``) and chrF over all references of each turn (keys ``sacrebleu``,
   ``chrf``): the numbers comparable across papers.

Against people: when turns carry ≥2 (human) references, each reference is scored against the others
(leave-one-out) and the model against the same reference subsets, so both sides see k-1 references.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from statistics import mean
from typing import Any, Sequence

from kefu.eval import business, experience
from kefu.eval.config import EvalConfig
from kefu.types import KefuError

MSG_SEP = "!@@@!"  # JDDC: one agent turn made of several messages
ALT_SEP = "<sep>"  # JDDC human test format: alternative replies by different agents
LF_KEYS = ("bleu4", "rouge1", "rouge2", "rougeL")


def parse_references(text: str, message_joiner: str = " ") -> list[str]:
    """Split JDDC-style reference text: ``<sep>`` separates alternative replies, ``!@@@!`` the messages of one reply.

    Messages of one reply are joined with ``message_joiner`` (a space: consecutive messages stay separate words for
    sacreBLEU; for character BLEU the space is one more character, as it would be in a model reply). Empty
    alternatives (JDDC writes ``NULL`` when an agent did not reply) are dropped.
    """
    refs = []
    for alt in str(text).split(ALT_SEP):
        messages = [m.strip() for m in alt.split(MSG_SEP)]
        joined = message_joiner.join(m for m in messages if m and m.upper() != "NULL").strip()
        if joined:
            refs.append(joined)
    return refs


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


@lru_cache(maxsize=1)
def _bleu_tools():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    return sentence_bleu, SmoothingFunction().method3


def lf_bleu4(prediction: str, references: Sequence[str]) -> float:
    """LLaMA-Factory's per-sample BLEU-4 ×100 (rounded to 4 places): characters, NLTK, smoothing method3."""
    sentence_bleu, method3 = _bleu_tools()
    refs = [list(r) for r in references] or [[]]
    score = sentence_bleu(refs, list(prediction), smoothing_function=method3)
    return round(float(score) * 100, 4)


def lf_rouge(prediction: str, reference: str) -> dict[str, float]:
    """LLaMA-Factory's per-sample ROUGE-1/2/L F ×100 (rounded to 4 places) on jieba words; 0 when either side is empty."""
    jieba = _jieba()
    hypothesis = list(jieba.cut(prediction))
    ref_words = list(jieba.cut(reference))
    if len(" ".join(hypothesis).split()) == 0 or len(" ".join(ref_words).split()) == 0:
        return {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    from rouge_chinese import Rouge

    scores = Rouge().get_scores(" ".join(hypothesis), " ".join(ref_words))[0]
    return {"rouge1": round(scores["rouge-1"]["f"] * 100, 4), "rouge2": round(scores["rouge-2"]["f"] * 100, 4),
            "rougeL": round(scores["rouge-l"]["f"] * 100, 4)}


def lf_sample_scores(prediction: str, references: Sequence[str]) -> dict[str, float]:
    """All four LLaMA-Factory scores of one sample; ROUGE uses ``references[0]``."""
    first = references[0] if references else ""
    return {"bleu4": lf_bleu4(prediction, references), **lf_rouge(prediction, first)}


def _padded_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """sacreBLEU wants one stream per reference position; turns with fewer references get ``None`` (ignored)."""
    width = max((len(r) for r in references), default=0)
    return [[refs[i] if i < len(refs) else None for refs in references] for i in range(width)]


def corpus_sacrebleu(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU with sacreBLEU's Chinese tokenizer, every reference of every turn."""
    import sacrebleu

    if not predictions:
        return 0.0
    return float(sacrebleu.corpus_bleu(list(predictions), _padded_streams(references), tokenize="zh").score)


def corpus_chrf(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus chrF (sacreBLEU defaults: character 6-grams, beta 2), every reference of every turn."""
    import sacrebleu

    if not predictions:
        return 0.0
    return float(sacrebleu.corpus_chrf(list(predictions), _padded_streams(references)).score)


def similarity_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]
                      ) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Both families: ``(corpus-level summary, per-sample LLaMA-Factory scores)``."""
    per_sample = [lf_sample_scores(p, r) for p, r in zip(predictions, references)]
    summary = {k: (float(mean(s[k] for s in per_sample)) if per_sample else 0.0) for k in LF_KEYS}
    summary["sacrebleu"] = corpus_sacrebleu(predictions, references)
    summary["chrf"] = corpus_chrf(predictions, references)
    return summary, per_sample


def reference_named(predictions: Sequence[str], references: Sequence[Sequence[str]],
                    per_sample: Sequence[dict[str, float]]) -> tuple[dict[str, float], list[dict[str, float]]]:
    """BLEU-4 and ROUGE named by how the references are used (see the module docstring): ``(summary, per-sample)``.
    ``per_sample`` are the :func:`lf_sample_scores` of the same samples (reused: ROUGE there is the first
    reference's)."""
    rows: list[dict[str, float]] = []
    for pred, refs, lf in zip(predictions, references, per_sample):
        row = {"bleu4_single_ref": lf["bleu4"] if len(refs) <= 1 else lf_bleu4(pred, refs[:1])}
        if len(refs) > 1:
            row["bleu4_multi_ref"] = lf["bleu4"]
            row["rougeL_multi_ref"] = max([lf["rougeL"]] + [lf_rouge(pred, r)["rougeL"] for r in refs[1:]])
        rows.append(row)
    n = len(rows)
    if not n:
        return {}, rows
    summary = {"bleu4_single_ref": sum(r["bleu4_single_ref"] for r in rows) / n}
    for key in ("rouge1", "rouge2", "rougeL"):
        summary[f"{key}_single_ref"] = float(mean(s[key] for s in per_sample))
    if any(len(r) > 1 for r in references):
        summary["bleu4_multi_ref"] = float(mean(s["bleu4"] for s in per_sample))
        summary["rougeL_multi_ref"] = sum(r.get("rougeL_multi_ref", s["rougeL"]) for r, s in zip(rows, per_sample)) / n
    return summary, rows


def human_agreement(predictions: Sequence[str], references: Sequence[Sequence[str]], bar: float = 0.85
                    ) -> dict[str, Any]:
    """Human-vs-human agreement and the model's share of it, on the turns with ≥2 references.

    For a turn with references r1..rk: each ri is a "human hypothesis" scored against the other k-1; the model's
    prediction is scored against the same k-1 subsets. Reported for ``bleu4`` (mean of per-pair LLaMA-Factory
    BLEU-4), ``sacrebleu`` and ``chrf`` (corpus-level over all pairs). ``human_pct_<m>`` is model / human × 100,
    ``human_bar_met`` says whether every one reaches ``bar``. Empty dict when no turn has ≥2 references.
    """
    human_hyps, model_hyps, loo_refs = [], [], []
    n_turns = 0
    for pred, refs in zip(predictions, references):
        if len(refs) < 2:
            continue
        n_turns += 1
        for i, ref in enumerate(refs):
            others = [r for j, r in enumerate(refs) if j != i]
            human_hyps.append(ref)
            model_hyps.append(pred)
            loo_refs.append(others)
    if not n_turns:
        return {}
    out: dict[str, Any] = {"human_n_turns": n_turns, "human_n_pairs": len(human_hyps), "human_bar": bar}
    human = {"bleu4": mean(lf_bleu4(h, r) for h, r in zip(human_hyps, loo_refs)),
             "sacrebleu": corpus_sacrebleu(human_hyps, loo_refs), "chrf": corpus_chrf(human_hyps, loo_refs)}
    model = {"bleu4": mean(lf_bleu4(h, r) for h, r in zip(model_hyps, loo_refs)),
             "sacrebleu": corpus_sacrebleu(model_hyps, loo_refs), "chrf": corpus_chrf(model_hyps, loo_refs)}
    met = True
    for key in human:
        out[f"human_{key}"] = float(human[key])
        out[f"model_loo_{key}"] = float(model[key])
        pct = 100.0 * model[key] / human[key] if human[key] > 0 else None  # people never agree: no ratio
        out[f"human_pct_{key}"] = pct
        met = met and pct is not None and pct >= bar * 100
    out["human_bar_met"] = met
    return out


def _check_record(record: Any, index: int) -> tuple[str, list[str]]:
    where = record.get("_where", f"record {index + 1}") if isinstance(record, dict) else f"record {index + 1}"
    if not isinstance(record, dict):
        raise KefuError(f"{where}: expected an object, got {type(record).__name__}")
    pred = record.get("prediction")
    if not isinstance(pred, str):
        raise KefuError(f"{where}: field 'prediction' is missing or not a string")
    refs = record.get("references")
    if isinstance(refs, str):
        refs = [refs]
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise KefuError(f"{where}: field 'references' must be a non-empty list of strings")
    return pred, refs


def score_predictions(records: list[dict], *, kg: Any = None, config: Any = None,
                      per_sample_out: list[dict] | None = None) -> dict:
    """Score prediction records (``prediction``, ``references`` and optional ``id``, ``intent``, ``predicted_intent``,
    ``facts``, ``latency_ms``, ``context``) with every metric family; returns flat metrics.

    When ``per_sample_out`` is a list it receives one dict per record: the record plus its per-sample scores.
    """
    config = config or EvalConfig()
    if not records:
        raise KefuError("no prediction records to score")
    preds, refs = [], []
    for i, rec in enumerate(records):
        p, r = _check_record(rec, i)
        preds.append(p)
        refs.append(r)
    summary, per_sample = similarity_scores(preds, refs)
    metrics: dict[str, Any] = {"n_samples": len(records), "n_references": sum(len(r) for r in refs),
                               "multi_reference_turns": sum(1 for r in refs if len(r) > 1)}
    metrics.update(summary)
    named, named_rows = reference_named(preds, refs, per_sample)
    metrics.update(named)
    metrics.update(human_agreement(preds, refs, bar=config.human_bar))
    biz, biz_rows = business.business_metrics(records, kg=kg)
    metrics.update(biz)
    exp, exp_rows = experience.experience_metrics(preds, refs)
    metrics.update(exp)
    if per_sample_out is not None:
        for rec, lf, nr, b, e in zip(records, per_sample, named_rows, biz_rows, exp_rows):
            row = {k: v for k, v in rec.items() if not k.startswith("_")}
            row.update(lf)
            row.update(nr)
            row.update(b)
            row.update(e)
            per_sample_out.append(row)
    return metrics
