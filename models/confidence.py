"""Scoring a candidate by one teacher-forced pass: the log-prob of every completion token, and
the answer confidence of docs/method.md section 2: P(answer tokens | image, question, rationale)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from data.shapes import format_response
from models.encode import completion_text, encode_examples, token_logprobs
from models.generation import model_device


@torch.inference_mode()
def completion_logprobs(
    model: Any, processor: Any, images: Sequence[Image.Image], questions: Sequence[str],
    responses: Sequence[str], batch_size: int,
) -> list[torch.Tensor]:
    """Log-prob (T=1) of each completion token of each response, teacher-forced, batched."""
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    for lo in range(0, len(responses), batch_size):
        sl = slice(lo, lo + batch_size)
        batch = encode_examples(processor, images[sl], questions[sl], responses[sl],
                                model_device(model))
        lp, labels = token_logprobs(model, batch).cpu(), batch["labels"][:, 1:].cpu()
        out += [lp[i][labels[i] != -100] for i in range(len(lp))]
    model.train(was_training)
    return out


def confidence_from_logprobs(processor: Any, lp: torch.Tensor, response: str, answer: str) -> float:
    """exp(sum of the answer tokens' log-probs), given the completion's token log-probs.

    Answer tokens are found by tokenising prefixes of the completion (BPE and SentencePiece
    alike; a token joining the space and the answer, " 1", counts) and counted from the end,
    since `encode_examples` may move the completion's start where BPE merges at the prompt.
    """
    tok = processor.tokenizer
    comp = completion_text(processor, response)
    a = comp.rfind(f"Answer: {answer}")
    assert a >= 0, f"answer {answer!r} not in completion {comp!r}"
    a += len("Answer: ")
    full = tok(comp, add_special_tokens=False)["input_ids"]

    def shared(text: str) -> int:  # tokens that `text` and the full completion start with
        ids = tok(text, add_special_tokens=False)["input_ids"]
        diff = (n for n, (x, y) in enumerate(zip(ids, full)) if x != y)
        return next(diff, min(len(ids), len(full)))

    start, stop = shared(comp[:a]), shared(comp[: a + len(answer)])
    assert stop > start, f"no answer tokens for {answer!r} in {comp!r}"
    return math.exp(float(lp[len(lp) - len(full) + start: len(lp) - len(full) + stop].sum()))


def answer_confidence(
    model: Any, processor: Any, images: Sequence[Image.Image], questions: Sequence[str],
    rationales: Sequence[str], answers: Sequence[str | None], batch_size: int = 64,
) -> list[float]:
    """P(answer tokens | image, question, rationale, "Answer:"): one teacher-forced pass.

    The text scored is the output format `<rationale> Answer: <answer>.`, so this is the probability
    of the normalised answer the parser read, whatever the response's own wording. A `None`
    answer (unparsable) gives NaN.
    """
    responses = [format_response(r, a) if a is not None else None
                 for r, a in zip(rationales, answers)]
    todo = [i for i, r in enumerate(responses) if r is not None]
    lps = completion_logprobs(model, processor, [images[i] for i in todo],
                               [questions[i] for i in todo], [responses[i] for i in todo],
                               batch_size)
    out = [math.nan] * len(responses)
    for i, lp in zip(todo, lps):
        out[i] = confidence_from_logprobs(processor, lp, responses[i], answers[i])
    return out
