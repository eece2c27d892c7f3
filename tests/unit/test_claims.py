"""The claims judge: claim labels, marks -> pair verdicts, the committed checker, training."""

from __future__ import annotations

import json

import pytest

from data.claims import (
    balance, candidate_claim_records, claim_records, decided_by, pair_verdict, quality_distribution,
)
from data.config import DataConfig
from data.scoring import claim_holds, parse_claims, score_shapes
from data.shapes import generate

FACTS = {"grid": 3, "query": {"family": "count_color", "color": "red"},
         "objects": [{"color": "red", "shape": "circle", "row": 0, "col": 0},
                     {"color": "blue", "shape": "square", "row": 1, "col": 2}]}
REFERENCE = "The image shows a red circle at the top left, a blue square at the middle right."


@pytest.mark.parametrize("claim, holds", [
    ("There is a red circle at the top left.", True),
    ("There is a red circle at the top center.", False),  # a near miss: one attribute off
    ("That makes 1 red objects.", True),
    ("That makes 2 red objects.", False),
    ("There are no green objects.", True),
    ("There is no blue square.", False),
    ("The red circle is left of the blue square.", True),
    ("The red circle is right of the blue square.", False),
    ("I looked closely.", False),  # not a claim of the world's grammar: unverifiable
])
def test_claim_holds_is_the_exact_scorers_check_of_one_sentence(claim, holds):
    assert claim_holds(claim, FACTS) is holds
    # the same verdict as the exact scorer's factuality of a rationale of that one sentence
    assert score_shapes(f"{claim} Answer: 1.", FACTS, "1").factual is holds


def test_claim_records_are_minimal_true_false_pairs_labelled_exactly():
    recs = generate("scorer", 40, DataConfig(), 0)
    rows = claim_records(recs, seed=0, per_record=4)
    by_id = {r["id"]: r for r in recs}
    assert len(rows) == 40 * 4 * 2
    for t, f in zip(rows[::2], rows[1::2]):  # a pair: adjacent, one id, one true and one false
        assert t["id"] == f["id"] and t["reference"] == f["reference"]
        facts = by_id[t["id"].rsplit("/", 1)[0]]["facts"]
        assert t["holds"] is True and claim_holds(t["claim"], facts)
        assert f["holds"] is False and not claim_holds(f["claim"], facts)
    kinds = {parse_claims(r["claim"])[0][0] for r in rows}
    assert kinds >= {"mention", "none_pair", "relation"} and kinds & {"count_color", "count_shape"}
    assert claim_records(recs, seed=0, per_record=4) == rows  # deterministic
    both = balance(rows[:7] + [r for r in rows if not r["holds"]][:3], seed=0)
    assert sum(r["holds"] for r in both) * 2 == len(both)


def test_evidence_keeps_the_facts_that_share_most_content_words():
    from data.claims import evidence, reference_facts

    assert reference_facts(REFERENCE) == ["a red circle at the top left", "a blue square at the middle right"]
    assert evidence("There is a red circle at the top left.", REFERENCE) == "a red circle at the top left."
    # a near miss: two facts share 2 of its words each, both kept, in reference order
    assert evidence("There is a red square at the middle left.", REFERENCE) == (
        "a red circle at the top left; a blue square at the middle right.")
    assert evidence("That makes 2 blue objects.", REFERENCE) == "a blue square at the middle right."
    assert evidence("There are no green objects.", REFERENCE) == "nothing related."


def test_candidate_claim_records_take_each_distinct_sentence_once():
    cand = {"prompt_id": "p", "reference": REFERENCE, "facts": json.dumps(FACTS),
            "rationale": "There is a red circle at the top left. There is a red circle at the top left. "
                         "That makes 2 red objects."}
    rows = candidate_claim_records([cand, {**cand, "prompt_id": "q"}])
    assert [(r["claim"], r["holds"]) for r in rows] == [
        ("There is a red circle at the top left.", True), ("That makes 2 red objects.", False)]


def test_quality_distribution_and_pair_verdict_worked_by_hand():
    d = quality_distribution(1.0, 0.9, 0.5)
    assert d == pytest.approx({7: 0.45, 6: 0.45, 5: 0.05, 4: 0.05})
    a = {"correct": 1.0, "consistent": 0.9, "factual": 0.5}
    b = {"correct": 1.0, "consistent": 1.0, "factual": 0.0}  # quality 6 for sure
    # a > b when a is 7 (0.45); a = b when a is 6 (0.45); a < b otherwise (0.10)
    assert pair_verdict(a, b) == pytest.approx((0.45, 0.10, 0.45))
    # position-free: swapping the slots swaps p_a and p_b
    pa, pb, pt = pair_verdict(b, a)
    assert (pa, pb, pt) == pytest.approx((0.10, 0.45, 0.45))
    # correctness outranks the rest: a wrong answer with a perfect rationale loses to any right one
    wrong = {"correct": 0.0, "consistent": 1.0, "factual": 1.0}
    right = {"correct": 1.0, "consistent": 0.0, "factual": 0.0}
    assert pair_verdict(right, wrong) == pytest.approx((1.0, 0.0, 0.0))


def test_hardened_marks_give_the_oracles_certain_verdicts():
    from models.claims import hardened

    soft = [{"prompt_id": "p", "cand_idx": 0, "correct": 1.0, "consistent": 0.7, "factual": 0.4, "n_claims": 2},
            {"prompt_id": "p", "cand_idx": 1, "correct": 1.0, "consistent": 0.3, "factual": 0.6, "n_claims": 1}]
    hard = hardened(soft)
    assert [(m["consistent"], m["factual"]) for m in hard] == [(1.0, 0.0), (0.0, 1.0)]
    assert hard[0]["n_claims"] == 2 and soft[0]["consistent"] == 0.7  # a copy; the rest kept
    # soft: a is 6 with p 0.42, 7 with 0.28, ... -> an unsure verdict; hard: 6 against 5, certain
    assert pair_verdict(*soft)[0] < 0.7
    assert pair_verdict(*hard) == (1.0, 0.0, 0.0)
    assert pair_verdict(hard[0], hard[0]) == (0.0, 0.0, 1.0)  # same rounded marks: a tie


