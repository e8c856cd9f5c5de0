"""PII detection and masking: every type in several formats, near-misses that must survive, JDDC placeholders,
idempotence, configuration, a real-data address recall check and property tests."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kefu.text import pii
from kefu.text.pii import (JDDC_PLACEHOLDERS, PLACEHOLDERS, TRIGGER_CHARS, Masker, PiiSpan, find_pii, luhn_ok, mask,
                           mask_many, valid_bank_card, valid_id_card, valid_landline, valid_mobile)


def id_card(body17: str) -> str:
    """A resident ID with its correct ISO 7064 MOD 11-2 check character."""
    total = sum(int(c) * w for c, w in zip(body17, (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)))
    return body17 + "10X98765432"[total % 11]


def luhn(body: str) -> str:
    """``body`` plus the Luhn check digit."""
    for d in "0123456789":
        if luhn_ok(body + d):
            return body + d
    raise AssertionError


def bad_last(s: str) -> str:
    """The same number with a wrong last digit."""
    return s[:-1] + str((int(s[-1]) + 1) % 10) if s[-1].isdigit() else s[:-1] + "0"


ID_18 = id_card("11010119900307751")            # 1990-03-07, Beijing Dongcheng
ID_X = next(i for i in (id_card(f"44030419851201{n:03d}") for n in range(1000)) if i.endswith("X"))
ID_15 = "330106850612123"                        # first generation: 1985-06-12
CARD_UNIONPAY = luhn("622202123456789012")       # 19 digits, 62 prefix
CARD_VISA = luhn("411111111111111")              # 16 digits, 4 prefix
CARD_MASTER = luhn("552153012345678")


# ------------------------------------------------------------------------------------------------ validators

def test_validators():
    assert valid_id_card(ID_18) and valid_id_card(ID_X) and valid_id_card(ID_X.lower()) and valid_id_card(ID_15)
    assert not valid_id_card(bad_last(ID_18))
    assert not valid_id_card(id_card("99010119900307751"))   # no province 99
    assert not valid_id_card(id_card("11010119901307751"))   # month 13
    assert not valid_id_card(id_card("11010129900307751"))   # born in 2990
    assert not valid_id_card("330106851312123")              # 15 digits, month 13
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert valid_bank_card(CARD_UNIONPAY) and valid_bank_card(CARD_VISA) and not valid_bank_card(bad_last(CARD_VISA))
    assert not valid_bank_card(luhn("123456789012345"))       # issuer prefix 1 is not a bank card
    assert valid_bank_card(luhn("123456789012345"), context=True)
    assert valid_mobile("13812345678") and valid_mobile("8613812345678") and valid_mobile("008619912345678")
    assert not valid_mobile("12812345678") and not valid_mobile("10000000000") and not valid_mobile("1381234567")
    assert valid_landline("01062345678") and valid_landline("057188886666") and valid_landline("07552345678")
    assert not valid_landline("01012345678")  # local numbers do not start with 1
    assert not valid_landline("0111234567") and not valid_landline("4008208820")


# ------------------------------------------------------------------------------------------------ positives

POSITIVES = [
    # mobile
    ("我的手机号是13812345678，麻烦尽快发货", "mobile", "13812345678"),
    ("电话 138 1234 5678 有事打我", "mobile", "138 1234 5678"),
    ("联系方式：138-1234-5678", "mobile", "138-1234-5678"),
    ("+86 199 1234 5678", "mobile", "+86 199 1234 5678"),
    ("打这个8613912345678", "mobile", "8613912345678"),
    ("号码是１３８１２３４５６７８", "mobile", "１３８１２３４５６７８"),
    ("尾号是138****5678的那个号", "mobile", "138****5678"),
    ("13812345678 2件都要", "mobile", "13812345678"),
    # landline
    ("座机0571-88886666", "landline", "0571-88886666"),
    ("打(010)62345678找我", "landline", "(010)62345678"),
    ("公司电话：021 6234 5678", "landline", "021 6234 5678"),
    ("总机0571-88886666-801转人事", "landline", "0571-88886666-801"),
    ("座机号 88886666", "landline", "88886666"),
    # id card
    (f"身份证号{ID_18}", "id_card", ID_18),
    (f"我的身份证是{ID_X}，请核实", "id_card", ID_X),
    (f"{ID_X.lower()}", "id_card", ID_X.lower()),
    (f"老身份证{ID_15}还能用吗", "id_card", ID_15),
    # bank card
    (f"退款到{CARD_UNIONPAY}这张卡", "bank_card", CARD_UNIONPAY),
    (f"卡号：{CARD_VISA[:4]} {CARD_VISA[4:8]} {CARD_VISA[8:12]} {CARD_VISA[12:]}", "bank_card",
     f"{CARD_VISA[:4]} {CARD_VISA[4:8]} {CARD_VISA[8:12]} {CARD_VISA[12:]}"),
    (f"信用卡{CARD_MASTER}", "bank_card", CARD_MASTER),
    (f"银行卡号{luhn('123456789012345')}", "bank_card", luhn("123456789012345")),  # context relaxes the prefix
    # email
    ("邮箱zhang.san@163.com，发票发这里", "email", "zhang.san@163.com"),
    ("发到 Li_Lei+shop@mail.example.com.cn 吧", "email", "Li_Lei+shop@mail.example.com.cn"),
    ("13812345678@qq.com", "email", "13812345678@qq.com"),
    # order numbers
    ("订单号2026111112345怎么还没发货", "order_no", "2026111112345"),
    ("我的订单：1234567890123456", "order_no", "1234567890123456"),
    ("订单编号 DD20261111000123", "order_no", "DD20261111000123"),
    ("单号是 202611110001 麻烦查下", "order_no", "202611110001"),
    ("订单好像有问题 5566778899001 这个", "order_no", "5566778899001"),
    # tracking numbers
    ("顺丰SF1234567890123到哪了", "tracking_no", "SF1234567890123"),
    ("快递单号：YT9876543210987", "tracking_no", "YT9876543210987"),
    ("京东JDVA12345678901已签收？", "tracking_no", "JDVA12345678901"),
    ("极兔 JT0012345678901", "tracking_no", "JT0012345678901"),
    ("运单号 773012345678901", "tracking_no", "773012345678901"),
    ("中通快递 75312345678901 一直没更新", "tracking_no", "75312345678901"),
    ("EMS国际件EA123456785CN", "tracking_no", "EA123456785CN"),
    # names
    ("我叫王小明，帮我改下地址", "name", "王小明"),
    ("收件人：张伟", "name", "张伟"),
    ("收货人欧阳娜娜电话见下", "name", "欧阳娜娜"),
    ("李先生您好，请问有什么可以帮您", "name", "李"),
    ("好的，王小明女士", "name", "王小明"),
    ("我是刘洋。", "name", "刘洋"),
    ("姓名：John Smith", "name", "John Smith"),
    # addresses
    ("寄到浙江省杭州市西湖区文三路100号吧", "address", "浙江省杭州市西湖区文三路100号"),
    ("地址：北京市朝阳区建国路88号SOHO现代城5号楼1201室", "address", "北京市朝阳区建国路88号SOHO现代城5号楼1201室"),
    ("我家在宁波市江东区金家一路寰宇天下", "address", "宁波市江东区金家一路寰宇天下"),
    ("改成义乌市福田街道幸福小区9-7-1453室，谢谢", "address", "义乌市福田街道幸福小区9-7-1453室"),
    ("麻烦送到上海浦东张江镇祖冲之路", "address", "上海浦东张江镇祖冲之路"),
    ("住在朝阳区望京街道阜荣街10号院", "address", "朝阳区望京街道阜荣街10号院"),
    # ip, wechat, qq
    ("登录IP是 192.168.31.25 正常吗", "ip", "192.168.31.25"),
    ("加我vx: zhangsan_88", "wechat", "zhangsan_88"),
    ("QQ12345678", "qq", "12345678"),
]


@pytest.mark.parametrize("text,typ,value", POSITIVES, ids=[p[2] for p in POSITIVES])
def test_positive(text, typ, value):
    spans = find_pii(text)
    assert PiiSpan(typ, text.index(value), text.index(value) + len(value), value) in spans, spans
    masked, counts = mask(text)
    assert PLACEHOLDERS[typ] in masked and value not in masked
    assert counts[PLACEHOLDERS[typ]] >= 1


def test_surrounding_text_survives():
    text = f"您好，我叫张伟，手机13812345678，寄到杭州市西湖区文三路100号，订单号2026111112345，谢谢"
    masked, counts = mask(text)
    assert masked == "您好，我叫[姓名]，手机[手机号]，寄到[地址]，订单号[订单号]，谢谢"
    assert counts == {"[姓名]": 1, "[手机号]": 1, "[地址]": 1, "[订单号]": 1}


def test_several_pii_in_one_run_of_digits():
    masked, _ = mask(f"13812345678 {ID_18}")
    assert masked == "[手机号] [身份证号]"


# ------------------------------------------------------------------------------------------------ near-misses

NEAR_MISSES = [
    f"身份证{bad_last(ID_18)}",                      # checksum fails
    f"身份证{id_card('11010119901307751')}",          # 13th month
    f"卡号{bad_last(CARD_UNIONPAY)}",                # Luhn fails
    bad_last(CARD_VISA),
    luhn("123456789012345"),                          # Luhn ok, no issuer prefix, no context
    "10000000000",                                    # 11 digits, not a mobile prefix
    "12345678901",
    "138123456789",                                   # 12 digits: longer run than a mobile
    "2026111112345",                                  # order-ish number without a context word
    "400-820-8820 是官方客服热线",                      # business hotline
    "满300减50，满600减120，每满200减20",
    "这件冲锋衣¥1299.00，现在8.5折，折后1104.15元",
    "价格是29900分，也就是299元",
    "2026-11-11 20:00 开抢，11月11号发货",
    "20261111下的单",
    "SL-10023 和 SL-10024 有什么区别",
    "我要XL码，身高175/92A，体重65kg",
    "这款85%羽绒，充绒量200g",
    "3件起批，库存还有12000件",
    "版本1.2.3，型号ABC-12345",
    "一路顺风，祝您生活愉快",
    "山岚户外旗舰店里有货吗",
    "发货地是浙江杭州",
    "北京上海广州深圳都能发",
    "我在路上了",
    "您好先生，请问有什么可以帮您",
    "谢谢您，女士",
    "我是买家，刚下单",
    "收货人信息填错了",
    "客服中心在哪",
    "江浙沪包邮，偏远地区除外",
    "这个小区门口有快递柜吗",
    "11号或12号都可以",
    "尺码是L号，腰围2尺4",
    "第2件半价，买2送1",
    "XL号的有吗",
]


@pytest.mark.parametrize("text", NEAR_MISSES)
def test_near_miss_is_not_masked(text):
    assert find_pii(text) == []
    assert mask(text) == (text, {})


# ------------------------------------------------------------------------------------------ JDDC and idempotence

def test_jddc_placeholders_are_kept_as_slots():
    # They used to be rewritten to ours ([订单x] -> [订单号]) in training text only, while eval kept JDDC's; they are
    # already anonymous and are slots (kefu.kg.slots fills [订单x]), so masking keeps them verbatim everywhere.
    text = "[姓名x]您好，[电话x]是您的号码吗？订单[订单x]，地址[地址x]，身份证[身份证号x]，邮箱[邮箱x]，" \
           "金额[金额x]，[数字x]件，[日期x] [时间x]，[站点x]，[组织机构x]，[链接x]"
    assert mask(text) == (text, {})
    assert set(JDDC_PLACEHOLDERS.values()) <= set(PLACEHOLDERS.values())
    spans = find_pii("[电话x]")  # still PII to the detector: a reply must not write one out
    assert spans == [PiiSpan("mobile", 0, 5, "[电话x]")]
    # real PII next to them is still masked
    assert mask("订单[订单x]，手机13812345678")[0] == "订单[订单x]，手机[手机号]"


def test_jddc_nested_order_placeholder():
    text = "[订单编号:[订单x]，订单金额:[金额x]，下单时间:[日期x] [时间x]]"
    assert mask(text)[0] == text


def test_own_placeholders_untouched_and_idempotent():
    text = "收件人[姓名]，电话[手机号]，地址[地址]，订单号[订单号]"
    assert mask(text) == (text, {})
    for text, _, _ in POSITIVES:
        once, _ = mask(text)
        assert mask(once) == (once, {}), text


# ------------------------------------------------------------------------------------------------ configuration

def test_masker_types_and_context_words():
    only_phones = Masker(types=["mobile"])
    masked, counts = only_phones.mask(f"我叫张伟，手机13812345678，身份证{ID_18}")
    assert masked == f"我叫张伟，手机[手机号]，身份证{ID_18}" and counts == {"[手机号]": 1}
    assert Masker().mask("售后编号 88776655443322")[0] == "售后编号 88776655443322"
    custom = Masker(context_words={"order_no": ["售后编号"]})
    assert custom.mask("售后编号 88776655443322")[0] == "售后编号 [订单号]"
    with pytest.raises(ValueError, match="unknown PII types"):
        Masker(types=["phone"])
    with pytest.raises(ValueError, match="context words"):
        Masker(context_words={"address": ["住"]})


def test_find_is_sorted_and_non_overlapping():
    text = (f"张先生，手机13812345678，卡号{CARD_UNIONPAY}，身份证{ID_18}，邮箱a@b.cn，"
            "寄到杭州市西湖区文三路100号，顺丰SF1234567890123")
    spans = find_pii(text)
    assert len(spans) == 7
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))
    assert all(text[s.start:s.end] == s.text and s.type in PLACEHOLDERS for s in spans)


# ------------------------------------------------------------------------------------------------ real data

def _read_addresses(path):
    """Addresses of the BIO file: list of [(token, tag)]; a blank line ends one."""
    addresses, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if current:
                addresses.append(current)
            current = []
            continue
        token, tag = line.rsplit(" ", 1)
        current.append((token, tag))
    if current:
        addresses.append(current)
    return addresses


def address_recall(addresses, template: str) -> tuple[float, int]:
    """Fraction of address characters (tags other than ``redundant``) masked as [地址] with each address embedded
    in ``template``, and how many sentences lost part of their surrounding words."""
    pre, post = template.split("{}")
    hit = total = broken = 0
    for address in addresses:
        body = "".join(tok for tok, _ in address)
        text = pre + body + post
        covered = set()
        for sp in find_pii(text):
            if sp.type == "address":
                covered.update(range(sp.start, sp.end))
        pos = len(pre)
        for tok, tag in address:
            if not tag.endswith("redundant"):
                total += len(tok)
                hit += sum((pos + k) in covered for k in range(len(tok)))
            pos += len(tok)
        masked, _ = mask(text)
        broken += not (masked.startswith(pre) and masked.endswith(post))
    return hit / total, broken


def test_address_recall_on_real_addresses(shared_data):
    addresses = _read_addresses(shared_data / "address" / "dev.txt")
    assert len(addresses) > 2000
    recall, broken = address_recall(addresses, "寄到{}吧")
    print(f"address char recall 寄到{{}}吧: {recall:.4f}, sentences with damaged context: {broken}")
    assert recall >= 0.95          # measured 0.975 (2,985 addresses)
    assert broken == 0
    recall, broken = address_recall(addresses, "你好，帮我查一下{}，谢谢")  # no address word before it
    print(f"address char recall without trigger word: {recall:.4f}, damaged: {broken}")
    assert recall >= 0.92          # measured 0.951
    assert broken <= 5


def test_jddc_real_turns_keep_their_text(shared_data):
    """JDDC's organiser already replaced PII: our detectors must leave almost all of its real turns alone."""
    rows = [ln.split("\t") for ln in (shared_data / "jddc2019" / "chat_0.1per.txt").read_text(
        encoding="utf-8").splitlines()]
    texts = [r[6] for r in rows if len(r) >= 7]
    assert len(texts) > 10000
    found = [sp for t in texts for sp in find_pii(t) if not sp.text.startswith("[")]
    # the few hits are mostly real addresses the organiser missed; far below 1 in 100 turns
    assert len(found) < len(texts) / 200, found[:20]
    placeholders = sum(1 for t in texts for sp in find_pii(t) if sp.text.startswith("["))
    assert placeholders > 1000
    # masking keeps JDDC's placeholders (its slots) exactly as the data has them
    masked = [m for m, _ in mask_many(texts)]
    for ph in ("[订单x]", "[金额x]", "[数字x]", "[地址x]", "[时间x]", "[姓名x]", "[电话x]"):
        before = sum(t.count(ph) for t in texts)
        assert before > 0 and sum(m.count(ph) for m in masked) == before, ph


