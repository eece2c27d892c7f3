"""R-Scorer training data: labelled perturbations of gold rationales (docs/method.md section 3).

From each shapes record (gold rationale, reference caption, scene facts) we build variants,
one per flaw, and check each with the exact scorer (`data.scoring.score_shapes`) before use,
so every label is the exact scorer's own preference, never a guess:

    kind            how it is made                                    correct consistent factual quality
    gold            the record's response                                 1       1        1      7
    counterfactual  a mention swapped to / added as an object not in     1       1        0      6
                    the scene (the answer still follows and is right)
    insufficient    key evidence sentences dropped (an irrelevant true   1       0        1      5
                    mention fills an emptied rationale), answer kept
    misled          rationale of a falsified scene that implies a wrong  0       1        0      2
                    answer, and that wrong answer (a hallucination that leads the answer)
    unreasonable    gold rationale, a different (wrong) answer            0       0        1      1

`quality` = 4 correct + 2 consistent + 1 factual (`ExactScore.quality`), so flaw-vs-flaw pairs
teach the ordering correct > consistent > factual: insufficient (5) beats misled (2), and
counterfactual (6) beats insufficient (5). A paraphrase of any variant (`<kind>~`: sentences
reordered, a true irrelevant mention added, or a relation stated from the other side) scores
exactly as the variant does, which gives the `Tie` pairs.

Per record, pairs are gold vs each flaw plus `flaw_pairs` flaw-vs-flaw pairs (decisive), and
half as many equal-quality pairs (ties); every pair appears in both orders, so A and B are
balanced by construction and Tie is trimmed to match. Variants and per-record choices are
deterministic in (seed, record id), whatever other records come along; only the final
balancing trim looks at the whole set (seeded too). `agreement` measures a judge's verdicts
on `candidate_items` against these exact qualities.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from data.curation import aggregate_pairs, flip_rate
from data.scoring import ExactScore, parse_claims, score_shapes, split_sentences
from data.shapes import COLORS, SHAPES, Obj, answers_of, format_response, gold_rationale, mention

FLAWS = ("counterfactual", "insufficient", "misled", "unreasonable")
# (correct, consistent, factual) each kind must score; checked on every variant built.
INTENDED: dict[str, tuple[bool, bool, bool]] = {
    "gold": (True, True, True),
    "counterfactual": (True, True, False),
    "insufficient": (True, False, True),
    "misled": (False, True, False),
    "unreasonable": (False, False, True),
}
PARAPHRASE = "~"  # "gold~" is a paraphrase of "gold"
PAIR_COLUMNS = ("id", "prompt_id", "split", "family", "question", "reference", "gold",
                "response_a", "response_b", "kind_a", "kind_b", "quality_a", "quality_b", "verdict")
POINT_COLUMNS = ("id", "prompt_id", "split", "family", "question", "reference", "gold",
                 "response", "kind", "quality", "verdict")


@dataclass(frozen=True)
class Variant:
    kind: str
    rationale: str
    answer: str
    score: ExactScore

    @property
    def text(self) -> str:
        return format_response(self.rationale, self.answer)

    @property
    def flags(self) -> tuple[bool, bool, bool]:
        return (self.score.correct, self.score.consistent, self.score.factual)


class _Scene:
    """A record's facts, parsed once: objects, query, grid and the scoring closure."""

    def __init__(self, record: dict[str, Any]):
        f = json.loads(record["facts"]) if isinstance(record["facts"], str) else record["facts"]
        self.facts, self.grid, self.query = f, f["grid"], f["query"]
        self.style = f.get("rationale_style", "relevant")
        self.objs = [Obj(o["color"], o["shape"], o["row"], o["col"]) for o in f["objects"]]
        self.tuples = {(o.color, o.shape, o.row, o.col) for o in self.objs}
        self.gold = record["answer"]
        self.gold_sents = split_sentences(record["rationale"])
        # objects the gold rationale does not mention: stating them never changes the answer
        said = set(self.gold_sents)
        self.irrelevant = [o for o in self.objs if mention(o, self.grid) not in said]

    def variant(self, kind: str, sents: Sequence[str], answer: str) -> Variant:
        rationale = " ".join(sents)
        return Variant(kind, rationale, answer,
                       score_shapes(format_response(rationale, answer), self.facts, self.gold))

    def absent_obj(self, rng: random.Random) -> Obj:
        """A random object that is not in the scene (same cell or not)."""
        while True:
            o = Obj(rng.choice(list(COLORS)), rng.choice(SHAPES),
                    rng.randrange(self.grid), rng.randrange(self.grid))
            if (o.color, o.shape, o.row, o.col) not in self.tuples:
                return o

    def wrong_answer(self, rng: random.Random) -> str:
        return rng.choice([a for a in answers_of(self.query["family"]) if a != self.gold])


