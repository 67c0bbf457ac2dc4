"""The plain chat format of a conversation, and which conversations can be rendered (core/chat.py)."""

from __future__ import annotations

import pytest

from loupe.core.chat import PLAIN_CHAT, ChatFormat, validate_messages


def test_one_user_message_is_the_one_turn_prompt():
    msgs = [{"role": "user", "content": "Tell me a joke"}]
    assert PLAIN_CHAT.render(msgs) == "User: Tell me a joke\nAssistant:" == PLAIN_CHAT.prompt("Tell me a joke")


def test_system_turns_and_a_prefill():
    msgs = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert PLAIN_CHAT.render(msgs) == "Be kind.\nUser: a\nAssistant: b\nUser: c\nAssistant:"
    prefill = [{"role": "user", "content": "a"}, {"role": "assistant", "content": " I'm sorry"}]
    assert PLAIN_CHAT.render(prefill) == "User: a\nAssistant: I'm sorry"
    fmt = ChatFormat(user="Q: ", assistant="\nA:")
    assert fmt.render(prefill[:1]) == "Q: a\nA:"


@pytest.mark.parametrize(
    ("msgs", "needle"),
    [
        ([], "empty"),
        ([{"role": "bot", "content": "x"}], "role"),
        ([{"role": "user", "content": 3}], "string"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "first"),
        ([{"role": "assistant", "content": "a"}], "alternate"),
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "alternate"),
        ([{"role": "system", "content": "a"}], "user message"),
    ],
)
def test_validate_messages(msgs, needle):
    problem = validate_messages(msgs)
    assert problem is not None and needle in problem


def test_valid_conversations_pass():
    assert validate_messages([{"role": "user", "content": ""}]) is None
    assert validate_messages([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]) is None


CHATML_SYSTEM = "<|im_start|>system\nYou are helpful.<|im_end|>\n"


def chatml(instruction: str) -> str:
    return f"{CHATML_SYSTEM}<|im_start|>user\n{instruction}<|im_end|>\n<|im_start|>assistant\n"


def test_a_templates_one_turn_format_is_the_text_around_the_instruction():
    from loupe.core.chat import format_from_template

    fmt = format_from_template(chatml)
    assert fmt.template and fmt.user == CHATML_SYSTEM + "<|im_start|>user\n"
    assert fmt.post_instruction == "<|im_end|>\n<|im_start|>assistant\n"
    assert fmt.prompt("Tell me a joke") == chatml("Tell me a joke")
    # a template's assistant turn starts right after its header's newline; the plain format's after a space
    assert fmt.reply_lead == "" and PLAIN_CHAT.reply_lead == " "
    assert ChatFormat(user="[INST] ", assistant=" [/INST]").reply_lead == " "


@pytest.mark.parametrize(
    ("render", "needle"),
    [
        (lambda x: f"<s>{x}</s>{x}", "2 times"),
        (lambda x: "<s>no instruction here</s>", "0 times"),
        (lambda x: f"<s>{x.lower()}</s>", "0 times"),
        (lambda x: f"<s>{x if x.isalpha() else x.strip('?')}</s>", "verbatim"),
    ],
)
def test_a_template_that_does_not_write_the_instruction_verbatim_gives_no_format(render, needle):
    from loupe.core.chat import format_from_template

    with pytest.raises(ValueError, match=needle):
        format_from_template(render)
