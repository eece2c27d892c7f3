"""Candidate search (docs/method.md section 2): sentence-level beam search, or plain sampling.

`search_candidates` runs the search (`models.beam.run_search`) with a backend that continues
rows: `models.search_cache.CachedRows` by default (`search.kv_cache=true`: each prompt
prefilled once, each live beam's KV cache kept across steps), `HFRows` here
(`search.kv_cache=false`: every row's prefix, prompt and image included, re-run through
`model.generate`, `cfg.batch_size` rows a call; the reference the cached path is tested
against, on CPU ~2/3 of its time was that prefill), or a vLLM engine (`search.backend=vllm`,
models/search_vllm.py). Records are then scored by one teacher-forced pass
(`models.confidence`: `encode_examples`, the tokens DPO sees).

    python -m tools.search_bench --bench   # the search vs its reference path and plain sampling
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from data.config import SearchConfig
from data.scoring import parse_response
from data.shapes import format_response
from models.beam import Beam, Progress, Row, Vocab, normalize_text, run_search, vocab_masks
from models.confidence import answer_confidence, completion_logprobs, confidence_from_logprobs
from models.encode import encode_prompts
from models.generation import model_device
from models.search_cache import CachedRows, draw
from models.search_vllm import vllm_search

__all__ = ["Beam", "HFRows", "Progress", "Row", "RowSampler", "normalize_text", "search_candidates"]


class RowSampler(LogitsProcessor):
    """Temperature + top-p sampling where each row draws from its own pre-drawn uniforms.

    `generate` runs greedy: this processor leaves only the sampled token finite, and records
    its log-prob under the untempered model (the raw logits: `_generate_rows` turns every
    other processor off).
    """

    def __init__(self, u: torch.Tensor, start: int, cfg: SearchConfig, banned: torch.Tensor):
        self.u, self.start, self.cfg, self.banned = u, start, cfg, banned
        self.logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        token, logprob = draw(scores, self.u[:, input_ids.shape[1] - self.start], self.cfg, self.banned)
        self.logprobs.append(logprob)
        return torch.full_like(scores.float(), -math.inf).scatter(1, token.unsqueeze(1), 0.0)


class _StopAt(StoppingCriteria):
    """A row is done once its last token is in `stop`."""

    def __init__(self, stop: torch.Tensor):
        self.stop = stop

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kw: Any) -> torch.BoolTensor:
        return self.stop[input_ids[:, -1]]


def _collate(rows: Sequence[Row], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
    """Left-padded prompt + response ids; per-token extras padded alike, image tensors stacked."""
    seqs = [torch.cat([r.inputs["input_ids"][0].cpu(), torch.tensor(r.tokens, dtype=torch.long)])
            for r in rows]
    width = max(map(len, seqs))
    batch = {"input_ids": torch.full((len(rows), width), pad_id, dtype=torch.long),
             "attention_mask": torch.zeros((len(rows), width), dtype=torch.long)}
    for key in rows[0].inputs:
        if key.endswith("token_type_ids"):  # per token (Qwen2-VL's mm_token_type_ids): text = 0
            batch[key] = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (r, s) in enumerate(zip(rows, seqs)):
        batch["input_ids"][i, width - len(s):] = s
        batch["attention_mask"][i, width - len(s):] = 1
        for key in batch.keys() - {"input_ids", "attention_mask"}:
            v = r.inputs[key][0].cpu()
            batch[key][i, width - len(s): width - len(s) + len(v)] = v
    out = {k: v.to(device) for k, v in batch.items()}
    for key in rows[0].inputs.keys() - batch.keys():  # pixel_values, image_grid_thw, ...
        out[key] = torch.cat([r.inputs[key] for r in rows]).to(device)
    return out


def _generate_rows(
    model: Any, processor: Any, rows: Sequence[Row], vocab: Vocab, stop: torch.Tensor,
    max_new_tokens: int, cfg: SearchConfig,
) -> list[tuple[list[int], float, bool]]:
    """Continue every row once: (new tokens, their log-prob sum at T=1, ended with EOS).

    One `generate` call per `cfg.batch_size` rows; a row's tokens run up to and including its
    first token in `stop`, or fill `max_new_tokens`.
    """
    tok, device = processor.tokenizer, model_device(model)
    eos_ids = vocab.eos.nonzero().flatten().tolist()
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos_ids[0]
    out: list[tuple[list[int], float, bool]] = []
    for lo in range(0, len(rows), cfg.batch_size):
        chunk = rows[lo:lo + cfg.batch_size]
        batch = _collate(chunk, pad_id, device)
        start = batch["input_ids"].shape[1]
        # drawn on the CPU from each row's own generator: the same uniforms on any device
        u = torch.stack([torch.rand(max_new_tokens, generator=torch.Generator().manual_seed(r.seed))
                         for r in chunk])
        sampler = RowSampler(u.to(device), start, cfg, vocab.banned.to(device))
        gen = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
            logits_processor=LogitsProcessorList([sampler]),
            stopping_criteria=StoppingCriteriaList([_StopAt(stop.to(device))]),
            # explicit neutral values: a checkpoint's generation_config (Qwen2-VL ships
            # repetition_penalty=1.05) would otherwise reshape the scores before sampling
            repetition_penalty=1.0, no_repeat_ngram_size=0, pad_token_id=pad_id,
            eos_token_id=eos_ids,
        )
        new = gen[:, start:].cpu()
        lp = torch.stack(sampler.logprobs, 1).cpu()[:, : new.shape[1]]
        hit = stop[new]
        n_new = torch.where(hit.any(1), hit.float().argmax(1) + 1, new.shape[1])
        valid = torch.arange(new.shape[1]) < n_new.unsqueeze(1)
        sums = torch.where(valid, lp, torch.zeros_like(lp)).sum(1)  # pads after a stop: masked
        for i, n in enumerate(n_new.tolist()):
            out.append((new[i, :n].tolist(), float(sums[i]), bool(vocab.eos[new[i, n - 1]])))
    return out


class HFRows:
    """The transformers backend: `model.generate` continues the rows (`_generate_rows`).

    A backend has `prompt(item)`, the question's prompt state while it is in the batch, and
    `__call__(rows, sentence, budget)` -> per row (new token ids, their log-prob sum at T=1,
    ended with EOS); `sentence` stops a row at its first sentence boundary. The vLLM backend
    (`models.search_vllm`) is the other one.
    """

    def __init__(self, model: Any, processor: Any, cfg: SearchConfig):
        self.model, self.processor, self.cfg = model, processor, cfg
        self.vocab, self.device = vocab_masks(model, processor), model_device(model)

    def prompt(self, item: dict) -> dict[str, torch.Tensor]:
        return encode_prompts(self.processor, [item["image"]], [item["question"]], self.device)

    def __call__(self, rows: Sequence[Row], sentence: bool, budget: int) -> list[tuple[list[int], float, bool]]:
        stop = self.vocab.stop if sentence else self.vocab.eos
        return _generate_rows(self.model, self.processor, rows, self.vocab, stop, budget, self.cfg)


def search_candidates(
    model: Any, processor: Any, items: Sequence[dict], cfg: SearchConfig, seed: int,
    progress: Progress | None = None,
) -> list[dict]:
    """Candidates for every item (a dict with prompt_id, image, question), in items order.

    Returns records `prompt_id, cand_idx, text, rationale, answer, sum_logprob, mean_logprob,
    n_tokens, answer_confidence`: up to N distinct texts per item, best first by
    `mean_logprob`. Log-probs are those of the completion as the chat template renders it
    (response + end-of-turn tokens: what DPO scores) at temperature 1. `answer` and
    `answer_confidence` are None for an unparsable response.

    Raises:
        ValueError: two items share a prompt_id (it keys the random streams and the records).
    """
    ids = [str(it["prompt_id"]) for it in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"items: prompt_id {dup!r} occurs more than once")
    was_training = model.training
    model.eval()
    try:
        if cfg.backend == "vllm":  # an engine of its own on the GPU, freed before scoring below

            found = vllm_search(model, processor, items, cfg, seed, progress)
        else:
            with torch.inference_mode():
                backend = (CachedRows(model, processor, cfg, vocab_masks(model, processor)) if cfg.kv_cache
                           else HFRows(model, processor, cfg))
                found = run_search(backend, processor.tokenizer, items, cfg, seed, progress)
        owner = [i for i, beams in enumerate(found) for _ in beams]
        texts = [b.text for beams in found for b in beams]
        images = [items[i]["image"] for i in owner]
        questions = [items[i]["question"] for i in owner]
        lps = completion_logprobs(model, processor, images, questions, texts, cfg.batch_size)
        # a multiple-choice answer ("B", "(B) blue") becomes its option's text: curation compares texts
        parsed = [parse_response(t, items[owner[k]].get("choices")) for k, t in enumerate(texts)]
        # A well-formed response is `<rationale> Answer: <answer>.` already: reuse its pass.
        same = {k for k, p in enumerate(parsed)
                if p.ok and format_response(p.rationale, p.answer) == texts[k]}
        conf = {k: confidence_from_logprobs(processor, lps[k], texts[k], parsed[k].answer) for k in same}
        redo = [k for k, p in enumerate(parsed) if p.ok and k not in same]
        conf.update(zip(redo, answer_confidence(
            model, processor, [images[k] for k in redo], [questions[k] for k in redo],
            [parsed[k].rationale for k in redo], [parsed[k].answer for k in redo],
            cfg.batch_size)))
    finally:
        model.train(was_training)
    records: list[dict] = []
    for k in sorted(range(len(texts)), key=lambda k: (owner[k], -float(lps[k].mean()))):
        total, n = float(lps[k].sum()), len(lps[k])
        same_item = bool(records) and owner[k] == records[-1]["_owner"]
        records.append({
            "_owner": owner[k], "prompt_id": items[owner[k]]["prompt_id"],
            "cand_idx": records[-1]["cand_idx"] + 1 if same_item else 0,
            "text": texts[k], "rationale": parsed[k].rationale, "answer": parsed[k].answer,
            "sum_logprob": total, "mean_logprob": total / n, "n_tokens": n,
            "answer_confidence": conf.get(k),
        })
    for r in records:
        del r["_owner"]
    return records
