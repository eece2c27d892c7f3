"""Candidates as judging items, and the oracle judge of the built-in world.

`judge_items` groups a search's candidate rows into one item per prompt, the input of the
R-Scorer (`models.scorer.score_pairs`) and of `oracle_pairs`. The oracle (`scorer.model:
oracle`, METHOD.md's ceiling ablation) replaces the R-Scorer by the exact scorer of the
built-in world: its verdict on an ordered pair is certain (p = 1) for the candidate of higher
`ExactScore.quality` (correct, then consistent, then factual), and `Tie` for equal quality,
so curation, DPO and everything downstream run unchanged. It needs scene facts on the
candidates, which only the built-in world has.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from data.scoring import score_shapes


def judge_items(cands: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One judging item per prompt (first-seen prompt order), candidates in cand_idx order:
    `prompt_id, question, reference, gold, candidates` (texts), `cand_idx`, and `facts`
    when the candidates carry them."""
    groups: dict = defaultdict(list)
    for c in cands:
        groups[c["prompt_id"]].append(c)
    items = []
    for pid, cs in groups.items():
        cs = sorted(cs, key=lambda c: c["cand_idx"])
        items.append({"prompt_id": pid, "question": cs[0]["question"],
                      "reference": cs[0].get("reference") or "", "gold": cs[0].get("gold"),
                      "facts": cs[0].get("facts"),
                      "candidates": [c["text"] for c in cs], "cand_idx": [c["cand_idx"] for c in cs]})
    return items


def exact_qualities(item: dict[str, Any]) -> list[float]:
    """The exact scorer's quality of each candidate of a judging item (needs `facts`, `gold`).

    Raises:
        ValueError: the item has no scene facts or no gold answer (not the built-in world).
    """
    if item.get("facts") is None or item.get("gold") is None:
        raise ValueError(f"prompt {item['prompt_id']!r}: the oracle scorer needs scene facts and a "
                         "gold answer on the candidates (the built-in world); use a trained judge")
    return [score_shapes(t, item["facts"], item["gold"]).quality for t in item["candidates"]]


def oracle_pairs(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pair rows (`data.curation.PAIR_COLUMNS`, both orders) of the exact scorer, one-hot."""
    rows = []
    for it in items:
        q = dict(zip(it["cand_idx"], exact_qualities(it)))
        for a in it["cand_idx"]:
            for b in it["cand_idx"]:
                if a != b:
                    rows.append({"prompt_id": it["prompt_id"], "a_idx": a, "b_idx": b,
                                 "p_a": float(q[a] > q[b]), "p_b": float(q[b] > q[a]),
                                 "p_tie": float(q[a] == q[b])})
    return rows


def oracle_points(items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pointwise rows (`prompt_id, cand_idx, p_good`): quality / 7, the exact scorer's grade."""
    return [{"prompt_id": it["prompt_id"], "cand_idx": k, "p_good": q / 7.0}
            for it in items for k, q in zip(it["cand_idx"], exact_qualities(it))]
