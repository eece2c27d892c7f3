"""Candidate search (METHOD.md section 2): sentence-level beam search, or plain sampling.

Group (diverse) beam search left transformers' core in v5 and needs the Hub (NOTES.md), and
token-level beam search branches on wording, not on reasoning steps; so the sentence-level
search is ours. `model.generate` does the decoding inside a sentence (KV cache, position ids
and image inputs of every model family; or a vLLM engine, `search.backend=vllm`,
models/search_vllm.py); this module does the rest:

  * a *step* extends every live beam of every active question by one sentence: all rows
    (beam x K continuations) go through `generate` together, `cfg.batch_size` rows a call;
    a row stops at its first token holding `.`, `?`, `!` or a newline, or at EOS. Questions
    join as others finish, so each step holds about `cfg.batch_size` rows. (A `.` inside a
    number, "3.5", ends a sentence too: no such answers in the shapes world, a limit elsewhere.)
    A beam is finished by its sentence holding `Answer:`, by EOS, or at `max_sentences`;
  * each row samples from a random stream of its own, keyed by (seed, prompt_id, step,
    beam, k): a question's candidates do not depend on the other questions in its batch, on
    `cfg.batch_size` or on the order of `items` (up to float noise from padding, which could
    flip a draw only when a uniform lands within ~1e-6 of a token's cdf edge);
  * a beam is kept as token ids (prompt + generated), never re-tokenised text, so the score
    is that of the tokens sampled;
  * the default backend (`search.kv_cache=true`, models/search_cache.py) prefills each prompt
    once and keeps each live beam's KV cache across steps; `_HFRows` (`search.kv_cache=false`)
    re-runs every row's prefix, prompt and image included, through `generate`: the reference
    the cached path is tested against (on CPU that prefill was ~2/3 of its search time).

Records are then scored by one teacher-forced pass (`models.confidence`: `encode_examples`,
the tokens DPO sees).

    python -m models.search_bench --bench   # batched search vs per-question generate loops
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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
from models.confidence import answer_confidence, completion_logprobs, confidence_from_logprobs
from models.encode import encode_prompts
from models.generation import model_device
from models.search_cache import CachedRows, draw

Progress = Callable[[int, int], None]  # (questions done, total)
_BOUNDARY = re.compile(r"[.?!\n]")
_ANSWER_TAG = re.compile(r"answer\s*:", re.IGNORECASE)  # as data.scoring.parse_response


def normalize_text(text: str) -> str:
    """Dedup key of a candidate: lower-case, whitespace collapsed."""
    return " ".join(text.lower().split())


# --------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class _Vocab:
    """Boolean masks over the vocabulary, built once per search."""

    eos: torch.Tensor  # end of turn
    stop: torch.Tensor  # end of a sentence step: EOS or a token holding a boundary character
    banned: torch.Tensor  # special tokens but EOS: a sampled <image> breaks the next prompt


def _vocab(model: Any, processor: Any) -> _Vocab:
    tok = processor.tokenizer
    size = max(len(tok), model.get_output_embeddings().weight.shape[0])
    gen_eos = model.generation_config.eos_token_id
    eos_ids = {tok.eos_token_id} | set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    eos = torch.zeros(size, dtype=torch.bool)
    eos[[i for i in eos_ids if i is not None]] = True
    special = set(tok.all_special_ids) | {
        i for i, t in tok.added_tokens_decoder.items() if t.special}
    banned = torch.zeros(size, dtype=torch.bool)
    banned[sorted(special)] = True
    banned[len(tok):] = True  # padded embedding rows are no tokens
    banned &= ~eos
    texts = tok.batch_decode([[i] for i in range(len(tok))])  # ~1 s for a 150K vocabulary
    stop = eos.clone()
    stop[: len(texts)] |= torch.tensor([bool(_BOUNDARY.search(t)) for t in texts])
    return _Vocab(eos, stop & ~banned, banned)


class _RowSampler(LogitsProcessor):
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


@dataclass
class _Row:
    inputs: Any  # one question's prompt state (_HFRows: its encoded prompt, a batch of 1)
    tokens: list[int]  # the response so far
    seed: int
    state: Any = None  # the parent beam's backend state (its KV cache), None for `_HFRows`


def _row_seed(*key: Any) -> int:
    digest = hashlib.blake2b("/".join(map(str, key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _collate(rows: Sequence[_Row], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
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
    model: Any, processor: Any, rows: Sequence[_Row], vocab: _Vocab, stop: torch.Tensor,
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
        sampler = _RowSampler(u.to(device), start, cfg, vocab.banned.to(device))
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


# --------------------------------------------------------------------------- beam search


@dataclass
class _Beam:
    tokens: list[int]
    sum_lp: float = 0.0
    sentences: int = 0
    text: str = ""
    state: Any = field(default=None, repr=False)  # the backend's cache of this beam, while live

    @property
    def score(self) -> float:
        """Length-normalised log-prob (T=1) of the whole response so far: the ranking key."""
        return self.sum_lp / max(1, len(self.tokens))


@dataclass
class _Question:
    index: int
    item: dict
    inputs: Any = None  # the backend's prompt state, set while in the batch
    live: list[_Beam] = field(default_factory=lambda: [_Beam([])])
    finished: dict[str, _Beam] = field(default_factory=dict)  # normalised text -> beam
    step: int = 0


def _advance(q: _Question, conts: list[tuple[_Beam, bool]], cfg: SearchConfig) -> None:
    """Rank a question's continuations; keep the top B live ones, collect finished ones.

    Walking down the ranking (as HF beam search does), a finished continuation is collected
    when it ranks above the B-th live one; duplicates (normalised text) keep their best copy.
    """
    seen: set[str] = set()
    q.live, q.step = [], q.step + 1
    for beam, ended in sorted(conts, key=lambda c: -c[0].score):
        key = normalize_text(beam.text)
        if key in seen:
            continue
        seen.add(key)
        if ended or _ANSWER_TAG.search(beam.text) or beam.sentences >= cfg.max_sentences:
            beam.state = None  # a finished beam is never continued: free its cache
            q.finished.setdefault(key, beam)
        else:
            q.live.append(beam)
        if len(q.live) == cfg.beams:
            break


class _HFRows:
    """The transformers backend: `model.generate` continues the rows (`_generate_rows`).

    A backend has `prompt(item)`, the question's prompt state while it is in the batch, and
    `__call__(rows, sentence, budget)` -> per row (new token ids, their log-prob sum at T=1,
    ended with EOS); `sentence` stops a row at its first sentence boundary. The vLLM backend
    (`models.search_vllm`) is the other one.
    """

    def __init__(self, model: Any, processor: Any, cfg: SearchConfig):
        self.model, self.processor, self.cfg = model, processor, cfg
        self.vocab, self.device = _vocab(model, processor), model_device(model)

    def prompt(self, item: dict) -> dict[str, torch.Tensor]:
        return encode_prompts(self.processor, [item["image"]], [item["question"]], self.device)

    def __call__(self, rows: Sequence[_Row], sentence: bool, budget: int) -> list[tuple[list[int], float, bool]]:
        stop = self.vocab.stop if sentence else self.vocab.eos
        return _generate_rows(self.model, self.processor, rows, self.vocab, stop, budget, self.cfg)


def _search(
    backend: Any, tok: Any, items: Sequence[dict], cfg: SearchConfig, seed: int,
    progress: Progress | None = None,
) -> list[list[_Beam]]:
    """Each item's finished beams, best first by search score, at most N; `backend` continues
    rows (`_HFRows`), `tok` decodes them."""
    beam_mode = cfg.mode == "beam"  # sampling: whole responses, one step
    budget = cfg.max_sentence_tokens * (1 if beam_mode else cfg.max_sentences)
    # A question's first step draws B*K rows from the empty response (as if its B beams all
    # started there); sampling mode is a single step of N rows.
    first = cfg.beams * cfg.per_beam if beam_mode else cfg.n_candidates
    queue, active = [_Question(i, it) for i, it in enumerate(items)], []
    results: dict[int, list[_Beam]] = {}
    while queue or active:
        # Join while the step fits one chunk. A prompt (image included) is encoded only while
        # its question is in the batch: memory does not grow with len(items).
        n_rows = sum(len(q.live) * (first if q.step == 0 else cfg.per_beam) for q in active)
        while queue and (not active or n_rows + first <= cfg.batch_size):
            q = queue.pop(0)
            q.inputs = backend.prompt(q.item)
            active.append(q)
            n_rows += first
        rows, owners = [], []
        for q in active:
            for slot, beam in enumerate(q.live):
                for k in range(first if q.step == 0 else cfg.per_beam):
                    seed_k = _row_seed(seed, q.item["prompt_id"], q.step, slot, k)
                    rows.append(_Row(q.inputs, beam.tokens, seed_k, beam.state))
                    owners.append((q, beam))
        conts: dict[int, list[tuple[_Beam, bool]]] = {q.index: [] for q in active}
        new_rows = backend(rows, beam_mode, budget)
        for (q, parent), (new, lp, ended, *state) in zip(owners, new_rows):
            tokens = parent.tokens + new
            text = tok.decode(tokens, skip_special_tokens=True).strip()
            child = _Beam(tokens, parent.sum_lp + lp, parent.sentences + 1, text, state[0] if state else None)
            conts[q.index].append((child, ended or not beam_mode))
        for q in list(active):
            _advance(q, conts[q.index], cfg)
            if len(q.finished) >= cfg.n_candidates or not q.live:
                active.remove(q)
                q.inputs = None
                best = sorted(q.finished.values(), key=lambda b: -b.score)
                results[q.index] = best[: cfg.n_candidates]
                if progress:
                    progress(len(results), len(items))
    return [results[i] for i in range(len(items))]


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
            from models.search_vllm import vllm_search

            found = vllm_search(model, processor, items, cfg, seed, progress)
        else:
            with torch.inference_mode():
                backend = (CachedRows(model, processor, cfg, _vocab(model, processor)) if cfg.kv_cache
                           else _HFRows(model, processor, cfg))
                found = _search(backend, processor.tokenizer, items, cfg, seed, progress)
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
