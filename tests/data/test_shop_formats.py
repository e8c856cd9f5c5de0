"""The sample shop ships the same dialogues in five formats; every reader must see the same conversations."""

from __future__ import annotations

from pathlib import Path

import pytest

from kefu.data.config import NormalizeConfig, PrepareConfig
from kefu.data.normalize import clean_turns
from kefu.data.pipeline import prepare
from kefu.data.readers import read_logs
from kefu.types import Dialogue

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"

FILES = ["dialogues.jsonl", "dialogues.csv", "dialogues.txt", "dataset_info.json"]


def _cleaned(path) -> list[list[tuple[str, str]]]:
    cfg = NormalizeConfig(strip_greetings=False)
    out = []
    for item in read_logs(path, on_error="fail"):
        assert isinstance(item, Dialogue)
        # formats that need strict alternation (ShareGPT, Alpaca) join a speaker's consecutive messages with a
        # newline where the one-message-per-row formats keep them apart: compare modulo whitespace
        out.append([(t.role, " ".join(t.content.split())) for t in clean_turns(item.messages, cfg)])
    return out


@pytest.fixture(scope="module")
def shop():
    if not (SHOP / "dialogues.jsonl").exists():
        pytest.skip("examples/shop not generated")
    return SHOP


def test_five_formats_give_the_same_dialogues(shop):
    reference = _cleaned(shop / "dialogues.jsonl")
    assert len(reference) >= 400
    for name in FILES[1:3]:
        assert _cleaned(shop / name) == reference, name
    via_info = _cleaned(shop / "dataset_info.json")  # ShareGPT file, then Alpaca file
    assert via_info[:len(reference)] == reference
    assert via_info[len(reference):] == reference


def test_prepare_the_shop_folder(shop, tmp_path):
    report = prepare([shop], tmp_path / "out", PrepareConfig(), catalogue=shop / "products.csv")
    assert report["reconciles"] and report["rejected"] == 0
    # five copies of each dialogue: one kept, four exact duplicates (a few are filtered in every copy)
    kept, dups = report["kept"], report["duplicates"]
    assert kept + dups + sum(report["filtered"].values()) == 5 * len(_cleaned(shop / "dialogues.jsonl"))
    assert dups >= 4 * kept
    assert report["entities"]["product"] > 0 and report["pii"]
    names = {p.rsplit("/", 1)[-1] for p in report["inputs"]}
    assert names == {"dataset_info.json", "dialogues.csv", "dialogues.jsonl", "dialogues.txt", "faq.json",
                     "orders.json", "playbooks.json", "policies.json", "promotions.json", "relations.csv"}
