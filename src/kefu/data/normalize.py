"""Turn-level normalisation and dialogue-level quality filters.

Cheap by design (translate tables and a handful of precompiled regexes): prepare runs them on millions of turns.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from kefu.text.normalize import to_halfwidth, to_simplified
from kefu.types import Turn

if TYPE_CHECKING:
    from kefu.data.config import FilterConfig, NormalizeConfig

# Greetings and fillers at the start of a customer turn; they carry no request and every log is full of them.
GREETING_PREFIX = re.compile(
    r"^(?:(?:亲爱的|亲亲|亲(?=[\s,，.。!！~～?？、:：]|您|你|在|请|麻烦)|您好|你好|你们好|在吗|在不在|在么|在嘛|在没|哈喽|嗨|(?:hello|hi|hey)(?![a-z])|"
    r"请问一下|请问下|请问|麻烦问一下|麻烦问下|麻烦一下|想问一下|想问下|打扰一下|打扰了|"
    r"客服(?:你好|您好|在吗|在不在|在么)|嗯嗯|嗯|哦哦)[\s,，.。!！~～?？、:：]*)+",
    re.I)
EMOJI = re.compile(
    "[\U0001F000-\U0001FAFF\U00002600-\U000027BF\U0001F1E6-\U0001F1FF\u2B00-\u2BFF\uFE0F\u200D\u20E3]+"
    r"|#E-[a-z]\[数字x\]|#E-[a-z]\d+|\[(?:微笑|笑脸|大笑|可爱|害羞|哭|流泪|抱抱|握手|玫瑰|爱心|OK|强|赞|鼓掌)\]")
SPACES = re.compile(r"[ \t\xa0\u2002-\u200b\u202f\u205f]+")
NEWLINES = re.compile(r"\s*\n\s*")
NULL_CONTENT = frozenset({"", "null", "none", "nan", "n/a", "<null>", "[null]"})

# Mojibake: replacement/control/private-use characters, UTF-8 read as Latin-1/cp1252 (Ã¤, Ã¥...), UTF-8 read as
# GBK (锟斤拷, 鍙傛暟: characters that almost never occur in real Chinese text).
GARBLED = re.compile(
    "[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ue000-\uf8ff]"
    "|锟斤拷|烫烫|屯屯"
    "|[\u00c2-\u00c3\u00e4-\u00e9][\u0080-\u00bf\u20ac\u201a-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a"
    "\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u02c6\u02dc\u2122\u2013\u2014\u2018\u2019]"
    "|[銆锛鐨鏄鍙浣鎴璇鍚瀹濂鈥閿鏂缁鍒鏈杩闂绛鐢鍟妗娆鍦閫鏃鐪闄殑]")

def normalize_text(text: str, role: str, cfg: "NormalizeConfig") -> str:
    """One turn's text, normalised per ``cfg``; greeting/filler prefixes go from customer (``user``) turns only."""
    if cfg.fullwidth_to_halfwidth:
        text = to_halfwidth(text)
    if cfg.emoji == "remove":
        text = EMOJI.sub("", text)
    if cfg.traditional_to_simplified:
        text = to_simplified(text)
    if cfg.collapse_whitespace:
        text = SPACES.sub(" ", text)
        if "\n" in text:
            text = NEWLINES.sub("\n", text)
        text = text.strip()
    if role == "user" and cfg.strip_greetings:
        match = GREETING_PREFIX.match(text)
        if match and match.end() < len(text):
            text = text[match.end():].lstrip()
    return text


def clean_turns(turns: list[Turn], cfg: "NormalizeConfig") -> list[Turn]:
    """Normalise every turn, drop empty/NULL ones, merge consecutive messages of one speaker; then drop trailing
    customer turns that never got an answer (nothing to learn from them) unless no agent ever answered (that
    dialogue is then filtered as ``no_agent_reply``, not ``empty``)."""
    out: list[Turn] = []
    sep = cfg.merge_separator
    for turn in turns:
        text = normalize_text(turn.content, turn.role, cfg)
        if text.lower() in NULL_CONTENT:
            continue
        if out and out[-1].role == turn.role:
            out[-1].content += sep + text
        else:
            out.append(Turn(turn.role, text))
    if any(t.role == "assistant" for t in out):
        while out and out[-1].role == "user":
            out.pop()
    return out


def garbled_ratio(text: str) -> float:
    """Share of characters that look like mojibake or binary junk."""
    if not text:
        return 0.0
    bad = 0
    for match in GARBLED.finditer(text):
        bad += match.end() - match.start()
    return bad / len(text)


def quality_reason(turns: list[Turn], cfg: "FilterConfig") -> str | None:
    """Why a cleaned dialogue is unusable (a reason key counted in the report), or None when it is fine."""
    if not turns:
        return "empty"
    users = sum(1 for t in turns if t.role == "user")
    agents = sum(1 for t in turns if t.role == "assistant")
    if agents == 0:
        return "no_agent_reply"
    if users == 0:
        return "no_customer_turn"
    text = "".join(t.content for t in turns)
    if GARBLED.search(text) and garbled_ratio(text) > cfg.max_garbled_ratio:
        return "garbled"
    if users + agents < cfg.min_turns or len(text) < cfg.min_chars:
        return "too_short"
    if len(text) > cfg.max_chars or users + agents > cfg.max_turns:
        return "too_long"
    return None
