"""Claims: the unit the claims judge checks (docs/method.md section 3, `scorer.mode=claims`).

A rationale is split into its sentences (`data.scoring.split_sentences`, the search's own
boundary); each sentence is one claim about the image. The claim checker (models/claims.py)
says whether a claim holds for the image's reference facts; the reader says which answer the
rationale implies; the judge's pairwise verdict is then worked out from those marks
(`pair_verdict`). This module holds the pure parts: claim records for training the checker on
the built-in world (labelled exactly by the world's grammar), the exact label of one claim,
and the arithmetic that turns per-candidate marks into pair probabilities.

Deterministic in (record id, seed). Training records come from the world's `scorer` split
(and, optionally, a policy's own candidates), never from the pool or eval splits.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from typing import Any

from data.scoring import claim_holds, scene_objects, split_sentences
from data.shapes import COLORS, SHAPES, Obj, mention, plural

CLAIM_PROMPT = "Reference: {reference}\nClaim: {claim}\nTrue:"  # the reference first: see models/claims.py
CLAIM_VERDICTS = ("yes", "no")  # the checker's two verdict words (one token each)
# The quality order of the exact scorer (data/scoring.py:ExactScore.quality): correct, then
# consistent, then factual. A judge's marks are probabilities of these three.
WEIGHTS = {"correct": 4, "consistent": 2, "factual": 1}


def claim_prompt(claim: str, reference: str) -> str:
    return CLAIM_PROMPT.format(claim=claim.strip(), reference=reference.strip())


def rationale_claims(rationale: str) -> list[str]:
    """The claims of a rationale: its sentences, in order."""
    return split_sentences(rationale)


# Evidence selection, as fact-checking pipelines do before verification (FEVER's sentence
# selection): of the reference's facts, the ones that share the most content words with the
# claim. A small checker then compares a claim with one or a few short facts instead of
# searching a whole caption; measured on the built-in world (docs/method.md section 3), the
# tiny checker stayed at chance on whole references through 6,000 steps and learned with this.
_STOP = frozenset(("a an the at in on of to is are was were be there here this that it its and or "
                   "no not makes make shows show image picture photo contains depicts object objects "
                   "answer").split())
_LEAD = re.compile(r"^(the|this)\s+(image|picture|photo)\s+(shows|contains|depicts)\s+", re.IGNORECASE)


def content_words(text: str) -> set[str]:
    """Lower-case words and numbers of `text`, stop words out, a plural 's' folded."""
    return {w[:-1] if len(w) > 3 and w.endswith("s") else w
            for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in _STOP}


def reference_facts(reference: str) -> list[str]:
    """A reference as facts: its sentences and comma-separated clauses, a leading 'The image
    shows' dropped. 'The image shows a red circle at the top left, a blue square at the middle
    right.' -> ['a red circle at the top left', 'a blue square at the middle right']."""
    parts = re.split(r"(?<=[.;!?])\s+|,\s+|;\s*", reference.strip())
    return [f for f in (_LEAD.sub("", p.strip(" .;")) for p in parts) if f]


def evidence(claim: str, reference: str) -> str:
    """The facts of `reference` that share the most content words with `claim` (all of those
    that tie), joined in reference order; 'nothing related.' when none shares any."""
    facts = reference_facts(reference)
    words = content_words(claim)
    overlap = [len(content_words(f) & words) for f in facts]
    best = max(overlap, default=0)
    keep = [f for f, n in zip(facts, overlap) if n == best and n > 0]
    return "; ".join(keep) + "." if keep else "nothing related."


# --------------------------------------------------------------------------- training records


def _absent(rng: random.Random, objs: set[tuple], grid: int, like: tuple | None = None) -> Obj:
    """An object not in the scene; with `like`, one attribute of `like` changed (a near miss)."""
    for _ in range(100):
        if like is not None:
            c, s, r, k = like
            which = rng.randrange(4)
            c = rng.choice([x for x in COLORS if x != c]) if which == 0 else c
            s = rng.choice([x for x in SHAPES if x != s]) if which == 1 else s
            r = rng.choice([x for x in range(grid) if x != r]) if which == 2 else r
            k = rng.choice([x for x in range(grid) if x != k]) if which == 3 else k
        else:
            c, s = rng.choice(list(COLORS)), rng.choice(SHAPES)
            r, k = rng.randrange(grid), rng.randrange(grid)
        if (c, s, r, k) not in objs:
            return Obj(c, s, r, k)
    raise AssertionError("no absent object found")  # a 3x3 grid never fills all 108 combinations


def _count_claim(noun: str, k: int) -> str:
    return f"There are no {noun}." if k == 0 else f"That makes {k} {noun}."


