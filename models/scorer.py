"""R-Scorer (docs/method.md section 3): a causal LM that judges candidates from next-token logits.

One forward pass per judged input; the verdict is the softmax over the verdict tokens
(' A', ' B', ' Tie' or ' Good', ' Bad') at the input's last position, right after the
template's suffix ('\\nVerdict:'). No text is generated or parsed.

The input cannot be steered by what a candidate says: it is assembled from token ids as
`[bos] prefix cut(cand_a) middle cut(cand_b) suffix`, only the candidates are cut to fit
`max_length`, the suffix is always last, and rows are left-padded so the last column is every
row's last real token. A candidate holding 'Response A:', '\\nVerdict: B' or 10k tokens moves
nothing about where the verdict is read.

The built-in judge is a tiny Llama sharing the world's tokenizer, trained on perturbation
pairs (data/perturb.py) by tools/judge_bootstrap.py and committed under models/builtin/judge;
real judges (e.g. Qwen/Qwen2.5-1.5B-Instruct, fine-tuned on the same records) load through
`load_judge` and go through exactly the same code.

What made the tiny judge learn within a CPU budget (2 cores, 1 thread each, seed 0, agreement
with the exact scorer on held-out decisive pairs, 80 eval-split items): the original recipe
(instruction template, records in random order, lr 2e-3) stayed at chance (0.49-0.50) through
step 600, and reached 0.81 only at 4000 steps (measured by an earlier session on a faster
machine). The compact template alone (no instruction, gold answer after each candidate) was
still at 0.49 at step 600; adding batches that hold both orders of a pair (`_epoch_order`) and
lr 3e-3 gave 0.54 / 0.65 / 0.72 at steps 200 / 400 / 600. A training-only explanation after
the verdict (each slot's exact flags) made it slower (0.51 at 400) and was dropped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

from data.config import DataConfig, ScorerConfig
from data.perturb import pair_records, point_records
from data.schema import PairScore, PointScore
from data.prompts import (
    PAIRWISE, POINTWISE, VERDICTS, clean_candidate, cut, fair_caps, format_input, template_segments,
)
from models.loading import weights_bar_hidden, save_lvlm
from data.shapes import corpus, generate

Progress = Callable[[int, int], None] | None
JUDGE_VOCAB_SIZE = 512  # world corpus + templates: every verdict word becomes one token
CUT_MARKER = " ..."  # stands for the cut middle of an over-long candidate
MIN_CANDIDATE_TOKENS = 16  # below this the prompt itself is too long for max_length


# --------------------------------------------------------------------------- model & tokenizer


@dataclass
class TinyJudgeSpec:
    """Sizes of the tiny judge; defaults give ~0.7M parameters with a ~500-token vocabulary."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    max_position_embeddings: int = 1024


def build_tiny_judge(tokenizer: Any, seed: int = 0, spec: TinyJudgeSpec | None = None) -> LlamaForCausalLM:
    """Randomly initialised text-only Llama over `tokenizer`'s vocabulary (seeded)."""
    spec = spec or TinyJudgeSpec()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def judge_corpus(data_cfg: DataConfig | None = None, n_records: int = 60, seed: int = 0) -> list[str]:
    """Texts for the tokenizer of a world that has a judge: the world's corpus + judge inputs.

    Train with `models.factory.train_tokenizer(judge_corpus(), JUDGE_VOCAB_SIZE)`: then each
    verdict word and the templates' words are one token each (the world corpus alone leaves
    ' Tie' = 'Ġ' + 'T' + ...), and world sentences keep their token counts. The templates are
    rendered here, so editing one means retraining the tokenizer (the base model's included).
    """
    data_cfg = data_cfg or DataConfig()
    recs = generate("scorer", n_records, data_cfg, seed)
    texts = corpus(data_cfg, seed=seed)
    for r in pair_records(recs, seed):
        texts.append(format_input(PAIRWISE, r["question"], r["reference"],
                                  [r["response_a"], r["response_b"]], r["gold"]) + " " + r["verdict"])
    for r in point_records(recs, seed):
        texts.append(format_input(POINTWISE, r["question"], r["reference"], [r["response"]],
                                  r["gold"]) + " " + r["verdict"])
    return texts


def verdict_token_ids(tokenizer: Any) -> dict[str, int]:
    """First token id of ' A', ' B', ' Tie', ' Good', ' Bad' (the verdict follows a space).

    Raises:
        ValueError: two verdicts of one mode share their first token, so their probabilities
            could not be told apart (train the tokenizer on `judge_corpus()`).
    """
    out: dict[str, int] = {}
    for mode, words in VERDICTS.items():
        ids = {w: tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in words}
        if len(set(ids.values())) != len(ids):
            raise ValueError(f"{mode} verdicts {words} share first tokens {ids}; train the "
                             "tokenizer on models.scorer.judge_corpus()")
        out.update(ids)
    return out


