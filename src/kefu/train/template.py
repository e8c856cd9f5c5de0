"""The one chat template: how a dialogue becomes text and tokens, identically for training, evaluation and serving.

Rule: the tokenizer's own ``chat_template`` when it has one; otherwise a built-in template:

* **gemma** — chosen when ``<start_of_turn>`` and ``<end_of_turn>`` are single tokens of the vocabulary (Gemma base
  models ship without a chat template)::

      <start_of_turn>user\\n{system}\\n\\n{customer}<end_of_turn>\\n<start_of_turn>model\\n{agent}<end_of_turn>\\n

  The system prompt goes at the top of the first customer turn, as Gemma's instruction-tuned models expect. When
  a dialogue opens with an agent turn, the system prompt is a user turn of its own.
* **chatml** — any other tokenizer: ``<|im_start|>{role}\\n{content}<|im_end|>\\n``.

The built-in text carries no BOS: tokenise it with ``add_special_tokens=True`` (what vLLM's completion endpoint
and ``tokenizer(text)`` do). A tokenizer's own template usually writes the BOS itself, so its text is tokenised with
``add_special_tokens=False``. :func:`encode_prompt` and :func:`encode_dialogue` apply that rule, so a prompt's
tokens are exactly the prefix the model was trained on. Supervised tokens are each agent message's content plus
its end-of-turn marker (so the model learns to stop); everything else is masked with -100.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from kefu.types import KefuError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100
AGENT_ROLES = ("assistant",)
TrainOn = Literal["all_assistant", "last_assistant"]

_GEMMA = {"start": "<start_of_turn>", "end": "<end_of_turn>", "user": "user", "assistant": "model"}
_CHATML = {"start": "<|im_start|>", "end": "<|im_end|>"}


def template_kind(tokenizer: "PreTrainedTokenizerBase") -> str:
    """``"tokenizer"`` (its own chat template), ``"gemma"`` or ``"chatml"`` (built-in)."""
    if getattr(tokenizer, "chat_template", None):
        return "tokenizer"
    return "gemma" if all(_single_token(tokenizer, tok) is not None for tok in (_GEMMA["start"], _GEMMA["end"])) \
        else "chatml"


def _single_token(tokenizer, text: str) -> int | None:
    """The id of ``text`` when it is one vocabulary entry (O(1): never builds the 262k-entry vocab dict)."""
    token_id = tokenizer.convert_tokens_to_ids(text)
    if token_id is None or token_id == tokenizer.unk_token_id or isinstance(token_id, list):
        return None
    return token_id


def stop_strings(tokenizer: "PreTrainedTokenizerBase") -> list[str]:
    """Strings that end an agent turn in generation (pass to vLLM ``stop`` / HF ``stop_strings``)."""
    kind = template_kind(tokenizer)
    if kind == "gemma":
        return [_GEMMA["end"]]
    if kind == "chatml":
        return [_CHATML["end"]]
    stops = [tokenizer.eos_token] if tokenizer.eos_token else []
    if "<|im_end|>" in (tokenizer.chat_template or "") and "<|im_end|>" not in stops:
        stops.append("<|im_end|>")
    if "<end_of_turn>" in (tokenizer.chat_template or "") and "<end_of_turn>" not in stops:
        stops.append("<end_of_turn>")
    return stops


def stop_token_ids(tokenizer: "PreTrainedTokenizerBase") -> list[int]:
    """Token ids ending an agent turn: the stop strings that are single tokens, plus eos."""
    ids = []
    for text in stop_strings(tokenizer) + ([tokenizer.eos_token] if tokenizer.eos_token else []):
        token_id = _single_token(tokenizer, text)
        if token_id is not None and token_id not in ids:
            ids.append(token_id)
    return ids


def prompt_add_special_tokens(tokenizer: "PreTrainedTokenizerBase") -> bool:
    """Whether :func:`render_prompt` text must be tokenised with ``add_special_tokens=True``."""
    return template_kind(tokenizer) != "tokenizer"


def _check_messages(messages: list[dict]) -> None:
    for number, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("system", "user", "assistant"):
            raise KefuError(f"message {number}: role must be system, user or assistant, got {role!r}")
        if not isinstance(message.get("content"), str):
            raise KefuError(f"message {number}: content must be a string")


def _segments(tokenizer, messages: list[dict], add_generation_prompt: bool) -> list[tuple[str, bool]]:
    """The built-in rendering as ``(text, supervised)`` pieces; joined they are the prompt/dialogue text."""
    kind = template_kind(tokenizer)
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    turns = [m for m in messages if m["role"] != "system"]
    out: list[tuple[str, bool]] = []
    if kind == "gemma":
        start, end = _GEMMA["start"], _GEMMA["end"]
        pending_system = system
        if pending_system and (not turns or turns[0]["role"] != "user"):
            out.append((f"{start}user\n{pending_system}{end}\n", False))
            pending_system = ""
        for message in turns:
            if message["role"] == "user":
                content = f"{pending_system}\n\n{message['content']}" if pending_system else message["content"]
                pending_system = ""
                out.append((f"{start}user\n{content}{end}\n", False))
            else:
                out.append((f"{start}model\n", False))
                out.append((f"{message['content']}{end}", True))
                out.append(("\n", False))
        if add_generation_prompt:
            out.append((f"{start}model\n", False))
        return out
    start, end = _CHATML["start"], _CHATML["end"]
    if system:
        out.append((f"{start}system\n{system}{end}\n", False))
    for message in turns:
        if message["role"] == "user":
            out.append((f"{start}user\n{message['content']}{end}\n", False))
        else:
            out.append((f"{start}assistant\n", False))
            out.append((f"{message['content']}{end}", True))
            out.append(("\n", False))
    if add_generation_prompt:
        out.append((f"{start}assistant\n", False))
    return out


def _apply_own(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except Exception as exc:  # jinja errors: e.g. templates that reject a system role or a leading agent turn
        raise KefuError(f"the tokenizer's chat template cannot render this dialogue: {exc}") from exc


def render_prompt(tokenizer: "PreTrainedTokenizerBase", messages: list[dict], *,
                  add_generation_prompt: bool = True) -> str:
    """The text of ``messages`` (with the agent-turn header at the end when ``add_generation_prompt``)."""
    _check_messages(messages)
    if template_kind(tokenizer) == "tokenizer":
        return _apply_own(tokenizer, messages, add_generation_prompt)
    return "".join(text for text, _ in _segments(tokenizer, messages, add_generation_prompt))


def encode_prompt(tokenizer: "PreTrainedTokenizerBase", messages: list[dict]) -> list[int]:
    """Token ids of the generation prompt for ``messages``: exactly the prefix :func:`encode_dialogue` trains on."""
    text = render_prompt(tokenizer, messages, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=prompt_add_special_tokens(tokenizer))["input_ids"])


def _agent_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """Full text and the character span of every agent turn's supervised text, in order."""
    if template_kind(tokenizer) != "tokenizer":
        text, spans, pos = "", [], 0
        for piece, supervised in _segments(tokenizer, messages, False):
            if supervised:
                spans.append((pos, pos + len(piece)))
            text += piece
            pos += len(piece)
        return text, spans
    full = _apply_own(tokenizer, messages, False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] not in AGENT_ROLES:
            continue
        before = _apply_own(tokenizer, messages[:index], True) if index else ""
        upto = _apply_own(tokenizer, messages[:index + 1], False)
        if not full.startswith(before) or not full.startswith(upto) or len(upto) < len(before):
            raise KefuError("the tokenizer's chat template is not incremental (rendering a dialogue's first turns "
                            "is not a prefix of rendering all of it), so agent turns cannot be located for training")
        end = len(upto)
        while end > len(before) and full[end - 1] in "\n ":  # keep the end-of-turn marker, not the trailing newline
            end -= 1
        spans.append((len(before), end))
    return full, spans


