"""The prepare stage end to end: reconciliation, determinism, split isolation, tier 3, audit, errors, CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kefu.cli import app
from kefu.data.augment import INJECTIONS
from kefu.data.config import PrepareConfig
from kefu.data.pipeline import prepare
from kefu.data.readers import expand_inputs
from kefu.safety import audit
from kefu.types import KefuError

from .conftest import write_jsonl

QUESTIONS = ["请问{p}{c}{s}还有货吗", "{p}多少钱，有满300减50吗", "订单{o}什么时候发货", "我身高17{n}穿{s}合适吗",
             "收到的{p}破损了怎么办", "退款什么时候到账，手机号1381234{n}{n}{n}{n}", "{p}是什么面料，防水吗"]
ANSWERS = ["亲，{p}{c}{s}有现货，今天下单明天发货", "{p}到手价{n}99元，满300减50可以叠加", "已帮您催促，预计明天发顺丰",
           "建议您选{s}，{p}偏修身", "非常抱歉，请拍照上传，我们为您换新", "退款一般1-3个工作日到账", "{p}是GORE-TEX面料，防水透气"]
CHATTER = ["我下周要去爬山", "急用", "送朋友的", "上次买的很好", "帮我看看", "第一次买", "家里人穿", "能快点吗",
           "不着急", "会员有优惠吗", "昨天问过了", "孩子要用", "公司团购", "平时通勤穿", "想对比一下", "比较怕冷"]
PRODUCTS, COLORS, SIZES = ["冲锋衣", "羽绒服", "徒步鞋", "双肩包", "帐篷"], ["黑色", "白色", "红色", "蓝色"], ["S", "M", "L", "XL"]


def make_rows(n: int) -> list[dict]:
    """n distinct multi-turn dialogues (deterministic)."""
    rows = []
    rng = random.Random(n)
    for i in range(n):
        messages = []
        for k in range(3):
            j = (i + 2 * k) % len(QUESTIONS)
            chatter = "".join(rng.choice(CHATTER) for _ in range(3))
            fill = dict(p=PRODUCTS[(i + k) % 5], c=COLORS[(i // 5 + k) % 4], s=SIZES[(i // 3 + k) % 4], n=(i + k) % 10,
                        o=f"{1000000000000000 + i * 7919 + k}")
            messages += [{"role": "user", "content": QUESTIONS[j].format(**fill) + f"，{chatter}（第{i}位顾客）"},
                         {"role": "assistant", "content": ANSWERS[j].format(**fill) + f"，编号{i * 31 + k}"}]
        rows.append({"id": f"c{i}", "messages": messages})
    return rows


@pytest.fixture
def mixed_input(tmp_path) -> Path:
    """60 good dialogues + 3 exact dups + 2 near dups + filtered ones + a malformed line + a bad role."""
    rows = make_rows(60)
    lines = [json.dumps(r, ensure_ascii=False) for r in rows]
    lines += [json.dumps(rows[0], ensure_ascii=False), json.dumps(rows[1], ensure_ascii=False),
              json.dumps(rows[2], ensure_ascii=False)]
    near = json.loads(lines[3])
    near["id"] = "near1"
    near["messages"][-1]["content"] += "哦"
    lines.append(json.dumps(near, ensure_ascii=False))
    lines.append(json.dumps({"id": "noreply", "messages": [{"role": "user", "content": "在吗在吗在吗"}]}, ensure_ascii=False))
    lines.append(json.dumps({"id": "short", "messages": [{"role": "user", "content": "?"},
                                                          {"role": "assistant", "content": "嗯"}]}))
    garbled = "我的订单什么时候发货呢".encode("utf-8").decode("gbk", errors="replace")
    lines.append(json.dumps({"id": "garbled", "messages": [{"role": "user", "content": garbled},
                                                            {"role": "assistant", "content": garbled}]}, ensure_ascii=False))
    lines.append('{"id": "broken", "messages": [')
    lines.append(json.dumps({"id": "badrole", "messages": [{"role": "robot", "content": "x"}]}))
    path = tmp_path / "in" / "mixed.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_reconciliation_matches_the_files(mixed_input, tmp_path):
    out = tmp_path / "out"
    report = prepare([mixed_input], out, PrepareConfig(val_ratio=0.2, test_ratio=0.2))
    written = {s: read_jsonl(out / f"{s}.jsonl") for s in ("train", "val", "test")}
    rejects = read_jsonl(out / "rejects.jsonl")
    base = [d for rows in written.values() for d in rows if d["meta"]["tier"] != 3]
    assert report["records_in"] == 69
    assert report["records_in"] == report["kept"] + report["rejected"] + sum(report["filtered"].values()) \
        + report["duplicates"]
    assert report["reconciles"] is True
    assert report["kept"] == len(base) == 60
    # every lost record has a line: the 2 read rejects and the 3 filtered ones, in input order
    assert report["rejected"] == sum(r["step"] == "read" for r in rejects) == 2
    assert report["duplicates"] == 4 and report["duplicates_by_kind"] == {"exact": 3, "near": 1}
    assert report["filtered"] == {"garbled": 1, "no_agent_reply": 1, "too_short": 1}
    assert [(r["line"], r["step"], r["reason"][:14]) for r in rejects] == [
        (65, "filter", "no_agent_reply"), (66, "filter", "too_short"), (67, "filter", "garbled"),
        (68, "read", "malformed JSON"), (69, "read", "unknown speake")]
    assert all(r["file"] == str(mixed_input) for r in rejects)
    assert report["by_file"] == {str(mixed_input): {"records_in": 69, "kept": 60, "rejected": 2, "filtered": 3,
                                                   "duplicates": 4}}
    assert report["splits"] == {s: len(rows) for s, rows in written.items()}
    assert report["tiers"]["3"] == report["generated"]["total"] > 0
    assert sum(report["pii"].values()) > 0 and report["intents"] and report["entities"]["color"] > 0
    on_disk = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert on_disk["kept"] == 60 and "elapsed_s" not in on_disk
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "█" in md and "reconciles" in md


def test_output_records_carry_meta_and_masked_text(mixed_input, tmp_path):
    out = tmp_path / "out"
    prepare([mixed_input], out, PrepareConfig(augment=False))
    rows = [d for s in ("train", "val", "test") for d in read_jsonl(out / f"{s}.jsonl")]
    by_id = {d["id"]: d for d in rows}
    d = by_id["c5"]
    assert set(d["meta"]) >= {"source", "line", "tier", "intents", "entities", "pii_counts", "split"}
    assert d["meta"]["source"] == str(mixed_input) and d["meta"]["line"] == 6
    assert len(d["meta"]["intents"]) == sum(m["role"] == "user" for m in d["messages"])
    for e in d["meta"]["entities"]:
        assert d["messages"][e["turn"]]["content"][e["start"]:e["end"]] == e["text"]
    text = json.dumps(rows, ensure_ascii=False)
    assert "1381234" not in text and "[手机号]" in text  # PII masked
    assert not any(m["content"].startswith("请问") for r in rows for m in r["messages"] if m["role"] == "user")


def test_same_seed_gives_byte_identical_outputs_whatever_the_workers(mixed_input, tmp_path):
    names = ("train.jsonl", "val.jsonl", "test.jsonl", "rejects.jsonl", "report.json", "report.md")
    out = tmp_path / "out"
    runs = []
    for cfg in (PrepareConfig(seed=3, workers=1), PrepareConfig(seed=3, workers=1), PrepareConfig(seed=3, workers=2),
                PrepareConfig(seed=4, workers=1)):
        prepare([mixed_input], out, cfg)
        runs.append({name: (out / name).read_bytes() for name in names})
    assert runs[0] == runs[1]
    assert {k: v for k, v in runs[0].items() if k != "report.json"} == \
        {k: v for k, v in runs[2].items() if k != "report.json"}  # report.json records the worker count
    assert runs[0]["train.jsonl"] != runs[3]["train.jsonl"]


def test_split_is_by_dialogue_and_independent_of_order(tmp_path):
    rows = make_rows(80)
    forward = write_jsonl(tmp_path / "f.jsonl", rows)
    backward = write_jsonl(tmp_path / "b.jsonl", rows[::-1])
    cfg = PrepareConfig(val_ratio=0.2, test_ratio=0.2, augment_ratio=1.0)
    splits = []
    for name, path in (("f", forward), ("b", backward)):
        prepare([path], tmp_path / name, cfg)
        where: dict[str, str] = {}
        for split in ("train", "val", "test"):
            for d in read_jsonl(tmp_path / name / f"{split}.jsonl"):
                base = d["meta"].get("parent", d["id"])
                assert where.setdefault(base, split) == split, f"{base} in two splits"
                assert d["meta"]["split"] == split
                if d["meta"]["tier"] == 3:
                    assert split == "train" and d["meta"]["augment"]
        splits.append(where)
    assert splits[0] == splits[1]
    assert set(splits[0].values()) == {"train", "val", "test"}


def test_tier3_kinds_and_no_augment(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", make_rows(60))
    report = prepare([path], tmp_path / "o", PrepareConfig(val_ratio=0, test_ratio=0, augment_ratio=2.0))
    assert set(report["generated"]["by_kind"]) == {"paraphrase", "entity_swap", "noise", "injection"}
    generated = [d for d in read_jsonl(tmp_path / "o" / "train.jsonl") if d["meta"]["tier"] == 3]
    injected = [d for d in generated if d["meta"]["augment"] == "injection"]
    refusals = dict(INJECTIONS)
    for d in injected:
        turns = [(m["role"], m["content"]) for m in d["messages"]]
        at = next(i for i, (role, text) in enumerate(turns) if role == "user" and text in refusals)
        assert turns[at + 1] == ("assistant", refusals[turns[at][1]])
    report = prepare([path], tmp_path / "n", PrepareConfig(augment=False))
    assert report["tiers"]["3"] == 0


def test_audit_entry_names_inputs_and_outputs(mixed_input, tmp_path):
    prepare([mixed_input], tmp_path / "o", PrepareConfig())
    entry = list(audit.entries())[-1]
    assert entry["action"] == "prepare" and entry["object"] == str(tmp_path / "o")
    assert entry["details"]["inputs"][0]["sha256"] == audit.sha256_file(mixed_input)
    assert entry["details"]["outputs"]["train.jsonl"] == audit.sha256_file(tmp_path / "o" / "train.jsonl")
    assert entry["details"]["counts"]["kept"] == 60 and audit.verify().ok


def test_fail_mode_stops_and_leaves_no_partial_outputs(mixed_input, tmp_path):
    out = tmp_path / "o"
    with pytest.raises(KefuError, match=rf"{mixed_input.name}:68: malformed JSON"):
        prepare([mixed_input], out, PrepareConfig(on_error="fail"))
    assert not any(out.iterdir())


def test_folder_walk_skips_outputs_catalogue_and_non_chat_files(tmp_path):
    root = tmp_path / "shop"
    root.mkdir()
    write_jsonl(root / "chats.jsonl", make_rows(5))
    (root / "products.csv").write_text("sku,name,colors\nSL-1,冲锋衣,黑色\n", encoding="utf-8")
    (root / "promotions.json").write_text('[{"id": "P1", "name": "满减"}]', encoding="utf-8")
    (root / "notes.md").write_text("# x", encoding="utf-8")
    out = root / "out"
    report = prepare([root], out, PrepareConfig())
    assert report["kept"] == 5 and report["rejected"] == 0
    assert {Path(s["path"]).name for s in report["skipped_files"]} == {"products.csv", "promotions.json"}
    again = prepare([root], out, PrepareConfig(), catalogue=root / "products.csv")
    assert again["kept"] == 5 and [Path(p).name for p in again["inputs"]] == ["chats.jsonl", "promotions.json"]
    assert [p.name for p, _ in expand_inputs([root], out)] == ["chats.jsonl", "products.csv", "promotions.json"]


def test_catalogue_feeds_entity_lexicons(tmp_path):
    cat = tmp_path / "products.csv"
    cat.write_text("sku,name,aliases,category,brand,price_fen,stock,colors,sizes,material,style,description\n"
                   "SL-10001,山岚云径冲锋衣,云径|云径夹克,冲锋衣,山岚,59900,10,雾霾蓝|砖红,M|L,三层压胶,轻量徒步,x\n",
                   encoding="utf-8")
    path = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "messages": [
        {"role": "user", "content": "云径夹克雾霾蓝L码有吗"}, {"role": "assistant", "content": "雾霾蓝L码有货"}]}])
    prepare([path], tmp_path / "o", PrepareConfig(val_ratio=0, test_ratio=0, augment_ratio=0), catalogue=cat)
    (d,) = read_jsonl(tmp_path / "o" / "train.jsonl")
    found = {(e["type"], e["text"], e["value"]) for e in d["meta"]["entities"]}
    assert ("product", "云径夹克", "SL-10001") in found and ("color", "雾霾蓝", "雾霾蓝") in found


# ------------------------------------------------------------------------------------------------------ CLI

def test_cli_prepare_flags_override_config(mixed_input, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kefu.yaml").write_text("prepare:\n  seed: 1\n  val_ratio: 0.5\n  augment: true\n", encoding="utf-8")
    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["prepare", str(mixed_input), "--out", str(out), "--val-ratio", "0",
                                      "--test-ratio", "0", "--no-augment", "--seed", "9"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["config"]["seed"] == 9 and report["config"]["augment"] is False
    assert report["splits"] == {"train": 60, "val": 0, "test": 0}
    assert "records in" in result.output and "kept" in result.output


def test_cli_nothing_usable_exits_nonzero(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["prepare", str(bad), "--out", str(tmp_path / "o"), "-q"])
    assert result.exit_code != 0  # a file without one usable record is a bad file
    assert isinstance(result.exception, KefuError) and "bad.jsonl: not one usable record" in str(result.exception)
    result = CliRunner().invoke(app, ["prepare", str(bad), "--out", str(tmp_path / "o"), "-q", "--skip-bad-files"])
    assert result.exit_code != 0 and "nothing usable" in str(result.exception)
    result = CliRunner().invoke(app, ["prepare", str(bad), "--out", str(tmp_path / "o"), "--on-error", "fail"])
    assert result.exit_code != 0 and "line 1: malformed JSON" in str(result.exception)
    filtered_only = tmp_path / "short.jsonl"
    filtered_only.write_text('{"messages": [{"role": "user", "content": "?"}, {"role": "assistant", "content": "嗯"}]}\n',
                             encoding="utf-8")
    result = CliRunner().invoke(app, ["prepare", str(filtered_only), "--out", str(tmp_path / "p"), "-q"])
    assert result.exit_code != 0 and "nothing usable" in str(result.exception) and "1 filtered" in str(result.exception)


def test_cli_mask_is_one_line_per_line():
    lines = ["我的手机号是13812345678", "", "满300减50，XL码299元", "邮箱 zhang.san@example.com 谢谢"]
    result = CliRunner().invoke(app, ["mask"], input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    out = result.output.split("\n")
    assert out[-1] == "" and len(out) - 1 == len(lines)
    assert "13812345678" not in out[0] and "[手机号]" in out[0]
    assert out[1] == "" and out[2] == "满300减50，XL码299元"
    assert "example.com" not in out[3]


class KeywordTagger:
    """A stand-in for a learned tagger: every customer turn is 'other', one fake entity per turn."""

    def __init__(self, catalogue=None):
        self.catalogue = catalogue

    def annotate(self, turns):
        from kefu.types import Entity

        intents = ["other" for t in turns if t.role == "user"]
        return intents, [Entity("time", t.content[:1], i, 0, 1, None) for i, t in enumerate(turns) if t.content]


def test_annotator_is_pluggable(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", make_rows(5))
    cfg = PrepareConfig(annotator=f"{__name__}:KeywordTagger", augment=False, val_ratio=0, test_ratio=0)
    report = prepare([path], tmp_path / "o", cfg)
    assert set(report["intents"]) == {"other"} and report["entities"]["time"] == 30
    with pytest.raises(KefuError, match="prepare.annotator"):
        prepare([path], tmp_path / "p", PrepareConfig(annotator="nowhere:Nothing"))


def test_variant_annotations_equal_a_fresh_annotation():
    from kefu.data import augment as aug
    from kefu.data.annotate import RuleAnnotator
    from kefu.data.dedup import exact_key
    from kefu.data.pipeline import _Worker
    from kefu.types import Turn

    worker = _Worker(PrepareConfig(), None)
    fresh = RuleAnnotator()
    for row in make_rows(30):
        turns = [Turn(m["role"], m["content"]) for m in row["messages"]]
        intents, entities = fresh.annotate(turns)
        for kind, new_turns in aug.augment(turns, exact_key(turns), 1, 4.0, list(aug.KINDS), entities):
            assert worker._annotate_variant(turns, intents, entities, new_turns) == fresh.annotate(new_turns), kind
