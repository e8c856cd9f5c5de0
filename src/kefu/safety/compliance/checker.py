"""Content compliance for AGENT text (model replies, agent macros): 《广告法》 absolute claims and false promises,
promotion claims that contradict the shop's active promotions, banned content, and other customers' PII in a reply.

``check`` finds violations, ``rewrite`` returns a compliant text. Rules come from built-in defaults plus an optional
per-shop YAML file (``ComplianceRules.load``); every hit names its rule and the law article it rests on.

Apply these to what the shop says, not to what customers ask: "最快什么时候发货" is a fine question, and the default
rules avoid such false positives anyway (最近, 最后, 最快 …, 第一次, 第一天 …, 100%纯棉 as a composition fact).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import yaml

from kefu.types import KefuError

# ----------------------------------------------------------------------------------------------------------------
# Law articles (cited verbatim in every Violation so reviewers can check the basis of a hit)
# ----------------------------------------------------------------------------------------------------------------
ART_ABSOLUTE = "《广告法》第九条第（三）项"  # 不得使用"国家级"、"最高级"、"最佳"等用语
ART_FALSE = "《广告法》第二十八条"  # 虚假广告：性能、功能、质量、允诺等与实际情况不符或无法验证
ART_MEDICAL = "《广告法》第十七条"  # 除医疗、药品、医疗器械广告外，禁止涉及疾病治疗功能
ART_EDUCATION = "《广告法》第二十四条第（一）项"  # 不得对通过考试、取得证书等作出保证性承诺
ART_INVESTMENT = "《广告法》第二十五条第（一）项"  # 不得对未来效果、收益作出保证性承诺
ART_WELL_KNOWN = "《商标法》第十四条第五款"  # 不得将"驰名商标"字样用于广告宣传
ART_PRICE = "《广告法》第八条；《价格法》第十四条第（四）项"  # 优惠、价格表示应准确；禁止虚假或使人误解的价格手段
ART_BANNED = {
    "political": "《广告法》第九条第（四）项；《网络信息内容生态治理规定》第六条",
    "pornographic": "《广告法》第九条第（七）项",
    "gambling": "《广告法》第九条第（七）项",
    "violence": "《广告法》第九条第（七）项",
    "discriminatory": "《广告法》第九条第（八）项",
}
ART_PII = "《个人信息保护法》第十条"  # 不得非法提供或者公开他人个人信息

# term -> compliant wording. "" deletes the word ("绝对正品" -> "正品").
DEFAULT_ABSOLUTE: dict[str, str] = {
    "最佳": "很好", "最好": "很好", "最优": "优质", "最优秀": "优秀", "最强": "很强", "最高级": "高级", "最高档": "高档",
    "最低价": "优惠价", "最便宜": "很实惠", "最划算": "很划算", "最实惠": "很实惠", "最先进": "先进",
    "最受欢迎": "很受欢迎", "最畅销": "热销", "最火": "很火", "最时尚": "时尚", "最专业": "专业", "最舒适": "很舒适",
    "最保暖": "很保暖", "最耐用": "耐用", "最轻": "很轻", "最权威": "专业", "最正宗": "正宗", "最顶级": "高端",
    "最高端": "高端", "最新科技": "新科技", "全网最低": "优惠", "全网最低价": "优惠价", "史上最低价": "优惠价",
    "第一": "领先", "全网第一": "领先", "销量第一": "销量领先", "排名第一": "排名靠前", "第一品牌": "知名品牌",
    "NO.1": "领先", "No.1": "领先", "no.1": "领先", "TOP1": "领先", "Top1": "领先", "top1": "领先",
    "国家级": "高标准", "世界级": "高水准", "全球级": "高水准", "宇宙级": "高水准", "顶级": "高端", "极品": "精品",
    "极致": "出色", "绝对": "", "100%": "", "100％": "", "百分之百": "", "百分百": "", "永久": "长期", "万能": "多用途",
    "首选": "推荐", "独家": "特色", "唯一": "特有", "独一无二": "独特", "绝无仅有": "少见", "史无前例": "少见",
    "前无古人": "少见", "领导品牌": "知名品牌", "领袖品牌": "知名品牌", "王牌": "主打", "一流": "优秀", "顶尖": "出色",
}
# Phrases that contain a listed term but are not claims; a hit inside one of these is ignored.
DEFAULT_ALLOW: list[str] = [
    "第一次", "第一天", "第一时间", "第一件", "第一个", "第一步", "第一单", "第一批", "第一条", "第一位", "第一周",
    "第一年", "第一季", "第一款", "第一张", "第一页", "第一排", "第一层", "第一遍", "第一眼", "第一印象", "第一笔",
    "第一份", "第一句", "第一双", "第一套", "第一号", "第一期", "第一轮", "第一阶段", "第一部分", "第一种", "第一项",
    "第一条件", "第一顺位", "第一百", "第一千", "第一万", "第一十", "唯一码", "唯一标识", "唯一编号", "绝对值",
    "永久地址", "首选项", "最优惠的组合", "最优惠组合", "最优组合", "最高档只", "最高档减", "最高档满", "最高一档",
    "最好是", "最好先", "最好不要", "最好别", "最好能", "最好在", "最好还是", "最好用",
]
# Materials: "100%纯棉", "棉100%" state a fact of composition (GB/T 29862 纤维含量标识), not a superlative.
MATERIALS = ("纯棉", "棉", "羊毛", "羊绒", "蚕丝", "真丝", "涤纶", "聚酯纤维", "聚酯", "锦纶", "尼龙", "羽绒", "鹅绒",
             "鸭绒", "亚麻", "莫代尔", "粘纤", "粘胶", "氨纶", "美利奴", "美丽诺", "美利诺", "羊驼毛", "腈纶", "天丝", "竹纤维", "牛皮",
             "皮革", "含量", "成分", "面料", "填充物", "polyester", "cotton", "wool", "nylon")
PERCENT_TERMS = {"100%", "100％", "百分之百", "百分百"}

# (rule id, pattern, replacement or None for "replace the clause with `clause`", article, clause text)
DEFAULT_PROMISES: list[dict[str, str]] = [
    {"id": "promise:medical", "article": ART_MEDICAL,
     "pattern": r"保证治愈|包治百病|包治|根治|药到病除|治愈率|有效率\s*\d+|[零无]副作用|"
                r"治疗[^，。！？；,.!?;\s]{0,6}(?:病|炎|症)|治好[^，。！？；,.!?;\s]{0,6}(?:病|炎|症)",
     "clause": "本品不具有医疗功效，如有不适请遵医嘱"},
    {"id": "promise:education", "article": ART_EDUCATION,
     "pattern": r"包过|保过|包通过|保证通过|包拿证|一次通过", "clause": "效果因人而异，我们会尽力协助"},
    {"id": "promise:investment", "article": ART_INVESTMENT,
     "pattern": r"稳赚不赔|稳赚|保本保息|保本|零风险|无风险|保证收益|收益保证|保收益|年化收益\s*\d+(?:\.\d+)?\s*[%％]",
     "clause": "收益存在不确定性，不作保证"},
    {"id": "promise:result", "article": ART_FALSE,
     "pattern": r"保证(?:有效|见效|效果|瘦|美白|长高|增高)|立竿见影|一次见效|(?:百分之?百|100\s*[%％])(?:有效|满意|见效)|无效退款",
     "clause": "实际效果因人而异"},
    {"id": "promise:never", "article": ART_FALSE,
     "pattern": r"永不(褪色|掉色|起球|变形|磨损|损坏|开胶|断裂|缩水|掉毛|钻绒|跑绒|漏水)", "replacement": r"不易\1"},
    {"id": "well-known-mark", "article": ART_WELL_KNOWN, "pattern": r"驰名商标", "replacement": "知名品牌"},
]

DEFAULT_BANNED: dict[str, list[str]] = {
    "political": ["颠覆国家政权", "分裂国家", "煽动颠覆", "反动", "邪教"],
    "pornographic": ["色情", "黄片", "裸聊", "约炮", "成人视频", "援交", "一夜情"],
    "gambling": ["赌博", "博彩", "赌场", "网赌", "百家乐", "六合彩", "时时彩", "赌球", "下注"],
    "violence": ["杀了你", "弄死你", "砍死", "炸弹", "爆炸物", "枪支", "恐怖袭击", "血洗"],
    "discriminatory": ["黑鬼", "支那", "残废", "智障", "低能儿", "乡巴佬", "娘炮", "死胖子"],
}


@dataclass
class Violation:
    """One hit: ``text`` is ``text[start:end]`` of the checked string; ``suggestion`` the compliant wording."""

    rule: str
    category: str
    law_article: str
    start: int
    end: int
    text: str
    suggestion: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Rule:
    id: str
    category: str
    article: str
    pattern: re.Pattern[str]
    replacement: str | None = None  # regex template; None -> use `clause`
    clause: str | None = None  # replaces the whole clause around the hit


@dataclass
class ComplianceRules:
    """The rule set: built-in defaults, then a shop's YAML. See ``load`` for the YAML keys."""

    absolute: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ABSOLUTE))
    allow: list[str] = field(default_factory=lambda: list(DEFAULT_ALLOW))
    promises: list[dict[str, str]] = field(default_factory=lambda: [dict(p) for p in DEFAULT_PROMISES])
    banned: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_BANNED.items()})
    disable: set[str] = field(default_factory=set)
    source: str = "defaults"

    @classmethod
    def load(cls, path: str | Path | None = None) -> "ComplianceRules":
        """Defaults, extended by ``path`` (YAML) when given. Keys (all optional)::

            absolute: {王炸: 很棒}          # extra/overridden absolute terms -> replacement ("" deletes)
            allow: [最好的朋友]             # phrases never flagged
            promises: [{id: promise:x, pattern: 包退包换, replacement: 支持退换}]   # or clause: "..." instead
            banned: {gambling: [下注]}      # extra words per category (new categories allowed)
            disable: [absolute:绝对, banned:violence, promise:never]   # switch off rules or whole categories

        Errors name the file and the key.
        """
        rules = cls()
        if path is None:
            return rules
        source = Path(path)
        if not source.exists():
            raise KefuError(f"{source}: compliance rules file not found")
        try:
            data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise KefuError(f"{source}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise KefuError(f"{source}: the top level must be a mapping (absolute, allow, promises, banned, disable)")
        unknown = set(data) - {"absolute", "allow", "promises", "banned", "disable"}
        if unknown:
            raise KefuError(f"{source}: unknown key(s) {sorted(unknown)}; expected absolute, allow, promises, banned, "
                            "disable")

        def expect(key: str, kind: type) -> Any:
            value = data.get(key)
            if value is not None and not isinstance(value, kind):
                raise KefuError(f"{source}: `{key}` must be a {kind.__name__}")
            return value

        for term, replacement in (expect("absolute", dict) or {}).items():
            rules.absolute[str(term)] = "" if replacement is None else str(replacement)
        rules.allow.extend(str(a) for a in expect("allow", list) or [])
        for i, promise in enumerate(expect("promises", list) or []):
            if not isinstance(promise, dict) or "pattern" not in promise:
                raise KefuError(f"{source}: promises[{i}] needs a `pattern`")
            try:
                re.compile(str(promise["pattern"]))
            except re.error as exc:
                raise KefuError(f"{source}: promises[{i}].pattern is not a valid regex: {exc}") from exc
            entry = {"id": str(promise.get("id") or f"promise:custom{i}"),
                     "article": str(promise.get("article") or ART_FALSE), "pattern": str(promise["pattern"])}
            if promise.get("clause") is not None:
                entry["clause"] = str(promise["clause"])
            else:
                entry["replacement"] = str(promise.get("replacement") or "")
            rules.promises.append(entry)
        for category, words in (expect("banned", dict) or {}).items():
            if not isinstance(words, list):
                raise KefuError(f"{source}: banned.{category} must be a list of words")
            rules.banned.setdefault(str(category), []).extend(str(w) for w in words)
        rules.disable.update(str(d) for d in expect("disable", list) or [])
        rules.source = str(source)
        return rules

    # --- compiled rules (cached per instance) -------------------------------------------------------------------
    def _compiled(self) -> list[_Rule]:
        key = (tuple(sorted(self.absolute.items())), tuple(self.allow), tuple(tuple(sorted(p.items())) for p in
               self.promises), tuple((k, tuple(v)) for k, v in sorted(self.banned.items())), tuple(sorted(self.disable)))
        cached = getattr(self, "_cache", None)
        if cached and cached[0] == key:
            return cached[1]
        compiled: list[_Rule] = []
        for promise in self.promises:
            if self._enabled(promise["id"], "promise"):
                compiled.append(_Rule(promise["id"], "advertising", promise.get("article", ART_FALSE),
                                      re.compile(promise["pattern"], re.I), promise.get("replacement"),
                                      promise.get("clause")))
        for category, words in self.banned.items():
            words = [w for w in words if w]
            if words and self._enabled(f"banned:{category}", "banned"):
                compiled.append(_Rule(f"banned:{category}", "banned", ART_BANNED.get(category, ART_BANNED["violence"]),
                                      _alternation(words), None, None))
        terms = [t for t in self.absolute if t and self._enabled(f"absolute:{t}", "absolute")]
        self._absolute = _alternation(terms) if terms else None
        allow = [a for a in self.allow if a]
        # Lookahead so overlapping allow phrases are all found.
        self._allow = re.compile("(?=(" + "|".join(re.escape(a) for a in sorted(set(allow), key=len, reverse=True))
                                 + "))") if allow else None
        self._cache = (key, compiled)
        return compiled

    def _enabled(self, rule_id: str, family: str) -> bool:
        return rule_id not in self.disable and family not in self.disable


def _alternation(words: Iterable[str]) -> re.Pattern[str]:
    """One regex matching any word, longest first, so 全网最低价 wins over 最低价."""
    return re.compile("|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True)), re.I)


_DEFAULT_RULES: ComplianceRules | None = None


def _rules(rules: ComplianceRules | None) -> ComplianceRules:
    global _DEFAULT_RULES
    if rules is not None:
        return rules
    if _DEFAULT_RULES is None:
        _DEFAULT_RULES = ComplianceRules()
    return _DEFAULT_RULES


def _protected(text: str, allow: re.Pattern[str] | None) -> list[tuple[int, int]]:
    """Spans of allow-listed phrases (longest phrase at each position)."""
    if allow is None:
        return []
    return [(m.start(), m.start() + len(m.group(1))) for m in allow.finditer(text)]


def _is_composition(text: str, start: int, end: int) -> bool:
    """True when a 100% sits next to a material or 含量/成分: a fibre-content fact, not a claim."""
    before, after = text[max(0, start - 8):start], text[end:end + 6].lstrip()
    before = re.split(r"[，。！？；,.!?;\n]", before)[-1]  # only the same clause counts
    after = re.split(r"[，。！？；,.!?;\n+＋、]", after)[0]
    return any(m in after for m in MATERIALS) or any(before.rstrip(" ：:").endswith(m) for m in MATERIALS) \
        or any(m in before for m in ("含量", "成分", "面料"))


def _absolute_hits(text: str, rules: ComplianceRules) -> list[Violation]:
    pattern = rules._absolute  # set by rules._compiled(), which check() calls first
    if pattern is None:
        return []
    protected = _protected(text, rules._allow)
    hits = []
    for m in pattern.finditer(text):
        start, end = m.span()
        if any(ps <= start and end <= pe for ps, pe in protected):
            continue
        term = m.group(0)
        if term in PERCENT_TERMS and _is_composition(text, start, end):
            continue
        replacement = rules.absolute.get(term)
        if replacement is None:  # matched case-insensitively
            replacement = next((v for k, v in rules.absolute.items() if k.lower() == term.lower()), "")
        hits.append(Violation(f"absolute:{term}", "advertising", ART_ABSOLUTE, start, end, term, replacement))
    return hits


def _rule_hits(text: str, rules: ComplianceRules) -> list[Violation]:
    hits = []
    for rule in rules._compiled():
        for m in rule.pattern.finditer(text):
            if m.end() == m.start():
                continue
            if rule.category == "banned":
                suggestion = "*" * (m.end() - m.start())
            elif rule.replacement is not None:
                suggestion = m.expand(rule.replacement)
            else:
                suggestion = rule.clause
            hits.append(Violation(rule.id, rule.category, rule.article, m.start(), m.end(), m.group(0), suggestion))
    return hits


# ----------------------------------------------------------------------------------------------------------------
# Promotion claims
# ----------------------------------------------------------------------------------------------------------------
_CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}
_NUM = r"\d+(?:\.\d+)?|[零〇一二两三四五六七八九十百千万]+"
_FULL_RE = re.compile(rf"(每)?满\s*({_NUM})\s*(?:元|块)?\s*(?:立减|减|-|－)\s*({_NUM})\s*(?:元|块)?")
_DISCOUNT_RE = re.compile(r"(?<![\d.])(\d{1,2}(?:\.\d)?)\s*折|([一二三四五六七八九])([一二三四五六七八九])?折")


def _cn_number(token: str) -> float:
    """'300' -> 300, '三百' -> 300, '五十' -> 50, '十五' -> 15, '三百五' -> 350."""
    if re.fullmatch(r"\d+(?:\.\d+)?", token):
        return float(token)
    total, current, last_unit = 0, 0, 1
    for ch in token:
        if ch in _CN_DIGITS:
            current = _CN_DIGITS[ch]
        elif ch in _CN_UNITS:
            unit = _CN_UNITS[ch]
            total += (current or 1) * unit
            current, last_unit = 0, unit
    if current:
        total += current * (last_unit // 10 if last_unit >= 10 else 1)
    return float(total)


@dataclass(frozen=True)
class PromotionClaim:
    """A parsed claim: kind 'full' (满X减Y), 'per' (每满X减Y) or 'discount' (N折, rate in percent)."""

    kind: str
    threshold_fen: int = 0
    reduction_fen: int = 0
    rate_percent: int = 0

    def describe(self) -> str:
        if self.kind == "discount":
            rate = self.rate_percent / 10
            return f"{rate:g}折"
        prefix = "每满" if self.kind == "per" else "满"
        return f"{prefix}{self.threshold_fen / 100:g}减{self.reduction_fen / 100:g}"


def parse_promotion_claims(text: str) -> list[tuple[int, int, PromotionClaim]]:
    """Every 满X减Y / 每满X减Y / N折 claim in ``text`` as (start, end, claim); amounts become fen."""
    found = []
    for m in _FULL_RE.finditer(text):
        kind = "per" if m.group(1) else "full"
        threshold, reduction = _cn_number(m.group(2)), _cn_number(m.group(3))
        found.append((m.start(), m.end(), PromotionClaim(kind, round(threshold * 100), round(reduction * 100))))
    for m in _DISCOUNT_RE.finditer(text):
        if m.group(1):
            value = m.group(1)
            rate = round(float(value) * 10) if ("." in value or len(value) == 1) else int(value)
        else:
            rate = _CN_DIGITS[m.group(2)] * 10 + (_CN_DIGITS[m.group(3)] if m.group(3) else 0)
        if 0 < rate < 100:
            found.append((m.start(), m.end(), PromotionClaim("discount", rate_percent=rate)))
    return sorted(found, key=lambda item: item[0])


def active_claims(promotions: Iterable[dict[str, Any]]) -> list[PromotionClaim]:
    """The claims the shop's active promotions support: their structured fields plus their descriptions."""
    claims: list[PromotionClaim] = []
    for promo in promotions:
        if not isinstance(promo, dict):
            continue
        kind = promo.get("type")
        for tier in promo.get("tiers") or []:
            if isinstance(tier, dict) and "threshold_fen" in tier and "reduction_fen" in tier:
                claims.append(PromotionClaim("per" if kind == "per_full_reduction" else "full",
                                             int(tier["threshold_fen"]), int(tier["reduction_fen"])))
        if "per_threshold_fen" in promo and "per_reduction_fen" in promo:
            claims.append(PromotionClaim("per", int(promo["per_threshold_fen"]), int(promo["per_reduction_fen"])))
        if kind == "coupon" and "threshold_fen" in promo and "reduction_fen" in promo:
            claims.append(PromotionClaim("full", int(promo["threshold_fen"]), int(promo["reduction_fen"])))
        if "rate_percent" in promo:
            claims.append(PromotionClaim("discount", rate_percent=int(promo["rate_percent"])))
        claims.extend(claim for _, _, claim in parse_promotion_claims(str(promo.get("description") or "")))
    return claims


def _supported(claim: PromotionClaim, allowed: list[PromotionClaim]) -> bool:
    if claim in allowed:
        return True
    # "满300减50" understates "每满300减50" but is true at 300; the reverse is not.
    return claim.kind == "full" and PromotionClaim("per", claim.threshold_fen, claim.reduction_fen) in allowed


def _promotion_hits(text: str, promotions: list[dict[str, Any]]) -> list[Violation]:
    allowed = active_claims(promotions)
    descriptions = "，".join(str(p.get("description")) for p in promotions if isinstance(p, dict)
                            and p.get("description"))
    hits = []
    for start, end, claim in parse_promotion_claims(text):
        if _supported(claim, allowed):
            continue
        same_threshold = [a for a in allowed if a.kind == claim.kind and claim.kind != "discount"
                          and a.threshold_fen == claim.threshold_fen]
        if same_threshold:
            suggestion = same_threshold[0].describe()
        elif descriptions:
            suggestion = f"当前活动（{descriptions}）"
        else:
            suggestion = "优惠（以活动页面为准）"
        hits.append(Violation("promotion-mismatch", "promotion", ART_PRICE, start, end, text[start:end], suggestion))
    return hits


# ----------------------------------------------------------------------------------------------------------------
# PII in replies (another customer's data)
# ----------------------------------------------------------------------------------------------------------------
PII_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("email", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")),
    ("id_card", re.compile(r"(?<![0-9A-Za-z])[1-9]\d{5}(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx]"
                           r"(?![0-9A-Za-z])")),
    ("bank_card", re.compile(r"(?<!\d)(?:\d{4}[ -]){3}\d{4,7}(?!\d)|(?<!\d)[3-6]\d{15,18}(?!\d)")),
    ("order_no", re.compile(r"(?<!\d)\d{16}(?!\d)")),
    ("tracking_no", re.compile(r"(?<![A-Za-z0-9])(?:SF|YT|ZTO|JD|JT|YD|STO|EMS|DPK)\d{10,15}(?!\d)")),
    ("mobile", re.compile(r"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d[- ]?\d{4}[- ]?\d{4}(?!\d)")),
    ("landline", re.compile(r"(?<!\d)0\d{2,3}-\d{7,8}(?!\d)")),
    ("address", re.compile(r"[\u4e00-\u9fa5]{2,6}(?:省|市|自治区)[\u4e00-\u9fa5]{1,8}(?:市|区|县|旗)"
                           r"[\u4e00-\u9fa5\d]{0,12}?(?:路|街|道|巷|弄|村|镇)[\u4e00-\u9fa5\d-]{0,8}?\d+号")),
]
# Same placeholders as the data stage's masker (kefu.text.pii.PLACEHOLDERS), so masked replies look like masked data.
PII_PLACEHOLDERS = {"email": "[邮箱]", "id_card": "[身份证号]", "bank_card": "[银行卡号]", "order_no": "[订单号]",
                    "tracking_no": "[物流单号]", "mobile": "[手机号]", "landline": "[固话]", "address": "[地址]",
                    "name": "[姓名]", "ip": "[IP]", "wechat": "[微信号]", "qq": "[QQ号]"}


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _norm_pii(kind: str, value: str) -> str:
    norm = value.lower() if kind == "email" else re.sub(r"[\s+-]", "", value).upper()
    if kind == "mobile" and norm.startswith("86") and len(norm) == 13:
        norm = norm[2:]
    return norm


def find_pii(text: str) -> list[tuple[str, int, int, str]]:
    """(kind, start, end, normalised value) for each PII item. The data stage's validating detector
    (``kefu.text.pii.find_pii``: names, addresses, checksums) goes first; our patterns fill the gaps."""
    found: list[tuple[str, int, int, str]] = []
    taken: list[tuple[int, int]] = []
    try:
        from kefu.text import pii as data_pii

        for span in data_pii.find_pii(text):
            found.append((span.type, span.start, span.end, _norm_pii(span.type, span.text)))
            taken.append((span.start, span.end))
    except ImportError:  # the data stage is optional for this module
        pass
    for kind, pattern in PII_PATTERNS:
        for m in pattern.finditer(text):
            start, end = m.span()
            if any(s < end and start < e for s, e in taken):
                continue
            norm = _norm_pii(kind, m.group(0))
            if kind == "bank_card" and not _luhn(norm):
                continue
            found.append((kind, start, end, norm))
            taken.append((start, end))
    return sorted(found, key=lambda item: item[1])


def _placeholder(kind: str, value: str) -> str:
    """The data stage's mask for this value when it recognises it, else our own placeholder."""
    try:
        from kefu.text import pii as data_pii  # owned by the data stage; optional

        masked = data_pii.mask(value)
        masked = masked[0] if isinstance(masked, tuple) else masked
        if isinstance(masked, str) and masked and masked != value:
            return masked
    except Exception:  # the data stage's masker is optional here; fall back to ours
        pass
    return PII_PLACEHOLDERS.get(kind, "[个人信息]")


@lru_cache(maxsize=256)
def _own_pii(contexts: tuple[str, ...]) -> frozenset[str]:
    """Normalised PII values of a customer's context; cached because serve checks every sentence of a stream
    against the same context."""
    return frozenset(norm for context in contexts for _, _, _, norm in find_pii(context))


def _masked_match(norm: str, own: frozenset[str]) -> bool:
    """A partly masked value (182****9054) is the customer's own when it fits one of their full values."""
    if "*" not in norm:
        return False
    pattern = re.compile("".join(r"\w" if ch == "*" else re.escape(ch) for ch in norm))
    return any(pattern.fullmatch(value) for value in own)


def scan_output(reply: str, context_texts: list[str], *, allow: Iterable[str] = ()) -> list[Violation]:
    """PII in a model ``reply`` that is not in this customer's own ``context_texts`` (their turns, their orders and
    tool results): i.e. another customer's data leaking through the model. ``allow``: the shop's own public details
    (after-sales address, hotline) — a span inside one is never flagged. Each hit's suggestion is the placeholder."""
    allow = sorted({a for a in allow if a}, key=len, reverse=True)
    allow_re = re.compile("(?=(" + "|".join(re.escape(a) for a in allow) + "))") if allow else None
    return _scan(reply, context_texts, allow_re)


def _scan(reply: str, context_texts: list[str], allow_re: re.Pattern[str] | None) -> list[Violation]:
    contexts = tuple(str(c) for c in context_texts or [])
    own = _own_pii(contexts)
    joined = "\n".join(contexts)
    protected = _protected(reply, allow_re)
    hits = []
    for kind, start, end, norm in find_pii(reply):
        if norm in own or reply[start:end] in joined or _masked_match(norm, own):
            continue
        if any(ps < end and start < pe for ps, pe in protected):  # detectors may extend past the phrase
            continue
        hits.append(Violation(f"pii-leak:{kind}", "privacy", ART_PII, start, end, reply[start:end],
                              _placeholder(kind, reply[start:end])))
    return hits


# ----------------------------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------------------------
def _normalise(text: str) -> str:
    """NFKC folds full-width forms (１００％, ＮＯ．１) so they cannot dodge the rules; lengths stay the same for the
    characters we match, so spans still index the original text."""
    return unicodedata.normalize("NFKC", text) if text.isascii() is False else text


def check(text: str, *, rules: ComplianceRules | None = None, promotions: list[dict[str, Any]] | None = None,
          context_texts: list[str] | None = None) -> list[Violation]:
    """All violations in agent ``text``, sorted by position.

    ``promotions``: the KG's active promotions (dicts with ``description`` and/or ``tiers``/``rate_percent``...); when
    given, 满X减Y / 每满X减Y / N折 claims they do not support are flagged (``[]`` means no promotion is active).
    ``context_texts``: this customer's own texts; when given, PII not found in them is flagged (see ``scan_output``).
    """
    if not isinstance(text, str):
        raise KefuError(f"compliance.check expects a str, got {type(text).__name__}")
    rules = _rules(rules)
    folded = _normalise(text)
    if len(folded) != len(text):  # NFKC changed lengths (rare ligatures): match the original to keep spans exact
        folded = text
    hits = _rule_hits(folded, rules) + _absolute_hits(folded, rules)  # _rule_hits refreshes the compiled cache
    if promotions is not None:
        hits += _promotion_hits(folded, promotions)
    if context_texts is not None:
        hits += _scan(folded, context_texts, rules._allow)  # rules._allow compiled by _rule_hits above
    for hit in hits:
        hit.text = text[hit.start:hit.end]
    return sorted(hits, key=lambda v: (v.start, -(v.end - v.start)))


_CLAUSE_END = "，。！？；,.!?;\n"


def _clause_span(text: str, start: int, end: int) -> tuple[int, int]:
    left = start
    while left > 0 and text[left - 1] not in _CLAUSE_END:
        left -= 1
    right = end
    while right < len(text) and text[right] not in _CLAUSE_END:
        right += 1
    return left, right


def _apply(text: str, hits: list[Violation], rules: ComplianceRules) -> str:
    compiled = {r.id: r for r in rules._compiled()}
    edits: list[tuple[int, int, str]] = []
    for hit in hits:
        rule = compiled.get(hit.rule)
        if rule is not None and rule.replacement is None and rule.clause is not None:
            start, end = _clause_span(text, hit.start, hit.end)
            replacement = rule.clause
        else:
            start, end = hit.start, hit.end
            replacement = hit.suggestion if hit.suggestion is not None else "*" * (end - start)
        if any(s < end and start < e for s, e, _ in edits):
            continue  # already covered by an earlier (wider or earlier) edit
        edits.append((start, end, replacement))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def rewrite(text: str, *, rules: ComplianceRules | None = None, promotions: list[dict[str, Any]] | None = None,
            context_texts: list[str] | None = None, max_passes: int = 4) -> tuple[str, list[Violation]]:
    """A compliant version of ``text`` and the violations found (spans index the input). Terms are replaced
    (最好 -> 很好, 第一 -> 领先, 绝对 deleted), wrong promotion claims corrected, banned words starred, leaked PII
    masked, and clauses making medical/education/investment/result promises replaced by a neutral statement.

    Removing one hit can expose another (a phone number glued to "NO.1" becomes a separate number once "NO.1" is
    replaced), so passes repeat until the text is clean; after ``max_passes`` whatever is still flagged is starred.
    """
    rules = _rules(rules)
    first = check(text, rules=rules, promotions=promotions, context_texts=context_texts)
    hits, out = first, text
    for _ in range(max_passes):
        if not hits:
            break
        out = _apply(out, hits, rules)
        hits = check(out, rules=rules, promotions=promotions, context_texts=context_texts)
    for hit in sorted(hits, key=lambda v: v.start, reverse=True):  # last resort: never return a flagged span
        out = out[:hit.start] + "*" * (hit.end - hit.start) + out[hit.end:]
    return out, first
