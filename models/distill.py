"""The judge, distilled from a teacher: the claims judge's two learned parts, the claim checker
and the reader, fine-tuned from a pretrained LM on a teacher's verdicts about the policy's own
candidates (`scorer.model=distill`, `scorer.reader=distill`; docs/own-data.md).

A teacher VLM behind an OpenAI-compatible endpoint (models/teacher.py: vLLM, TGI, llama.cpp)
answers two questions about each candidate, with the image in front of it:
- a claim (a sentence of the rationale): true of the image? `p_yes` comes from the first token's
  log-probabilities where the server returns them (a soft label), else from the word (1 or 0);
- a rationale: which answer does it lead to (or 'unclear')? A multiple-choice reply, by letter
  or by option text, is the option's text (`data.scoring.match_choice`).
The student checker then learns p(yes) from the reference text and the claim only (the
dataset's reference or the teacher's description, `scorer.reference`), the student reader the
implied answer from the question and the rationale only: the two inputs the claims judge gives
them (models/claims.py). Every teacher answer is cached (models/teacher.py), so a resumed run
asks nothing twice.

The same two questions grade held-out responses on data without scene facts (`grade_rows`,
`eval.judge=teacher`): consistency (the teacher's read equals the stated answer) and
factuality (every claim true) are two measurements, and never the judge curation uses.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from data.claims import balance, rationale_claims
from data.scoring import match_choice, normalize_answer, parse_response, claim_holds, implied_answer
from models.reader import UNCLEAR, read_answers, train_reader
from models.teacher import TeacherClient, TeacherUnavailable, png_of, prompt_template, image_data_url
import json
import shutil
from models.builtin import judge_path
from models.scorer import load_judge
from models.claims import check_claims, save_checker, train_checker

CLAIM_TEMPLATE = "teacher_claim.txt"
READ_TEMPLATE = "teacher_read.txt"
HELD_OUT = 10  # one prompt in HELD_OUT is kept out of training, to measure the students on
MAX_FAILED = 0.1  # above this share of failed teacher requests a stage stops (see TeacherUnavailable)
Progress = Callable[..., None] | None


def claim_messages(png: bytes, claim: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_data_url(png)}},
        {"type": "text", "text": prompt_template(CLAIM_TEMPLATE).format_map({"claim": claim.strip()})}]}]


def read_messages(png: bytes, question: str, rationale: str) -> list[dict[str, Any]]:
    text = prompt_template(READ_TEMPLATE).format_map({"question": question.strip(), "rationale": rationale.strip()})
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_data_url(png)}}, {"type": "text", "text": text}]}]


def p_yes(text: str, top: dict[str, float] | None) -> float | None:
    """The teacher's probability that a claim holds: from the first token's log-probabilities
    of 'yes' and 'no' (any case, any leading space) where given, else 1 / 0 from the reply's
    first word; None for a reply that says neither.

    >>> p_yes("Yes.", {" yes": math.log(0.6), "Yes": math.log(0.2), "No": math.log(0.2)})
    0.8
    >>> p_yes("no", None), p_yes("maybe", None)
    (0.0, None)
    """
    if top:
        mass = {"yes": 0.0, "no": 0.0}
        for tok, lp in top.items():
            w = tok.strip().lower()
            if w in mass:
                mass[w] += math.exp(lp)
        if mass["yes"] + mass["no"] > 0:
            return round(mass["yes"] / (mass["yes"] + mass["no"]), 6)
    words = normalize_answer(text).split()
    if words and words[0] in ("yes", "no"):
        return 1.0 if words[0] == "yes" else 0.0
    return None


def implied(text: str, choices: Sequence[str] | None = None) -> str:
    """The answer a teacher's read names: an option's text for a multiple-choice question (by
    letter or text), 'unclear' when it says so or names no option, else the normalised reply."""
    t = normalize_answer(text.split("\n")[0])
    if not t or UNCLEAR in t.split():
        return UNCLEAR
    if choices:
        return match_choice(text.split("\n")[0], choices) or UNCLEAR
    return t


def _ask(client: TeacherClient, requests: list, what: str, progress: Progress, logprobs: bool) -> list:
    """The teacher's (reply, top) per request, None where it failed; raises TeacherUnavailable
    when more than MAX_FAILED of them failed."""
    got = client.map_ask(requests, progress, logprobs)
    failed = [e for r, e in got if r is None]
    if requests and len(failed) > MAX_FAILED * len(requests):
        raise TeacherUnavailable(f"teacher {client.url}: {len(failed)} of {len(requests)} {what} requests "
                                 f"failed after {client.cfg.retries} retries (last: {failed[-1]}); the "
                                 f"{len(requests) - len(failed)} answers are cached: re-run to ask only the rest")
    return [r for r, _ in got]


def _words(claim: str) -> list[str]:
    return re.findall(r"[\w'-]+|[^\w\s]", claim)


def twin_rows(rows: Sequence[dict], seed: int = 0) -> list[dict]:
    """For each claim row, a minimal twin: one word replaced by another word that some claim
    of `rows` has between the same two neighbours ('a red circle' -> 'a green circle', 'left of'
    -> 'right of', '2 objects' -> '3 objects'), for the teacher to label. A checker that sees a
    claim next to its twin learns which word the verdict turns on, not a sentence's look. Rows
    with no such word get none. No library makes data-driven one-word substitutions: by hand."""
    toks = [_words(r["claim"]) for r in rows]
    slots: dict[tuple[str, str], set[str]] = {}
    for w in toks:
        ctx = ["<s>", *(x.lower() for x in w), "</s>"]
        for i, x in enumerate(w):
            slots.setdefault((ctx[i], ctx[i + 2]), set()).add(x)
    out, seen = [], {(r["id"], r["claim"]) for r in rows}
    for r, w in zip(rows, toks):
        ctx = ["<s>", *(x.lower() for x in w), "</s>"]
        opts = [(i, sorted(slots[(ctx[i], ctx[i + 2])] - {x})) for i, x in enumerate(w) if x[0].isalnum()]
        opts = [(i, alt) for i, alt in opts if alt]
        if not opts:
            continue
        rng = random.Random(f"twin/{seed}/{r['id']}/{r['claim']}")
        i, alt = rng.choice(opts)
        words = [*w[:i], rng.choice(alt), *w[i + 1:]]
        claim = re.sub(r" ([^\w\s'-])", r"\1", " ".join(words))
        if (r["id"], claim) not in seen:
            seen.add((r["id"], claim))
            out.append({**r, "claim": claim})
    return out


def claim_rows(cands: Sequence[dict], images: dict[str, Any]) -> list[dict]:
    """Every distinct (prompt, sentence) of the candidates' rationales: `id` (the prompt),
    `claim`, `reference`, `image`."""
    seen: set[tuple[str, str]] = set()
    rows = []
    for c in cands:
        for s in rationale_claims(parse_response(c["text"], c.get("choices")).rationale):
            if (c["prompt_id"], s) not in seen:
                seen.add((c["prompt_id"], s))
                rows.append({"id": c["prompt_id"], "claim": s, "reference": c.get("reference") or "",
                             "image": images[c["prompt_id"]]})
    return rows


def read_rows(cands: Sequence[dict], images: dict[str, Any]) -> list[dict]:
    """Every distinct (prompt, rationale) of the parsable candidates: `id`, `question`,
    `rationale`, `answer` (stated, normalised), `choices`, `image`."""
    seen: set[tuple[str, str]] = set()
    rows = []
    for c in cands:
        p = parse_response(c["text"], c.get("choices"))
        if p.ok and p.rationale and (c["prompt_id"], p.rationale) not in seen:
            seen.add((c["prompt_id"], p.rationale))
            rows.append({"id": c["prompt_id"], "question": c["question"], "rationale": p.rationale,
                         "answer": p.answer, "choices": c.get("choices"), "image": images[c["prompt_id"]]})
    return rows


def ask_claims(client: TeacherClient, rows: Sequence[dict], progress: Progress = None) -> list[dict]:
    """The rows the teacher answered, with `p_yes` and `holds` (p_yes >= 1/2); replies that say
    neither yes nor no are left out."""
    replies = _ask(client, [claim_messages(png_of(r), r["claim"]) for r in rows], "claim", progress, True)
    out = []
    for r, rep in zip(rows, replies):
        p = None if rep is None else p_yes(*rep)
        if p is not None:
            out.append({**{k: v for k, v in r.items() if k != "image"}, "p_yes": p, "holds": p >= 0.5})
    return out


def ask_reads(client: TeacherClient, rows: Sequence[dict], progress: Progress = None) -> list[dict]:
    """The rows the teacher answered, with `implied` (an answer, an option's text, or 'unclear')."""
    replies = _ask(client, [read_messages(png_of(r), r["question"], r["rationale"]) for r in rows], "read",
                   progress, False)
    return [{**{k: v for k, v in r.items() if k != "image"}, "implied": implied(rep[0], r.get("choices"))}
            for r, rep in zip(rows, replies) if rep is not None]


def held_out(prompt_id: str) -> bool:
    """Whether a prompt is kept out of the students' training (one in HELD_OUT, by its id)."""
    return int(hashlib.sha256(str(prompt_id).encode()).hexdigest()[:8], 16) % HELD_OUT == 0


def grade_rows(client: TeacherClient, rows: list[dict], records: Sequence[dict], progress: Progress = None) -> None:
    """Fill each eval row's consistency and factuality (in place) from the teacher: consistent
    when the teacher's read of the rationale equals the stated answer, factual when the teacher
    holds every claim true (a rationale without claims is not). An unparsable response is neither."""
    images = {str(i): r["image"] for i, r in enumerate(records)}
    cands = [{"prompt_id": str(i), "text": row["response"], "question": r["question"],
              "choices": r.get("choices"), "reference": r.get("reference")}
             for i, (row, r) in enumerate(zip(rows, records))]
    claims = ask_claims(client, claim_rows(cands, images), progress)
    reads = ask_reads(client, read_rows(cands, images), progress)
    holds = {(c["id"], c["claim"]): c["holds"] for c in claims}
    said = {(r["id"], r["rationale"]): r["implied"] for r in reads}
    for c, row in zip(cands, rows):
        p = parse_response(c["text"], c.get("choices"))
        cs = rationale_claims(p.rationale) if p.ok else []
        row["factuality"] = float(bool(cs) and all(holds.get((c["prompt_id"], s), False) for s in cs))
        row["consistency"] = float(p.ok and said.get((c["prompt_id"], p.rationale)) == p.answer)


# --------------------------------------------------------------------------- the students


def load_init(name: str, device: str = "auto", lora_r: int = 0) -> tuple[Any, Any]:
    """scorer.init as a trainable LM: 'builtin' (the committed tiny judge's weights), a folder
    or a hub id; with `lora_r` > 0 wrapped in LoRA adapters (PEFT) on every linear layer."""
    model, tok = load_judge(judge_path(name) if name == "builtin" else name, device=device)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if lora_r:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    return model, tok


def merged(model: Any) -> Any:
    """The plain model of a LoRA-wrapped one (adapters merged), for saving as a judge folder."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def train_student_checker(cfg, claims: Sequence[dict], out: Path, world: str, progress: Progress = None) -> dict:
    """Fine-tune scorer.init on the teacher's labelled claims (balanced, soft labels) and save
    the checker to `out` (src_judge.json names `world`); returns its metrics, agreement with
    the teacher on held-out prompts' claims included."""
    s = cfg.scorer
    train = [c for c in claims if not held_out(c["id"])]
    held = [c for c in claims if held_out(c["id"])]
    train = balance(train, cfg.seed) or train  # the policy's sentences are mostly one kind
    # a prompt's claims (and their twins) side by side: train_checker keeps adjacent records of
    # one prompt in one batch, so a claim is learned against its twin (factual marks vs exact
    # on the built-in world's candidates: 0.867 -> 0.932 on seed 0, 0.810 -> 0.848 on seed 1)
    train.sort(key=lambda c: str(c["id"]))
    if not train:
        raise ValueError("the teacher labelled no claim of the candidates: nothing to distil a checker from")
    model, tok = load_init(s.init, cfg.model.device, s.lora_r)
    select = s.evidence == "overlap"
    metrics = train_checker(model, tok, train, steps=s.train_steps, learning_rate=s.learning_rate,
                            batch_size=s.train_batch_size, max_length=s.max_length,
                            lm_loss_weight=s.lm_loss_weight, seed=cfg.seed, progress=progress, select=select)
    model = merged(model)
    if held:
        p = check_claims(model, tok, [(c["claim"], c["reference"]) for c in held], s.max_length,
                         s.batch_size, select=select)
        metrics["distill/checker_agree_teacher"] = sum((q > 0.5) == c["holds"] for q, c in zip(p, held)) / len(held)
    save_checker(model, tok, out, s.max_length, s.evidence, world)
    return metrics


THRESHOLDS = (0.0, 0.3, 0.5, 0.7, 0.9)


def train_student_reader(cfg, reads: Sequence[dict], out: Path, world: str, progress: Progress = None) -> dict:
    """Fine-tune scorer.init on the teacher's reads (question, rationale -> implied answer) and
    save the reader to `out` with a manifest: the threshold that agrees best with the teacher's
    supported verdict on held-out prompts, and `world`."""

    s = cfg.scorer
    train = [r for r in reads if not held_out(r["id"])]
    held = [r for r in reads if held_out(r["id"])]
    if not train:
        raise ValueError("the teacher read no rationale of the candidates: nothing to distil a reader from")
    model, tok = load_init(s.init, cfg.model.device, s.lora_r)
    fit = train_reader(model, tok, train, out, steps=s.reader_train_steps, learning_rate=s.learning_rate,
                       batch_size=s.train_batch_size, seed=cfg.seed, progress=progress)
    if s.lora_r:  # the trainer saved the adapters only: the merged weights in their place
        model = merged(model)
        model.save_pretrained(out)
        for f in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
            (Path(out) / f).unlink(missing_ok=True)
    metrics: dict[str, Any] = {"distill/reader_loss": fit["loss"], "distill/reader_records": float(len(train))}
    threshold = 0.0
    if held:
        read, conf = read_answers(model, tok, [r["question"] for r in held], [r["rationale"] for r in held],
                                  s.batch_size)
        metrics["distill/reader_agree_teacher"] = sum(a == r["implied"] for a, r in zip(read, held)) / len(held)
        teacher = [r["implied"] == r["answer"] for r in held]
        agree = {t: sum(((a == r["answer"]) and p >= t) == k for a, p, r, k in zip(read, conf, held, teacher))
                 / len(held) for t in THRESHOLDS}
        threshold = max(agree, key=lambda t: (agree[t], -t))
        metrics["distill/reader_agree_supported"] = agree[threshold]
    (Path(out) / "manifest.json").write_text(json.dumps(
        {"threshold": threshold, "world": world, "init": s.init, "metrics": metrics}, indent=1))

    shutil.rmtree(Path(out) / "_trainer", ignore_errors=True)
    return metrics


def teacher_agreement(claims: Sequence[dict], reads: Sequence[dict], facts: dict[str, Any]) -> dict[str, float]:
    """Where the prompts have scene facts (the built-in world): how often the teacher's claim
    verdicts and reads match the exact ones (a served teacher with injected errors shows them)."""
    out: dict[str, float] = {}
    cl = [c for c in claims if facts.get(c["id"])]
    if cl:
        out["distill/teacher_claims_exact"] = sum(c["holds"] == claim_holds(c["claim"], facts[c["id"]])
                                                  for c in cl) / len(cl)
    rd = [r for r in reads if facts.get(r["id"])]
    if rd:
        out["distill/teacher_reads_exact"] = sum(
            r["implied"] == normalize_answer(str(implied_answer(r["rationale"], facts[r["id"]]) or UNCLEAR))
            for r in rd) / len(rd)
    return out


def sample_prompts(cands: Sequence[dict], n: int, seed: int = 0) -> list[dict]:
    """The candidates of `n` of their prompts (seeded; all for n = 0)."""
    ids = sorted({c["prompt_id"] for c in cands})
    if n and n < len(ids):
        ids = random.Random(f"distill/{seed}").sample(ids, n)
    keep = set(ids)
    return [c for c in cands if c["prompt_id"] in keep]
