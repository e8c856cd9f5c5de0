"""What a compliance hit is: the Violation record, and the law articles every hit cites (so reviewers can check
the basis of a hit)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

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



def _protected(text: str, allow: re.Pattern[str] | None) -> list[tuple[int, int]]:
    """Spans of allow-listed phrases (longest phrase at each position)."""
    if allow is None:
        return []
    return [(m.start(), m.start() + len(m.group(1))) for m in allow.finditer(text)]