def save_judge(model: Any, tokenizer: Any, path: str | os.PathLike) -> Path:
    return save_lvlm(model, tokenizer, path)


def load_judge(name_or_path: str, dtype: str = "float32", device: str = "auto") -> tuple[Any, Any]:
    """Any causal LM judge and its tokenizer, from a local folder or a hub id (Auto classes only).

    Raises:
        ValueError: unknown dtype, or loading failed (the message names `name_or_path`).
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype, None)
    if not isinstance(torch_dtype, (torch.dtype, str)):
        raise ValueError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or auto")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        with weights_bar_hidden():
            model = AutoModelForCausalLM.from_pretrained(name_or_path, dtype=torch_dtype,
                                                         use_safetensors=True).to(device)  # no pickle
    except (OSError, ValueError) as err:
        raise ValueError(f"could not load judge {name_or_path!r}: {err}") from err
    return model.eval(), tokenizer


# --------------------------------------------------------------------------- encoding


def _ids(tokenizer: Any, text: str) -> list[int]:
    # A text longer than the model is expected here: PromptEncoder cuts it to max_length itself,
    # so the tokenizer's "sequence length is longer than the specified maximum" is not for us.
    return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"] if text else []


class PromptEncoder:
    """Token ids of judge inputs; each fixed segment and candidate is tokenized once."""

    def __init__(self, tokenizer: Any, mode: str, max_length: int, style: str = "full"):
        self.tok, self.mode, self.max_length, self.style = tokenizer, mode, max_length, style
        self.bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        self.marker = _ids(tokenizer, CUT_MARKER)

    def prompt(self, question: str, reference: str, gold: str | None) -> tuple[list[list[int]], tuple[str, ...]]:
        """Ids of the fixed segments, and the lead (space) each candidate slot takes."""
        seg = template_segments(self.mode, question, reference, gold, style=self.style)
        return [_ids(self.tok, t) for t in seg.texts], seg.leads

    def assemble(self, fixed: list[list[int]], cands: Sequence[list[int]], where: str = "") -> list[int]:
        """`bos fixed0 cut(c0) fixed1 ... fixedN`: only candidates are cut, the suffix is last."""
        budget = self.max_length - len(self.bos) - sum(map(len, fixed))
        caps = fair_caps([len(c) for c in cands], budget)
        if budget < MIN_CANDIDATE_TOKENS * len(cands) and any(len(c) > k for c, k in zip(cands, caps)):
            raise ValueError(f"judge input {where}: question, reference and template take "
                             f"{self.max_length - budget} of max_length={self.max_length} tokens")
        ids = self.bos + fixed[0]
        for c, k, after in zip(cands, caps, fixed[1:]):
            ids += cut(c, k, self.marker) + after
        assert len(ids) <= self.max_length and ids[len(ids) - len(fixed[-1]):] == fixed[-1]
        return ids

    def encode(self, question: str, reference: str, gold: str | None, responses: Sequence[str],
               where: str = "") -> list[int]:
        fixed, leads = self.prompt(question, reference, gold)
        if len(responses) != len(leads):
            raise ValueError(f"{self.mode} judging takes {len(leads)} responses, got {len(responses)}")
        cands = [_ids(self.tok, lead + clean_candidate(r)) for lead, r in zip(leads, responses)]
        return self.assemble(fixed, cands, where)


def encode_input(tokenizer: Any, mode: str, question: str, reference: str,
                 responses: Sequence[str], gold: str | None = None, max_length: int = 512,
                 style: str = "full") -> list[int]:
    """Token ids of one judge input; the verdict is read after its last id (the suffix's)."""
    return PromptEncoder(tokenizer, mode, max_length, style).encode(question, reference, gold, responses)


def pad_left(rows: Sequence[list[int]], pad_id: int, device: Any = "cpu") -> dict[str, torch.Tensor]:
    """Left-padded batch; position ids count real tokens only, so padding changes nothing."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[r, width - len(row):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "position_ids": pos.to(device)}


def judge_pad_id(tokenizer: Any) -> int:
    """Any id will do under a zero attention mask; Llama tokenizers have no pad token."""
    return next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)


@torch.inference_mode()
def verdict_probs(model: Any, tokenizer: Any, rows: Sequence[list[int]], words: Sequence[str],
                  batch_size: int, progress: Progress = None) -> torch.Tensor:
    """[len(rows), len(words)] softmax over the verdict tokens at each row's last position."""
    vid = verdict_token_ids(tokenizer)
    cols = torch.tensor([vid[w] for w in words])
    out = torch.empty((len(rows), len(words)))
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths, less padding
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = pad_left([rows[i] for i in idx], judge_pad_id(tokenizer), model.device)
        logits = model(**batch, logits_to_keep=1).logits[:, -1, :].float().cpu()
        out[idx] = torch.softmax(logits[:, cols], dim=-1)
        if progress:
            progress(min(start + batch_size, len(rows)), len(rows))
    return out


# --------------------------------------------------------------------------- scoring


def items_rows(tokenizer: Any, items: Sequence[dict], cfg: ScorerConfig,
                mode: str) -> tuple[list[tuple], list[list[int]]]:
    """Keys `(prompt_id, a_idx, b_idx)` / `(prompt_id, cand_idx)` and ids of every judged input."""
    enc = PromptEncoder(tokenizer, mode, cfg.max_length, cfg.template)
    keys, rows = [], []
    for it in items:
        pid, cands = it["prompt_id"], it["candidates"]
        ids = [int(k) for k in it["cand_idx"]] if it.get("cand_idx") is not None else list(range(len(cands)))
        if len(ids) != len(cands):
            raise ValueError(f"prompt {pid!r}: {len(ids)} cand_idx for {len(cands)} candidates")
        fixed, leads = enc.prompt(it["question"], it["reference"],
                                  it.get("gold") if cfg.use_gold_answer else None)
        toks = {(ld, n): _ids(tokenizer, ld + clean_candidate(c))  # tokenized once per slot lead
                for ld in set(leads) for n, c in enumerate(cands)}
        where = f"of prompt {pid!r}"
        if mode == POINTWISE:
            pairs: list[tuple[int, ...]] = [(n,) for n in range(len(cands))]
        else:  # every unordered pair, in both orders: N(N-1) rows
            pairs = [(i, j) for i in range(len(cands)) for j in range(len(cands)) if i != j]
        for pair in pairs:
            keys.append((pid, *(ids[n] for n in pair)))
            rows.append(enc.assemble(fixed, [toks[(ld, n)] for ld, n in zip(leads, pair)], where))
    return keys, rows


def score_pairs(model: Any, tokenizer: Any, items: Sequence[dict], cfg: ScorerConfig,
                progress: Progress = None) -> list[PairScore]:
    """All N(N-1)/2 pairs of each prompt's candidates, both orders: the rows curation eats.

    Items: `prompt_id, question, reference, candidates` (list of texts), optional `gold`
    (shown when cfg.use_gold_answer) and `cand_idx` (ids of the candidates; default 0..N-1).
    Returns rows `prompt_id, a_idx, b_idx, p_a, p_b, p_tie` (`data.curation.PAIR_COLUMNS`),
    N(N-1) per prompt, each a softmax over ' A', ' B', ' Tie' (sums to 1).
    """
    keys, rows = items_rows(tokenizer, items, cfg, PAIRWISE)
    probs = verdict_probs(model, tokenizer, rows, VERDICTS[PAIRWISE], cfg.batch_size, progress)
    return [{"prompt_id": pid, "a_idx": a, "b_idx": b, "p_a": float(p[0]), "p_b": float(p[1]),
             "p_tie": float(p[2])} for (pid, a, b), p in zip(keys, probs.tolist())]


def score_points(model: Any, tokenizer: Any, items: Sequence[dict], cfg: ScorerConfig,
                 progress: Progress = None) -> list[PointScore]:
    """Pointwise mode (ablation): rows `prompt_id, cand_idx, p_good`, softmax over Good/Bad."""
    keys, rows = items_rows(tokenizer, items, cfg, POINTWISE)
    probs = verdict_probs(model, tokenizer, rows, VERDICTS[POINTWISE], cfg.batch_size, progress)
    return [{"prompt_id": pid, "cand_idx": k, "p_good": float(p[0])}
            for (pid, k), p in zip(keys, probs.tolist())]


def pair_accuracy(model: Any, tokenizer: Any, pairs: Sequence[dict], cfg: ScorerConfig) -> float:
    """3-way argmax accuracy on labelled ordered pairs (data/perturb.py), via `score_pairs`."""
    items = [{"prompt_id": n, "question": p["question"], "reference": p["reference"],
              "gold": p.get("gold"), "candidates": [p["response_a"], p["response_b"]]}
             for n, p in enumerate(pairs)]
    rows = [r for r in score_pairs(model, tokenizer, items, cfg) if r["a_idx"] == 0]
    names = VERDICTS[PAIRWISE]
    hits = [names[max(range(3), key=(r["p_a"], r["p_b"], r["p_tie"]).__getitem__)] == p["verdict"]
            for r, p in zip(rows, pairs)]
    return sum(hits) / len(hits) if hits else float("nan")
