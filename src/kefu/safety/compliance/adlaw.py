"""《广告法》 rules: absolute claims (最好, 第一, 100%), endorsements (特供, 国家领导人推荐), time pressure (仅此一次),
false promises (根治, 包过, 稳赚), banned content, and the per-shop rule set (``ComplianceRules``: built-in defaults
from ``adlaw_terms.yaml`` plus an optional YAML file)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from kefu.files import read_yaml_mapping
from kefu.safety.compliance.lexicon import lexicon
from kefu.safety.compliance.violation import ART_ABSOLUTE, ART_BANNED, ART_FALSE, Violation, _protected
from kefu.types import KefuError

# The defaults come from adlaw_terms.yaml (kefu.safety.compliance.lexicon), grouped by category with their sources.
# term -> compliant wording. "" deletes the word ("绝对正品" -> "正品").
DEFAULT_ABSOLUTE: dict[str, str] = lexicon().absolute()
# term -> the article its hits cite (a shop's own terms cite 第九条第（三）项)
ABSOLUTE_ARTICLES: dict[str, str] = lexicon().articles()
# Phrases that contain a listed term but are not claims; a hit inside one of these is ignored.
DEFAULT_ALLOW: list[str] = list(lexicon().allow)
# Materials: "100%纯棉", "棉100%" state a fact of composition (GB/T 29862 纤维含量标识), not a superlative.
MATERIALS = ("纯棉", "棉", "羊毛", "羊绒", "蚕丝", "真丝", "涤纶", "聚酯纤维", "聚酯", "锦纶", "尼龙", "羽绒", "鹅绒",
             "鸭绒", "亚麻", "莫代尔", "粘纤", "粘胶", "氨纶", "美利奴", "美丽诺", "美利诺", "羊驼毛", "腈纶", "天丝", "竹纤维", "牛皮",
             "皮革", "含量", "成分", "面料", "填充物", "polyester", "cotton", "wool", "nylon")
PERCENT_TERMS = {"100%", "100％", "百分之百", "百分百"}

# (rule id, pattern, replacement or None for "replace the clause with `clause`", article, clause text): the
# lexicon's clause groups (endorsement, pressure, promise:medical/result/education/investment) and regex groups
# (promise:never, well-known-mark).
DEFAULT_PROMISES: list[dict[str, str]] = lexicon().promises()

DEFAULT_BANNED: dict[str, list[str]] = {
    "political": ["颠覆国家政权", "分裂国家", "煽动颠覆", "反动", "邪教"],
    "pornographic": ["色情", "黄片", "裸聊", "约炮", "成人视频", "援交", "一夜情"],
    "gambling": ["赌博", "博彩", "赌场", "网赌", "百家乐", "六合彩", "时时彩", "赌球", "下注"],
    "violence": ["杀了你", "弄死你", "砍死", "炸弹", "爆炸物", "枪支", "恐怖袭击", "血洗"],
    "discriminatory": ["黑鬼", "支那", "残废", "智障", "低能儿", "乡巴佬", "娘炮", "死胖子"],
}



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
        data = read_yaml_mapping(source, holds="rules (absolute, allow, promises, banned, disable)",
                                 missing="compliance rules file not found")
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
        article = ABSOLUTE_ARTICLES.get(term) or next((v for k, v in ABSOLUTE_ARTICLES.items()
                                                       if k.lower() == term.lower()), ART_ABSOLUTE)
        hits.append(Violation(f"absolute:{term}", "advertising", article, start, end, term, replacement))
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