def scene_claim_pairs(facts: str | dict, rng: random.Random, n: int) -> list[tuple[str, str]]:
    """`n` (true, false) claim pairs about a scene, in the grammar the policy writes, each pair
    a minimal contrast: a present object and a near miss (one attribute off) or a made-up one;
    the right and a wrong count; a denial of an absent and of a present colour-shape pair; a
    relation and its flip. Trained side by side, the only difference between the two inputs
    is what makes one false, so the checker has to look it up in the reference."""
    grid, objs = scene_objects(facts)
    listed = sorted(objs)
    pairs = {(o[0], o[1]) for o in objs}
    out: list[tuple[str, str]] = []
    while len(out) < n:
        kind = rng.random()
        if kind < 0.5:  # mentions: the bulk of what a rationale states
            o = rng.choice(listed)
            miss = _absent(rng, objs, grid, o if rng.random() < 0.75 else None)
            out.append((mention(Obj(*o), grid), mention(miss, grid)))
        elif kind < 0.7:  # counts
            by_color = rng.random() < 0.5
            key = rng.choice(list(COLORS)) if by_color else rng.choice(SHAPES)
            true = sum((o[0] if by_color else o[1]) == key for o in objs)
            noun = f"{key} objects" if by_color else plural(key)
            out.append((_count_claim(noun, true), _count_claim(noun, rng.choice([k for k in range(5) if k != true]))))
        elif kind < 0.85:  # denials of a colour-shape pair
            absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in pairs]
            c, s = rng.choice(absent)
            p, q = rng.choice(sorted(pairs))
            out.append((f"There is no {c} {s}.", f"There is no {p} {q}."))
        else:  # relations between two uniquely described objects in different columns
            unique = [o for o in listed if sum((x[0], x[1]) == (o[0], o[1]) for x in listed) == 1]
            ok = [(a, b) for a in unique for b in unique if a[3] < b[3]]
            if not ok:
                continue
            a, b = rng.choice(ok)
            if rng.random() < 0.5:
                out.append((f"The {a[0]} {a[1]} is left of the {b[0]} {b[1]}.",
                            f"The {a[0]} {a[1]} is right of the {b[0]} {b[1]}."))
            else:
                out.append((f"The {b[0]} {b[1]} is right of the {a[0]} {a[1]}.",
                            f"The {b[0]} {b[1]} is left of the {a[0]} {a[1]}."))
    return out


def claim_records(records: Iterable[dict[str, Any]], seed: int = 0, per_record: int = 4
                  ) -> list[dict[str, Any]]:
    """Labelled claims of world records with scene facts: `per_record` (true, false) pairs per
    record (`scene_claim_pairs`), the two of a pair adjacent, each labelled by the exact check
    (`data.scoring.claim_holds`, which agrees with the pair's intent). Rows: `id, claim,
    reference, holds`; `id` is shared by the two claims of a pair."""
    out = []
    for r in records:
        rng = random.Random(f"claims/{seed}/{r['id']}")
        for n, pair in enumerate(scene_claim_pairs(r["facts"], rng, per_record)):
            out += [{"id": f"{r['id']}/{n}", "claim": c, "reference": r["reference"],
                     "holds": claim_holds(c, r["facts"])} for c in pair]
    return out


def candidate_claim_records(cands: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A policy's own candidates (with `facts` and `reference`) as labelled claims: every
    distinct (reference, sentence) of their rationales, the exact check as the label."""
    seen: set[tuple[str, str]] = set()
    out = []
    for c in cands:
        if not c.get("facts"):
            continue
        for s in rationale_claims(c.get("rationale") or ""):
            if (c["reference"], s) in seen:
                continue
            seen.add((c["reference"], s))
            out.append({"id": c["prompt_id"], "claim": s, "reference": c["reference"],
                        "holds": claim_holds(s, c["facts"])})
    return out


def balance(rows: Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Rows with as many true as false claims: the larger side subsampled (seeded). For the
    policy's own sentences, which are mostly false; pairs from `claim_records` are balanced."""
    rng = random.Random(f"balance/{seed}")
    yes = [r for r in rows if r["holds"]]
    no = [r for r in rows if not r["holds"]]
    k = min(len(yes), len(no))
    out = rng.sample(yes, k) + rng.sample(no, k)
    rng.shuffle(out)
    return out


# --------------------------------------------------------------------------- marks -> verdicts


def quality_distribution(correct: float, consistent: float, factual: float) -> dict[int, float]:
    """P(quality = q) for q = 4 correct + 2 consistent + 1 factual, the three marks taken as
    independent probabilities. Example: (1, 0.9, 0.5) -> {7: 0.45, 6: 0.45, 5: 0.05, 4: 0.05}."""
    out: dict[int, float] = {}
    for c in (0, 1):
        for k in (0, 1):
            for f in (0, 1):
                p = ((correct if c else 1 - correct) * (consistent if k else 1 - consistent)
                     * (factual if f else 1 - factual))
                if p > 0:
                    q = WEIGHTS["correct"] * c + WEIGHTS["consistent"] * k + WEIGHTS["factual"] * f
                    out[q] = out.get(q, 0.0) + p
    return out


def pair_verdict(a: dict[str, float], b: dict[str, float]) -> tuple[float, float, float]:
    """(p_a, p_b, p_tie): the probability that candidate `a`'s quality is higher, lower, or
    the same as `b`'s, from each one's marks (`correct`, `consistent`, `factual`). Swapping
    the two swaps p_a and p_b: the verdict does not depend on which slot a candidate is in.
    Example: a = (1, 1, 1), b = (1, 1, 0) -> (1.0, 0.0, 0.0)."""
    qa = quality_distribution(a["correct"], a["consistent"], a["factual"])
    qb = quality_distribution(b["correct"], b["consistent"], b["factual"])
    pa = pb = pt = 0.0
    for x, px in qa.items():
        for y, py in qb.items():
            if x > y:
                pa += px * py
            elif x < y:
                pb += px * py
            else:
                pt += px * py
    total = pa + pb + pt  # 1 up to rounding, which must not push a probability past 1
    return min(1.0, pa / total), min(1.0, pb / total), min(1.0, pt / total)


def decided_by(a: dict[str, float], b: dict[str, float]) -> str | None:
    """Which mark, in quality order, first tells two candidates apart (each mark rounded at
    1/2): 'correct', 'consistent', 'factual', or None when they agree on all three."""
    for k in WEIGHTS:
        if (a[k] >= 0.5) != (b[k] >= 0.5):
            return k
    return None
