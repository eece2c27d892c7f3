"""Training a tiny R-Scorer on the scorer split (`scorer.model=train` in the pipeline, and the
committed judge's bootstrap, tools/judge_bootstrap.py): records, the training loop
(`train_judge`), saving with the prompt style it must be scored with (`src_judge.json`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from data.config import ScorerConfig, SRCConfig
from data.perturb import agreement, pair_records, point_records
from data.prompts import PAIRWISE, POINTWISE, VERDICTS
from models.builtin import JUDGE_INFO, resolve_base
from models.scorer import (
    Progress, PromptEncoder, build_tiny_judge, judge_pad_id, pad_left, save_judge, score_pairs,
    verdict_token_ids,
)
from data import perturb_text


def new_tiny_judge(cfg: SRCConfig, tokenizer_from: str | None = None) -> tuple[torch.nn.Module, object]:
    """A randomly initialised tiny judge (seeded) over the base model's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from or resolve_base(cfg.model.base))
    return build_tiny_judge(tokenizer, seed=cfg.seed), tokenizer


def train_and_save(model: torch.nn.Module, tokenizer: object, cfg: SRCConfig,
                   train_records: list[dict], held: list[dict], out: Path,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Train the judge on labelled records, measure it on `held` items, save it to `out`
    with `src_judge.json` (the prompt style it must be scored with). Returns the metrics."""
    metrics = train_judge(model, tokenizer, train_records, cfg.scorer, progress, seed=cfg.seed)
    if held:
        metrics.update(agreement(score_pairs(model, tokenizer, held, cfg.scorer), held))
    save_judge(model, tokenizer, out)
    info = {"template": cfg.scorer.template, "use_gold_answer": cfg.scorer.use_gold_answer,
            "mode": cfg.scorer.mode, "max_length": cfg.scorer.max_length}
    (Path(out) / JUDGE_INFO).write_text(json.dumps(info, indent=1))
    return metrics


def training_records(cfg: SRCConfig, records: list[dict], flaw_pairs: int = 2) -> list[dict]:
    """Labelled pairs (and, in pointwise mode, pointwise items) of the scorer split;
    `flaw_pairs` flaw-vs-flaw pairs per record. Records with scene facts (the built-in world)
    get data/perturb.py's exactly checked flaws; others (your own data) data/perturb_text.py's
    flaws that hold by construction.

    Raises:
        ValueError: no record has a gold rationale to perturb.
    """
    if perturb_text.has_facts(records):
        pairs, points = pair_records, point_records
    else:
        pairs, points = perturb_text.pair_records, perturb_text.point_records
    train = pairs(records, cfg.seed, flaw_pairs=flaw_pairs)
    if cfg.scorer.mode == "pointwise":
        train += points(records, cfg.seed)
    if not train:
        raise ValueError(f"scorer.model=train: none of the {len(records)} scorer-split records has a gold "
                         "rationale to make training pairs from; give rationales, or set scorer.model to "
                         "a trained judge (builtin, a path or a hub id)")
    return train


def _encode_record(enc: dict[str, PromptEncoder], r: dict, cfg: ScorerConfig) -> tuple[list[int], str, str]:
    """(ids, mode, verdict) of a labelled pair (`response_a/b`) or pointwise (`response`) record."""
    mode = PAIRWISE if "response_a" in r else POINTWISE
    texts = [r["response_a"], r["response_b"]] if mode == PAIRWISE else [r["response"]]
    if r["verdict"] not in VERDICTS[mode]:
        raise ValueError(f"record {r.get('id', '?')!r}: verdict {r['verdict']!r} is not one of "
                         f"{VERDICTS[mode]} ({mode})")
    gold = r.get("gold") if cfg.use_gold_answer else None
    ids = enc[mode].encode(r["question"], r["reference"], gold, texts, r.get("id", ""))
    return ids, mode, r["verdict"]


def epoch_order(records: Sequence[dict], gen: torch.Generator) -> list[int]:
    """A seeded permutation that keeps the two orders of a pair (adjacent rows `x|y`, `y|x`)
    side by side: a batch then holds the same content with swapped labels, so the gradient
    has to come from which slot holds what (the order-sensitive part of judging)."""
    groups: list[list[int]] = []
    i = 0
    while i < len(records):
        a = records[i]
        b = records[i + 1] if i + 1 < len(records) else None
        swapped = (b is not None and "response_a" in a and a.get("prompt_id") == b.get("prompt_id")
                   and a["response_a"] == b["response_b"] and a["response_b"] == b["response_a"])
        groups.append([i, i + 1] if swapped else [i])
        i += 2 if swapped else 1
    return [k for g in torch.randperm(len(groups), generator=gen).tolist() for k in groups[g]]


def train_judge(model: Any, tokenizer: Any, train_records: Sequence[dict], cfg: ScorerConfig,
                progress: Progress = None, seed: int = 0) -> dict[str, float]:
    """Supervised fine-tuning of the judge on labelled records (data/perturb.py); returns metrics.

    loss = CE(verdict | verdict tokens of the mode) + cfg.lm_loss_weight * LM loss over the
    input. A hand loop rather than TRL's SFTTrainer because the loss has two terms, one of them
    a softmax restricted to 3 (or 2) verdict tokens, exactly what `score_pairs` reads; the LM
    term is what makes the tiny judge learn at all (measured: trained on the verdict alone it did not learn in 2 min).
    One step sees cfg.train_batch_size records; records are drawn without replacement, epoch
    by epoch, in a seeded order.
    """
    if not train_records:
        raise ValueError("train_judge needs at least one labelled record")
    vid = verdict_token_ids(tokenizer)
    enc = {m: PromptEncoder(tokenizer, m, cfg.max_length - 1, cfg.template) for m in VERDICTS}  # + label
    allowed = {m: torch.zeros(len(tokenizer), dtype=torch.bool) for m in VERDICTS}
    for m, words in VERDICTS.items():
        allowed[m][[vid[w] for w in words]] = True
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    steps, warmup = cfg.train_steps, max(1, cfg.train_steps // 20)
    # linear warm-up, then cosine decay to 10% of the peak learning rate
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    device, pad = model.device, judge_pad_id(tokenizer)
    order: list[int] = []
    hist: list[tuple[float, float, float, float]] = []
    model.train()
    t0 = time.time()
    for step in range(steps):
        if len(order) < cfg.train_batch_size:
            order += epoch_order(train_records, gen)
        idx, order = order[:cfg.train_batch_size], order[cfg.train_batch_size:]
        encoded = [_encode_record(enc, train_records[i], cfg) for i in idx]
        batch = pad_left([ids + [vid[v]] for ids, _, v in encoded], pad, device)
        logits = model(**batch).logits.float()
        target = torch.tensor([vid[v] for _, _, v in encoded], device=device)
        mask = torch.stack([allowed[m] for _, m, _ in encoded]).to(device)
        # column -2 is every row's suffix end (left padding): where inference reads the verdict
        vlogits = logits[:, -2, :].masked_fill(~mask, float("-inf"))
        v_loss = F.cross_entropy(vlogits, target)
        real = batch["attention_mask"].float()
        tgt_mask = real[:, :-1] * real[:, 1:]  # a real token predicting a real token
        tok_loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), batch["input_ids"][:, 1:], reduction="none")
        lm_loss = (tok_loss * tgt_mask).sum() / tgt_mask.sum()
        loss = v_loss + cfg.lm_loss_weight * lm_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        acc = (vlogits.argmax(-1) == target).float().mean().item()
        hist.append((loss.item(), v_loss.item(), lm_loss.item(), acc))
        if progress:
            progress(step + 1, steps)
    model.eval()
    last = hist[-50:]
    mean = lambda k: sum(h[k] for h in last) / len(last)
    return {"judge/train_loss": mean(0), "judge/verdict_loss": mean(1), "judge/lm_loss": mean(2),
            "judge/train_acc": mean(3), "judge/train_seconds": time.time() - t0,
            "judge/train_steps": float(steps), "judge/train_examples": float(steps * cfg.train_batch_size)}


# --------------------------------------------------------------------------- measurement
