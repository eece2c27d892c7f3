"""Sentence steps on a KV cache: the search's default backend (`search.kv_cache=true`).

Each question's prompt, image included, is encoded once when the question joins the batch
(`prompt`); every beam then keeps the keys and values of its own response tokens and the
logits for its next token. A step gives each of a beam's K continuations a copy of the
question's prompt cache and of the beam's response cache, left-padded to the longest row of
the chunk, samples the first token from the beam's stored logits and feeds one token per
forward pass until the row's sentence ends; a finished row leaves the batch and takes its
response cache with it (the child beam's state); beams that are pruned drop theirs.

What transformers gives is used as is: the model's forward with a `DynamicCache`,
`logits_to_keep=1`, and the prefill's own position ids (Qwen2-VL's multimodal rope index is
computed inside the forward by the model's `get_rope_index`, which leaves the rope delta on
the model). What is written here, and why: `generate` can neither continue rows whose caches
were built in different calls and have different lengths, nor hand back a cache per row; so
the decode loop (sample, feed, drop finished rows) is ours. Its positions are explicit: a
row's next text position is its real-token count plus the prompt's rope delta (0 for LLaVA,
whose positions are token indices; for Qwen2-VL a text token has the same id on all three
rope axes, which the text model expands from a 2-D `position_ids`).

The sampling is that of today's path (`draw`, shared with `models.search`): each row draws
from its own pre-drawn uniforms, so candidates do not depend on the batch, and the same seed
gives the same candidates as `search.kv_cache=false` up to float noise (tests/unit/test_search_cache.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache

from data.config import SearchConfig
from models.encode import encode_prompts
from models.generation import model_device

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [1, heads, length, dim]


def draw(scores: torch.Tensor, u: torch.Tensor, cfg: SearchConfig, banned: torch.Tensor
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row by temperature + top-p sampling from the row's uniform `u` (inverse
    cdf), and its log-prob under the untempered model (the raw `scores`)."""
    scores = scores.float()
    banned = banned[: scores.shape[1]]
    probs = torch.softmax((scores / cfg.temperature).masked_fill(banned, -math.inf), -1)
    if cfg.top_p < 1.0:  # nucleus: most likely tokens until top_p mass is reached
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = (sorted_p.cumsum(-1) - sorted_p) >= cfg.top_p
        probs = probs.scatter(1, order, sorted_p.masked_fill(drop, 0.0))
    cdf = probs.cumsum(-1)  # u scaled by the (float) total mass
    token = torch.searchsorted(cdf, u.unsqueeze(1) * cdf[:, -1:], right=True).clamp(max=scores.shape[1] - 1)
    return token.squeeze(1), torch.log_softmax(scores, -1).gather(1, token).squeeze(1)


@dataclass
class CacheState:
    """A prompt's or a beam's cache: keys/values (the prompt's, or a beam's response tokens
    only), the logits for the next token, and that token's position id."""

    kv: KV
    logits: torch.Tensor
    pos: int

    @property
    def length(self) -> int:
        return self.kv[0][0].shape[2] if self.kv else 0


def _rope_holder(model: Any) -> Any:
    """The submodule that keeps a multimodal rope delta after a prefill (Qwen2-VL), or None."""
    return next((m for m in model.modules() if hasattr(m, "rope_deltas") and hasattr(m, "get_rope_index")),
                None)


def _layers(cache: Any) -> list[Any]:
    return list(cache.layers)


