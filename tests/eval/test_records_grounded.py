"""Eval's test samples rendered with the KG's facts exactly as training rendered the same turns
(kefu.train.grounded.render_dialogue_turn is the one rendering both use)."""

import json
from pathlib import Path

import pytest

from kefu.artifacts.dialogues import write_jsonl
from kefu.eval.records import load_test_samples
from kefu.kg.prompt import FACTS_HEADER
from kefu.kg.slots import fill_slots
from kefu.train.grounded import grounded_examples, open_kg
from kefu.types import Dialogue

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"
pytestmark = pytest.mark.skipif(not (SHOP / "products.csv").exists(), reason="sample shop not generated")


@pytest.fixture(autouse=True)
def _in_the_promotion_month(shop_time):
    """Undated dialogues render at the shop clock: November 2026."""


def _dialogues(n=12):
    return [json.loads(line) for line in (SHOP / "dialogues.jsonl").read_text("utf-8").splitlines()[:n]]


def test_samples_with_a_kg_are_rendered_as_training_renders_them(tmp_path):
    lines = _dialogues()
    path = tmp_path / "test.jsonl"
    write_jsonl(path, lines)
    plain = load_test_samples(path)
    samples = load_test_samples(path, kg=SHOP)
    assert [s["id"] for s in samples] == [s["id"] for s in plain]
    assert [s["references"] for s in samples] == [s["references"] for s in plain]  # scored against what was said
    with open_kg(SHOP) as kg:
        trained = {}
        for obj in lines:
            dialogue = Dialogue.from_dict(obj)
            for example in grounded_examples(kg, dialogue):
                trained[f"{dialogue.id}#{example.source.rsplit('#', 1)[1]}"] = example
    assert trained.keys() == {s["id"] for s in samples}
    for sample in samples:
        example = trained[sample["id"]]
        assert sample["context"] == example.messages[:-1]  # the prompt training put before the supervised reply
        assert sample["context"][0]["role"] == "system"
        # a reply in the model's slots, filled with the sample's slot values, reads as the shop's facts
        assert fill_slots(example.messages[-1]["content"], sample["slots"])[1] == []
    with_facts = [s for s in samples if s["facts_block"]]
    assert with_facts and all(FACTS_HEADER in s["context"][0]["content"] for s in with_facts)


def test_an_open_graph_and_max_samples(tmp_path):
    path = tmp_path / "test.jsonl"
    write_jsonl(path, _dialogues(4))
    with open_kg(SHOP) as kg:
        samples = load_test_samples(path, max_samples=2, kg=kg)
        assert len(samples) == 2 and all("slots" in s for s in samples)
        assert kg.snapshot() is not None  # the caller's graph stays open
