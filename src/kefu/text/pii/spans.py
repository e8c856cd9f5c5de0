"""PII types: the placeholder each is masked with (ours and JDDC's), and the span records detectors return."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

PLACEHOLDERS: dict[str, str] = {
    "mobile": "[手机号]",
    "landline": "[固话]",
    "id_card": "[身份证号]",
    "bank_card": "[银行卡号]",
    "email": "[邮箱]",
    "address": "[地址]",
    "name": "[姓名]",
    "order_no": "[订单号]",
    "tracking_no": "[物流单号]",
    "ip": "[IP]",
    "wechat": "[微信号]",
    "qq": "[QQ号]",
}
_TYPE_OF_PLACEHOLDER = {v: k for k, v in PLACEHOLDERS.items()}

# JDDC (JD.com dialogue corpus) was anonymised by its organiser; its PII placeholders map onto our types, so
# ``find_pii`` reports them as that PII (a reply must not write one out), but masking leaves every JDDC placeholder as
# the data has it: they are already anonymous, and they are the corpus's slots (``kefu.kg.slots`` fills ``[订单x]``
# from the asker's order), so train, val and test text keep the same ``[订单x]`` the model is asked to write.
JDDC_PLACEHOLDERS: dict[str, str] = {
    "[电话x]": "[手机号]",
    "[订单x]": "[订单号]",
    "[姓名x]": "[姓名]",
    "[地址x]": "[地址]",
    "[身份证号x]": "[身份证号]",
    "[邮箱x]": "[邮箱]",
}
# JDDC placeholders that are not PII of ours: kept verbatim (any other ``[...x]`` is kept too).
JDDC_KEPT: frozenset[str] = frozenset({"[数字x]", "[金额x]", "[日期x]", "[时间x]", "[站点x]", "[组织机构x]", "[链接x]"})


class _Span(NamedTuple):
    """Internal span (a tuple: cheap to build); ``type`` "_keep" marks placeholders that are left as they are."""

    type: str
    start: int
    end: int
    text: str


@dataclass(slots=True, frozen=True)
class PiiSpan:
    """One piece of PII: ``text[start:end] == text`` of the turn it came from; ``type`` is a key of PLACEHOLDERS."""

    type: str
    start: int
    end: int
    text: str
