import pytest
import torch

from kefu.train.data import Example, collate, pack, step_indices
from kefu.train.template import encode_dialogue
from kefu.train.trainer import SupervisedLM
from tiny import make_dialogues, make_model, make_tokenizer


def _examples(n=4, seed=0):
    tok = make_tokenizer()
    out = []
    for d in make_dialogues(n, seed=seed):
        ids, labels = encode_dialogue(tok, d["messages"])
        out.append(Example(ids, labels, d["id"]))
    return out


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_packed_row_logits_equal_each_dialogue_alone(arch):
    model = make_model(arch).eval()
    examples = _examples(4)
    if arch == "gemma3":  # the row is longer than the sliding window, so sliding layers are exercised too
        assert sum(len(e.input_ids) for e in examples) > 2 * model.config.sliding_window
    batch = collate([examples], pad_id=0)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        at = 0
        for example in examples:
            alone = model(input_ids=torch.tensor([example.input_ids]), use_cache=False).logits[0]
            n = len(example.input_ids)
            torch.testing.assert_close(packed[at:at + n], alone, atol=1e-5, rtol=1e-4)
            at += n
        # the same row without restarting positions mixes dialogues: the check above can fail
        naive = model(input_ids=batch["input_ids"], use_cache=False).logits[0]
    n0 = len(examples[0].input_ids)
    assert not torch.allclose(naive[n0:], packed[n0:], atol=1e-3)


def test_padded_rows_match_too():
    model = make_model("gemma3").eval()
    examples = _examples(5, seed=3)
    rows = [examples[:3], examples[3:]]  # second row shorter: a padding tail
    batch = collate(rows, pad_id=0)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        second = examples[3]
        alone = model(input_ids=torch.tensor([second.input_ids]), use_cache=False).logits[0]
    torch.testing.assert_close(packed[1, :len(second.input_ids)], alone, atol=1e-5, rtol=1e-4)


def test_supervised_loss_equals_full_vocabulary_loss():
    model = make_model("gemma3").eval()
    examples = _examples(3, seed=1)
    wrapper = SupervisedLM(model)
    batch = collate([examples], pad_id=0)
    with torch.no_grad():
        loss_sum, count = wrapper(**batch)
        expected_sum, expected_count = 0.0, 0
        for example in examples:
            labels = torch.tensor([example.labels])
            n = int((labels[:, 1:] != -100).sum())
            out = model(input_ids=torch.tensor([example.input_ids]), labels=labels, use_cache=False)
            expected_sum += float(out.loss) * n
            expected_count += n
    assert int(count) == expected_count
    assert float(loss_sum) == pytest.approx(expected_sum, rel=1e-5)


def test_pack_first_fit_keeps_every_example_within_rows():
    examples = [Example([1] * n, [-100] * n, str(i)) for i, n in enumerate([90, 60, 50, 40, 30, 10, 100])]
    rows = pack(examples, 100)
    assert sorted(e.source for row in rows for e in row) == sorted(e.source for e in examples)
    assert all(sum(len(e.input_ids) for e in row) <= 100 for row in rows)
    assert len(rows) == 4  # 380 tokens in 100-token rows: first-fit-decreasing is optimal here


def test_step_indices_cover_each_epoch_once_and_are_deterministic():
    n, batch = 10, 4
    seen = [i for step in range(5) for i in step_indices(n, batch, step, seed=7)]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert step_indices(n, batch, 3, seed=7) == step_indices(n, batch, 3, seed=7)
    assert seen[:10] != list(range(10))
