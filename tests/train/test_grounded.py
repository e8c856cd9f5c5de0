"""Train as you serve (kefu.train.grounded): each agent turn rendered with the facts the sample shop's KG gives for
it, the reply's facts as slots, loss on that reply only; the same messages serving sends for that turn."""

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kefu.kg.prompt import FACTS_HEADER, model_messages, system_prompt
from kefu.kg.slots import fill_slots, slot_values, states_figures
from kefu.safety import consent
from kefu.train.config import TrainConfig
from kefu.train.data import encode_file, load_examples
from kefu.train.grounded import (GroundingStats, asking_customer, grounded_examples, open_kg, render_dialogue_turn,
                                 render_turn)
from kefu.train.template import IGNORE_INDEX, encode_dialogue, encode_prompt
from kefu.types import Dialogue, KefuError, Turn
from tiny import make_tokenizer, write_jsonl

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"
pytestmark = pytest.mark.skipif(not (SHOP / "products.csv").exists(), reason="sample shop not generated")
DATE = "2026-11-20T10:00:00+08:00"


@pytest.fixture(scope="module")
def kg(shop_kg):
    return shop_kg


@pytest.fixture(autouse=True)
def _in_the_promotion_month(shop_time):
    """Prices below are the sample shop's in November 2026, whatever today's date."""


def _dialogue(*turns, **meta):
    roles = ["user", "assistant"]
    return Dialogue("t1", [Turn(roles[i % 2], text) for i, text in enumerate(turns)], {"date": DATE, **meta})


def _orders():
    return json.loads((SHOP / "orders.json").read_text("utf-8"))


def test_a_price_question_renders_the_kg_price_and_the_reply_with_slots(kg):
    stats = GroundingStats()
    dialogue = _dialogue("SL-10121现在多少钱", "亲，珠峰800蓬鹅绒羽绒服标价1599元，现在到手价1239.15元哦。")
    [example] = grounded_examples(kg, dialogue, stats=stats)
    system, user, reply = example.messages
    assert system["role"] == "system" and system["content"].startswith(system_prompt())
    assert FACTS_HEADER in system["content"] and "到手¥1239.15" in system["content"]
    assert user == {"role": "user", "content": "SL-10121现在多少钱"}
    assert reply["content"] == "亲，[商品]标价[价格]，现在到手价[到手价]哦。"
    assert example.supervise == 2
    # synthesis fills the slots back from the same turn's facts: the customer reads the shop's figures
    facts = render_dialogue_turn(kg, dialogue, 1).facts
    assert fill_slots(reply["content"], slot_values(facts)) == ("亲，珠峰800蓬鹅绒羽绒服标价¥1599，现在到手价¥1239.15哦。", [])
    assert stats.slots == 3 and stats.unbacked == 0 and stats.kg_backed_share == 1.0


def test_a_figure_the_kg_does_not_back_stays_text_and_is_counted(kg):
    stats = GroundingStats()
    [example] = grounded_examples(kg, _dialogue("SL-10121现在多少钱", "亲，现在只要999元。"), stats=stats)
    assert example.messages[-1]["content"] == "亲，现在只要999元。"
    assert stats.unbacked == 1 and stats.unbacked_kinds == {"money": 1} and stats.kg_backed_share == 0.0


def test_an_order_question_renders_only_that_orders_customer(kg):
    order = _orders()[0]
    owner = order["customer_id"]
    others = {o["order_no"] for o in _orders() if o["customer_id"] != owner}
    dialogue = _dialogue(f"订单{order['order_no']}到哪了", "亲，您的订单是待付款状态哦。")
    assert asking_customer(kg, [{"role": "user", "content": dialogue.messages[0].content}]) == (owner,
                                                                                                 order["order_no"])
    [example] = grounded_examples(kg, dialogue)
    system = example.messages[0]["content"]
    assert f"订单{order['order_no']}" in system and order["status"] in system
    assert not any(no in system for no in others)
    orders = [f for f in render_dialogue_turn(kg, dialogue, 1).facts.facts if f["type"] == "order"]
    assert orders and all(f["data"]["customer_id"] == owner for f in orders)
    assert example.messages[-1]["content"] == "亲，您的订单是[订单状态]状态哦。"
    # a record that says who asked: another customer's order number shows nothing of that order
    foreign = grounded_examples(kg, replace(dialogue, meta={"date": DATE, "customer_id": "C9999"}))[0]
    assert order["status"] not in foreign.messages[0]["content"] and "未查到" in foreign.messages[0]["content"]
    # prepare masked the number: the record's refs give it back to the lookup (never to the text)
    masked = _dialogue("单号 [订单号] 到哪了", "亲，您的订单是待付款状态哦。", refs={"order_no": order["order_no"]})
    rendered = grounded_examples(kg, masked)[0]
    assert f"订单{order['order_no']}" in rendered.messages[0]["content"]
    assert rendered.messages[1]["content"] == "单号 [订单号] 到哪了"


