"""R-Scorer training data for data without scene facts (your own tables, a Hugging Face
dataset): labelled perturbations of gold rationales that need only the text of the records.

The built-in world checks every perturbation with its exact scorer (data/perturb.py). Here
nothing can check a rationale against the image, so each flaw is made so that its label holds
by construction, on the same quality scale (4 correct + 2 consistent + 1 grounded):

    kind          how it is made                                     correct consistent grounded quality
    gold          the record's response                                  1       1        1       7
    dropped       the key sentence removed (the one that names the       1       0        1       5
                  answer, else the last; rationales of 2+ sentences)
    foreign       another question's rationale, this gold answer         1       0        0       4
    misled        another question's rationale with that question's      0       1        0       2
                  answer (when it differs from this gold)
    unreasonable  the gold rationale with a wrong answer (another         0       0        1       1
                  option of a multiple-choice row, else another row's answer)

Per record: gold vs each flaw, and `flaw_pairs` flaw-vs-flaw pairs, each in both orders
(A and B balanced by construction). There are no Tie pairs: no two texts here are known to
be equally good. Choices are deterministic in (seed, record id) and the record list (donors
of foreign rationales and wrong answers are drawn from it).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

from data.scoring import choice_index, normalize_answer, split_sentences
from data.shapes import format_response

QUALITY = {"gold": 7.0, "dropped": 5.0, "foreign": 4.0, "misled": 2.0, "unreasonable": 1.0}
FLAWS = ("dropped", "foreign", "misled", "unreasonable")


def has_facts(records: Sequence[dict[str, Any]]) -> bool:
    """Whether records carry scene facts (the built-in world): data/perturb.py applies."""
    return bool(records) and all(r.get("facts") for r in records)


def _key_sentence(sents: list[str], answer: str) -> int:
    a = normalize_answer(answer)
    named = [k for k, s in enumerate(sents) if a and f" {a} " in f" {normalize_answer(s)} "]
    return named[-1] if named else len(sents) - 1


def _wrong_answer(rec: dict, answers: list[str], rng: random.Random) -> str | None:
    gold = normalize_answer(str(rec["answer"]))
    choices = rec.get("choices")
    if choices:
        k = choice_index(str(rec["answer"]), choices)
        others = [c for i, c in enumerate(choices) if i != k]
    else:
        others = [a for a in answers if normalize_answer(a) != gold]
    return rng.choice(others) if others else None


def variants(rec: dict[str, Any], donors: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, str]:
    """Kind -> response text for one record with a gold rationale; a kind is missing where it
    cannot be made (one-sentence rationale, no other record, no wrong answer)."""
    rng = random.Random(f"perturb-text/{seed}/{rec['id']}")
    rationale, answer = rec["rationale"], str(rec["answer"])
    out = {"gold": format_response(rationale, answer)}
    sents = split_sentences(rationale)
    if len(sents) >= 2:
        k = _key_sentence(sents, answer)
        out["dropped"] = format_response(" ".join(sents[:k] + sents[k + 1:]), answer)
    others = [d for d in donors if d["id"] != rec["id"] and d.get("rationale")
              and d["rationale"] != rationale]
    if others:
        d = rng.choice(others)
        out["foreign"] = format_response(d["rationale"], answer)
        if normalize_answer(str(d["answer"])) != normalize_answer(answer):
            out["misled"] = format_response(d["rationale"], str(d["answer"]))
    wrong = _wrong_answer(rec, [str(d["answer"]) for d in donors], rng)
    if wrong is not None:
        out["unreasonable"] = format_response(rationale, wrong)
    return {k: v for k, v in out.items() if k == "gold" or v != out["gold"]}


def _each(records: Sequence[dict[str, Any]], seed: int, tag: str) -> Iterator[tuple[dict, random.Random, dict, list]]:
    """(record, its own seeded rng, its variants, the flaw kinds it has) for every record with
    a gold rationale and answer (the donors of foreign rationales are those records too)."""
    recs = [r for r in records if r.get("rationale") and r.get("answer") is not None]
    for rec in recs:
        vs = variants(rec, recs, seed)
        yield rec, random.Random(f"{tag}/{seed}/{rec['id']}"), vs, [k for k in FLAWS if k in vs]


def _pair_row(rec: dict, ka: str, a: str, kb: str, b: str) -> dict[str, Any]:
    qa, qb = QUALITY[ka], QUALITY[kb]
    return {"id": f"{rec['id']}/{ka}|{kb}", "prompt_id": rec["id"], "split": rec.get("split"),
            "family": rec.get("family"), "question": rec["question"],
            "reference": rec.get("reference") or "", "gold": str(rec["answer"]),
            "response_a": a, "response_b": b, "kind_a": ka, "kind_b": kb, "quality_a": qa,
            "quality_b": qb, "verdict": "A" if qa > qb else "B" if qb > qa else "Tie"}


def pair_records(records: Sequence[dict[str, Any]], seed: int = 0, flaw_pairs: int = 2) -> list[dict[str, Any]]:
    """Labelled ordered pairs (data.perturb.PAIR_COLUMNS), both orders adjacent."""
    out = []
    for rec, rng, vs, flaws in _each(records, seed, "pairs-text"):
        cross = [(i, j) for n, i in enumerate(flaws) for j in flaws[n + 1:]]
        for i, j in [("gold", f) for f in flaws] + rng.sample(cross, min(flaw_pairs, len(cross))):
            out += [_pair_row(rec, i, vs[i], j, vs[j]), _pair_row(rec, j, vs[j], i, vs[i])]
    return out


def point_records(records: Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """Pointwise items (data.perturb.POINT_COLUMNS): the gold Good, up to two flaws Bad."""
    out = []
    for rec, rng, vs, flaws in _each(records, seed, "points-text"):
        for k in ["gold"] + rng.sample(flaws, min(2, len(flaws))):
            out.append({"id": f"{rec['id']}/{k}", "prompt_id": rec["id"], "split": rec.get("split"),
                        "family": rec.get("family"), "question": rec["question"],
                        "reference": rec.get("reference") or "", "gold": str(rec["answer"]),
                        "response": vs[k], "kind": k, "quality": QUALITY[k],
                        "verdict": "Good" if k == "gold" else "Bad"})
    return out


def candidate_items(records: Sequence[dict[str, Any]], seed: int = 0) -> list[dict[str, Any]]:
    """One judging item per record, its variants as candidates with their qualities: what
    `data.perturb.agreement` measures a judge on (held-out records)."""
    out = []
    for rec, _, vs, _ in _each(records, seed, "items-text"):
        kinds = list(vs)
        out.append({"prompt_id": rec["id"], "question": rec["question"],
                    "reference": rec.get("reference") or "", "gold": str(rec["answer"]),
                    "candidates": [vs[k] for k in kinds], "kinds": kinds,
                    "qualities": [QUALITY[k] for k in kinds]})
    return out
