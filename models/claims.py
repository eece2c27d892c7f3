"""The claims judge (`scorer.mode=claims`, docs/method.md section 3): a rationale's claims checked
one by one against the reference, the implied answer read by the reader, the pair verdict worked
out from those marks.

Why it is split: one verdict token for "which of two rationales is better, given a caption"
asks a small LM to cross-check two texts against a third at once. On the built-in world the
4-layer pairwise judge stopped at 0.76 training accuracy and agreed with the exact scorer on
55-61% of same-answer pairs. Checking ONE sentence against the reference is a task a model of
the same size learns (docs/method.md has the runs). As RLAIF-V does, the judgement becomes:
- claim checker: `Claim: <sentence>\\nReference: <facts>\\nTrue:` -> p(' yes') over {yes, no},
  read from the next-token logits of one forward pass (no generation, no parsing);
- factual = the product of p(yes) over the rationale's claims (0 with no claim);
- consistent = the reader's probability of the candidate's own answer (models/reader.py);
- correct = the answer equals the gold answer (1 or 0; 1/2 for every candidate without gold);
- pair verdict (p_a, p_b, p_tie) = P(quality_a > / < / = quality_b), quality = 4 correct +
  2 consistent + factual (data/claims.py:pair_verdict), written in both orders like any judge's.

The checker is any causal LM: the built-in one is a tiny Llama over the world's tokenizer
(models/builtin/claims, `make bootstrap-claims`); a real one loads by path or hub id through
the same `load_judge`. Identical (claim, reference) inputs are checked once per call.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from data.claims import CLAIM_VERDICTS, WEIGHTS, claim_prompt, evidence, pair_verdict, rationale_claims
from data.schema import CandidateMark, PairScore
from data.scoring import gold_answer, parse_response
from models.scorer import Progress, judge_pad_id, pad_left, save_judge
from models.reader import reader_prompt
from models.builtin import JUDGE_INFO

MAX_CLAIM_TOKENS = 96  # a claim is one sentence; a longer one is cut (its tail is noise anyway)


def verdict_ids(tokenizer: Any) -> list[int]:
    """First token ids of ' yes' and ' no'.

    Raises:
        ValueError: the two share their first token (a tokenizer that cannot tell them apart).
    """
    ids = [tokenizer(" " + w, add_special_tokens=False)["input_ids"][0] for w in CLAIM_VERDICTS]
    if ids[0] == ids[1]:
        raise ValueError(f"claim verdicts {CLAIM_VERDICTS} share their first token {ids[0]}")
    return ids


def encode_claim(tokenizer: Any, claim: str, reference: str, max_length: int, select: bool = True) -> list[int]:
    """Ids of one checker input (`CLAIM_PROMPT`; with `select`, the reference is the claim's
    evidence, data/claims.py:evidence), at most `max_length`: the claim is cut to
    MAX_CLAIM_TOKENS, the reference's tail is cut to fit, the suffix ('\nTrue:') is always last.
    The reference comes first so that, reading the claim, the model can look each word up in
    what it has already read (the claim's own LM loss trains exactly that)."""
    tok = lambda t: tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    text = claim_prompt(claim, evidence(claim, reference) if select else reference)
    ref, _, rest = text.partition("\nClaim:")
    body, _, _ = rest.rpartition("\nTrue:")
    c = tok("\nClaim:" + body)[:MAX_CLAIM_TOKENS]
    end = tok("\nTrue:")
    r = tok(ref)[: max(0, max_length - len(bos) - len(c) - len(end))]
    return bos + r + c + end


@torch.inference_mode()
def check_claims(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], max_length: int = 256,
                 batch_size: int = 128, progress: Progress = None, select: bool = True) -> list[float]:
    """p(' yes') for each (claim, reference), softmax over ' yes' / ' no' at the last position.
    Identical pairs are run once."""
    unique = list(dict.fromkeys(pairs))
    rows = [encode_claim(tokenizer, c, r, max_length, select) for c, r in unique]
    yes_no = torch.tensor(verdict_ids(tokenizer))
    p = torch.empty(len(rows))
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths, less padding
    pad = judge_pad_id(tokenizer)
    model.eval()
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        batch = pad_left([rows[i] for i in idx], pad, model.device)
        logits = model(**batch, logits_to_keep=1).logits[:, -1, :].float().cpu()
        p[idx] = torch.softmax(logits[:, yes_no], -1)[:, 0]
        if progress:
            progress(min(lo + batch_size, len(rows)), len(rows))
    got = dict(zip(unique, p.tolist()))
    return [got[x] for x in pairs]


