"""What the model is shown for one agent turn — the one owner, so training, evaluation and serving render alike.

The system message is the shop's instruction (``SYSTEM_PROMPT``) followed by the facts the knowledge graph and the
order tools gave for this turn (``facts_block``) and, when the run was trained with them, exemplars: the shop's own
replies to the most alike earlier questions that state no figure (``kefu.kg.replies.ReplyIndex.exemplars``);
then the conversation's last ``HISTORY`` messages. The model is taught to state figures only from those facts, or as
slots (``kefu.kg.slots``) that synthesis fills, and to answer in the shop's own words.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from kefu.kg.replies import ReplyIndex

SYSTEM_PROMPT = ("你是「{shop}」的在线客服。回答简洁、礼貌、准确；价格、库存、订单状态和日期只能依据下面给出的事实，"
                 "不确定时请如实说明并建议转人工。")
FACTS_HEADER = "已知事实："
EXEMPLARS_HEADER = "本店以往的类似回复（只参考说法，数字以已知事实为准）："
HISTORY = 7  # messages of the conversation the model sees
EXEMPLAR_MIN_SIMILARITY = 0.3  # how alike their asked message must be (ReplyMatch.similarity)
EXEMPLAR_CHARS = 80  # each cut to this many characters


def system_prompt(shop: str = "本店") -> str:
    """The shop's instruction, without facts."""
    return SYSTEM_PROMPT.format(shop=shop)


def conversation(messages: Sequence[dict[str, str]],
                 session_turns: Sequence[dict[str, str]] = ()) -> list[dict[str, str]]:
    """The last ``HISTORY`` messages the model sees (a session's earlier turns when the client sent only the new
    question). System messages the client sent are dropped: the shop's instruction is the only one."""
    convo = [dict(role=m["role"], content=m["content"]) for m in messages if m["role"] != "system"]
    if len(convo) <= 1 and len(session_turns) > 1:
        convo = [dict(m) for m in session_turns[:-1]] + convo[-1:]
    return convo[-HISTORY:]


def turn_exemplars(replies: "ReplyIndex | None", convo: Sequence[dict[str, str]], k: int,
                   exclude_dialogue: str | None = None) -> list[str]:
    """The ``k`` past replies shown for the turn after ``convo`` (the :func:`conversation` the model sees): alike
    enough (``EXEMPLAR_MIN_SIMILARITY``), stating no figure, cut to ``EXEMPLAR_CHARS``; none without an index."""
    if replies is None or k <= 0:
        return []
    return replies.exemplars(convo, k, min_similarity=EXEMPLAR_MIN_SIMILARITY, exclude_dialogue=exclude_dialogue,
                             max_chars=EXEMPLAR_CHARS)


def model_messages(messages: Sequence[dict[str, str]], facts_block: str | None = None, *, shop: str = "本店",
                   session_turns: Sequence[dict[str, str]] = (),
                   exemplars: Sequence[str] = ()) -> list[dict[str, str]]:
    """The messages for one agent turn: the system prompt with this turn's facts and ``exemplars``, then the
    :func:`conversation`."""
    system = system_prompt(shop) + (f"\n\n{FACTS_HEADER}\n{facts_block}" if facts_block else "")
    if exemplars:
        system += f"\n\n{EXEMPLARS_HEADER}\n" + "\n".join(f"- {text}" for text in exemplars)
    return [{"role": "system", "content": system}] + conversation(messages, session_turns)
