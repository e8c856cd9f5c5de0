"""Character-level folding shared by the data stage (training text) and serving (matching questions).

Two strengths, on purpose: ``to_halfwidth`` folds only full-width letters, digits and the ideographic space and keeps
Chinese punctuation (training text must still read like a shop's chat); ``simplify`` is NFKC (every full-width form,
punctuation too) plus traditional → simplified, for comparing and matching text, never for text a person reads.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from zhconv import convert as _zhconv

__all__ = ["HALFWIDTH_TABLE", "FULLWIDTH", "to_halfwidth", "to_simplified", "simplify"]

# Full-width ASCII letters and digits (and the ideographic space) -> half-width. Chinese punctuation is kept.
HALFWIDTH_TABLE = {cp: cp - 0xFEE0 for cp in [*range(0xFF10, 0xFF1A), *range(0xFF21, 0xFF3B), *range(0xFF41, 0xFF5B)]}
HALFWIDTH_TABLE[0x3000] = 0x20
FULLWIDTH = re.compile("[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a\u3000]")


def to_halfwidth(text: str) -> str:
    """Full-width letters, digits and the ideographic space as ASCII (``ＸＬ　１２３`` → ``XL 123``); lengths kept."""
    return text.translate(HALFWIDTH_TABLE) if FULLWIDTH.search(text) else text  # translate() is slow on CJK text


def to_simplified(text: str) -> str:
    """Traditional Chinese as simplified (``後來`` → ``后来``), by zhconv."""
    return _zhconv(text, "zh-cn")


@lru_cache(maxsize=8192)
def simplify(text: str) -> str:
    """NFKC (full-width → half-width, punctuation included) and traditional → simplified Chinese, for matching
    (memoised: serving calls it several times per turn)."""
    return to_simplified(unicodedata.normalize("NFKC", text))
