"""Chat templates and the one conversational message format used across the project.

Every stage (SFT and DPO datasets for TRL, generation, scoring) builds its conversations with
`build_messages` and renders prompts with `render_prompt`, so the text a model is trained on
and the text it is prompted with at generation time cannot drift apart.

Both templates below share three properties that TRL and our generation code rely on:
  * they emit BOS themselves where the model family uses one (TRL tokenizes the rendered text
    with `add_special_tokens=False`, and our tokenizers add no special tokens on their own);
  * message `content` may be a plain string or a list of blocks
    (`{"type": "image"}`, `{"type": "text", "text": ...}`);
  * the prompt rendered with `add_generation_prompt=True` is an exact text prefix of the same
    conversation rendered with the assistant answer, and ends just before the space that
    starts the answer, so BPE never merges across the prompt/completion boundary.
"""

from __future__ import annotations

from typing import Any

# LLaVA-1.5 style: "<s>[system ]USER: <image>\n{question} ASSISTANT: {answer}</s>".
# `{% generation %}` marks the assistant tokens for `return_assistant_tokens_mask`.
LLAVA_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{%- set blocks = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set blocks = message['content'] -%}{%- endif -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- for b in blocks if b['type'] == 'text' -%}{{ b['text'] }}{%- endfor -%}{{ ' ' }}"
    "{%- elif message['role'] == 'user' -%}"
    "{{ 'USER: ' }}"
    "{%- for b in blocks -%}"
    "{%- if b['type'] == 'image' -%}{{ '<image>\\n' }}"
    "{%- elif b['type'] == 'text' -%}{{ b['text'] }}{%- endif -%}"
    "{%- endfor -%}{{ ' ' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ 'ASSISTANT:' }}{% generation %}"
    "{%- for b in blocks if b['type'] == 'text' -%}{{ ' ' + b['text'] }}{%- endfor -%}"
    "{{ eos_token }}{% endgeneration %}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ 'ASSISTANT:' }}{%- endif -%}"
)

# Qwen2-VL style (ChatML); no BOS, like the real Qwen tokenizers. The assistant answer starts
# right after "assistant\n", which is a safe boundary for byte-level BPE.
QWEN2VL_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}"
    "{%- set blocks = [{'type': 'text', 'text': message['content']}] -%}"
    "{%- else -%}{%- set blocks = message['content'] -%}{%- endif -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' -%}{% generation %}"
    "{%- for b in blocks if b['type'] == 'text' -%}{{ b['text'] }}{%- endfor -%}"
    "{{ '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{%- else -%}"
    "{%- for b in blocks -%}"
    "{%- if b['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif b['type'] == 'text' -%}{{ b['text'] }}{%- endif -%}"
    "{%- endfor -%}{{ '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def build_messages(
    question: str, answer: str | None = None, system: str | None = None
) -> list[dict[str, Any]]:
    """Conversation with one image and one question, optionally the assistant's answer.

    The list-of-blocks content is what TRL's VLM collators and every HF chat template accept.

    >>> build_messages("How many?", "2")[1]
    {'role': 'assistant', 'content': [{'type': 'text', 'text': '2'}]}
    """
    messages: list[dict[str, Any]] = []
    if system is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
    messages.append(
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    )
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def render_prompt(processor: Any, question: str, system: str | None = None) -> str:
    """Generation prompt text (ends where the assistant's answer starts)."""
    return processor.apply_chat_template(
        build_messages(question, system=system), tokenize=False, add_generation_prompt=True
    )