def _insert(sents: Sequence[str], sent: str, rng: random.Random) -> list[str]:
    out = list(sents)
    out.insert(rng.randint(0, len(out)), sent)
    return out


def _counterfactual(sc: _Scene, rng: random.Random) -> tuple[list[str], str]:
    """Swap one attribute of a stated object for a value not in the scene, or add a false one."""
    sents = list(sc.gold_sents)
    ments = [i for i, s in enumerate(sents) if parse_claims(s, sc.grid)[0][0] == "mention"]
    if ments and rng.random() < 0.5:
        i = rng.choice(ments)
        _, color, shape, row, col = parse_claims(sents[i], sc.grid)[0]
        attr = rng.choice(["color", "shape", "row", "col"])
        values = {"color": list(COLORS), "shape": list(SHAPES),
                  "row": list(range(sc.grid)), "col": list(range(sc.grid))}[attr]
        new = dict(color=color, shape=shape, row=row, col=col)
        new[attr] = rng.choice([v for v in values if v != new[attr]])
        sents[i] = mention(Obj(**new), sc.grid)
        return sents, sc.gold
    return _insert(sents, mention(sc.absent_obj(rng), sc.grid), rng), sc.gold


def _insufficient(sc: _Scene, rng: random.Random) -> tuple[list[str], str]:
    """Drop a random non-empty subset of the evidence; never leave the rationale empty."""
    sents = list(sc.gold_sents)
    drop = set(rng.sample(range(len(sents)), rng.randint(1, len(sents))))
    kept = [s for i, s in enumerate(sents) if i not in drop]
    if sc.irrelevant and (not kept or rng.random() < 0.3):
        kept = _insert(kept, mention(rng.choice(sc.irrelevant), sc.grid), rng)
    return kept, sc.gold


def _misled_scene(sc: _Scene, wrong: str, rng: random.Random) -> list[Obj]:
    """The scene changed just enough that its gold rationale implies `wrong`."""
    q, objs = sc.query, list(sc.objs)
    used = {(o.row, o.col) for o in objs}
    free = [(r, c) for r in range(sc.grid) for c in range(sc.grid) if (r, c) not in used]
    rng.shuffle(free)
    fam = q["family"]
    if fam in ("count_color", "count_shape"):
        key = "color" if fam == "count_color" else "shape"
        hits = [o for o in objs if getattr(o, key) == q[key]]
        rest = [o for o in objs if getattr(o, key) != q[key]]
        k = int(wrong)
        if k <= len(hits):
            return rest + rng.sample(hits, k)
        for r, c in free[: k - len(hits)]:
            other = {"color": rng.choice(SHAPES), "shape": rng.choice(list(COLORS))}[key]
            hits.append(Obj(q[key], other, r, c) if key == "color" else Obj(other, q[key], r, c))
        return rest + hits
    if fam == "color_of":
        return [Obj(wrong, o.shape, o.row, o.col) if o.shape == q["shape"] else o for o in objs]
    if fam == "exists":
        c, s = q["color"], q["shape"]
        if wrong == "yes":
            r, col = free[0] if free else (rng.randrange(sc.grid), rng.randrange(sc.grid))
            return objs + [Obj(c, s, r, col)]
        other = rng.choice([x for x in SHAPES if x != s])
        return [Obj(o.color, other, o.row, o.col) if (o.color, o.shape) == (c, s) else o
                for o in objs]
    (c1, s1), (c2, s2) = q["a"], q["b"]
    a = next(o for o in objs if (o.color, o.shape) == (c1, s1))
    b = next(o for o in objs if (o.color, o.shape) == (c2, s2))
    moved = {a: Obj(a.color, a.shape, a.row, b.col), b: Obj(b.color, b.shape, b.row, a.col)}
    return [moved.get(o, o) for o in objs]


def _misled(sc: _Scene, rng: random.Random) -> tuple[list[str], str]:
    wrong = sc.wrong_answer(rng)
    fake = _misled_scene(sc, wrong, rng)
    return split_sentences(gold_rationale(fake, sc.query, sc.grid, sc.style)), wrong


def _unreasonable(sc: _Scene, rng: random.Random) -> tuple[list[str], str]:
    return list(sc.gold_sents), sc.wrong_answer(rng)


_BUILDERS = {"counterfactual": _counterfactual, "insufficient": _insufficient,
             "misled": _misled, "unreasonable": _unreasonable}


def _flip_relation(sent: str, grid: int) -> str | None:
    c = parse_claims(sent, grid)[0]
    if c[0] != "relation":
        return None
    _, c1, s1, rel, c2, s2 = c
    return f"The {c2} {s2} is {'right' if rel == 'left' else 'left'} of the {c1} {s1}."


