"""R-Scorer training data for data without scene facts: flaws whose labels hold by construction."""

from __future__ import annotations

import pytest

from data import perturb_text as pt
from data.config import load_config
from data.perturb import PAIR_COLUMNS
from data.scoring import parse_response
from data.shapes import DataConfig, generate
from models.judge_training import training_records


def own(n: int = 8) -> list[dict]:
    return [{**r, "facts": None, "reference": None} for r in generate("scorer", n, DataConfig(), 0)]


def rec(rid: str, rationale: str, answer: str, choices=None) -> dict:
    return {"id": rid, "question": f"q {rid}?", "rationale": rationale, "answer": answer, "choices": choices}


def test_each_flaw_is_made_as_its_label_says():
    a = rec("a", "There is a red circle at the top left. It is the only circle.", "red",
            ["red", "blue", "green"])
    b = rec("b", "There is a blue square at the middle center.", "blue")
    vs = pt.variants(a, [a, b], seed=0)
    assert vs["gold"] == "There is a red circle at the top left. It is the only circle. Answer: red."
    # the key sentence (the one that names the answer) goes; the answer stays
    assert vs["dropped"] == "It is the only circle. Answer: red."
    assert vs["foreign"] == "There is a blue square at the middle center. Answer: red."
    assert vs["misled"] == "There is a blue square at the middle center. Answer: blue."
    wrong = parse_response(vs["unreasonable"]).answer
    assert wrong in ("blue", "green") and vs["unreasonable"].startswith(a["rationale"])


def test_a_flaw_that_cannot_be_made_is_left_out():
    a = rec("a", "One sentence only.", "yes")
    vs = pt.variants(a, [a], seed=0)  # no other record, no other answer, nothing to drop
    assert set(vs) == {"gold"}
    b = rec("b", "Another reason.", "yes")
    vs = pt.variants(a, [a, b], seed=0)  # same answer: no misled, no wrong answer to swap in
    assert set(vs) == {"gold", "foreign"}


def test_pairs_come_in_both_orders_with_the_better_response_winning():
    rows = pt.pair_records(own(), seed=0, flaw_pairs=2)
    assert rows and all(set(r) == set(PAIR_COLUMNS) for r in rows)
    for x, y in zip(rows[::2], rows[1::2]):
        assert (x["response_a"], x["response_b"]) == (y["response_b"], y["response_a"])
        assert {x["verdict"], y["verdict"]} == {"A", "B"}
        win = x["response_a"] if x["verdict"] == "A" else x["response_b"]
        assert win == (x["response_a"] if x["quality_a"] > x["quality_b"] else x["response_b"])
    assert pt.pair_records(own(), seed=0) == rows  # deterministic
    assert {r["verdict"] for r in pt.point_records(own(), seed=0)} == {"Good", "Bad"}


def test_candidate_items_carry_the_qualities_agreement_needs():
    items = pt.candidate_items(own(4), seed=0)
    assert all(it["qualities"][0] == pt.QUALITY["gold"] == max(it["qualities"]) for it in items)
    assert all(len(it["candidates"]) == len(it["kinds"]) == len(it["qualities"]) for it in items)


def test_judge_training_on_records_without_facts_uses_these_flaws():
    cfg = load_config(None, ["scorer.mode=pointwise"])
    recs = own(6)
    train = training_records(cfg, recs)
    kinds = {r.get("kind_a") or r.get("kind") for r in train}
    assert kinds <= set(pt.QUALITY) and "gold" in kinds
    with pytest.raises(ValueError, match="none of the 2 scorer-split records has a gold rationale"):
        training_records(cfg, [{**r, "rationale": None} for r in recs[:2]])