def test_supervised_tokens_are_exactly_the_agent_reply(kg, tmp_path):
    tok = make_tokenizer()
    write_jsonl(tmp_path / "train.jsonl", [_dialogue("你好", "亲，在的。", "SL-10121多少钱",
                                                     "亲，到手价1239.15元。").to_dict()])
    examples = encode_file(tmp_path / "train.jsonl", tok, TrainConfig(max_len=2048), kg=kg)
    grounded = grounded_examples(kg, _dialogue("你好", "亲，在的。", "SL-10121多少钱", "亲，到手价1239.15元。"))
    assert len(examples) == len(grounded) == 2  # one example per agent turn
    for example, source in zip(examples, grounded):
        reply = source.messages[-1]["content"]
        supervised = [i for i in example.labels if i != IGNORE_INDEX]
        assert supervised == tok(reply + "<end_of_turn>", add_special_tokens=False)["input_ids"]
        prompt = encode_prompt(tok, source.messages[:-1])  # what serving's engine is given for this turn
        assert example.input_ids[:len(prompt)] == prompt
        assert all(label == IGNORE_INDEX for label in example.labels[:len(prompt)])
    assert grounded[1].messages[-1]["content"] == "亲，到手价[到手价]。"
    # the history keeps the earlier reply as the customer saw it, unsupervised
    assert grounded[1].messages[2] == {"role": "assistant", "content": "亲，在的。"}


def test_encode_dialogue_supervises_one_message_by_index():
    tok = make_tokenizer()
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "bc"},
                {"role": "user", "content": "d"}, {"role": "assistant", "content": "ef"}]
    _, labels = encode_dialogue(tok, messages, supervise=1)
    _, every = encode_dialogue(tok, messages)
    first = tok("bc<end_of_turn>", add_special_tokens=False)["input_ids"]
    assert [i for i in labels if i != IGNORE_INDEX] == first
    assert [i for i in every if i != IGNORE_INDEX][:len(first)] == first
    with pytest.raises(KefuError):
        encode_dialogue(tok, messages, supervise=2)


def test_load_examples_reports_grounded_against_plain(kg, tmp_path, capsys):
    lines = [json.loads(line) for line in (SHOP / "dialogues.jsonl").read_text("utf-8").splitlines()[:12]]
    write_jsonl(tmp_path / "train.jsonl", lines)
    tok = make_tokenizer()
    train, _, stats = load_examples(tmp_path, tok, TrainConfig(max_len=2048, kg_url=str(SHOP)))
    plain, _, plain_stats = load_examples(tmp_path, tok, TrainConfig(max_len=2048))
    g = stats.grounding
    assert g["plain"] == {"examples": plain_stats.examples, "tokens": plain_stats.tokens,
                          "supervised_tokens": plain_stats.supervised_tokens}
    assert stats.examples == g["facts"]["turns"] > plain_stats.examples == len(plain)
    assert g["facts"]["slots"] > 0 and 0 < g["facts"]["kg_backed_share"] <= 1
    assert stats.sha256 != plain_stats.sha256  # the KG is part of what was trained on
    err = capsys.readouterr().err
    assert "grounded in" in err and f"{stats.examples:,} examples" in err and "KG-backed" in err


class Capture:
    """Stands in for the model: records the messages it is sent, answers 好的亲。"""

    name = "capture"

    def __init__(self):
        self.prompts = []

    def models(self):
        return ["tiny"]

    async def stream(self, messages, **kwargs):
        self.prompts.append(messages)
        yield "好的亲。"

    async def close(self):
        pass


def model_path_service(kg, engine, **kwargs):
    """A ChatService on ``kg`` whose every turn takes the model's path (the light path off), to see its prompt."""
    from kefu.kg.tools import SQLiteOrderBackend
    from kefu.serve.pipeline import ChatService
    from kefu.serve.router import Router

    return ChatService(engine, kg=kg, order_backend=SQLiteOrderBackend(kg), router=Router(light_path=False),
                       **kwargs)


def test_serving_and_training_render_the_same_messages(kg):
    """The full-model path's prompt for a turn (kefu.serve) equals the grounded rendering of that turn."""
    engine = Capture()
    service = model_path_service(kg, engine)
    for question in ("SL-10121现在多少钱", "羽绒服怎么洗"):
        history = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "亲，在的。"},
                   {"role": "user", "content": question}]
        engine.prompts.clear()
        asyncio.run(service.answer(history))
        served = engine.prompts[0]
        trained = render_turn(kg, history).messages
        assert served == trained
        assert served == model_messages(history, render_turn(kg, history).facts.prompt_block, shop="本店")


