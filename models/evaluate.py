"""Held-out evaluation of a policy (docs/method.md section 8).

On the built-in world every metric is exact (data.scoring against the scene facts). On data
without facts, accuracy compares the parsed answer with the gold answer, and consistency and
factuality come from the R-Scorer when one is given (`measured_by: R-Scorer`), else they are
not measured (None, shown as n/a): a pointwise judge grades each response Good or Bad; a
pairwise judge compares each response with the record's gold response in both orders, and a
response is good when the judge does not prefer the gold one (win or tie mass >= 1/2). Rows
without a gold response cannot be compared and stay unmeasured.

A policy that answers briefly (the base model before rationale SFT) has no rationale to be
consistent with: `rationales=False` reports consistency and factuality as not applicable.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from data.config import EvalConfig, ScorerConfig
from data.metrics import OPTIONAL, score_records, summarize
from data.scoring import gold_answer, parse_response
from data.schema import EvalRow, Example
from models.generation import generate_greedy

Judge = tuple[Any, Any, ScorerConfig]  # (model, tokenizer, its config section)


def _images(records: Sequence[dict]) -> list:
    from data.records import as_image

    return [as_image(r["image"], f"record {r.get('id', i)!r}") for i, r in enumerate(records)]


def evaluate_policy(
    model: Any,
    processor: Any,
    records: Sequence[dict],
    cfg: EvalConfig,
    progress: Callable[[int, int], None] | None = None,
    judge: Judge | None = None,
    rationales: bool = True,
) -> tuple[dict, list[dict]]:
    """Greedy responses to every record, scored; returns (summary, per-response rows).

    `summary["measured_by"]` says where consistency/factuality come from: "exact scorer",
    "R-Scorer", or None (not measured, or not applicable when `rationales` is False).
    """
    responses = generate_greedy(
        model, processor, _images(records), [r["question"] for r in records],
        max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, progress=progress,
    )
    if records and all(r.get("facts") for r in records):
        rows, by = score_records(records, responses), "exact scorer"
    else:
        rows, by = answer_rows(records, responses), None
        if rationales and judge is not None:
            judge_rows(rows, records, judge)
            by = "R-Scorer"
    if not rationales:
        by = None
        for r in rows:
            r.update(dict.fromkeys(OPTIONAL))
    summary = summarize(rows)
    summary["measured_by"] = by
    summary["rationales"] = rationales
    return summary, rows


def answer_rows(records: Sequence[Example], responses: Sequence[str]) -> list[EvalRow]:
    """Per-response rows scored against the gold answer only; consistency/factuality None."""
    rows = []
    for i, (r, resp) in enumerate(zip(records, responses)):
        parsed = parse_response(resp, r.get("choices"))
        rows.append({
            "id": r.get("id", i), "family": r.get("family") or "all", "question": r["question"],
            "gold": r.get("answer"), "response": resp, "answer": parsed.answer,
            "accuracy": float(parsed.ok and r.get("answer") is not None
                              and parsed.answer == gold_answer(r["answer"], r.get("choices"))),
            "format_rate": float(parsed.ok), "consistency": None, "factuality": None,
            "length": float(len(resp.split())),
        })
    return rows


def judge_rows(rows: list[dict], records: Sequence[dict], judge: Judge) -> None:
    """Fill each row's consistency and factuality (in place) with the R-Scorer's verdict."""
    from models.scorer import score_pairs, score_points

    model, tokenizer, cfg = judge
    base = [{"prompt_id": i, "question": r["question"], "reference": r.get("reference") or "",
             "gold": r.get("answer")} for i, r in enumerate(records)]
    if cfg.mode == "pointwise":
        items = [{**b, "candidates": [row["response"]]} for b, row in zip(base, rows)]
        good = {p["prompt_id"]: p["p_good"] >= 0.5 for p in score_points(model, tokenizer, items, cfg)}
    else:  # the response (0) against the gold response (1), both orders
        items = [{**b, "candidates": [row["response"], r["response"]]}
                 for b, row, r in zip(base, rows, records) if r.get("response")]
        pr: dict = {}
        for p in score_pairs(model, tokenizer, items, cfg):
            pr[(p["prompt_id"], p["a_idx"])] = p
        good = {}
        for it in items:
            k = it["prompt_id"]
            fwd, back = pr[(k, 0)], pr[(k, 1)]  # response shown as A; gold shown as A
            good[k] = 0.5 * (fwd["p_a"] + fwd["p_tie"] + back["p_b"] + back["p_tie"]) >= 0.5
    for i, row in enumerate(rows):
        if i in good:
            row["consistency"] = row["factuality"] = float(good[i])
