import pytest
from typer.testing import CliRunner

from kefu.cli import app
from kefu.safety.compliance import (ComplianceRules, check, parse_promotion_claims, rewrite, scan_output)
from kefu.types import KefuError

PROMOS = [{"id": "P001", "type": "full_reduction", "description": "满300减50，满600减120",
           "tiers": [{"threshold_fen": 30000, "reduction_fen": 5000}, {"threshold_fen": 60000, "reduction_fen": 12000}]},
          {"id": "P002", "type": "discount", "rate_percent": 85, "description": "指定款八五折"}]


def rules_of(text, **kw):
    return [v.rule for v in check(text, **kw)]


@pytest.mark.parametrize("text,rule", [
    ("这是最好的冲锋衣", "absolute:最好"), ("销量第一", "absolute:销量第一"), ("国家级品质", "absolute:国家级"),
    ("世界级工艺", "absolute:世界级"), ("顶级面料", "absolute:顶级"), ("极品羽绒", "absolute:极品"),
    ("绝对正品", "absolute:绝对"), ("100%防水", "absolute:100%"), ("１００％防水", "absolute:100%"),
    ("永久保修", "absolute:永久"), ("万能背包", "absolute:万能"), ("送礼首选", "absolute:首选"),
    ("独家设计", "absolute:独家"), ("全网唯一", "absolute:唯一"), ("全网最低价", "absolute:全网最低价"),
    ("NO.1品牌", "absolute:NO.1"), ("驰名商标", "well-known-mark"),
])
def test_absolute_terms_flagged_with_article(text, rule):
    hits = check(text)
    assert rule in [h.rule for h in hits]
    hit = next(h for h in hits if h.rule == rule)
    assert hit.law_article and text[hit.start:hit.end] == hit.text


@pytest.mark.parametrize("text", [
    "最快什么时候发货？", "最近有活动吗", "最后一件了吗", "第一次买，第一天就到了", "您说的第一款是冲锋衣",
    "面料是100%纯棉", "成分：棉100%", "羽绒含量100%", "最好先量一下尺码哦", "第一时间为您处理", "最晚明天发货",
    "最多可以退两件", "满300减50哦", "是100%美丽诺羊毛，150g/㎡", "系统已自动按最优惠的组合计算", "最高档只减一次",
])
def test_no_false_positives(text):
    assert check(text) == [], check(text)


def test_promises_are_flagged_and_their_clause_rewritten():
    text = "这款护膝能根治关节炎，放心买"
    assert rules_of(text) == ["promise:medical"]
    safe, _ = rewrite(text)
    assert "根治" not in safe and safe.endswith("，放心买") and check(safe) == []
    assert "promise:education" in rules_of("报名我们的课程包过")
    assert "promise:investment" in rules_of("稳赚不赔，年化收益12%")
    assert rewrite("冲锋衣永不褪色")[0] == "冲锋衣不易褪色"
    assert "promise:result" in rules_of("保证有效，无效退款")


def test_rewrite_examples():
    assert rewrite("这款是最好的，销量第一，绝对正品")[0] == "这款是很好的，销量领先，正品"
    assert rewrite("100%纯棉，100%防水")[0] == "100%纯棉，防水"
    safe, hits = rewrite("来玩百家乐赢钱")
    assert "百家乐" not in safe and hits[0].category == "banned" and hits[0].law_article.startswith("《广告法》第九条")


def test_promotion_claims_parsed():
    claims = [c.describe() for _, _, c in parse_promotion_claims("满300减80，每满200减20，全场八五折，满三百减五十，8.5折，85折")]
    assert claims == ["满300减80", "每满200减20", "8.5折", "满300减50", "8.5折", "8.5折"]


def test_promotion_amounts_read_by_the_shared_number_parser():
    """kefu.text.numbers reads the amounts: 一百零五 is 105 (the old local parser said 150), 五十万 is 500000, and a
    Chinese amount glued to an Arabic discount stays two claims."""
    claims = [c.describe() for _, _, c in parse_promotion_claims("满一百零五减十，满一百万减五十万，满三百减五十8.5折")]
    assert claims == ["满105减10", "满1000000减500000", "满300减50", "8.5折"]

def test_promotion_mismatch_against_active_promotions():
    assert rules_of("现在满300减50，满600减120", promotions=PROMOS) == []
    assert rules_of("指定款85折", promotions=PROMOS) == []
    hits = check("现在满300减80哦", promotions=PROMOS)
    assert [h.rule for h in hits] == ["promotion-mismatch"] and hits[0].text == "满300减80"
    assert hits[0].law_article.startswith("《广告法》第八条")
    assert rewrite("现在满300减80哦", promotions=PROMOS)[0] == "现在满300减50哦"
    assert rules_of("全场七折", promotions=PROMOS) == ["promotion-mismatch"]
    assert rules_of("每满300减50", promotions=PROMOS) == ["promotion-mismatch"]  # 每满 overstates tiers
    assert rules_of("满300减50", promotions=[{"type": "per_full_reduction", "per_threshold_fen": 30000,
                                               "per_reduction_fen": 5000}]) == []
    assert rules_of("满300减50", promotions=[]) == ["promotion-mismatch"]  # nothing active
    assert rules_of("满300减80") == []  # no promotions given: not checked


