"""The trim check: greedy agreement between the full head and a vocabulary trim on the same prompts."""

import pytest

from kefu.eval.generate import generate_replies
from kefu.eval.trim import token_agreement, trim_quality
from kefu.testing import AGENT, CUSTOMER, make_model, make_tokenizer
from kefu.train.vocab import TrimmedHead, VocabTrim, corpus_vocab


@pytest.fixture
def tok():
    return make_tokenizer()


@pytest.fixture
def model(tok):
    return make_model(vocab_size=len(tok)).eval()


def test_trim_quality_is_perfect_when_the_trim_covers_the_replies(tok, model):
    prompts = [[{"role": "user", "content": c}] for c in CUSTOMER[:4]]
    untrimmed = corpus_vocab(tok, [])
    # what the full model writes greedily, plus specials: the trim changes nothing
    replies = tok([r.text for r in generate_replies(model, tok, prompts, 4, 8)], add_special_tokens=False)["input_ids"]
    covering = VocabTrim(sorted(set(untrimmed.keep_ids) | {t for r in replies for t in r}), len(tok),
                         untrimmed.tokenizer)
    q = trim_quality(model, tok, covering, prompts, references=AGENT[:4], max_new_tokens=8)
    assert q["exact_match"] == 1.0 and q["token_agreement"] == 1.0
    assert not isinstance(model.get_output_embeddings(), TrimmedHead)  # put back afterwards
    # a trim without the model's favourite tokens changes its replies, and the check says so
    favourite = {r[0] for r in replies if r}
    poor = VocabTrim([i for i in covering.keep_ids if i not in favourite], len(tok), untrimmed.tokenizer)
    q = trim_quality(model, tok, poor, prompts, references=AGENT[:4], max_new_tokens=8)
    assert q["token_agreement"] < 1.0 and q["exact_match"] < 1.0
    assert 0.0 <= q["reference_coverage"] <= 1.0


def test_token_agreement_counts_up_to_the_first_difference_over_the_longer_reply():
    assert token_agreement([[1, 2, 3, 4]], [[1, 2, 9, 4]]) == 0.5
    assert token_agreement([[1, 2]], [[1, 2, 3, 4]]) == 0.5  # running on is not agreeing
    assert token_agreement([[1, 2], [5]], [[1, 2], [5]]) == 1.0
    assert token_agreement([], []) == 1.0