def test_decided_by_names_the_first_mark_that_differs():
    m = lambda c, k, f: {"correct": c, "consistent": k, "factual": f}
    assert decided_by(m(1, 1, 1), m(0, 1, 1)) == "correct"
    assert decided_by(m(1, 0.9, 0.2), m(1, 0.1, 0.9)) == "consistent"
    assert decided_by(m(1, 1, 0.8), m(1, 1, 0.3)) == "factual"
    assert decided_by(m(1, 1, 1), m(1, 0.7, 0.6)) is None


# --------------------------------------------------------------------------- the models


@pytest.fixture(scope="module")
def judges():
    from models.builtin import BUILTIN_CLAIMS
    from models.reader import load_reader
    from models.scorer import load_judge

    return load_judge(str(BUILTIN_CLAIMS), device="cpu"), load_reader("builtin", device="cpu")


def test_the_committed_checker_tells_true_claims_from_false_on_held_out_scenes(judges):
    from models.claims import checker_accuracy

    (model, tok), _ = judges
    held = balance(claim_records(generate("eval", 60, DataConfig(), 0), seed=0), seed=0)
    acc = checker_accuracy(model, tok, held)
    assert acc["claims/accuracy"] >= 0.85, acc  # chance is 0.5 on balanced claims


def test_check_claims_runs_identical_inputs_once_and_ignores_batching(judges):
    from models.claims import check_claims

    (model, tok), _ = judges
    pairs = [("There is a red circle at the top left.", REFERENCE),
             ("There is a green circle at the top left.", REFERENCE)] * 3
    one = check_claims(model, tok, pairs, batch_size=1)
    many = check_claims(model, tok, pairs, batch_size=64)
    assert one == pytest.approx(many, abs=1e-5)
    assert one[0] == one[2] == one[4] and one[0] > 0.5 > one[1]


def test_candidate_marks_and_pairs_prefer_the_factual_consistent_candidate(judges):
    from models.claims import candidate_marks, marks_to_pairs

    (checker, ctok), (reader, rtok) = judges
    rec = generate("eval", 5, DataConfig(), 0)[0]  # count_color
    gold_text = rec["response"]
    made_up = "There is a green triangle at the bottom right. " + gold_text  # a false claim added
    item = {"prompt_id": rec["id"], "question": rec["question"], "reference": rec["reference"],
            "gold": rec["answer"], "candidates": [gold_text, made_up, "no answer here"], "cand_idx": [0, 1, 2]}
    assert score_shapes(made_up, rec["facts"], rec["answer"]).factual is False
    marks = candidate_marks(checker, ctok, reader, rtok, [item])
    assert [m["cand_idx"] for m in marks] == [0, 1, 2]
    assert marks[0]["correct"] == 1.0 and marks[0]["factual"] > 0.5 and marks[0]["consistent"] > 0.5
    assert marks[1]["factual"] < 0.5
    assert marks[2] == {**marks[2], "correct": 0.0, "consistent": 0.0}  # unparsable
    rows = marks_to_pairs(marks)
    assert len(rows) == 6  # N(N-1), both orders
    r01 = next(r for r in rows if (r["a_idx"], r["b_idx"]) == (0, 1))
    r10 = next(r for r in rows if (r["a_idx"], r["b_idx"]) == (1, 0))
    assert r01["p_a"] > 0.5 and r01["p_a"] == pytest.approx(r10["p_b"])
    assert all(abs(r["p_a"] + r["p_b"] + r["p_tie"] - 1) < 1e-9 for r in rows)


def test_train_checker_learns_from_random_init_and_saves_a_checker_that_loads(tmp_path, base_model):
    import torch
    from transformers import AutoTokenizer

    from models.builtin import check_template
    from models.claims import checker_accuracy, save_checker, train_checker
    from models.scorer import build_tiny_judge, load_judge

    tok = AutoTokenizer.from_pretrained(base_model)
    model = build_tiny_judge(tok, seed=0)
    rows = balance(claim_records(generate("scorer", 60, DataConfig(), 0), seed=0), seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fit = train_checker(model, tok, rows, steps=40, learning_rate=3e-3, batch_size=16)
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())  # every weight trained
    assert fit["claims/train_steps"] == 40.0 and fit["claims/verdict_loss"] < 0.75
    save_checker(model, tok, tmp_path / "c", max_length=256, world="shapes")
    check_template(tmp_path / "c", "compact", "claims", "overlap", "shapes")  # accepted for claims mode
    with pytest.raises(ValueError, match="scorer.mode=claims, not pairwise"):
        check_template(tmp_path / "c", "compact", "pairwise")
    with pytest.raises(ValueError, match="scorer.evidence='overlap'"):
        check_template(tmp_path / "c", "compact", "claims", "all")
    # a checker of the shapes world on your own data: refused, naming what to set
    with pytest.raises(ValueError, match="trained for data.world=shapes, not files.*scorer.model="):
        check_template(tmp_path / "c", "compact", "claims", "overlap", "files")
    again, tok2 = load_judge(str(tmp_path / "c"), device="cpu")
    a = checker_accuracy(model, tok, rows[:50])["claims/accuracy"]
    assert checker_accuracy(again, tok2, rows[:50])["claims/accuracy"] == a
