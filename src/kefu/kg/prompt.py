"""What the model is shown for one agent turn — the one owner, so training, evaluation and serving render alike.

The system message is the shop's instruction (``SYSTEM_PROMPT``) followed by the facts the knowledge graph and the
order tools gave for this turn (``facts_block``); then the conversation's last ``HISTORY`` messages. The model is
taught to state figures only from those facts, or as slots (``kefu.kg.slots``) that synthesis fills.
"""

from __future__ import annotations

from typing import Sequence

SYSTEM_PROMPT = ("你是「{shop}」的在线客服。回答简洁、礼貌、准确；价格、库存、订单状态和日期只能依据下面给出的事实，"
                 "不确定时请如实说明并建议转人工。")
FACTS_HEADER = "已知事实："
HISTORY = 7  # messages of the conversation the model sees


def system_prompt(shop: str = "本店") -> str:
    """The shop's instruction, without facts."""
    return SYSTEM_PROMPT.format(shop=shop)


def model_messages(messages: Sequence[dict[str, str]], facts_block: str | None = None, *, shop: str = "本店",
                   session_turns: Sequence[dict[str, str]] = ()) -> list[dict[str, str]]:
    """The messages for one agent turn: the system prompt with this turn's facts, then the last ``HISTORY``
    messages (a session's earlier turns when the client sent only the new question). System messages the client
    sent are dropped: the shop's instruction is the only one."""
    system = system_prompt(shop) + (f"\n\n{FACTS_HEADER}\n{facts_block}" if facts_block else "")
    convo = [dict(role=m["role"], content=m["content"]) for m in messages if m["role"] != "system"]
    if len(convo) <= 1 and len(session_turns) > 1:
        convo = [dict(m) for m in session_turns[:-1]] + convo[-1:]
    return [{"role": "system", "content": system}] + convo[-HISTORY:]