def _paraphrase(sc: _Scene, v: Variant, rng: random.Random, tries: int) -> Variant | None:
    """Same exact score, other text: reorder, add a true irrelevant mention, or flip a relation."""
    sents = split_sentences(v.rationale)
    for _ in range(tries):
        how = rng.choice(["shuffle", "add", "flip"])
        if how == "shuffle" and len(sents) > 1:
            new = rng.sample(sents, len(sents))
        elif how == "add" and sc.irrelevant:
            new = _insert(sents, mention(rng.choice(sc.irrelevant), sc.grid), rng)
        elif how == "flip" and any(_flip_relation(s, sc.grid) for s in sents):
            new = [_flip_relation(s, sc.grid) or s for s in sents]
        else:
            continue
        p = sc.variant(v.kind + PARAPHRASE, new, v.answer)
        if p.text != v.text and p.flags == v.flags and p.score.parsable:
            return p
    return None


def variants(record: dict[str, Any], seed: int = 0, tries: int = 12) -> dict[str, Variant]:
    """Gold, each flaw and a paraphrase of each, keyed by kind ('gold', 'gold~', 'misled', ...).

    A kind is missing when `tries` random attempts found no variant with its intended exact
    score (rare: e.g. no irrelevant object to mention); callers pair whatever exists.
    """
    rng = random.Random(f"perturb/{seed}/{record['id']}")
    sc = _Scene(record)
    gold = sc.variant("gold", sc.gold_sents, sc.gold)
    if gold.flags != INTENDED["gold"]:
        raise ValueError(f"record {record['id']}: gold response scores {gold.flags}, not all true")
    out = {"gold": gold}
    for kind in FLAWS:
        for _ in range(tries):
            v = sc.variant(kind, *_BUILDERS[kind](sc, rng))
            if v.flags == INTENDED[kind] and v.score.parsable and v.text != gold.text:
                out[kind] = v
                break
    for kind in list(out):
        p = _paraphrase(sc, out[kind], rng, tries)
        if p is not None:
            out[p.kind] = p
    return out


def _maybe_paraphrase(vs: dict[str, Variant], kind: str, rng: random.Random) -> Variant:
    """The variant or, with probability 1/2, its paraphrase: no label keys on exact wording."""
    para = vs.get(kind + PARAPHRASE)
    return para if para is not None and rng.random() < 0.5 else vs[kind]


def _verdict(qa: float, qb: float, labels: tuple[str, str, str]) -> str:
    return labels[0] if qa > qb else labels[1] if qb > qa else labels[2]


def _pair_row(rec: dict, a: Variant, b: Variant, gold: str) -> dict[str, Any]:
    qa, qb = a.score.quality, b.score.quality
    return {"id": f"{rec['id']}/{a.kind}|{b.kind}", "prompt_id": rec["id"],
            "split": rec.get("split"), "family": rec.get("family"), "question": rec["question"],
            "reference": rec["reference"], "gold": gold, "response_a": a.text,
            "response_b": b.text, "kind_a": a.kind, "kind_b": b.kind, "quality_a": qa,
            "quality_b": qb, "verdict": _verdict(qa, qb, ("A", "B", "Tie"))}


