"""Held-out metrics (METHOD.md section 6) with standard errors, overall and per family."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Sequence

from data.scoring import parse_response, score_shapes

METRICS = ("accuracy", "format_rate", "consistency", "factuality")


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error (sample sd / sqrt(n)); (nan, nan) for no values."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    m = sum(values) / n
    if n == 1:
        return m, 0.0
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    return m, math.sqrt(var / n)


def score_records(records: Sequence[dict], responses: Sequence[str]) -> list[dict]:
    """Exact per-response scores for shapes records (needs `facts`, `answer`, `family`)."""
    if len(records) != len(responses):
        raise ValueError(f"{len(records)} records but {len(responses)} responses")
    rows = []
    for rec, resp in zip(records, responses):
        s = score_shapes(resp, rec["facts"], rec["answer"])
        rows.append({
            "id": rec["id"], "family": rec["family"], "question": rec["question"],
            "gold": rec["answer"], "response": resp, "answer": parse_response(resp).answer,
            "accuracy": float(s.correct), "format_rate": float(s.parsable),
            "consistency": float(s.consistent), "factuality": float(s.factual),
            "length": float(len(resp.split())),
        })
    return rows


def summarize(rows: Sequence[dict]) -> dict:
    """{'accuracy': .., 'accuracy_se': .., ..., 'mean_length': .., 'n': .., 'families': {...}}."""
    def block(rs: Sequence[dict]) -> dict:
        out: dict = {"n": len(rs)}
        for m in METRICS:
            out[m], out[f"{m}_se"] = mean_se([r[m] for r in rs])
        out["mean_length"], out["mean_length_se"] = mean_se([r["length"] for r in rs])
        return out

    by_family = defaultdict(list)
    for r in rows:
        by_family[r["family"]].append(r)
    summary = block(rows)
    summary["families"] = {f: block(rs) for f, rs in sorted(by_family.items())}
    return summary


def format_table(summary: dict) -> str:
    """A plain-text table: one line per family, then the total."""
    head = f"{'family':<12} {'n':>5} " + " ".join(f"{m:>13}" for m in METRICS)
    lines = [head, "-" * len(head)]
    items = list(summary["families"].items()) + [("all", summary)]
    for name, b in items:
        cells = " ".join(f"{100 * b[m]:6.1f}±{100 * b[m + '_se']:4.1f}%" for m in METRICS)
        lines.append(f"{name:<12} {b['n']:>5} {cells}")
    return "\n".join(lines)