class CachedRows:
    """The search backend (see `models.search.HFRows` for the interface) on a KV cache.

    `prompt(item)` prefills the question and returns its `CacheState`; `__call__(rows, ...)`
    returns per row (new token ids, their log-prob sum at T=1, ended with EOS, the child's
    `CacheState`). A row's `inputs` is its question's state, its `state` the parent beam's
    (None at a question's first step).
    """

    def __init__(self, model: Any, processor: Any, cfg: SearchConfig, vocab: Any):
        self.model, self.processor, self.cfg, self.vocab = model, processor, cfg, vocab
        self.device = model_device(model)
        self.rope = _rope_holder(model)
        self.banned = vocab.banned.to(self.device)

    def prompt(self, item: dict) -> CacheState:
        inputs = encode_prompts(self.processor, [item["image"]], [item["question"]], self.device)
        if self.rope is not None:
            self.rope.rope_deltas = None  # a new prompt: the forward computes its rope index
        out = self.model(**inputs, use_cache=True, logits_to_keep=1)
        delta = 0
        if self.rope is not None and self.rope.rope_deltas is not None:
            delta = int(self.rope.rope_deltas.flatten()[0])
        kv = [(layer.keys, layer.values) for layer in _layers(out.cache)]
        return CacheState(kv, out.logits[0, -1].float(), int(inputs["input_ids"].shape[1]) + delta)

    def __call__(self, rows: Sequence[Any], sentence: bool, budget: int
                 ) -> list[tuple[list[int], float, bool, CacheState]]:
        stop = (self.vocab.stop if sentence else self.vocab.eos).to(self.device)
        out: list[tuple[list[int], float, bool, CacheState]] = []
        for lo in range(0, len(rows), self.cfg.batch_size):
            out += self._continue(rows[lo:lo + self.cfg.batch_size], stop, budget)
        return out

    def _continue(self, chunk: Sequence[Any], stop: torch.Tensor, budget: int
                  ) -> list[tuple[list[int], float, bool, CacheState]]:
        n, dev = len(chunk), self.device
        # The K rows of one beam (B*K of one prompt at a question's first step) share one
        # source: its cache is laid out once and indexed K times.
        src_index: dict[int, int] = {}
        sources: list[tuple[CacheState, CacheState | None]] = []
        of_row = []
        for r in chunk:
            key = id(r.state) if r.state is not None else id(r.inputs)
            if key not in src_index:
                src_index[key] = len(sources)
                sources.append((r.inputs, r.state))
            of_row.append(src_index[key])
        lp_src = [p.length for p, _ in sources]
        total = [a + (b.length if b is not None else 0) for a, (_, b) in zip(lp_src, sources)]
        width = max(total)
        rows_of = torch.tensor(of_row, device=dev)
        data = []
        for li, (k0, v0) in enumerate(sources[0][0].kv):
            keys = k0.new_zeros((len(sources), k0.shape[1], width, k0.shape[3]))
            values = v0.new_zeros((len(sources), v0.shape[1], width, v0.shape[3]))
            for j, (p, b) in enumerate(sources):
                s, m = width - total[j], width - total[j] + lp_src[j]
                keys[j, :, s:m], values[j, :, s:m] = p.kv[li][0][0], p.kv[li][1][0]
                if b is not None and b.length:
                    keys[j, :, m:], values[j, :, m:] = b.kv[li][0][0], b.kv[li][1][0]
            data.append((keys.index_select(0, rows_of), values.index_select(0, rows_of)))
        # filled in place: DynamicCache(ddp_cache_data=...) would copy every layer once more
        cache = DynamicCache(ddp_cache_data=[(k[:, :, :0], v[:, :, :0]) for k, v in data])
        for layer, (k, v) in zip(_layers(cache), data):
            layer.keys, layer.values = k, v
        start = [width - total[j] for j in of_row]  # left padding of each row
        lp_len = [lp_src[j] for j in of_row]
        mask = (torch.arange(width, device=dev) >= torch.tensor(start, device=dev).unsqueeze(1)).long()
        last = [b if b is not None else p for p, b in sources]
        logits = torch.stack([s.logits for s in last]).to(dev).index_select(0, rows_of)
        pos = torch.tensor([s.pos for s in last], dtype=torch.long, device=dev).index_select(0, rows_of)
        # drawn on the CPU from each row's own generator: the same uniforms on any device
        u = torch.stack([torch.rand(budget, generator=torch.Generator().manual_seed(r.seed))
                         for r in chunk]).to(dev)
        alive = torch.arange(n, device=dev)  # chunk index of each batch row
        live = torch.ones(n, dtype=torch.bool, device=dev)  # rows still in their sentence
        tokens: list[list[int]] = [[] for _ in range(n)]
        sums = [0.0] * n
        done_rows: dict[int, tuple[list[int], float, bool, CacheState]] = {}
        trimmed = 0  # leading columns dropped once no live row needs them
        for t in range(budget):
            tok, lp = draw(logits, u[alive, t], self.cfg, self.banned)
            for i, tk, lpk, on in zip(alive.tolist(), tok.tolist(), lp.tolist(), live.tolist()):
                if on:
                    tokens[i].append(tk)
                    sums[i] += lpk
            mask = torch.cat([mask, mask.new_ones((len(alive), 1))], 1)
            res = self.model(input_ids=tok.unsqueeze(1), attention_mask=mask, position_ids=pos.unsqueeze(1),
                             cache=cache, use_cache=True, logits_to_keep=1)
            cache, logits, pos = res.cache, res.logits[:, -1].float(), pos + 1
            ended = live & (stop[tok] | (t == budget - 1))
            if not bool(ended.any()):
                continue
            layers = _layers(cache)
            for j in ended.nonzero().flatten().tolist():
                i = int(alive[j])
                a = start[i] + lp_len[i] - trimmed  # the row's response tokens start here
                kv = [(la.keys[j:j + 1, :, a:].clone(), la.values[j:j + 1, :, a:].clone()) for la in layers]
                done_rows[i] = (tokens[i], sums[i], bool(self.vocab.eos[tokens[i][-1]]),
                                CacheState(kv, logits[j].clone(), int(pos[j])))
            live &= ~ended
            n_live = int(live.sum())
            if n_live == 0:
                break
            if 4 * (len(live) - n_live) < len(live):
                continue  # a finished row rides along until a quarter of the batch has: the
                # cache is copied on compaction, which costs more than a few spare rows
            alive, logits, pos = alive[live], logits[live], pos[live]
            cut = min(start[i] for i in alive.tolist()) - trimmed  # all-padding columns in front
            for la in layers:
                la.keys, la.values = la.keys[live][:, :, cut:], la.values[live][:, :, cut:]
            mask, trimmed, live = mask[live][:, cut:], trimmed + cut, live[live]
        return [done_rows[i] for i in range(n)]