def _shop_dialogues(n=None):
    from kefu.artifacts.dialogues import read_dialogues

    return [p.dialogue for p in read_dialogues(SHOP / "dialogues.jsonl")][:n]


def test_training_shows_other_dialogues_past_replies_and_serving_shows_the_same(kg):
    """Exemplars: each grounded example shows the shop's replies to the most alike questions of OTHER dialogues (its
    own answer never), none stating a figure; serving with the run's replies and exemplar count sends the
    messages training rendered for the same conversation."""
    from kefu.kg.prompt import EXEMPLARS_HEADER
    from kefu.kg.replies import ReplyIndex

    dialogues = _shop_dialogues(300)
    index = ReplyIndex.build(dialogues)
    shown = 0
    for dialogue in dialogues[:40]:
        for example in grounded_examples(kg, dialogue, replies=index, exemplars=2):
            system = example.messages[0]["content"]
            if EXEMPLARS_HEADER not in system:
                continue
            shown += 1
            listed = system.split(EXEMPLARS_HEADER, 1)[1]
            others = {e.reply for e in index.entries if e.dialogue_id != dialogue.id}
            lines = [line[2:].rstrip("…") for line in listed.strip().splitlines()]
            assert 1 <= len(lines) <= 2
            assert all(any(r.startswith(line) and not states_figures(r) for r in others) for line in lines)
    assert shown > 20

    engine = Capture()
    service = model_path_service(kg, engine, replies=index, exemplars=2)
    history = [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "亲，在的。"},
               {"role": "user", "content": "什么时候发货"}]
    asyncio.run(service.answer(history))
    served = engine.prompts[0]
    assert EXEMPLARS_HEADER in served[0]["content"], served[0]["content"]
    assert served == render_turn(kg, history, replies=index, exemplars=2).messages


def test_the_run_records_how_many_exemplars_serving_shows(tmp_path):
    from kefu.artifacts.run import TrainRun

    run = TrainRun(tmp_path)
    assert run.exemplars() == 0  # no record
    run.write_record({"train": {"model": "m", "kg_url": "shop", "exemplars": 2}})
    assert run.exemplars() == 2
    run.write_record({"train": {"model": "m", "exemplars": 2}})  # plain dialogues: no per-turn prompt
    assert run.exemplars() == 0
    run.write_record({"train": {"model": "m", "kg_url": "shop"}})  # recorded before exemplars existed
    assert run.exemplars() == 0


def test_open_kg_takes_a_folder_a_db_file_or_a_url(tmp_path):
    from kefu.kg.store import KnowledgeGraph

    with open_kg(SHOP) as graph:
        assert graph.order(_orders()[0]["order_no"]) is not None
        temp = Path(graph.url.removeprefix("sqlite:///")).parent
    assert not temp.exists()  # the temporary graph is gone
    db = tmp_path / "kg.db"
    KnowledgeGraph.open(f"sqlite:///{db}").import_path(SHOP)
    for spec in (db, f"sqlite:///{db}"):
        with open_kg(spec) as graph:
            assert graph.order(_orders()[0]["order_no"]) is not None
    with pytest.raises(KefuError, match="not found"):
        with open_kg(tmp_path / "missing"):
            pass


def test_cli_trains_grounded_in_the_sample_shop(tiny_model_dir, tmp_path, kefu_home):
    from kefu.cli import app

    lines = [json.loads(line) for line in (SHOP / "dialogues.jsonl").read_text("utf-8").splitlines()[:6]]
    data = tmp_path / "data"
    write_jsonl(data / "train.jsonl", lines)
    consent.register(data / "train.jsonl", source="tests", legal_basis="contract", consent=True)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--data", str(data), "--out", str(run), "--model", str(tiny_model_dir),
                                      "--kg", str(SHOP), "--max-steps", "2", "--batch-size", "4", "--no-progress",
                                      "--max-len", "1024", "--precision", "fp32", "--save-steps", "0"])
    assert result.exit_code == 0, result.output
    assert "grounded in" in result.output  # the summary, before training
    report = json.loads((run / "train_report.json").read_text())
    assert report["steps"] == 2 and report["supervised_tokens"] > 0
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["kg_url"] == str(SHOP)
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["exemplars"] == 2
    # eval renders the run's turns as it was trained: facts and exemplars from its training data's replies
    from kefu.eval.config import EvalConfig
    from kefu.eval.runner import evaluate

    shown = []
    metrics = evaluate(data / "train.jsonl", tmp_path / "eval", run=run, progress=False,
                       config=EvalConfig(max_samples=4, max_new_tokens=4, batch_size=2),
                       on_record=lambda r: shown.append(r))
    assert metrics["exemplars"] == 2 and len(shown) == 4
