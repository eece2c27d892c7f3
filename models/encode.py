"""Batch encoding shared by every stage that runs the model on (image, question[, answer]).

Generation prompts are left-padded (new tokens append on the right of every row); teacher-
forced examples are right-padded with labels on the completion only. The same chat template
(models/chat.py) renders both, so training and inference see the same text.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from PIL import Image

from models.chat import render_prompt, build_messages


def _with_side(processor: Any, side: str):
    tok = processor.tokenizer

    class _Side:
        def __enter__(self):
            self.old = tok.padding_side
            tok.padding_side = side

        def __exit__(self, *exc):
            tok.padding_side = self.old

    return _Side()


def encode_prompts(
    processor: Any, images: Sequence[Image.Image], questions: Sequence[str], device: Any = "cpu"
) -> dict[str, torch.Tensor]:
    """Left-padded generation inputs: input_ids, attention_mask, pixel_values (+ model extras)."""
    texts = [render_prompt(processor, q) for q in questions]
    with _with_side(processor, "left"):
        batch = processor(images=list(images), text=texts, padding=True, return_tensors="pt")
    return {k: v.to(device) for k, v in batch.items()}


def completion_text(processor: Any, response: str) -> str:
    """What follows the generation prompt in a full conversation: ' <response></s>'.

    Derived from the chat template itself (full render minus prompt render), so it is right
    for any model family's template.
    """
    q = "?"
    full = processor.apply_chat_template(build_messages(q, response), tokenize=False)
    prompt = render_prompt(processor, q)
    assert full.startswith(prompt), "chat template: prompt is not a prefix of the full text"
    return full[len(prompt):]


def encode_examples(
    processor: Any,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    responses: Sequence[str],
    device: Any = "cpu",
) -> dict[str, torch.Tensor]:
    """Right-padded teacher-forced inputs with `labels` = completion tokens, -100 elsewhere.

    The completion's token count comes from tokenizing the completion alone; where a
    tokenizer merges across the prompt/completion boundary (checked per row), the prompt is
    encoded on its own to find the boundary instead.
    """
    prompts = [render_prompt(processor, q) for q in questions]
    comps = [completion_text(processor, r) for r in responses]
    tok = processor.tokenizer
    with _with_side(processor, "right"):
        batch = processor(
            images=list(images), text=[p + c for p, c in zip(prompts, comps)],
            padding=True, return_tensors="pt",
        )
        ids, mask = batch["input_ids"], batch["attention_mask"]
        lengths = mask.sum(1).tolist()
        comp_ids = tok(comps, add_special_tokens=False)["input_ids"]
        starts = []
        for row, (n, c) in enumerate(zip(lengths, comp_ids)):
            start = n - len(c)
            if ids[row, start:n].tolist() != c:
                one = processor(images=[images[row]], text=[prompts[row]], return_tensors="pt")
                start = int(one["attention_mask"].sum())
            starts.append(start)
    labels = torch.full_like(ids, -100)
    for row, (s, n) in enumerate(zip(starts, lengths)):
        labels[row, s:n] = ids[row, s:n]
    batch["labels"] = labels
    return {k: v.to(device) for k, v in batch.items()}


def token_logprobs(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-token log-probs of `labels` under the model (0 where label is -100), shape [B, T-1]."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    safe = labels.clamp(min=0)
    lp = torch.log_softmax(logits, dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return torch.where(labels == -100, torch.zeros_like(lp), lp)
