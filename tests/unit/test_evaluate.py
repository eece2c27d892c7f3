"""Held-out evaluation on data without scene facts (your own data): accuracy from the gold
answer, consistency/factuality from the teacher (a real HTTP server: tools/fake_teacher.py)
or "not measured"; short answers: n/a. With the committed tiny base model, real generation."""

from __future__ import annotations

import pytest

from data.config import EvalConfig, TeacherConfig
from data.metrics import format_table
from data.records import read_records, write_records
from data.shapes import DataConfig, answers_of, format_response, generate
from data.examples import choices_for
from models.distill import grade_rows
from models.evaluate import answer_rows, evaluate_policy
from models.loading import load_lvlm
from models.teacher import TeacherClient
from tools.fake_teacher import FakeTeacher, scene_index, start_server

CFG = EvalConfig(max_new_tokens=24, batch_size=8)


@pytest.fixture(scope="module")
def lvlm(base_model):
    return load_lvlm(base_model, device="cpu")


@pytest.fixture(scope="module")
def teacher():
    """A teacher that knows the scenes of `own(12)` and is always right."""
    server, url = start_server(FakeTeacher(scene_index(generate("eval", 12, DataConfig(), 0))))
    yield TeacherClient(TeacherConfig(endpoint=url, model="fake"))
    server.shutdown()


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


def test_the_teacher_grades_consistency_and_factuality_as_two_measurements(teacher):
    recs = own(12)
    gold = answer_rows(recs, [r["response"] for r in recs])
    grade_rows(teacher, gold, recs)
    assert [(r["consistency"], r["factuality"]) for r in gold] == [(1.0, 1.0)] * len(recs)
    # the gold rationale with another answer: true claims, an answer they do not lead to
    wrong = [format_response(r["rationale"], next(a for a in answers_of(r["family"]) if a != r["answer"]))
             for r in recs]
    bad = answer_rows(recs, wrong)
    grade_rows(teacher, bad, recs)
    assert [(r["consistency"], r["factuality"]) for r in bad] == [(0.0, 1.0)] * len(recs)
    # a made-up object in front of the gold response: still consistent, no longer factual
    made_up = answer_rows(recs, [f"There is a purple star at the top left. {r['response']}" for r in recs])
    grade_rows(teacher, made_up, recs)
    assert all(r["factuality"] == 0.0 for r in made_up)
    assert sum(r["consistency"] for r in made_up) >= len(recs) - 2  # the read may hinge on the new sentence
    short = answer_rows(recs, [r["short_response"] for r in recs])  # no rationale: neither
    grade_rows(teacher, short, recs)
    assert {(r["consistency"], r["factuality"]) for r in short} <= {(0.0, 0.0), (1.0, 0.0)}


def test_evaluation_says_who_graded(lvlm, teacher):
    def grade(rows, recs):
        grade_rows(teacher, rows, recs)

    summary, rows = evaluate_policy(*lvlm, own(6), CFG, grade=("teacher fake", grade))
    assert summary["measured_by"] == "teacher fake"
    assert all(r["consistency"] in (0.0, 1.0) and r["factuality"] in (0.0, 1.0) for r in rows)


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