def test_scan_output_flags_other_customers_pii_only():
    context = ["我的手机是13812345678，订单1234567890123456"]
    reply = "已为您查到订单1234567890123456，联系电话13812345678。另一位顾客13999998888的地址是浙江省杭州市西湖区文三路100号"
    hits = scan_output(reply, context)
    assert {h.rule for h in hits} == {"pii-leak:mobile", "pii-leak:address"}
    assert all(h.law_article == "《个人信息保护法》第十条" for h in hits)
    safe, _ = rewrite(reply, context_texts=context)
    assert "13999998888" not in safe and "文三路" not in safe and "13812345678" in safe
    assert scan_output("您的邮箱 a@b.com 已更新", ["邮箱A@B.com"]) == []
    assert [h.rule for h in scan_output("卡号6222021234567890128", [])] == ["pii-leak:bank_card"]


def test_leak_scan_uses_the_masker_detectors():
    """scan_output finds what kefu.text.pii finds, with its placeholders: the common kinds and a name, but not the
    near-misses the masker rejects (an ID failing its checksum, a bare 16-digit number, a hotline-like 010-1...)."""
    hits = scan_output("电话13999998888，邮箱x@y.cn，身份证110101199003074514，单号SF1234567890123，收件人王伟", [])
    assert {h.rule for h in hits} == {"pii-leak:mobile", "pii-leak:email", "pii-leak:id_card", "pii-leak:tracking_no",
                                      "pii-leak:name"}
    assert {h.suggestion for h in hits} == {"[手机号]", "[邮箱]", "[身份证号]", "[物流单号]", "[姓名]"}
    assert scan_output("身份证110101199003077513，编号2611219093100251，010-12345678", []) == []


def test_rewritten_text_is_clean():
    text = "最好的冲锋衣，销量第一，永不褪色，满300减80，能根治风湿病，来赌博吧，电话13912345678"
    safe, hits = rewrite(text, promotions=PROMOS, context_texts=[])
    assert len(hits) >= 6
    assert check(safe, promotions=PROMOS, context_texts=[]) == []


def test_shop_yaml_rules(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("absolute: {王炸: 很棒}\nallow: [最好的朋友]\ndisable: [absolute:绝对, banned:gambling]\n"
                    "banned: {competitor: [某宝]}\npromises:\n  - {pattern: 包退包换, replacement: 支持退换}\n",
                    encoding="utf-8")
    rules = ComplianceRules.load(path)
    assert rewrite("王炸单品", rules=rules)[0] == "很棒单品"
    assert check("你是我最好的朋友", rules=rules) == []
    assert check("绝对正品", rules=rules) == [] and check("赌博", rules=rules) == []
    assert [h.rule for h in check("比某宝便宜", rules=rules)] == ["banned:competitor"]
    assert rewrite("包退包换", rules=rules)[0] == "支持退换"
    assert check("绝对正品") != []  # defaults unchanged


@pytest.mark.parametrize("content,message", [
    ("- a\n", "top level must be a mapping"), ("absolut: {}\n", "unknown key"), ("allow: x\n", "`allow` must be"),
    ("promises: [{pattern: '('}]\n", "promises\\[0\\].pattern"), ("a: [\n", "not valid YAML"),
])
def test_yaml_errors_name_file_and_key(tmp_path, content, message):
    path = tmp_path / "shop.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(KefuError, match=message):
        ComplianceRules.load(path)
    with pytest.raises(KefuError, match="not found"):
        ComplianceRules.load(tmp_path / "none.yaml")


def test_cli_check_exit_code():
    runner = CliRunner()
    bad = runner.invoke(app, ["compliance", "check", "全网最低价"])
    assert bad.exit_code == 1 and "优惠价" in bad.output
    assert runner.invoke(app, ["compliance", "check", "您好，请问有什么可以帮您"]).exit_code == 0


@pytest.mark.parametrize("text", ["NO.16222021234567890128", "\x00010-12345678１００％", "110101199003074514NO.1"])
def test_fuzz_regressions_rewrite_exposes_then_fixes(text):
    """Found by bench/security_bench.py: replacing one hit exposed a glued PII number; rewrite now re-checks."""
    safe, _ = rewrite(text, context_texts=[])
    assert check(safe, context_texts=[]) == [], safe


def test_shop_details_and_masked_numbers_are_not_leaks():
    rules = ComplianceRules()
    rules.allow.append("浙江省杭州市余杭区仓前街道良睦路1399号")
    reply = "请寄到浙江省杭州市余杭区仓前街道良睦路1399号 山岚户外售后部，已备注联系电话182****9054"
    assert [h.rule for h in check(reply, context_texts=["我电话18212349054"], rules=rules)] == []
    assert [h.rule for h in check(reply, context_texts=["我电话18200000000"], rules=rules)] == ["pii-leak:mobile"]
    assert scan_output("售后电话0571-88886666", [], allow=["0571-88886666"]) == []