@torch.inference_mode()
def answer_probs(model: Any, tokenizer: Any, prompts: Sequence[str], answers: Sequence[str],
                 batch_size: int = 128) -> list[float]:
    """P(the reader writes ' <answer>' then its end token | prompt), teacher-forced, one forward
    per input: the probability that the rationale implies exactly this answer."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    tok = lambda t: tokenizer(t, add_special_tokens=False, verbose=False)["input_ids"]
    rows, spans = [], []
    for p, a in zip(prompts, answers):
        head, tail = bos + tok(p), tok(" " + a) + eos
        rows.append(head + tail)
        spans.append(len(tail))
    out = [0.0] * len(rows)
    pad = judge_pad_id(tokenizer)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    for lo in range(0, len(order), batch_size):
        idx = order[lo:lo + batch_size]
        batch = pad_left([rows[i] for i in idx], pad, model.device)
        logp = torch.log_softmax(model(**batch).logits.float(), -1)
        ids = batch["input_ids"]
        for n, i in enumerate(idx):
            k = spans[i]
            tgt = ids[n, -k:]
            lp = logp[n, -k - 1:-1].gather(-1, tgt[:, None]).sum().item()
            out[i] = math.exp(lp)
    return out


def candidate_marks(checker: Any, checker_tok: Any, reader: Any, reader_tok: Any,
                    items: Sequence[dict], max_length: int = 256, batch_size: int = 128,
                    use_gold: bool = True, progress: Progress = None, select: bool = True) -> list[CandidateMark]:
    """Per candidate of each judging item (data/judging.py:judge_items): `correct`,
    `consistent`, `factual` (probabilities) and `n_claims`. Each text is parsed here
    (`parse_response`), so any response can be judged, a steered one too."""
    flat = [(it, int(k), parse_response(t, it.get("choices"))) for it in items
            for k, t in zip(it.get("cand_idx") or range(len(it["candidates"])), it["candidates"])]
    claims = [rationale_claims(p.rationale) for *_, p in flat]
    pairs = [(c, it["reference"] or "") for (it, *_), cs in zip(flat, claims) for c in cs]
    p_true = iter(check_claims(checker, checker_tok, pairs, max_length, batch_size, progress, select))
    parsed = [n for n, (*_, p) in enumerate(flat) if p.ok]
    p_cons = dict(zip(parsed, answer_probs(
        reader, reader_tok, [reader_prompt(flat[n][0]["question"], flat[n][2].rationale) for n in parsed],
        [flat[n][2].answer for n in parsed], batch_size)))
    marks: list[CandidateMark] = []
    for n, ((it, k, p), cs) in enumerate(zip(flat, claims)):
        factual = math.prod(next(p_true) for _ in cs) if cs else 0.0
        gold = it.get("gold") if use_gold else None
        if not p.ok:
            correct = 0.0
        elif gold is None or str(gold).strip() == "":
            correct = 0.5  # no gold answer: correctness tells no candidate apart
        else:
            correct = float(p.answer == gold_answer(str(gold), it.get("choices")))
        marks.append({"prompt_id": it["prompt_id"], "cand_idx": k, "correct": correct,
                      "consistent": p_cons.get(n, 0.0), "factual": factual, "n_claims": len(cs)})
    return marks


def hardened(marks: Sequence[CandidateMark]) -> list[CandidateMark]:
    """The marks rounded at 1/2 (`scorer.hard_marks`): pair verdicts then are certain where
    the marks differ and ties where they agree, as the oracle's, and curation's pair weights
    follow the quality gap instead of the marks' softness."""
    return [{**m, **{k: float(m[k] >= 0.5) for k in WEIGHTS}} for m in marks]


def marks_to_pairs(marks: Sequence[CandidateMark]) -> list[PairScore]:
    """Pair rows (both orders) of every prompt's candidates from their marks."""
    by: dict[Any, list[CandidateMark]] = {}
    for m in marks:
        by.setdefault(m["prompt_id"], []).append(m)
    rows: list[PairScore] = []
    for pid, ms in by.items():
        for a in ms:
            for b in ms:
                if a is not b:
                    pa, pb, pt = pair_verdict(a, b)
                    rows.append({"prompt_id": pid, "a_idx": a["cand_idx"], "b_idx": b["cand_idx"],
                                 "p_a": pa, "p_b": pb, "p_tie": pt})
    return rows


# --------------------------------------------------------------------------- training


