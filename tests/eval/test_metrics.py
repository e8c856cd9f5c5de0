"""The metric definitions pinned on hand-computed cases (LLaMA-Factory's ComputeSimilarity, sacreBLEU, chrF)."""

from __future__ import annotations

import math

import pytest

from kefu.eval.metrics import (corpus_chrf, corpus_sacrebleu, human_agreement, lf_bleu4, lf_rouge, lf_sample_scores,
                               parse_references, score_predictions)
from kefu.types import KefuError


def test_bleu4_hand_computed_single_reference():
    # hyp 我们今天发货 vs ref 我们明天发货 (characters): p1=5/6, p2=3/5, p3=1/4, p4=0/3 -> method3 gives 1/(2*3);
    # BP=1 -> (5/6 * 3/5 * 1/4 * 1/6) ** 0.25 = (1/48) ** 0.25
    assert lf_bleu4("我们今天发货", ["我们明天发货"]) == round((1 / 48) ** 0.25 * 100, 4) == 37.9918


def test_bleu4_multi_reference_uses_clipped_counts_over_all_references():
    # refs 我们明天发货 / 今天发货: p1=6/6, p2=4/5, p3=2/4, p4=1/3, closest ref length 6 -> BP=1
    expected = round((1 * 0.8 * 0.5 * (1 / 3)) ** 0.25 * 100, 4)
    assert lf_bleu4("我们今天发货", ["我们明天发货", "今天发货"]) == expected == 60.4275


def test_bleu4_identical_and_empty():
    assert lf_bleu4("亲，48小时内发货哦", ["亲，48小时内发货哦"]) == 100.0
    # shorter than 4 characters: no 4-gram at all, method3 smooths p4 to 1/2 -> 0.5 ** 0.25, even when identical
    assert lf_bleu4("好的亲", ["好的亲"]) == round(0.5 ** 0.25 * 100, 4) == 84.0896
    assert lf_bleu4("", ["亲，在的"]) == 0.0
    assert lf_bleu4("亲，在的", [""]) == 0.0
    # brevity penalty: half-length exact prefix: p_n = 1, BP = exp(1 - 8/4)
    assert lf_bleu4("亲在的哦", ["亲在的哦亲在的哦"]) == round(math.exp(1 - 2) * 100, 4)


def test_rouge_on_jieba_words_and_lf_empty_rule():
    # jieba: 我们/今天/发货 vs 我们/明天/发货 -> ROUGE-1 F = 2/3, ROUGE-2 = 0 (no shared bigram), ROUGE-L = 2/3
    assert lf_rouge("我们今天发货", "我们明天发货") == {"rouge1": 66.6667, "rouge2": 0.0, "rougeL": 66.6667}
    assert lf_rouge("我们今天发货", "我们今天发货") == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    zero = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
    assert lf_rouge("", "我们明天发货") == zero
    assert lf_rouge("   ", "我们明天发货") == zero  # whitespace-only counts as empty, as in LLaMA-Factory
    assert lf_rouge("我们今天发货", "") == zero


def test_rouge_uses_first_reference_only():
    scores = lf_sample_scores("我们今天发货", ["完全不同的话", "我们今天发货"])
    assert scores["rouge1"] == 0.0 and scores["bleu4"] == 100.0


def test_score_predictions_means_over_samples():
    records = [{"prediction": "我们今天发货", "references": ["我们明天发货"]},
               {"prediction": "", "references": ["我们明天发货"]}]
    m = score_predictions(records)
    assert m["n_samples"] == 2
    assert m["bleu4"] == pytest.approx((37.9918 + 0.0) / 2)
    assert m["rouge1"] == pytest.approx(66.6667 / 2)
    assert m["rougeL"] == pytest.approx(66.6667 / 2)


def test_corpus_sacrebleu_and_chrf_multi_reference():
    import sacrebleu

    preds = ["我们今天发货", "好的"]
    refs = [["我们明天发货", "我们今天发货"], ["好的亲"]]
    # turns with fewer references are padded with None, which sacreBLEU ignores
    direct = sacrebleu.corpus_bleu(preds, [["我们明天发货", "好的亲"], ["我们今天发货", None]], tokenize="zh").score
    assert corpus_sacrebleu(preds, refs) == pytest.approx(direct)
    assert corpus_sacrebleu(preds, refs) > corpus_sacrebleu(preds, [["我们明天发货"], ["好的亲"]])
    assert corpus_sacrebleu(["我们今天发货"], [["我们今天发货"]]) == pytest.approx(100.0)
    assert corpus_chrf(["我们今天发货"], [["我们今天发货"]]) == pytest.approx(100.0)
    assert 0 < corpus_chrf(preds, refs) < 100


def test_parse_references_jddc_separators():
    assert parse_references("亲!@@@!在的<sep>您好<sep>NULL") == ["亲 在的", "您好"]
    assert parse_references("NULL") == []


def test_human_agreement_leave_one_out():
    refs = [["我们明天发货", "我们明天发货"], ["好的亲，马上处理", "好的亲，马上处理"]]
    same = human_agreement(["我们明天发货", "好的亲，马上处理"], refs)
    assert same["human_bleu4"] == 100.0 and same["model_loo_bleu4"] == 100.0
    assert same["human_pct_bleu4"] == pytest.approx(100.0) and same["human_bar_met"] is True
    # the model matches only one of two references: each leave-one-out pair sees one of them
    half = human_agreement(["我们明天发货"], [["我们明天发货", "今天不发货了"]])
    assert half["human_n_pairs"] == 2
    assert half["model_loo_bleu4"] == pytest.approx((100.0 + lf_bleu4("我们明天发货", ["今天不发货了"])) / 2)
    assert half["human_bleu4"] == pytest.approx(lf_bleu4("今天不发货了", ["我们明天发货"]))
    low = human_agreement([""], [["我们明天发货", "我们明天发货"]])
    assert low["human_pct_bleu4"] == 0.0 and low["human_bar_met"] is False
    assert human_agreement(["x"], [["only one"]]) == {}
    # people who share no character: no agreement to compare against (None, not NaN, so metrics.json stays JSON)
    apart = human_agreement(["我们明天发货"], [["我们明天发货", "完全不同的话"]])
    assert apart["human_bleu4"] == 0.0 and apart["human_pct_bleu4"] is None and apart["human_bar_met"] is False


def test_score_predictions_rejects_bad_records():
    with pytest.raises(KefuError, match="no prediction records"):
        score_predictions([])
    with pytest.raises(KefuError, match="record 1.*prediction"):
        score_predictions([{"references": ["a"]}])
    with pytest.raises(KefuError, match="record 2.*references"):
        score_predictions([{"prediction": "a", "references": ["a"]}, {"prediction": "b", "references": []}])
