import pytest

from kefu.train.template import (IGNORE_INDEX, encode_dialogue, encode_prompt, render_prompt, stop_strings,
                                 template_kind)
from kefu.types import KefuError
from tiny import SYSTEM, make_tokenizer

CHATML_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

DIALOGUE = [
    {"role": "system", "content": SYSTEM},
    {"role": "user", "content": "你好，在吗？"},
    {"role": "assistant", "content": "亲，在的，请问有什么可以帮您？"},
    {"role": "user", "content": "可以退货吗？"},
    {"role": "assistant", "content": "支持7天无理由退货，吊牌完好即可。"},
]


def supervised_text(tok, ids, labels):
    return tok.decode([i for i, l in zip(ids, labels) if l != IGNORE_INDEX])


@pytest.mark.parametrize("tok", [make_tokenizer(), make_tokenizer(gemma_markers=False),
                                 make_tokenizer(chat_template=CHATML_TEMPLATE, gemma_markers=False)],
                         ids=["gemma", "chatml", "own-template"])
def test_train_and_generation_prefixes_are_identical(tok):
    ids, labels = encode_dialogue(tok, DIALOGUE)
    assert len(ids) == len(labels)
    for index, message in enumerate(DIALOGUE):
        if message["role"] != "assistant":
            continue
        prompt = encode_prompt(tok, DIALOGUE[:index])
        assert ids[:len(prompt)] == prompt
        # the generation header is not supervised, and the agent reply starts right after it
        assert labels[len(prompt) - 1] == IGNORE_INDEX
        assert labels[len(prompt)] != IGNORE_INDEX
        # rendered text is consistent with the tokens
        assert tok(render_prompt(tok, DIALOGUE[:index]), add_special_tokens=template_kind(tok) != "tokenizer")[
            "input_ids"] == prompt


def test_only_agent_turns_are_supervised_with_their_end_marker():
    tok = make_tokenizer()
    ids, labels = encode_dialogue(tok, DIALOGUE)
    text = supervised_text(tok, ids, labels).replace(" ", "")
    assert text == "亲，在的，请问有什么可以帮您？<end_of_turn>支持7天无理由退货，吊牌完好即可。<end_of_turn>"
    assert "退货吗" not in text and SYSTEM not in text
    assert stop_strings(tok) == ["<end_of_turn>"]


def test_last_assistant_only_and_truncation():
    tok = make_tokenizer()
    ids, labels = encode_dialogue(tok, DIALOGUE, train_on="last_assistant")
    assert supervised_text(tok, ids, labels).replace(" ", "") == "支持7天无理由退货，吊牌完好即可。<end_of_turn>"
    short_ids, short_labels = encode_dialogue(tok, DIALOGUE, max_len=20)
    assert short_ids == ids[:20] and len(short_labels) == 20


def test_gemma_layout_puts_system_in_first_user_turn():
    tok = make_tokenizer()
    text = render_prompt(tok, DIALOGUE[:2])
    assert text == f"<start_of_turn>user\n{SYSTEM}\n\n你好，在吗？<end_of_turn>\n<start_of_turn>model\n"
    # a dialogue that opens with the agent: the system prompt is its own user turn
    opened = render_prompt(tok, [DIALOGUE[0], DIALOGUE[2]], add_generation_prompt=False)
    assert opened.startswith(f"<start_of_turn>user\n{SYSTEM}<end_of_turn>\n<start_of_turn>model\n亲")


def test_bad_roles_are_clear_errors():
    with pytest.raises(KefuError, match="message 0: role"):
        encode_dialogue(make_tokenizer(), [{"role": "customer", "content": "hi"}])
