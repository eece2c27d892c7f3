"""Held-out metrics (docs/method.md section 8) with standard errors, overall and per family."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Sequence

from data.scoring import parse_claims, parse_response, scene_objects, score_shapes

METRICS = ("accuracy", "format_rate", "consistency", "factuality")
# Metrics a row may leave as None: not applicable (a short answer has no rationale to be
# consistent with) or not measured (data without scene facts and no R-Scorer to judge it).
OPTIONAL = ("consistency", "factuality")
NA = "n/a"


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
    """{'accuracy': .., 'accuracy_se': .., ..., 'mean_length': .., 'n': .., 'families': {...}}.

    A consistency or factuality that no row measured (every row's value is None) is None in
    the summary, with its standard error."""
    def block(rs: Sequence[dict]) -> dict:
        out: dict = {"n": len(rs)}
        for m in METRICS:
            vals = [r[m] for r in rs if r.get(m) is not None]
            # None (JSON null), not NaN and not 0: "not measured" is no number at all
            out[m], out[f"{m}_se"] = mean_se(vals) if vals or m not in OPTIONAL else (None, None)
        out["mean_length"], out["mean_length_se"] = mean_se([r["length"] for r in rs])
        return out

    by_family = defaultdict(list)
    for r in rows:
        by_family[r["family"]].append(r)
    summary = block(rows)
    summary["families"] = {f: block(rs) for f, rs in sorted(by_family.items())}
    return summary


def format_table(summary: dict) -> str:
    """A plain-text table: one line per family, then the total; `n/a` for a metric that was not
    measured or does not apply."""
    head = f"{'family':<12} {'n':>5} " + " ".join(f"{m:>13}" for m in METRICS)
    lines = [head, "-" * len(head)]
    fams = summary["families"]
    # one family (data without families are all "all"): the total alone says it
    items = ([] if len(fams) == 1 else list(fams.items())) + [("all", summary)]
    for name, b in items:
        cells = " ".join(f"{NA:>13}" if b.get(m) is None else f"{100 * b[m]:6.1f}±{100 * b[m + '_se']:4.1f}%"
                         for m in METRICS)
        lines.append(f"{name:<12} {b['n']:>5} {cells}")
    return "\n".join(lines)


# --- grounding probes (scripts/probe_grounding.py): which stated objects are in the scene ----


def mention_counts(rationale: str, facts: str | dict) -> tuple[int, int]:
    """(objects stated that are in the scene, objects stated) for one rationale.

    Example, scene {red circle at the top left}: "There is a red circle at the top left. There
    is a blue square at the top left." -> (1, 2).
    """
    grid, objs = scene_objects(facts)
    ment = [c[1:] for c in parse_claims(rationale, grid) if c[0] == "mention"]
    return sum(m in objs for m in ment), len(ment)


def caption_counts(caption: str, facts: str | dict) -> tuple[int, int, int]:
    """(objects right, objects stated, objects in the scene) for a caption in the world's
    reference form, "The image shows a red circle at the top left, a blue square at ...".

    Each listed object is read as the mention sentence "There is <object>." (data.scoring's
    grammar); a repeated object counts once.
    """
    grid, objs = scene_objects(facts)
    body = re.sub(r"^\s*the image shows\s*", "", caption.strip(), flags=re.IGNORECASE).rstrip(". ")
    said = {c[1:] for part in body.split(",") if part.strip()
            for c in parse_claims(f"There is {part.strip()}.", grid) if c[0] == "mention"}
    return len(said & objs), len(said), len(objs)