# ------------------------------------------------------------------------------------------------ properties

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=120))
def test_mask_never_raises(text):
    masked, counts = mask(text)
    assert isinstance(masked, str) and all(v > 0 for v in counts.values())
    if not counts:
        assert masked == text


SAFE = [ch for ch in "的一是不了人在有我他这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于着下自之年过发后作"
        "里用道行所然家种事成方多经么去法学如都同现当没动面起看定天分还进好小部其些主样理心她本前开但因只从想实日军者意无力"
        "它与长把机十民第公此已工使情明性知全三又关点正业外将两高间由问很最重并物手应战向头文体政美相见被利什二等产或新己制"
        "身果加西斯月话合回特代内信表化老给世位次度门任常先海通教儿原东声提立及比员解水名真论处走义各入几口认条平系气题活尔"
        "更别打女变四神总何电数安少报才结反受目太量再感建务做接必场件计管期市直德资命山金指克许统区保至队形社便空决治展马科"
        "司五基眼书非则听白却界达光放强即像难且权思王象完设式色路记南品住告类求据程北边死张该交规万取拉格望觉术领共确传师观"
        "清今切院让识候带导争运笑飞风步改收根干造言联持组每济车亲极林服快办议往元英士证近失转夫令准布始怎呢存未远叫台单影具"
        "罗字爱击流备兵连调深商算质团集百需价花党华城石级整府离况亚请技际约示复病息究线似官火断精满支视消越器容照须九增研写"
        "称企八功吗包片史委乎查轻易早曾除农找装广显吧阿李标谈吃图念六引历首医局突专费号尽另周较注语仅考落青随选列武红响虽推"
        "势参希古众构房半节土投某案黑维革划敌致陈律足态护七兴派孩验责营星够章音跟志底站严巴例防族供效续施留讲型料终答紧黄绝"
        "奇察母京段依批群项故按河米围江织害斗双境客纪采举杀攻父苏密低朝友诉止细愿千值仍男钱破网热助倒育属坐帝限船脸职速刻乐"
        "否刚威毛状率甚独球般普怕弹校苦创假久错承印晚兰试股拿脑预谁益阳若哪微尼继送急血惊伤素药适波夜省初喜卫源食险待述陆习"
        "置居劳财环排福纳欢雷警获模充负云停木游龙树疑层冷洲冲射略范竟句室异激汉村哈策演简卡罪判担州静退既衣您宗积余痛检差富"
        "，。！？、：；“”‘’（）《》… ~-" if ch not in TRIGGER_CHARS]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=SAFE, max_size=80))
def test_text_without_trigger_characters_is_unchanged(text):
    assert mask(text) == (text, {})


SNIPPETS = [p[0] for p in POSITIVES] + NEAR_MISSES + ["[电话x]", "[数字x]", "[手机号]"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(SNIPPETS), st.text(max_size=6)), max_size=6))
def test_mask_is_idempotent(parts):
    text = "".join(parts)
    once, _ = mask(text)
    assert mask(once)[0] == once


def test_default_masker_is_shared():
    assert pii._default() is pii._default()


def test_keep_strings_are_never_masked():
    shop_address = "浙江省杭州市余杭区仓前街道良睦路1399号"
    text = f"请寄到{shop_address} 山岚户外售后部，电话0571-88886666，您的手机13812345678"
    masked, _ = mask(text)
    assert shop_address not in masked and "0571-88886666" not in masked
    keeper = Masker(keep=[shop_address, "0571-88886666"])
    masked, counts = keeper.mask(text)
    assert masked == f"请寄到{shop_address} 山岚户外售后部，电话0571-88886666，您的手机[手机号]"
    assert counts == {"[手机号]": 1}
