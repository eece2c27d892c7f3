"""The pure pieces of the iteration report (report/page.py); the page itself is checked on a
real smoke run in tests/integration/test_report.py and in a browser in test_browser.py."""

from __future__ import annotations

import math

import pandas as pd

from data.config import CurationConfig
from report.page import changes, drop_reason, sample_prompts, win_matrix


def _orders(pid, i, j, pa_ij, pb_ij, pa_ji, pb_ji, tie=0.0):
    return [{"prompt_id": pid, "a_idx": i, "b_idx": j, "p_a": pa_ij, "p_b": pb_ij, "p_tie": tie},
            {"prompt_id": pid, "a_idx": j, "b_idx": i, "p_a": pa_ji, "p_b": pb_ji, "p_tie": tie}]


def test_win_matrix_combines_both_orders_and_leaves_the_diagonal_blank():
    # (0 shown first: A .8 B .2), (1 shown first: A .4 B .6):
    # p(0>1) = 1/2 (.8 + .6) = .7 ; p(1>0) = 1/2 (.2 + .4) = .3
    rows = pd.DataFrame(_orders("p", 0, 1, 0.8, 0.2, 0.4, 0.6) + _orders("p", 0, 2, 0.5, 0.5, 0.5, 0.5))
    m = win_matrix(rows, 3)
    assert math.isclose(m[0][1], 0.7) and math.isclose(m[1][0], 0.3)
    assert math.isclose(m[0][2], 0.5) and math.isclose(m[2][0], 0.5)
    assert all(math.isnan(m[k][k]) for k in range(3))
    assert math.isnan(m[1][2]) and math.isnan(m[2][1])  # never judged


def _cands(pid, answers, gold="2"):
    return pd.DataFrame([{"prompt_id": pid, "cand_idx": k, "text": f"r{k}. Answer: {a}.", "answer": a,
                          "gold": gold} for k, a in enumerate(answers)])


def test_drop_reason_is_the_curation_stage_s_own_reason():
    cfg = CurationConfig(delta=0.2)
    strong = pd.DataFrame(_orders("p", 0, 1, 0.9, 0.1, 0.1, 0.9))  # 0 beats 1: p = 0.9
    assert drop_reason(_cands("p", ["2", "3"]), strong, None, cfg) is None  # kept
    assert drop_reason(_cands("p", [None, "3"]), strong, None, cfg) == "unparsable"
    even = pd.DataFrame(_orders("p", 0, 1, 0.5, 0.5, 0.5, 0.5))
    assert drop_reason(_cands("p", ["2", "3"]), even, None, cfg) == "no_margin"
    assert drop_reason(_cands("p", ["3", "2"]), strong, None, cfg) == "chosen_wrong"
    answer_only = CurationConfig(preference="answer_only")
    assert drop_reason(_cands("p", ["3", "4"]), strong, None, answer_only) == "no_correct_or_no_wrong"


def test_changes_match_questions_by_id():
    before = pd.DataFrame({"id": ["a", "b", "c", "d"], "accuracy": [0.0, 1.0, 1.0, 0.0],
                           "response": ["x"] * 4, "answer": ["x"] * 4})
    after = pd.DataFrame({"id": ["d", "c", "b", "a", "e"], "accuracy": [0.0, 1.0, 0.0, 1.0, 1.0],
                          "response": ["y"] * 5, "answer": ["y"] * 5, "question": ["q"] * 5})
    ch = changes(before, after)
    assert ch["fixed"]["id"].tolist() == ["a"]
    assert ch["broken"]["id"].tolist() == ["b"]
    assert ch["fixed"]["response_before"].tolist() == ["x"]


def test_sample_prompts_mixes_kept_and_dropped_and_is_stable():
    ids = [f"p{k}" for k in range(10)]
    kept = {"p1", "p3", "p5"}
    s = sample_prompts(ids, kept, 4)
    assert len(s) == 4 and len(set(s)) == 4
    assert sum(p in kept for p in s) == 2
    assert s == sample_prompts(list(reversed(ids)), kept, 4)  # not the input order
    assert sorted(sample_prompts(ids, {"p0"}, 4)).count("p0") == 1  # one kept: it is shown
    assert set(sample_prompts(ids, set(), 20)) == set(ids)  # fewer than asked: all of them