def encode_dialogue(tokenizer: "PreTrainedTokenizerBase", messages: list[dict], *,
                    train_on: TrainOn = "all_assistant", max_len: int | None = None,
                    supervise: int | None = None) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` for one dialogue; labels are -100 except on agent turns' tokens.

    ``train_on="last_assistant"`` supervises only the final agent turn; ``supervise`` (an index into ``messages``
    of an assistant message) only that one (a grounded example: ``kefu.train.grounded``). ``max_len`` truncates
    (callers that want dialogues split by turns instead do so before calling; see :mod:`kefu.train.data`).
    """
    _check_messages(messages)
    if train_on not in ("all_assistant", "last_assistant"):
        raise KefuError(f"train_on must be all_assistant or last_assistant, got {train_on!r}")
    text, spans = _agent_spans(tokenizer, messages)
    if supervise is not None:
        if not 0 <= supervise < len(messages) or messages[supervise]["role"] not in AGENT_ROLES:
            raise KefuError(f"supervise={supervise}: not the index of an assistant message")
        nth = sum(1 for m in messages[:supervise] if m["role"] in AGENT_ROLES)
        spans = spans[nth:nth + 1]
    elif train_on == "last_assistant":
        spans = spans[-1:]
    encoded = tokenizer(text, add_special_tokens=prompt_add_special_tokens(tokenizer), return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    labels = [IGNORE_INDEX] * len(ids)
    span_index = 0
    for position, (start, end) in enumerate(encoded["offset_mapping"]):
        if end <= start:  # special tokens added by the tokenizer (BOS) have empty offsets
            continue
        while span_index < len(spans) and start >= spans[span_index][1]:
            span_index += 1
        if span_index < len(spans) and start >= spans[span_index][0]:
            labels[position] = ids[position]
    if max_len is not None and len(ids) > max_len:
        ids, labels = ids[:max_len], labels[:max_len]
    return ids, labels
