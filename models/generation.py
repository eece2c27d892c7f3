"""Greedy batched generation of responses (evaluation and quick checks)."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from PIL import Image

from models.encode import encode_prompts

Progress = Callable[[int, int], None]  # (done, total)


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def generate_greedy(
    model: Any,
    processor: Any,
    images: Sequence[Image.Image],
    questions: Sequence[str],
    max_new_tokens: int = 96,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> list[str]:
    """One greedy response per (image, question), decoded without special tokens."""
    was_training = model.training
    model.eval()
    out: list[str] = []
    tok = processor.tokenizer
    for lo in range(0, len(questions), batch_size):
        batch = encode_prompts(
            processor, images[lo:lo + batch_size], questions[lo:lo + batch_size],
            model_device(model),
        )
        gen = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        )
        new = gen[:, batch["input_ids"].shape[1]:]
        out += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
        if progress:
            progress(len(out), len(questions))
    model.train(was_training)
    return out
