"""Held-out evaluation of a policy (METHOD.md section 6).

On the built-in world every metric is exact (data.scoring against the scene facts). On data
without facts, accuracy uses the gold answer and consistency/factuality come from the
R-Scorer in pointwise mode: those rows are labelled `judge_based`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from data.config import EvalConfig, ScorerConfig
from data.metrics import score_records, summarize
from data.scoring import gold_answer, parse_response
from models.generation import generate_greedy


def _images(records: Sequence[dict]) -> list:
    from models.sft import as_image

    return [as_image(r["image"], f"record {r.get('id', i)!r}") for i, r in enumerate(records)]


def evaluate_policy(
    model: Any,
    processor: Any,
    records: Sequence[dict],
    cfg: EvalConfig,
    progress: Callable[[int, int], None] | None = None,
    judge: tuple[Any, Any, ScorerConfig] | None = None,
) -> tuple[dict, list[dict]]:
    """Greedy responses to every record, scored; returns (summary, per-response rows)."""
    responses = generate_greedy(
        model, processor, _images(records), [r["question"] for r in records],
        max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size, progress=progress,
    )
    if all(r.get("facts") for r in records):
        rows = score_records(records, responses)
        summary = summarize(rows)
        summary["judge_based"] = False
        return summary, rows
    return _judge_based(records, responses, judge)


def _judge_based(records, responses, judge) -> tuple[dict, list[dict]]:
    if judge is None:
        raise ValueError("records without scene facts need an R-Scorer for consistency/factuality")
    from models.scorer import score_points

    model, tokenizer, cfg = judge
    items = [{"prompt_id": r.get("id", i), "question": r["question"],
              "reference": r.get("reference") or "", "gold": r.get("answer"),
              "candidates": [resp]} for i, (r, resp) in enumerate(zip(records, responses))]
    points = score_points(model, tokenizer, items, cfg)
    rows = []
    for r, resp, p in zip(records, responses, points):
        parsed = parse_response(resp, r.get("choices"))
        good = float(p["p_good"] >= 0.5)
        rows.append({
            "id": r.get("id"), "family": r.get("family") or "all", "question": r["question"],
            "gold": r.get("answer"), "response": resp, "answer": parsed.answer,
            "accuracy": float(parsed.ok and r.get("answer") is not None
                              and parsed.answer == gold_answer(r["answer"], r.get("choices"))),
            "format_rate": float(parsed.ok), "consistency": good, "factuality": good,
            "length": float(len(resp.split())),
        })
    summary = summarize(rows)
    summary["judge_based"] = True
    return summary, rows
