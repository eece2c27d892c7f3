"""The reader: a text-only LM that says which answer a rationale implies, without the image.

A candidate is *supported* when the reader, given only the question and the candidate's
rationale, states the answer the candidate states, with a confidence (the probability of the
answer's first token) of at least a threshold. Curation (data/curation.py) lets only a
supported candidate be chosen, so a right answer whose rationale implies something else (or
nothing) never becomes the example DPO pulls the policy towards.

Why a reader and not only the pairwise R-Scorer: on the built-in world's candidates the
R-Scorer is at chance (59-61%) on pairs that state the same answer, where consistency is
what differs, and its preference pairs then lowered consistency. Reading an answer off a
rationale is a one-input task a tiny LM of the same size learns: the committed reader's
`supported` equals the exact scorer's consistency on 92.6% of a policy's held-out candidates
at its threshold (88.0% with none; 73% of the correct ones are consistent). docs/reader.md.

The input is `READER_PROMPT`; the reader answers with one of the question's answers or
`UNCLEAR` (the rationale implies none: missing or contradictory evidence). Any causal LM loads
through `load_reader` (a local folder or a hub id); the built-in one is committed under
models/builtin/reader and built by `make bootstrap-reader` (tools/reader_bootstrap.py).
Training uses TRL's SFTTrainer on prompt-completion records (loss on the completion only).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from data.scoring import match_choice, normalize_answer
from data.schema import Candidate, ReaderMark
from models.builtin import reader_path
from models.scorer import load_judge
from models.policy import ProgressReporter, run_trainer, trainer_defaults

READER_PROMPT = "{question}\nRationale: {rationale}\nIt follows:"
UNCLEAR = "unclear"
MAX_ANSWER_TOKENS = 8  # ' unclear' is 6 tokens of the built-in tokenizer; answers are 1-3
Progress = Callable[..., None] | None


def reader_prompt(question: str, rationale: str) -> str:
    return READER_PROMPT.format(question=question.strip(), rationale=rationale.strip())


def load_reader(name_or_path: str, dtype: str = "float32", device: str = "auto") -> tuple[Any, Any]:
    """A reader model and its tokenizer ('builtin', a folder or a hub id)."""
    model, tok = load_judge(reader_path(name_or_path), dtype, device)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


@torch.inference_mode()
def read_answers(model: Any, tokenizer: Any, questions: Sequence[str], rationales: Sequence[str],
                 batch_size: int = 128, progress: Progress = None) -> tuple[list[str], list[float]]:
    """The answer (normalised) the reader reads off each rationale, greedy, and its confidence:
    the probability of the answer's first token."""
    answers: list[str] = []
    confidence: list[float] = []
    device = next(model.parameters()).device
    tokenizer.padding_side = "left"
    for lo in range(0, len(questions), batch_size):
        texts = [reader_prompt(q, r) for q, r in zip(questions[lo:lo + batch_size],
                                                    rationales[lo:lo + batch_size])]
        batch = tokenizer(texts, return_tensors="pt", padding=True).to(device)
        gen = model.generate(**batch, max_new_tokens=MAX_ANSWER_TOKENS, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, output_scores=True,
                             return_dict_in_generate=True)
        new = gen.sequences[:, batch["input_ids"].shape[1]:]
        answers += [normalize_answer(t) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        confidence += torch.softmax(gen.scores[0].float(), -1).max(-1).values.tolist()
        if progress:
            progress(len(answers), len(questions))
    return answers, confidence


def read_candidates(model: Any, tokenizer: Any, cands: Sequence[Candidate], threshold: float = 0.0,
                    batch_size: int = 128, progress: Progress = None) -> list[ReaderMark]:
    """One row per candidate: prompt_id, cand_idx, read (the reader's answer; None for an
    unparsable candidate), confidence, and supported: the reader reads the candidate's own
    answer with confidence >= threshold (None if unparsable)."""
    todo = [c for c in cands if c.get("answer")]
    read, conf = read_answers(model, tokenizer, [c["question"] for c in todo],
                              [c["rationale"] for c in todo], batch_size, progress)
    # a multiple-choice read by letter or text is the option's text, as the candidate's answer is
    got = {(c["prompt_id"], int(c["cand_idx"])): ((match_choice(r, c["choices"]) if c.get("choices") else None) or r, p)
           for c, r, p in zip(todo, read, conf)}
    rows = []
    for c in cands:
        r, p = got.get((c["prompt_id"], int(c["cand_idx"])), (None, None))
        rows.append({"prompt_id": c["prompt_id"], "cand_idx": int(c["cand_idx"]), "read": r,
                     "confidence": p,
                     "supported": None if r is None else (r == normalize_answer(str(c["answer"]))
                                                          and p >= threshold)})
    return rows


def reader_threshold(name: str, given: float | None = None) -> float:
    """The confidence a supported verdict needs: `given`, else the reader's manifest
    `threshold` (the built-in reader's was chosen on held-out candidates), else 0."""
    if given is not None:
        return given
    return float(manifest(reader_path(name)).get("threshold", 0.0))


def train_reader(model: Any, tokenizer: Any, records: Sequence[dict], out_dir: str | Path, *,
                 steps: int, learning_rate: float = 2e-3, batch_size: int = 32, seed: int = 0,
                 progress: Progress = None) -> dict[str, Any]:
    """Fine-tune `model` on reader records (`question`, `rationale`, `implied`) with TRL's
    SFTTrainer (prompt = `reader_prompt`, completion = ' <implied>' + eos) and save it to out_dir."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer


    data = Dataset.from_list([{"prompt": reader_prompt(r["question"], r["rationale"]),
                               "completion": " " + r["implied"]} for r in records])
    out = Path(out_dir)
    args = SFTConfig(
        output_dir=str(out / "_trainer"), max_steps=steps, per_device_train_batch_size=batch_size,
        learning_rate=learning_rate, lr_scheduler_type="linear", warmup_steps=min(50, steps // 10),
        max_length=512, **trainer_defaults(model, seed, False, progress is not None),
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                         callbacks=[ProgressReporter(progress)] if progress else None)
    seconds, logged = run_trainer(trainer)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"loss": logged[-1]["loss"] if logged else None, "steps": steps, "records": len(records),
            "seconds": round(seconds, 1)}


def agreement(rows: Sequence[dict], consistent: Sequence[bool | None],
              correct: Sequence[bool | None] | None = None) -> dict[str, float]:
    """How often `supported` equals the exact scorer's `consistent` (parsable candidates), and
    on the correct ones only (where the reader's verdict decides the chosen side)."""
    both = [(r["supported"], c, k) for r, c, k in zip(rows, consistent, correct or [None] * len(rows))
            if r["supported"] is not None and c is not None]
    out: dict[str, float] = {}
    if both:
        out["reader/agree_consistent"] = sum(s == c for s, c, _ in both) / len(both)
    right = [(s, c) for s, c, k in both if k]
    if right:
        out["reader/agree_consistent_correct"] = sum(s == c for s, c in right) / len(right)
    return out


def manifest(folder: str | Path) -> dict:
    f = Path(folder) / "manifest.json"
    return json.loads(f.read_text()) if f.is_file() else {}
