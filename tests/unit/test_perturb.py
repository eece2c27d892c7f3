"""R-Scorer training pairs: every variant has its intended exact score, labels are balanced.

Run: .venv/bin/python -m pytest -q tests/unit/test_perturb.py
"""

from __future__ import annotations

from collections import Counter

import pytest

from data.config import DataConfig
from data.perturb import (
    FLAWS,
    INTENDED,
    PAIR_COLUMNS,
    PARAPHRASE,
    POINT_COLUMNS,
    agreement,
    candidate_items,
    pair_records,
    point_records,
    variants,
)
from data.scoring import score_shapes
from data.shapes import FAMILIES, generate


@pytest.fixture(scope="module")
def records():
    return generate("scorer", 200, DataConfig(), seed=0)


@pytest.fixture(scope="module")
def pairs(records):
    return pair_records(records, seed=0)


def flags(text, rec):
    s = score_shapes(text, rec["facts"], rec["answer"])
    return (s.correct, s.consistent, s.factual), s.quality


def test_every_flaw_is_built_for_every_record_and_has_its_intended_score(records):
    for rec in records:
        vs = variants(rec, seed=0)
        assert set(FLAWS) <= set(vs), (rec["id"], sorted(vs))
        for kind, v in vs.items():
            want = INTENDED[kind.rstrip(PARAPHRASE)]
            # rescored from the text alone: the label never depends on how it was made
            assert flags(v.text, rec)[0] == want, (rec["id"], kind, v.text)
        assert vs["gold"].text == rec["response"]


def test_flaws_mean_what_their_names_say(records):
    for rec in records:
        vs = variants(rec, seed=0)
        cf, ins, unr, mis = (vs[k].score for k in ("counterfactual", "insufficient",
                                                   "unreasonable", "misled"))
        assert not cf.factual and cf.correct and cf.consistent  # a false fact, same answer
        assert not ins.consistent and ins.correct  # the answer is not supported any more
        assert not unr.consistent and not unr.correct and unr.factual  # answer does not follow
        assert mis.consistent and not mis.correct and not mis.factual  # false facts mislead
        assert vs["unreasonable"].rationale == vs["gold"].rationale


def test_paraphrases_score_like_their_source_with_other_text(records):
    n = Counter()
    for rec in records:
        vs = variants(rec, seed=0)
        for kind, p in vs.items():
            if kind.endswith(PARAPHRASE):
                src = vs[kind.rstrip(PARAPHRASE)]
                assert p.text != src.text and p.score.quality == src.score.quality
                n[kind] += 1
    assert n["gold~"] >= 0.95 * len(records)  # almost every gold has a paraphrase


def test_pair_labels_balanced_both_orders_and_follow_quality(pairs, records):
    assert all(set(PAIR_COLUMNS) == set(p) for p in pairs)
    counts = Counter(p["verdict"] for p in pairs)
    assert counts["A"] == counts["B"]
    assert abs(counts["Tie"] - counts["A"]) <= 2, counts
    assert len(pairs) >= 15 * len(records)  # ~18 per record, a few trimmed
    by_id = {p["id"]: p for p in pairs}
    for p in pairs:
        mirror = by_id[f"{p['prompt_id']}/{p['kind_b']}|{p['kind_a']}"]
        assert (mirror["response_a"], mirror["response_b"]) == (p["response_b"], p["response_a"])
        assert {p["verdict"], mirror["verdict"]} in ({"A", "B"}, {"Tie"})
        qa, qb = p["quality_a"], p["quality_b"]
        assert p["verdict"] == ("A" if qa > qb else "B" if qb > qa else "Tie")
    # gold wins as A and as B; flaw-vs-flaw pairs exist; ties include gold vs its paraphrase
    kinds = Counter((p["kind_a"].rstrip("~"), p["kind_b"].rstrip("~"), p["verdict"]) for p in pairs)
    for f in FLAWS:
        assert kinds[("gold", f, "A")] > 0 and kinds[(f, "gold", "B")] > 0
    assert kinds[("insufficient", "misled", "A")] + kinds[("misled", "insufficient", "B")] > 0
    assert kinds[("gold", "gold", "Tie")] > 0
    assert {p["family"] for p in pairs} == set(FAMILIES)


