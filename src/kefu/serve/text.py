"""Text helpers shared by the router and cache: a question's wording for matching and the entities that change its
answer (both read the text after ``kefu.text.normalize.simplify``). Order numbers are ``kefu.text.claims``'s."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kefu.text.claims import ORDER_NO, order_numbers
from kefu.text.normalize import simplify

SKU = re.compile(r"(?<![A-Za-z0-9])[A-Z]{1,4}-\d{3,6}(?!\d)", re.I)
# sizes: letter sizes, shoe/garment numbers with a unit, height/bust like 170/92A, 均码
SIZE = re.compile(r"(?<![A-Za-z])(?:[2-5]?X{1,3}L|XS|S|M|L)(?![A-Za-z])|\d{2,3}(?:/\d{2,3}[A-Z]?)|\d{2}(?:\.5)?码|均码",
                  re.I)
COLORS = ("黑色", "白色", "红色", "蓝色", "绿色", "灰色", "黄色", "紫色", "粉色", "橙色", "棕色", "卡其色", "米色",
          "藏青色", "军绿色", "深灰", "浅灰", "深蓝", "浅蓝", "酒红", "黑", "白", "红", "蓝", "绿", "灰", "黄", "紫", "粉",
          "橙", "棕")
COLOR = re.compile("|".join(sorted(COLORS, key=len, reverse=True)))
NEGATION = re.compile(r"[不没别无未非]")
_FILLER = re.compile(r"(?:请问|你好|您好|麻烦|亲爱的|亲|哈喽|在吗|谢谢|[吗呢吧啊呀哦嘛哈呐啦])")
_PUNCT = re.compile(r"[\s\W_]+", re.U)


@dataclass(frozen=True)
class KeyEntities:
    """What must match for two questions to share an answer."""

    order_nos: tuple[str, ...] = ()
    skus: tuple[str, ...] = ()
    sizes: tuple[str, ...] = ()
    colors: tuple[str, ...] = ()
    negations: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()

    def signature(self) -> str:
        return "|".join(",".join(part) for part in (self.order_nos, self.skus, self.sizes, self.colors,
                                                    self.negations, self.numbers))


def key_entities(text: str) -> KeyEntities:
    """Order numbers, SKUs, sizes, colours, negations and other numbers in ``text``: two questions share a cached
    answer only when these agree."""
    text = simplify(text)
    orders = tuple(order_numbers(text))
    rest = ORDER_NO.sub(" ", text)
    skus = tuple(s.upper() for s in SKU.findall(rest))
    rest = SKU.sub(" ", rest)
    sizes = tuple(s.upper() for s in SIZE.findall(rest))
    colors = tuple(COLOR.findall(rest))
    negs = tuple(NEGATION.findall(rest))
    numbers = tuple(re.findall(r"\d+(?:\.\d+)?", SIZE.sub(" ", rest)))
    return KeyEntities(orders, skus, sizes, colors, negs, numbers)


def normalise(text: str) -> str:
    """The question's wording with case, width, script, punctuation and polite filler removed."""
    text = simplify(text).lower()
    text = _FILLER.sub("", text)
    return _PUNCT.sub("", text)
