"""Held-out evaluation on data without scene facts (your own data): accuracy from the gold
answer, consistency/factuality from the R-Scorer or "not measured"; short answers: n/a.
With the committed tiny base model and judge, real generation and real judging."""

from __future__ import annotations

import pytest

from data.config import EvalConfig, ScorerConfig
from data.metrics import format_table
from data.records import read_records, write_records
from data.shapes import DataConfig, answers_of, format_response, generate
from models.evaluate import answer_rows, evaluate_policy, judge_rows
from models.loading import load_lvlm
from models.scorer import load_judge
from tests.conftest import ROOT
from data.examples import choices_for

CFG = EvalConfig(max_new_tokens=24, batch_size=8)


@pytest.fixture(scope="module")
def lvlm(base_model):
    return load_lvlm(base_model, device="cpu")


@pytest.fixture(scope="module")
def judge():
    model, tok = load_judge(str(ROOT / "models/builtin/judge"), device="cpu")
    return model, tok, ScorerConfig(template="compact", batch_size=16)


def own(n: int = 6) -> list[dict]:
    """Shapes questions as a user's data would arrive: no facts, no reference."""
    return [{**r, "facts": None, "reference": None} for r in generate("eval", n, DataConfig(), 0)]


def test_without_facts_or_judge_consistency_is_not_measured_not_zero(lvlm):
    summary, rows = evaluate_policy(*lvlm, own(), CFG)
    assert summary["consistency"] is None and summary["factuality"] is None
    assert summary["consistency_se"] is None and summary["measured_by"] is None
    assert 0.0 <= summary["accuracy"] <= 1.0 and all(r["consistency"] is None for r in rows)
    total = format_table(summary).splitlines()[-1].split()
    assert total[0] == "all" and total[-2:] == ["n/a", "n/a"]


def test_short_answers_have_no_rationale_to_be_consistent_with(lvlm):
    recs = generate("eval", 6, DataConfig(), 0)  # with facts: the exact scorer could score them
    summary, _ = evaluate_policy(*lvlm, recs, CFG, rationales=False)
    assert summary["consistency"] is None and summary["factuality"] is None
    assert summary["accuracy"] is not None
    exact, _ = evaluate_policy(*lvlm, recs, CFG)  # the same responses, scored exactly
    assert exact["measured_by"] == "exact scorer" and exact["consistency"] is not None
    assert exact["accuracy"] == summary["accuracy"]


def test_the_judge_measures_consistency_against_the_gold_response(lvlm, judge):
    summary, rows = evaluate_policy(*lvlm, own(), CFG, judge=judge)
    assert summary["measured_by"] == "R-Scorer"
    assert all(r["consistency"] in (0.0, 1.0) and r["factuality"] == r["consistency"] for r in rows)


def test_judge_rows_count_the_gold_response_and_reject_a_wrong_answer(judge):
    recs = own(12)
    gold = answer_rows(recs, [r["response"] for r in recs])
    judge_rows(gold, recs, judge)
    # the gold response against itself: both orders alike, so never below 1/2
    assert [r["consistency"] for r in gold] == [1.0] * len(recs)
    # the gold rationale with another answer of the question's kind (a word the judge knows)
    wrong = [format_response(r["rationale"], next(a for a in answers_of(r["family"]) if a != r["answer"]))
             for r in recs]
    bad = answer_rows(recs, wrong)
    judge_rows(bad, recs, judge)
    assert sum(r["consistency"] for r in bad) <= 2  # the judge prefers the gold response
    assert [r["accuracy"] for r in bad] == [0.0] * len(recs)


def test_a_row_without_a_gold_response_stays_unmeasured(judge):
    recs = own(2)
    recs[1] = {**recs[1], "rationale": None, "response": None}
    rows = answer_rows(recs, [r["short_response"] for r in recs])
    judge_rows(rows, recs, judge)
    assert rows[0]["consistency"] is not None and rows[1]["consistency"] is None


def test_multiple_choice_records_read_back_from_parquet_evaluate(lvlm, tmp_path):
    recs = []
    for r in own(6):
        ch = choices_for(r)
        recs.append({**r, "choices": ch, "question": r["question"] + "\nOptions: " + " ".join(ch)})
    write_records(recs, tmp_path / "eval.parquet")
    back = read_records(tmp_path / "eval.parquet")
    assert all(isinstance(r["choices"], list) for r in back)  # not numpy arrays
    summary, _ = evaluate_policy(*lvlm, back, CFG)
    assert 0.0 <= summary["accuracy"] <= 1.0
    letters = [f"Answer: ({chr(65 + r['choices'].index(r['answer']))})." for r in back]
    rows = answer_rows(back, letters)  # an answer given as the option's letter is right
    assert [r["accuracy"] for r in rows] == [1.0] * len(back)
