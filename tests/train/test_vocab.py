"""Vocabulary trimming: exact on kept tokens, impossible to emit a dropped one, robust to re-tying and PEFT."""

import json

import pytest
import torch

from kefu.testing import AGENT, CUSTOMER, make_model, make_tokenizer
from kefu.train.template import render_prompt
from kefu.train.vocab import TrimmedHead, VocabTrim, corpus_vocab, tokenizer_fingerprint, trim_model, untrim_model
from kefu.types import KefuError


@pytest.fixture
def tok():
    return make_tokenizer()


@pytest.fixture
def model(tok):
    return make_model(vocab_size=len(tok)).eval()


def _ids(tok, text):
    return tok(text, return_tensors="pt")["input_ids"]


def test_keeping_every_token_changes_nothing(tok, model):
    ids = _ids(tok, CUSTOMER[1])
    with torch.no_grad():
        full = model(input_ids=ids).logits
        trim_model(model, list(range(len(tok))))
        trimmed = model(input_ids=ids).logits
    assert isinstance(model.get_output_embeddings(), TrimmedHead)
    assert torch.allclose(full, trimmed, atol=1e-6)


def test_kept_logits_exact_and_dropped_never_chosen(tok, model):
    keep = sorted(set(tok(AGENT[0], add_special_tokens=False)["input_ids"]) | {tok.eos_token_id})
    ids = _ids(tok, CUSTOMER[0])
    with torch.no_grad():
        full = model(input_ids=ids).logits
        trim_model(model, keep)
        trimmed = model(input_ids=ids).logits
        gen = model.generate(input_ids=ids, max_new_tokens=12, do_sample=True, top_k=0, temperature=2.0,
                             pad_token_id=0)
    assert torch.allclose(full[..., keep], trimmed[..., keep], atol=1e-6)
    dropped = torch.ones(len(tok), dtype=torch.bool)
    dropped[keep] = False
    assert (trimmed[..., dropped] == torch.finfo(trimmed.dtype).min).all()
    assert set(gen[0, ids.shape[1]:].tolist()) <= set(keep)  # even when sampling hot
    untrim_model(model)
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, full)


def test_retying_weights_cannot_undo_the_trim(tok, model):
    keep = list(range(0, len(tok), 2))
    trim_model(model, keep)
    model.tie_weights()  # what some transformers/PEFT code paths call; must not restore the full matrix
    with torch.no_grad():
        logits = model(input_ids=_ids(tok, CUSTOMER[2])).logits
    assert (logits[..., 1::2] == torch.finfo(logits.dtype).min).all()


def test_trim_under_peft_keeps_the_adapter(tok, model):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    ids = _ids(tok, CUSTOMER[3])
    keep = list(range(len(tok) // 2))
    with torch.no_grad():
        full = peft_model(input_ids=ids).logits
        with peft_model.disable_adapter():
            base = peft_model(input_ids=ids).logits
        trim_model(peft_model, keep)
        trimmed = peft_model(input_ids=ids).logits
    assert not torch.allclose(full, base)  # the adapter matters ...
    assert torch.allclose(full[..., keep], trimmed[..., keep], atol=1e-5)  # ... and still does after the trim


def test_corpus_vocab_covers_text_specials_and_ascii(tok, tmp_path):
    dialogues = [[{"role": "user", "content": CUSTOMER[i]}, {"role": "assistant", "content": AGENT[i]}]
                 for i in range(3)]
    trim = corpus_vocab(tok, [m["content"] for d in dialogues for m in d], chat_messages=dialogues,
                        sources={"dialogues": 3})
    keep = set(trim.keep_ids)
    for d in dialogues:
        assert set(tok(render_prompt(tok, d, add_generation_prompt=False), add_special_tokens=False)["input_ids"]) <= keep
    assert set(tok.all_special_ids) <= keep
    assert {tok.convert_tokens_to_ids(c) for c in "0123456789ABCxyz-#"} <= keep  # numbers and codes stay writable
    assert tok.convert_tokens_to_ids("叠") not in keep  # a character no text used
    assert trim.vocab_size == len(tok) and trim.tokenizer == tokenizer_fingerprint(tok)

    path = trim.save(tmp_path)
    loaded = VocabTrim.load(path)
    assert loaded == trim
    loaded.check(tok)
    other = make_tokenizer(gemma_markers=False)
    with pytest.raises(KefuError, match="made for tokenizer"):
        loaded.check(other)


def test_bad_trim_files_name_the_file(tmp_path):
    with pytest.raises(KefuError, match="no vocabulary trim file"):
        VocabTrim.load(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(KefuError, match="bad.json"):
        VocabTrim.load(bad)
    bad.write_text(json.dumps({"keep_ids": [5, 99], "vocab_size": 10, "tokenizer": "x"}), encoding="utf-8")
    with pytest.raises(KefuError, match="below vocab_size"):
        VocabTrim.load(bad)


def test_trim_refuses_ids_beyond_the_model(tok, model):
    with pytest.raises(KefuError, match="keeps id"):
        trim_model(model, [0, len(tok) + 5])
