"""Chat formatting with loss on assistant tokens only.

Each assistant turn is located by rendering the conversation up to the turn with the generation
prompt (P) and up to and including the turn (F): F must start with P, and F[len(P):] is the
assistant's text. Prompt and answer pieces are tokenized separately and concatenated, so the
label mask lines up with the tokens exactly, whatever the template looks like.
"""

from __future__ import annotations

from slm.errors import UserError

# The default template for models we build from scratch (the Alpaca-style layout of the FF line).
DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}### System:\n{{ m['content'] }}\n"
    "{% elif m['role'] == 'user' %}### Instruction:\n{{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}### Response:\n{{ m['content'] }}{{ eos_token }}\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}### Response:\n{% endif %}"
)

IGNORE_INDEX = -100


def check_tokenizer_for_chat(tokenizer, where: str) -> None:
    """eos and a chat template; the pad token is routed, not required (slm/padding.py)."""
    if tokenizer.eos_token_id is None:
        raise UserError(f"{where}: tokenizer has no eos token")
    if not tokenizer.chat_template:
        raise UserError(f"{where}: tokenizer has no chat template; set model.chat_template in the stage config")


def render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def encode_chat(tokenizer, messages: list[dict], max_length: int) -> dict:
    """input_ids and labels (-100 outside assistant turns), truncated to max_length."""
    input_ids: list[int] = []
    labels: list[int] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:i], add_generation_prompt=True)
        full = render(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise UserError(
                "chat template is not prefix-stable: the rendered prompt is not a prefix of the "
                "rendered conversation, so assistant tokens cannot be located"
            )
        context_ids = tokenizer(prompt[len(done) :], add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(full[len(prompt) :], add_special_tokens=False)["input_ids"]
        input_ids += context_ids + answer_ids
        labels += [IGNORE_INDEX] * len(context_ids) + answer_ids
        done = full
    if not input_ids:
        raise UserError("chat example without an assistant turn")
    return {"input_ids": input_ids[:max_length], "labels": labels[:max_length]}


def prompt_text(tokenizer, user_text: str, system: str | None = None, template: str | None = None) -> str:
    """The text a model is prompted with for one user turn (greedy benches, teacher answers)."""
    if template is not None:
        return template.format(prompt=user_text)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user_text}]
    return render(tokenizer, messages, add_generation_prompt=True)
