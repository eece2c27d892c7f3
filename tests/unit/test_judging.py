"""The oracle judge (scorer.model=oracle) and grouping candidates into judging items.

Run: .venv/bin/python -m pytest -q tests/unit/test_judging.py
"""

from __future__ import annotations

import pytest

from data.config import CurationConfig, DataConfig
from data.curation import PAIR_COLUMNS, aggregate_pairs, curate
from data.judging import exact_qualities, judge_items, oracle_pairs, oracle_points, pair_quality
from data.perturb import variants
from data.records import read_records
from data.shapes import generate


@pytest.fixture(scope="module")
def rec():
    return generate("eval", 1, DataConfig(), seed=0)[0]


def _cands(rec, kinds):
    vs = variants(rec, seed=0)
    return [{"prompt_id": rec["id"], "cand_idx": i, "text": vs[k].text, "answer": vs[k].answer,
             "question": rec["question"], "reference": rec["reference"], "gold": rec["answer"],
             "facts": rec["facts"], "kind": k} for i, k in enumerate(kinds)]


def test_judge_items_group_by_prompt_in_cand_idx_order(rec):
    cands = _cands(rec, ["gold", "unreasonable", "misled"])
    other = [{**c, "prompt_id": "p2"} for c in cands]
    items = judge_items([cands[2], other[1], cands[0], other[0], cands[1]])
    assert [it["prompt_id"] for it in items] == [rec["id"], "p2"]
    assert items[0]["cand_idx"] == [0, 1, 2]
    assert items[0]["candidates"] == [c["text"] for c in cands]
    assert items[1]["cand_idx"] == [0, 1]
    assert items[0]["facts"] == rec["facts"] and items[0]["reference"] == rec["reference"]


def test_oracle_pairs_prefer_the_higher_exact_quality_both_orders(rec):
    # gold 7 > counterfactual 6 > unreasonable 1; gold~ (a paraphrase) ties gold
    kinds = ["gold", "unreasonable", "counterfactual", "gold~"]
    item = judge_items(_cands(rec, kinds))[0]
    q = exact_qualities(item)
    assert q == [7.0, 1.0, 6.0, 7.0]
    rows = oracle_pairs([item])
    assert len(rows) == 4 * 3 and set(rows[0]) == set(PAIR_COLUMNS)
    by = {(r["a_idx"], r["b_idx"]): (r["p_a"], r["p_b"], r["p_tie"]) for r in rows}
    assert by[(0, 1)] == (1.0, 0.0, 0.0) and by[(1, 0)] == (0.0, 1.0, 0.0)
    assert by[(1, 2)] == (0.0, 1.0, 0.0)
    assert by[(0, 3)] == by[(3, 0)] == (0.0, 0.0, 1.0)
    agg = aggregate_pairs(rows)
    a01 = agg[(agg.i == 0) & (agg.j == 1)].iloc[0]
    assert a01.p_i_over_j == 1.0 and a01.inconsistency == 0.0


def test_oracle_feeds_curation_chosen_is_the_best(rec):
    cands = _cands(rec, ["unreasonable", "gold", "misled", "insufficient"])
    res = curate(cands, oracle_pairs(judge_items(cands)), CurationConfig())
    assert len(res.pairs) == 1
    pair = res.pairs[0]
    assert pair["chosen"] == cands[1]["text"]  # gold: the only quality-7 candidate
    assert pair["rejected"] in (cands[0]["text"], cands[2]["text"])  # a wrong answer


def test_pair_quality_grades_both_sides_of_what_curation_kept(rec):
    # exact qualities: gold 7 (correct, consistent, factual), counterfactual 6 (not factual),
    # unreasonable 1 (wrong answer, inconsistent, factual)
    cands = _cands(rec, ["gold", "unreasonable", "counterfactual"])
    pairs = [{"prompt_id": rec["id"], "chosen_idx": 0, "rejected_idx": 1},
             {"prompt_id": rec["id"], "chosen_idx": 2, "rejected_idx": 1}]
    q = pair_quality(pairs, cands)
    assert q["curate/exact/chosen_correct"] == 1.0 and q["curate/exact/chosen_consistent"] == 1.0
    assert q["curate/exact/chosen_factual"] == 0.5  # the counterfactual chosen side is not
    assert (q["curate/exact/rejected_correct"], q["curate/exact/rejected_consistent"],
            q["curate/exact/rejected_factual"]) == (0.0, 0.0, 1.0)
    assert q["curate/exact/ccf_available"] == 1.0  # the gold candidate is in the pool
    without_gold = [c for c in cands if c["kind"] != "gold"]
    assert pair_quality(pairs[1:], without_gold)["curate/exact/ccf_available"] == 0.0
    assert pair_quality(pairs, [{**c, "facts": None} for c in cands]) == {}  # your data: no exact grade
    assert pair_quality([], cands) == {}


def test_oracle_points_grade_by_quality(rec):
    item = judge_items(_cands(rec, ["gold", "unreasonable"]))[0]
    assert [r["p_good"] for r in oracle_points([item])] == [1.0, 1.0 / 7.0]


def test_oracle_without_facts_names_the_prompt(rec):
    cands = [{**c, "facts": None} for c in _cands(rec, ["gold", "misled"])]
    with pytest.raises(ValueError, match=rf"prompt '{rec['id']}'.*scene facts"):
        oracle_pairs(judge_items(cands))


def test_score_stage_with_the_oracle_loads_no_judge(rec, tmp_path):
    from data.records import write_records
    from tasks.score import build_scores

    cands = _cands(rec, ["gold", "unreasonable", "counterfactual"])
    (tmp_path / "c").mkdir()
    write_records(cands, tmp_path / "c" / "candidates.parquet")
    (tmp_path / "out").mkdir()
    from data.config import load_config
    cfg = load_config("configs/smoke.yaml", ["scorer.model=oracle"]).model_dump(mode="json")
    meta = build_scores(cfg, {"path": "/nonexistent", "judge_dir": "/nonexistent"},
                        {"path": str(tmp_path / "c")}, tmp_path / "out")
    rows = read_records(tmp_path / "out" / "pairwise_scores.parquet")
    assert len(rows) == 6 and meta["flip_rate"] == 0.0
    assert meta["onpolicy_agreement"] == 1.0
