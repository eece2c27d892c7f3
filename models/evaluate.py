"""Held-out evaluation of a policy (docs/method.md section 8).

On the built-in world every metric is exact (data.scoring against the scene facts). On data
without facts, accuracy compares the parsed answer with the gold answer, and consistency and
factuality come from a grader when one is given (the teacher: models/distill.py:grade_rows,
`measured_by: teacher <model>`), else they are not measured (None, shown as n/a). The grader
is never the judge whose preferences DPO optimizes: that would be the policy grading its own
exam.

A policy that answers briefly (the base model before rationale SFT) has no rationale to be
consistent with: `rationales=False` reports consistency and factuality as not applicable.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from data.config import EvalConfig
from data.metrics import OPTIONAL, score_records, summarize
from data.scoring import gold_answer, parse_response
from data.schema import EvalRow, Example
from models.generation import generate_greedy
from data.records import as_image

# (who grades, fill(rows, records)): fills each row's consistency and factuality in place
Grader = tuple[str, Callable[[list[dict], Sequence[dict]], None]]


def _images(records: Sequence[dict]) -> list:
    return [as_image(r["image"], f"record {r.get('id', i)!r}") for i, r in enumerate(records)]


def evaluate_policy(
    model: Any,
    processor: Any,
    records: Sequence[dict],
    cfg: EvalConfig,
    progress: Callable[[int, int], None] | None = None,
    grade: Grader | None = None,
    rationales: bool = True,
) -> tuple[dict, list[dict]]:
    """Greedy responses to every record, scored; returns (summary, per-response rows).

    `summary["measured_by"]` says where consistency/factuality come from: "exact scorer",
    the grader's name, or None (not measured, or not applicable when `rationales` is False).
    """
    responses = generate_greedy(
        model, processor, _images(records), [r["question"] for r in records],
        max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, progress=progress,
    )
    if records and all(r.get("facts") for r in records):
        rows, by = score_records(records, responses), "exact scorer"
    else:
        rows, by = answer_rows(records, responses), None
        if rationales and grade is not None:
            grade[1](rows, records)
            by = grade[0]
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