def train_checker(model: Any, tokenizer: Any, records: Sequence[dict], *, steps: int,
                  learning_rate: float = 2e-3, batch_size: int = 32, max_length: int = 256,
                  lm_loss_weight: float = 1.0, seed: int = 0, progress: Progress = None,
                  select: bool = True) -> dict[str, float]:
    """Fine-tune the checker on labelled claims (`claim`, `reference`, `holds`).

    loss = CE over {' yes', ' no'} at the suffix + lm_loss_weight x LM loss over the input: the
    same two-term loss as the pairwise judge's (models/judge_training.py), which a tiny LM needs
    to learn at all; a hand loop for the same reason (TRL's SFTTrainer has no restricted-softmax
    term). Warm-up, then cosine decay to 10% of the peak rate. Adjacent records with the same
    `id` (a true claim and its minimal false twin, data/claims.py) stay in one batch.
    """
    if not records:
        raise ValueError("train_checker needs at least one labelled claim")
    yes, no = verdict_ids(tokenizer)
    rows = [encode_claim(tokenizer, r["claim"], r["reference"], max_length - 1, select) for r in records]
    target = torch.tensor([0 if r["holds"] else 1 for r in records])
    # a teacher's p(yes) where given (soft labels, models/distill.py), else the exact label
    soft = torch.tensor([float(r.get("p_yes", 1.0 if r["holds"] else 0.0)) for r in records])
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]  # LoRA: the adapters only
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.01)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * (
        0.1 + 0.45 * (1 + math.cos(math.pi * min(s, steps) / steps))))
    pad, device = judge_pad_id(tokenizer), model.device
    groups: list[list[int]] = []  # the two claims of a pair (adjacent, one id) stay together
    for i, r in enumerate(records):
        if groups and records[groups[-1][0]].get("id") is not None and records[groups[-1][0]].get("id") == r.get("id"):
            groups[-1].append(i)
        else:
            groups.append([i])
    order: list[int] = []
    hist: list[tuple[float, float]] = []
    model.train()
    t0 = time.time()
    for step in range(steps):
        if len(order) < batch_size:
            order += [i for g in torch.randperm(len(groups), generator=gen).tolist() for i in groups[g]]
        idx, order = order[:batch_size], order[batch_size:]
        batch = pad_left([rows[i] + [yes if target[i] == 0 else no] for i in idx], pad, device)
        logits = model(**batch).logits.float()
        v = logits[:, -2][:, [yes, no]]  # column -2: the suffix's last token, where inference reads
        logp = F.log_softmax(v, -1)
        p = soft[idx].to(device)
        v_loss = -(p * logp[:, 0] + (1 - p) * logp[:, 1]).mean()  # = cross-entropy for 0/1 labels
        real = batch["attention_mask"].float()
        both = real[:, :-1] * real[:, 1:]
        tok_loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), batch["input_ids"][:, 1:], reduction="none")
        loss = v_loss + lm_loss_weight * (tok_loss * both).sum() / both.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        hist.append((v_loss.item(), (v.argmax(-1).cpu() == target[idx]).float().mean().item()))
        if progress:
            progress(step + 1, steps)
    model.eval()
    last = hist[-100:]
    return {"claims/verdict_loss": sum(h[0] for h in last) / len(last),
            "claims/train_acc": sum(h[1] for h in last) / len(last),
            "claims/train_seconds": time.time() - t0, "claims/train_steps": float(steps),
            "claims/train_records": float(len(records))}


def save_checker(model: Any, tokenizer: Any, out: str | Path, max_length: int, evidence: str = "overlap",
                 world: str | None = None) -> Path:
    """Save a checker with its `src_judge.json` (mode claims, evidence, the world it was trained
    for), which the pipeline checks against the config before any compute
    (models/builtin.py:check_template)."""
    folder = save_judge(model, tokenizer, out)
    (Path(out) / JUDGE_INFO).write_text(json.dumps({"mode": "claims", "max_length": max_length, "evidence": evidence,
                                                       **({"world": world} if world else {})}, indent=1))
    return folder


def checker_accuracy(model: Any, tokenizer: Any, records: Sequence[dict], max_length: int = 256,
                     batch_size: int = 128, select: bool = True) -> dict[str, float]:
    """Accuracy of p(yes) > 1/2 against `holds`, overall and on the true and the false claims."""
    p = check_claims(model, tokenizer, [(r["claim"], r["reference"]) for r in records], max_length,
                     batch_size, select=select)
    hit = [(q > 0.5) == bool(r["holds"]) for q, r in zip(p, records)]
    t = [h for h, r in zip(hit, records) if r["holds"]]
    f = [h for h, r in zip(hit, records) if not r["holds"]]
    mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")
    return {"claims/accuracy": mean(hit), "claims/accuracy_true": mean(t), "claims/accuracy_false": mean(f),
            "claims/n": float(len(records))}
