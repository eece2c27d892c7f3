"""The sentence-level beam search itself, whatever decodes its rows (docs/method.md section 2).

  * a *step* extends every live beam of every active question by one sentence: all rows
    (beam x K continuations) go to the backend together, which continues each up to its first
    token holding `.`, `?`, `!` or a newline, or EOS. Questions join as others finish, so each
    step holds about `cfg.batch_size` rows. (A `.` inside a number, "3.5", ends a sentence
    too: no such answers in the shapes world, a limit elsewhere.) A beam is finished by its
    sentence holding `Answer:`, by EOS, or at `max_sentences`;
  * each row samples from a random stream of its own, keyed by (seed, prompt_id, step,
    beam, k): a question's candidates do not depend on the other questions in its batch, on
    `cfg.batch_size` or on the order of `items` (up to float noise from padding, which could
    flip a draw only when a uniform lands within ~1e-6 of a token's cdf edge);
  * a beam is kept as token ids (prompt + generated), never re-tokenised text, so the score
    is that of the tokens sampled.

Backends (they continue rows): `models.search_cache.CachedRows` (the default, a KV cache per
beam), `models.search.HFRows` (every prefix re-run through `generate`, the reference) and
`models.search_vllm` (a vLLM engine). Written by hand: group (diverse) beam search left
transformers' core in v5, and token-level beam search branches on wording, not on steps.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from data.config import SearchConfig

Progress = Callable[[int, int], None]  # (questions done, total)
_BOUNDARY = re.compile(r"[.?!\n]")
_ANSWER_TAG = re.compile(r"answer\s*:", re.IGNORECASE)  # as data.scoring.parse_response


def normalize_text(text: str) -> str:
    """Dedup key of a candidate: lower-case, whitespace collapsed."""
    return " ".join(text.lower().split())


@dataclass(frozen=True)
class Vocab:
    """Boolean masks over the vocabulary, built once per search."""

    eos: torch.Tensor  # end of turn
    stop: torch.Tensor  # end of a sentence step: EOS or a token holding a boundary character
    banned: torch.Tensor  # special tokens but EOS: a sampled <image> breaks the next prompt


def vocab_masks(model: Any, processor: Any) -> Vocab:
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
    return Vocab(eos, stop & ~banned, banned)


@dataclass
class Row:
    inputs: Any  # one question's prompt state (HFRows: its encoded prompt, a batch of 1)
    tokens: list[int]  # the response so far
    seed: int
    state: Any = None  # the parent beam's backend state (its KV cache), None for `HFRows`


def row_seed(*key: Any) -> int:
    digest = hashlib.blake2b("/".join(map(str, key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@dataclass
class Beam:
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
    live: list[Beam] = field(default_factory=lambda: [Beam([])])
    finished: dict[str, Beam] = field(default_factory=dict)  # normalised text -> beam
    step: int = 0


def _advance(q: _Question, conts: list[tuple[Beam, bool]], cfg: SearchConfig) -> None:
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


def run_search(
    backend: Any, tok: Any, items: Sequence[dict], cfg: SearchConfig, seed: int,
    progress: Progress | None = None,
) -> list[list[Beam]]:
    """Each item's finished beams, best first by search score, at most N; `backend` continues
    rows (`HFRows`), `tok` decodes them."""
    beam_mode = cfg.mode == "beam"  # sampling: whole responses, one step
    budget = cfg.max_sentence_tokens * (1 if beam_mode else cfg.max_sentences)
    # A question's first step draws B*K rows from the empty response (as if its B beams all
    # started there); sampling mode is a single step of N rows.
    first = cfg.beams * cfg.per_beam if beam_mode else cfg.n_candidates
    queue, active = [_Question(i, it) for i, it in enumerate(items)], []
    results: dict[int, list[Beam]] = {}
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
                    seed_k = row_seed(seed, q.item["prompt_id"], q.step, slot, k)
                    rows.append(Row(q.inputs, beam.tokens, seed_k, beam.state))
                    owners.append((q, beam))
        conts: dict[int, list[tuple[Beam, bool]]] = {q.index: [] for q in active}
        new_rows = backend(rows, beam_mode, budget)
        for (q, parent), (new, lp, ended, *state) in zip(owners, new_rows):
            tokens = parent.tokens + new
            text = tok.decode(tokens, skip_special_tokens=True).strip()
            child = Beam(tokens, parent.sum_lp + lp, parent.sentences + 1, text, state[0] if state else None)
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