def pair_records(records: Iterable[dict[str, Any]], seed: int = 0,
                 flaw_pairs: int = 2) -> list[dict[str, Any]]:
    """Labelled ordered pairs (columns `PAIR_COLUMNS`), A/B/Tie balanced, both orders adjacent.

    Per record: gold vs each flaw and `flaw_pairs` random flaw-vs-flaw pairs of different
    quality (each member swapped for its paraphrase with probability 1/2, so the judge cannot
    key on the exact gold wording), then len(decisive) // 2 ties (gold vs gold~ first, then a
    flaw vs its paraphrase). With all 4 flaws: 6 decisive + 3 ties = 18 rows (6 A, 6 B, 6 Tie).
    """
    decisive: list[list[dict]] = []
    ties: list[list[dict]] = []
    for rec in records:
        rng = random.Random(f"pairs/{seed}/{rec['id']}")
        vs = variants(rec, seed)
        flaws = [k for k in FLAWS if k in vs]
        cands = [(i, j) for n, i in enumerate(flaws) for j in flaws[n + 1:]
                 if vs[i].score.quality != vs[j].score.quality]
        chosen = [("gold", f) for f in flaws] + rng.sample(cands, min(flaw_pairs, len(cands)))
        n_ties = len(chosen) // 2
        for i, j in chosen:
            a, b = _maybe_paraphrase(vs, i, rng), _maybe_paraphrase(vs, j, rng)
            decisive.append([_pair_row(rec, a, b, vs["gold"].answer),
                             _pair_row(rec, b, a, vs["gold"].answer)])
        tie_kinds = [k for k in ["gold"] + rng.sample(flaws, len(flaws)) if k + PARAPHRASE in vs]
        for k in tie_kinds[:n_ties]:
            a, b = vs[k], vs[k + PARAPHRASE]
            ties.append([_pair_row(rec, a, b, vs["gold"].answer),
                         _pair_row(rec, b, a, vs["gold"].answer)])
    # Balance: each decisive pair gives 1 A + 1 B, each tie pair 2 Tie rows. Trim whole pairs
    # (never one order of a pair) so that #Tie rows ~= #A rows.
    rng = random.Random(f"balance/{seed}")
    if len(decisive) > 2 * len(ties):
        keep = set(rng.sample(range(len(decisive)), 2 * len(ties)))
        decisive = [p for i, p in enumerate(decisive) if i in keep]
    elif 2 * len(ties) > len(decisive) + 1:
        keep = set(rng.sample(range(len(ties)), (len(decisive) + 1) // 2))
        ties = [p for i, p in enumerate(ties) if i in keep]
    groups = decisive + ties
    groups.sort(key=lambda g: g[0]["id"])  # record order, whatever was trimmed
    return [row for g in groups for row in g]


def point_records(records: Iterable[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Pointwise items (columns `POINT_COLUMNS`): 2 Good (gold, gold~) and 2 Bad per record.

    Good = correct, consistent and factual (quality 7); the two Bad ones are random flaws,
    each possibly paraphrased.
    """
    out = []
    for rec in records:
        rng = random.Random(f"points/{seed}/{rec['id']}")
        vs = variants(rec, seed)
        good = [vs[k] for k in ("gold", "gold" + PARAPHRASE) if k in vs]
        flaws = [k for k in FLAWS if k in vs]
        bad = [_maybe_paraphrase(vs, k, rng) for k in rng.sample(flaws, min(len(good), len(flaws)))]
        for v in good + bad:
            out.append({"id": f"{rec['id']}/{v.kind}", "prompt_id": rec["id"],
                        "split": rec.get("split"), "family": rec.get("family"),
                        "question": rec["question"], "reference": rec["reference"],
                        "gold": vs["gold"].answer, "response": v.text, "kind": v.kind,
                        "quality": v.score.quality,
                        "verdict": "Good" if v.flags == INTENDED["gold"] else "Bad"})
    return out


def candidate_items(records: Iterable[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """One judging item per record: its variants as candidates, with their exact qualities.

    The input `models.scorer.score_pairs` takes (prompt_id, question, reference, gold,
    candidates), plus `kinds` and `qualities` to measure a judge against the exact scorer.
    """
    out = []
    for rec in records:
        vs = variants(rec, seed)
        kinds = sorted(vs, key=lambda k: (k.rstrip(PARAPHRASE) != "gold", k))
        out.append({"prompt_id": rec["id"], "question": rec["question"],
                    "reference": rec["reference"], "gold": vs["gold"].answer,
                    "candidates": [vs[k].text for k in kinds], "kinds": kinds,
                    "qualities": [vs[k].score.quality for k in kinds]})
    return out


def agreement(rows: Sequence[dict], items: Sequence[dict]) -> dict[str, float]:
    """How often a judge's pair rows prefer what the exact scorer prefers (items: `qualities`).

    `judge/agreement`: over unordered pairs the exact scorer does not tie, p(i>j) (both orders,
    formula of docs/method.md section 3) > 1/2 exactly when quality_i > quality_j. `judge/order_agreement`: the
    same per ordered pair from the argmax verdict alone (a Tie counts as a miss).
    `judge/tie_acc`: argmax 'Tie' on ordered pairs the exact scorer ties.
    """
    q = {(it["prompt_id"], int(k)): qual for it in items for k, qual in zip(
        it["cand_idx"] if it.get("cand_idx") is not None else range(len(it["qualities"])),
        it["qualities"])}
    agg = aggregate_pairs(rows)
    dec = [(r.p_i_over_j > 0.5) == (q[(r.prompt_id, r.i)] > q[(r.prompt_id, r.j)])
           for r in agg.itertuples() if q[(r.prompt_id, r.i)] != q[(r.prompt_id, r.j)]]
    order_hits, tie_hits = [], []
    for r in rows:
        qa, qb = q[(r["prompt_id"], r["a_idx"])], q[(r["prompt_id"], r["b_idx"])]
        pick = max(("A", r["p_a"]), ("B", r["p_b"]), ("Tie", r["p_tie"]), key=lambda x: x[1])[0]
        want = "A" if qa > qb else "B" if qb > qa else "Tie"
        (tie_hits if want == "Tie" else order_hits).append(pick == want)
    frac = lambda xs: sum(xs) / len(xs) if xs else float("nan")
    return {"judge/agreement": frac(dec), "judge/order_agreement": frac(order_hits),
            "judge/tie_acc": frac(tie_hits), "judge/flip_rate": flip_rate(rows),
            "judge/n_decisive_pairs": float(len(dec))}
