"""Negation scope: an advertising-law term inside a negated or refusing statement is not a claim.

"不能保证治愈", "我们不做全网最低价的承诺", "没有最好只有更合适", "永久保修是不支持的", "绝对不会泄露您的信息" say what the shop
does NOT claim. The rule, on the clause (text between ，。！？；…) around a hit:

(a) a negator (不, 没, 非, 别, 未, 不能, 不会, 不是, 并非, 不支持, 不承诺 …) stands before the hit, at most ``max_gap``
    characters away, with no scope break (的, 、, 但, 而是 …) between them. Compounds that are not negations (不锈钢, 非常,
    不仅, 没问题, 不愧是, 不亚于, 不要错过 …) do not count;
(b) a refusal (不支持, 不提供, 不承诺, 做不到, 不准确, 不存在 …) follows the hit in the same clause (within 12 characters);
(c) the hit is a guarantee adverb (绝对, 百分百, 100%) that intensifies a negation right after it (绝对不会泄露).

Only text outside the hit counts, so a term whose own words carry the negation stays a violation: 无副作用,
不会有副作用, 永不褪色, 没有之一, 无与伦比, 不二之选. The words live in ``adlaw_terms.yaml`` (``negation``).
"""

from __future__ import annotations

import functools
import re

from kefu.safety.compliance.lexicon import lexicon

CLAUSE_END = "，。！？；,.!?;\n"
REFUSAL_REACH = 12


def _alternation(words: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True)))


@functools.cache
def _compiled() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    neg = lexicon().negation
    return (_alternation(neg.before), _alternation(neg.not_negators), _alternation(neg.breaks),
            _alternation(neg.refusal))


def clause_bounds(text: str, start: int, end: int) -> tuple[int, int]:
    left = start
    while left > 0 and text[left - 1] not in CLAUSE_END:
        left -= 1
    right = end
    while right < len(text) and text[right] not in CLAUSE_END:
        right += 1
    return left, right


def negated(text: str, start: int, end: int) -> bool:
    """True when ``text[start:end]`` (a hit) sits inside a negated or refusing statement (rules (a)–(c) above)."""
    neg = lexicon().negation
    before, not_negators, breaks, refusal = _compiled()
    left, right = clause_bounds(text, start, end)
    masked = [m.span() for m in not_negators.finditer(text, left, right)]

    def real(span: tuple[int, int]) -> bool:
        return not any(ms <= span[0] < me for ms, me in masked)

    # (c) 绝对不会泄露: the adverb intensifies a negation
    if text[start:end] in neg.guarantee:
        after = text[end:right].lstrip()
        if after.startswith(neg.guarantee_negators) and real((right - len(after), right)):
            return True
    # (b) 永久保修是不支持的
    for m in refusal.finditer(text, end, min(right, end + REFUSAL_REACH + 6)):
        if m.start() - end <= REFUSAL_REACH and real(m.span()):
            return True
    # (a) 不能保证治愈 / 没有最好只有更合适
    scope = left
    for m in breaks.finditer(text, left, start):
        scope = m.end()
    for m in before.finditer(text, scope, start):
        if real(m.span()) and start - m.end() <= neg.max_gap:
            return True
    return False
