"""models/judge.py: one interface over the oracle, the pair judge, the pointwise ablation and
the claims judge, with the reader; the score stage writes what it gives."""

from __future__ import annotations

import pytest

from data.config import ScorerConfig
from data.shapes import DataConfig, generate
from models.judge import ORACLE, Judge, open_judge
from tests.unit.test_judge_signals import cands_of


@pytest.fixture(scope="module")
def cands():
    from data.scoring import parse_response

    out = []
    for rec in generate("eval", 4, DataConfig(), 0):
        for c in cands_of(rec, ["gold", "counterfactual", "unreasonable"]):
            p = parse_response(c["text"])
            out.append({**c, "question": rec["question"], "reference": rec["reference"],
                        "rationale": p.rationale, "answer": p.answer})
    return out


def test_the_oracle_judges_without_a_model_and_agrees_with_itself(cands):
    j = open_judge(ScorerConfig(model=ORACLE), None, "cpu")
    out = j.judge(cands)
    assert j.kind == "oracle" and out.points is None and out.marks is None and out.reads is None
    n = len({c["prompt_id"] for c in cands})
    assert len(out.pairs) == n * 3 * 2  # 3 candidates: 3 unordered pairs, both orders
    d = out.diagnostics
    assert d["flip_rate"] == 0.0 and d["onpolicy_agreement"] == 1.0
    assert "steer_filler" not in d  # the oracle reads the scene facts: nothing to steer
    pw = open_judge(ScorerConfig(model=ORACLE, mode="pointwise"), None, "cpu").judge(cands)
    assert pw.pairs is None and len(pw.points) == len(cands) and pw.diagnostics["n_rows"] == len(cands)


def test_a_pair_judge_with_the_reader_gives_pairs_reads_steering_and_agreement(cands):
    from models.builtin import judge_path

    cfg = ScorerConfig(template="compact", reader="builtin")
    out = open_judge(cfg, judge_path("builtin"), "cpu").judge(cands)
    assert len(out.reads) == len(cands) and out.marks is None
    assert {r["prompt_id"] for r in out.pairs} == {c["prompt_id"] for c in cands}
    d = out.diagnostics
    assert {"steer_filler", "steer_verdict", "steer_padding", "slot_bias", "reader/agree_consistent"} <= set(d)
    assert 0.0 <= d["onpolicy_agreement"] <= 1.0


def test_claims_mode_needs_a_reader():
    with pytest.raises(ValueError, match="scorer.mode=claims .* set scorer.reader"):
        ScorerConfig(mode="claims")
    ScorerConfig(mode="claims", model=ORACLE)  # the oracle needs none
    with pytest.raises(ValueError, match="needs scorer.reader"):
        Judge(ScorerConfig.model_construct(mode="claims", model="x", reader=None)).verdicts([])


def test_the_oracle_in_claims_mode_gives_exact_marks(cands):
    from data.scoring import score_shapes

    out = open_judge(ScorerConfig(model=ORACLE, mode="claims"), None, "cpu").judge(cands)
    by = {(c["prompt_id"], c["cand_idx"]): score_shapes(c["text"], c["facts"], c["gold"]) for c in cands}
    for m in out.marks:
        e = by[(m["prompt_id"], m["cand_idx"])]
        assert (m["correct"], m["consistent"], m["factual"]) == (e.correct, e.consistent, e.factual)
    assert out.diagnostics["onpolicy_agreement"] == 1.0 and out.diagnostics["claims/agree_factual"] == 1.0