def test_flaw_pairs_teach_correct_over_consistent_over_factual(pairs):
    def winner(p):
        return p["kind_a"] if p["verdict"] == "A" else p["kind_b"]

    for p in pairs:
        kinds = {p["kind_a"].rstrip("~"), p["kind_b"].rstrip("~")}
        if kinds == {"insufficient", "misled"}:  # correct beats consistent
            assert winner(p).startswith("insufficient")
        if kinds == {"counterfactual", "insufficient"}:  # consistent beats factual
            assert winner(p).startswith("counterfactual")
        if kinds == {"misled", "unreasonable"}:  # consistent beats factual, both wrong
            assert winner(p).startswith("misled")


def test_deterministic_per_seed_and_per_record(records, pairs):
    assert pair_records(records, seed=0) == pairs
    assert pair_records(records, seed=1) != pairs
    # a record's variants do not depend on which other records are built with it
    assert variants(records[7], seed=0) == variants(records[7], seed=0)
    assert point_records(records[:10], seed=3) == point_records(records[:10], seed=3)


def test_point_records_balanced_good_bad(records):
    points = point_records(records, seed=0)
    assert all(set(POINT_COLUMNS) == set(p) for p in points)
    c = Counter(p["verdict"] for p in points)
    assert c["Good"] == c["Bad"] >= 1.9 * len(records)
    for p in points:
        assert (p["verdict"] == "Good") == (p["quality"] == 7.0)


def test_candidate_items_carry_exact_qualities(records):
    items = candidate_items(records[:20], seed=0)
    for it, rec in zip(items, records[:20]):
        assert it["kinds"][0] == "gold" and len(it["candidates"]) == len(it["qualities"]) >= 8
        for text, q in zip(it["candidates"], it["qualities"]):
            assert flags(text, rec)[1] == q


def test_agreement_hand_computed():
    """Exact qualities 7, 5, 5 for candidates 10, 11, 12; (11, 12) is an exact tie."""
    items = [{"prompt_id": "p", "candidates": ["x", "y", "z"], "cand_idx": [10, 11, 12],
              "qualities": [7.0, 5.0, 5.0]}]
    row = lambda a, b, pa, pb, pt: {"prompt_id": "p", "a_idx": a, "b_idx": b, "p_a": pa,
                                    "p_b": pb, "p_tie": pt}
    rows = [row(10, 11, .8, .1, .1), row(11, 10, .2, .7, .1),  # p(10>11) = .75 + .05 = .8: hit
            row(10, 12, .3, .6, .1), row(12, 10, .6, .3, .1),  # p(10>12) = .3 + .05 = .35: miss
            row(11, 12, .1, .1, .8), row(12, 11, .5, .2, .3)]  # tie: argmax Tie once of twice
    m = agreement(rows, items)
    assert m["judge/agreement"] == pytest.approx(0.5)  # 1 of 2 decisive pairs
    assert m["judge/order_agreement"] == pytest.approx(0.5)  # A, B right; B, A wrong
    assert m["judge/tie_acc"] == pytest.approx(0.5)
    assert m["judge/n_decisive_pairs"] == 2
    # inconsistencies .1, 0 and (|.1 - .2| + |.5 - .1|) / 2 = .25 -> mean .35 / 3
    assert m["judge/flip_rate"] == pytest.approx(0.35 / 3)


def test_sweep_rationales_get_every_flaw_with_its_intended_score():
    recs = generate("scorer", 60, DataConfig(rationale_style="sweep"), seed=0)
    for r in recs:
        vs = variants(r, seed=0)
        assert set(FLAWS) <= set(vs), (r["id"], sorted(vs))
        assert vs["gold"].text == r["response"]
        for kind, v in vs.items():  # rescored from the text alone
            assert flags(v.text, r)[0] == INTENDED[kind.rstrip(PARAPHRASE)], (kind, v.text)
