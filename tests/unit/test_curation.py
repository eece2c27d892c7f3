"""Curation on hand-made judge verdicts; every expected number is worked out in a comment."""

import json
import math

import pandas as pd
import pytest

from data.config import CurationConfig
from data.curation import (
    AGGREGATE_COLUMNS,
    DROP_REASONS,
    aggregate_pairs,
    candidate_scores,
    curate,
    flip_rate,
    pair_probability,
    pointwise_scores,
)

approx = pytest.approx


def both(pid, i, j, p, tie=0.0):
    """A position-consistent judge: 'i wins' with probability p in both orders."""
    q = 1.0 - p - tie
    return [
        {"prompt_id": pid, "a_idx": i, "b_idx": j, "p_a": p, "p_b": q, "p_tie": tie},
        {"prompt_id": pid, "a_idx": j, "b_idx": i, "p_a": q, "p_b": p, "p_tie": tie},
    ]


def order(pid, a, b, p_a, p_b, p_tie=0.0):
    return {"prompt_id": pid, "a_idx": a, "b_idx": b, "p_a": p_a, "p_b": p_b, "p_tie": p_tie}


def cands(pid, answers, gold="red", **extra):
    return [
        {"prompt_id": pid, "cand_idx": k, "text": f"{pid} text {k}", "answer": a, "gold": gold,
         "question": f"question of {pid}", **{c: v[k] for c, v in extra.items()}}
        for k, a in enumerate(answers)
    ]


# Judge for p0: 0 > 1 (0.9), 0 > 2 (1.0), 1 > 2 (0.7), consistent and tie-free: c_ij = 1.
# s0 = (0.9 + 1.0) / 2 = 0.95; s1 = (0.1 + 0.7) / 2 = 0.40; s2 = (0.0 + 0.3) / 2 = 0.15.
CONFIDENT = both("p0", 0, 1, 0.9) + both("p0", 0, 2, 1.0) + both("p0", 1, 2, 0.7)


def test_pair_probability():
    # 1/2 (0.8 + 0.6) + 1/4 (0.1 + 0.2) = 0.7 + 0.075
    assert pair_probability(0.8, 0.6, 0.1, 0.2) == approx(0.775)
    assert pair_probability(1.0, 1.0, 0.0, 0.0) == approx(1.0)
    assert pair_probability(0.0, 0.0, 1.0, 1.0) == approx(0.5)  # full tie: 1/4 * 2


def test_consistent_confident_judge():
    agg = aggregate_pairs(CONFIDENT)
    assert list(agg.columns) == list(AGGREGATE_COLUMNS)
    assert list(zip(agg["i"], agg["j"])) == [(0, 1), (0, 2), (1, 2)]
    assert agg["p_i_over_j"].tolist() == approx([0.9, 1.0, 0.7])
    assert agg["p_j_over_i"].tolist() == approx([0.1, 0.0, 0.3])
    assert agg["inconsistency"].tolist() == approx([0.0, 0.0, 0.0])
    assert agg["confidence"].tolist() == approx([1.0, 1.0, 1.0])
    assert candidate_scores(agg, 3) == approx([0.95, 0.40, 0.15])

    res = curate(cands("p0", ["red", "blue", "green"]), CONFIDENT, CurationConfig())
    assert res.kept == 1 and res.n_prompts == 1 and res.kept_frac == 1.0
    (p,) = res.pairs
    # chosen = argmax s = 0, rejected = argmin s = 2, weight = 0.95 - 0.15 = 0.8
    assert (p["chosen_idx"], p["rejected_idx"]) == (0, 2)
    assert (p["chosen"], p["rejected"]) == ("p0 text 0", "p0 text 2")
    assert (p["s_chosen"], p["s_rejected"], p["weight"]) == approx((0.95, 0.15, 0.8))
    assert p["question"] == "question of p0" and p["gold"] == "red"
    assert [s["score"] for s in res.scores] == approx([0.95, 0.40, 0.15])
    assert set(res.dropped) == set(DROP_REASONS) and sum(res.dropped.values()) == 0


def test_full_ties_give_half_and_zero_confidence():
    rows = both("t", 0, 1, 0.0, tie=1.0)
    # p(0>1) = 1/2 (0 + 0) + 1/4 (1 + 1) = 0.5; tie mass 1 -> c = (1 - 1) * (1 - 0) = 0
    (r,) = aggregate_pairs(rows).to_dict("records")
    assert (r["p_i_over_j"], r["p_j_over_i"], r["tie_mass"], r["confidence"]) == approx(
        (0.5, 0.5, 1.0, 0.0))
    # every c_ij = 0 -> neutral 0.5 for both
    assert candidate_scores(aggregate_pairs(rows), 2) == approx([0.5, 0.5])
    res = curate(cands("t", ["red", "blue"]), rows, CurationConfig())
    assert res.kept == 0 and res.dropped["no_margin"] == 1  # margin 0 < 0.2


def test_tie_pair_is_ignored_by_confidence_but_not_by_uniform():
    # (0,1) full tie (c = 0, p = 0.5); 0 > 2 and 1 > 2 with p = 1, c = 1.
    rows = both("t", 0, 1, 0.0, tie=1.0) + both("t", 0, 2, 1.0) + both("t", 1, 2, 1.0)
    agg = aggregate_pairs(rows)
    # confidence: s0 = (0 * 0.5 + 1 * 1) / (0 + 1) = 1.0; s1 likewise; s2 = 0 / 2 = 0
    assert candidate_scores(agg, 3) == approx([1.0, 1.0, 0.0])
    # uniform: s0 = (0.5 + 1) / 2 = 0.75; s1 = 0.75; s2 = (0 + 0) / 2 = 0
    assert candidate_scores(agg, 3, weighting="uniform") == approx([0.75, 0.75, 0.0])


def test_inconsistent_orders_scale_confidence():
    # The judge always says "A": pA(0,1) = 0.9 but pB(1,0) = 0.1.
    rows = [order("x", 0, 1, 0.9, 0.1), order("x", 1, 0, 0.9, 0.1)]
    (r,) = aggregate_pairs(rows).to_dict("records")
    # p(0>1) = 1/2 (0.9 + 0.1) = 0.5; inconsistency |0.9 - 0.1| = 0.8 both ways
    # c = (1 - 0) * (1 - 0.8) = 0.2
    assert (r["p_i_over_j"], r["inconsistency"], r["confidence"]) == approx((0.5, 0.8, 0.2))

    # With ties: (0,1) gives A .6 B .2 T .2; (1,0) gives A .4 B .4 T .2.
    rows = [order("y", 0, 1, 0.6, 0.2, 0.2), order("y", 1, 0, 0.4, 0.4, 0.2)]
    (r,) = aggregate_pairs(rows).to_dict("records")
    # p(0>1) = 1/2 (0.6 + 0.4) + 1/4 (0.4) = 0.6; p(1>0) = 1/2 (0.4 + 0.2) + 0.1 = 0.4
    # inconsistency = mean(|0.6 - 0.4|, |0.4 - 0.2|) = 0.2; tie mass 0.2; c = 0.8 * 0.8 = 0.64
    assert (r["p_i_over_j"], r["p_j_over_i"]) == approx((0.6, 0.4))
    assert (r["inconsistency"], r["tie_mass"], r["confidence"]) == approx((0.2, 0.2, 0.64))


# (0,1) inconsistent: (0,1) A .9 B .1, (1,0) A .5 B .5 -> p(0>1) = 1/2 (0.9 + 0.5) = 0.7,
#   inconsistency = mean(|0.9 - 0.5|, |0.5 - 0.1|) = 0.4, c = 0.6.
# (0,2) consistent p(0>2) = 0.2; (1,2) consistent p(1>2) = 0.5; c = 1.
# confidence: s0 = (0.6*0.7 + 0.2) / 1.6 = 0.3875, s1 = (0.6*0.3 + 0.5) / 1.6 = 0.425,
#             s2 = (0.8 + 0.5) / 2 = 0.65 -> chosen 2, rejected 0, weight 0.2625
# uniform:    s0 = (0.7 + 0.2) / 2 = 0.45, s1 = (0.3 + 0.5) / 2 = 0.4, s2 = 0.65
#             -> chosen 2, rejected 1, margin 0.25 >= 0.2, weight 1.0
MIXED = [order("m", 0, 1, 0.9, 0.1), order("m", 1, 0, 0.5, 0.5)] + both("m", 0, 2, 0.2) + both(
    "m", 1, 2, 0.5)


def test_confidence_weighting_changes_the_rejected():
    assert candidate_scores(aggregate_pairs(MIXED), 3) == approx([0.3875, 0.425, 0.65])
    res = curate(cands("m", ["blue", "green", "red"]), MIXED, CurationConfig())
    (p,) = res.pairs
    assert (p["chosen_idx"], p["rejected_idx"], p["weight"]) == (2, 0, approx(0.2625))


def test_uniform_weighting_ablation():
    assert candidate_scores(aggregate_pairs(MIXED), 3, "uniform") == approx([0.45, 0.4, 0.65])
    cfg = CurationConfig(weighting="uniform")
    (p,) = curate(cands("m", ["blue", "green", "red"]), MIXED, cfg).pairs
    assert (p["chosen_idx"], p["rejected_idx"]) == (2, 1)
    assert (p["s_chosen"], p["s_rejected"], p["weight"]) == approx((0.65, 0.4, 1.0))
    # the margin threshold still applies: 0.25 < 0.3
    res = curate(cands("m", ["blue", "green", "red"]), MIXED, CurationConfig(weighting="uniform",
                                                                               delta=0.3))
    assert res.kept == 0 and res.dropped["no_margin"] == 1


def test_all_equal_scores_no_margin_and_lowest_index_tie_break():
    # p = 0.5 everywhere, c = 1: every s = (0.5 + 0.5) / 2 = 0.5, margin 0
    rows = both("e", 0, 1, 0.5) + both("e", 0, 2, 0.5) + both("e", 1, 2, 0.5)
    res = curate(cands("e", ["red", "red", "red"]), rows, CurationConfig())
    assert res.dropped["no_margin"] == 1 and res.kept == 0
    # delta 0 keeps it: chosen = lowest idx (0), rejected = lowest other idx (1), weight 0
    (p,) = curate(cands("e", ["red", "red", "red"]), rows, CurationConfig(delta=0.0)).pairs
    assert (p["chosen_idx"], p["rejected_idx"], p["weight"]) == (0, 1, approx(0.0))


def test_margin_at_delta_is_kept_despite_float_rounding():
    # pointwise 0.7 vs 0.5: 0.7 - 0.5 = 0.19999999999999996 in floats, meant as 0.2 >= 0.2
    pts = [{"prompt_id": "f", "cand_idx": 0, "p_good": 0.7},
           {"prompt_id": "f", "cand_idx": 1, "p_good": 0.5}]
    res = curate(cands("f", ["red", "blue"]), None, CurationConfig(), point_rows=pts)
    assert res.kept == 1 and res.pairs[0]["weight"] == approx(0.2)


def test_chosen_wrong_dropped_only_with_flag_and_gold():
    # judge prefers 0 (s0 = 0.95) whose answer 'blue' is wrong for gold 'red'
    c = cands("p0", ["blue", "red", "green"])
    res = curate(c, CONFIDENT, CurationConfig())
    assert res.kept == 0 and res.dropped["chosen_wrong"] == 1
    res = curate(c, CONFIDENT, CurationConfig(require_correct_chosen=False))
    assert res.kept == 1 and res.pairs[0]["chosen_idx"] == 0
    # no gold answer: nothing to check against, kept
    res = curate(cands("p0", ["blue", "red", "green"], gold=None), CONFIDENT, CurationConfig())
    assert res.kept == 1
    # gold is normalised like answers: ' The Blue. ' -> 'blue'
    res = curate(cands("p0", ["blue", "red", "green"], gold=" The Blue. "), CONFIDENT,
                 CurationConfig())
    assert res.kept == 1


def test_only_a_supported_candidate_is_chosen():
    # s0 = 0.95, s1 = 0.40, s2 = 0.15 (CONFIDENT); all three answer 'red' = gold.
    # The reader says 0's rationale does not imply 'red': the chosen is 1, the best supported.
    # margin s1 - s2 = 0.25 >= 0.2: kept, rejected 2, weight 0.25
    c = cands("p0", ["red", "red", "red"], supported=[False, True, None])
    (p,) = curate(c, CONFIDENT, CurationConfig()).pairs
    assert (p["chosen_idx"], p["rejected_idx"], p["weight"]) == (1, 2, approx(0.25))
    # unread (None) counts as allowed: 2 may be chosen when 0 and 1 are unsupported, but
    # nothing is below it, so the margin check drops the prompt
    c = cands("p0", ["red", "red", "red"], supported=[False, False, None])
    res = curate(c, CONFIDENT, CurationConfig())
    assert res.kept == 0 and res.dropped["no_margin"] == 1
    # no supported candidate at all: dropped with its own reason
    c = cands("p0", ["red", "red", "red"], supported=[False, False, False])
    res = curate(c, CONFIDENT, CurationConfig())
    assert res.kept == 0 and res.dropped["chosen_unsupported"] == 1
    # the switch off: the judge's favourite, supported or not
    (p,) = curate(c, CONFIDENT, CurationConfig(require_supported_chosen=False)).pairs
    assert p["chosen_idx"] == 0
    # without the column nothing changes
    (p,) = curate(cands("p0", ["red", "red", "red"]), CONFIDENT, CurationConfig()).pairs
    assert p["chosen_idx"] == 0


def test_likeliest_rejected_is_the_policys_own_negative_unsupported_first():
    # s0 = 0.95, s1 = 0.40, s2 = 0.15: both 1 and 2 are at least delta below the chosen 0
    cfg = CurationConfig(rejected="likeliest", require_correct_chosen=False)
    c = cands("p0", ["red", "blue", "green"], mean_logprob=[-0.1, -0.2, -0.9])
    (p,) = curate(c, CONFIDENT, cfg).pairs
    assert (p["chosen_idx"], p["rejected_idx"], p["weight"]) == (0, 1, approx(0.55))
    # the reader: 1's rationale implies its answer, 2's does not -> 2, however unlikely
    c = cands("p0", ["red", "blue", "green"], mean_logprob=[-0.1, -0.2, -0.9],
              supported=[True, True, False])
    (p,) = curate(c, CONFIDENT, cfg).pairs
    assert (p["chosen_idx"], p["rejected_idx"]) == (0, 2)
    # delta 0.6: only 2 is far enough below (0.95 - 0.40 = 0.55 < 0.6)
    c = cands("p0", ["red", "blue", "green"], mean_logprob=[-0.1, -0.2, -0.9])
    (p,) = curate(c, CONFIDENT, cfg.model_copy(update={"delta": 0.6})).pairs
    assert p["rejected_idx"] == 2
    # the default keeps the paper's lowest-scored rejected
    (p,) = curate(c, CONFIDENT, CurationConfig(require_correct_chosen=False)).pairs
    assert p["rejected_idx"] == 2


def test_only_a_candidate_marked_factual_is_chosen_when_asked():
    # s0 = 0.95, s1 = 0.40, s2 = 0.15: the claims judge marks 0 not factual, 1 factual
    c = cands("p0", ["red", "red", "red"], factual=[False, True, None])
    cfg = CurationConfig(require_factual_chosen=True)
    (p,) = curate(c, CONFIDENT, cfg).pairs
    assert (p["chosen_idx"], p["rejected_idx"]) == (1, 2)
    c = cands("p0", ["red", "red", "red"], factual=[False, False, False])
    res = curate(c, CONFIDENT, cfg)
    assert res.kept == 0 and res.dropped["chosen_not_factual"] == 1
    assert curate(c, CONFIDENT, CurationConfig()).pairs[0]["chosen_idx"] == 0  # off by default


def test_prefer_restricts_the_chosen_where_it_can_and_keeps_the_prompt_where_it_cannot():
    # s0 = 0.95, s1 = 0.40, s2 = 0.15
    prefer = CurationConfig(require_supported_chosen="prefer", require_factual_chosen="prefer")
    # one supported and factual candidate: it is chosen, as with the hard requirement
    c = cands("p0", ["red", "red", "red"], supported=[False, True, True], factual=[True, True, False])
    res = curate(c, CONFIDENT, prefer)
    assert res.pairs[0]["chosen_idx"] == 1 and res.fell_back == {}
    # none supported: the hard requirement drops the prompt, "prefer" keeps the judge's pick
    # and still applies the factual one (0 is not factual, 1 is), counting what it gave up
    c = cands("p0", ["red", "red", "red"], supported=[False, False, False], factual=[False, True, None])
    assert curate(c, CONFIDENT, CurationConfig()).dropped["chosen_unsupported"] == 1
    res = curate(c, CONFIDENT, prefer)
    assert (res.pairs[0]["chosen_idx"], res.pairs[0]["rejected_idx"]) == (1, 2)
    assert res.fell_back == {"chosen_unsupported": 1}
    assert res.metrics()["curate/fell_back/chosen_unsupported"] == 1.0
    # neither mark anywhere: the judge's favourite, both counted
    c = cands("p0", ["red", "red", "red"], supported=[False] * 3, factual=[False] * 3)
    res = curate(c, CONFIDENT, prefer)
    assert res.pairs[0]["chosen_idx"] == 0
    assert res.fell_back == {"chosen_unsupported": 1, "chosen_not_factual": 1}


def test_nearest_rejected_is_the_best_of_those_delta_below():
    # s0 = 0.95, s1 = 0.40, s2 = 0.15: both are >= 0.2 below; the nearest is 1 (margin 0.55)
    cfg = CurationConfig(rejected="nearest", require_correct_chosen=False)
    (p,) = curate(cands("p0", ["red", "blue", "green"]), CONFIDENT, cfg).pairs
    assert (p["chosen_idx"], p["rejected_idx"], p["weight"]) == (0, 1, approx(0.55))
    # delta 0.6 leaves only 2
    (p,) = curate(cands("p0", ["red", "blue", "green"]), CONFIDENT, cfg.model_copy(update={"delta": 0.6})).pairs
    assert p["rejected_idx"] == 2


def test_fewer_than_2_candidates_and_unparsable():
    c = cands("one", ["red"]) + cands("bad", ["red", None]) + cands("p0", ["red", "b", "c"])
    rows = both("bad", 0, 1, 0.1) + CONFIDENT
    res = curate(c, rows, CurationConfig())
    assert res.n_prompts == 3 and res.kept == 1
    assert res.dropped["fewer_than_2_candidates"] == 1 and res.dropped["unparsable"] == 1
    assert res.kept_frac == approx(1 / 3)
    assert res.kept + sum(res.dropped.values()) == res.n_prompts
    m = res.metrics()
    assert m["curate/kept_frac"] == approx(1 / 3) and m["curate/dropped/unparsable"] == 1.0
    # the lone candidate gets the neutral score: it has no judged pair
    assert {(s["prompt_id"], s["cand_idx"]): s["score"] for s in res.scores}[("one", 0)] == 0.5


def test_unparsable_is_never_chosen_but_may_be_rejected():
    # 0 unparsable but loved by the judge: 0 > 1 (1.0), 0 > 2 (1.0), 1 > 2 (0.9)
    # s0 = 1.0, s1 = (0 + 0.9) / 2 = 0.45, s2 = (0 + 0.1) / 2 = 0.05 -> chosen 1 (best parsable),
    # rejected 2, weight 0.45 - 0.05 = 0.4
    rows = both("u", 0, 1, 1.0) + both("u", 0, 2, 1.0) + both("u", 1, 2, 0.9)
    (p,) = curate(cands("u", ["", "red", "blue"]), rows, CurationConfig()).pairs
    assert (p["chosen_idx"], p["rejected_idx"], p["weight"]) == (1, 2, approx(0.4))
    # 0 unparsable and worst: 1 > 0 (1.0), 2 > 0 (1.0), 1 > 2 (0.6)
    # s1 = (1 + 0.6) / 2 = 0.8, s2 = (1 + 0.4) / 2 = 0.7, s0 = 0 -> rejected 0, weight 0.8
    rows = both("u", 1, 0, 1.0) + both("u", 2, 0, 1.0) + both("u", 1, 2, 0.6)
    (p,) = curate(cands("u", [None, "red", "blue"]), rows, CurationConfig()).pairs
    assert (p["chosen_idx"], p["rejected_idx"], p["weight"]) == (1, 0, approx(0.8))


def test_answer_only_ablation():
    cfg = CurationConfig(preference="answer_only")
    lp = {"mean_logprob": [-1.0, -0.5, -2.0, -0.7, 0.0]}
    c = cands("a", ["red", "red", "blue", "green", None], **lp)
    res = curate(c, None, cfg)  # the judge is not needed
    (p,) = res.pairs
    # correct {0, 1}: highest mean_logprob is 1 (-0.5); wrong parsable {2, 3}: 3 (-0.7);
    # the unparsable 4 (log-prob 0.0) is neither
    assert (p["chosen_idx"], p["rejected_idx"], p["weight"]) == (1, 3, 1.0)
    assert [s["score"] for s in res.scores] == [1.0, 1.0, 0.0, 0.0, 0.0]
    # without log-probs: lowest idx of each
    (p,) = curate(cands("a", ["red", "red", "blue", "green", None]), None, cfg).pairs
    assert (p["chosen_idx"], p["rejected_idx"]) == (0, 2)
    # all correct, all wrong, or no gold -> no_correct_or_no_wrong
    c = cands("r", ["red", "red"]) + cands("w", ["b", "g"]) + cands("n", ["red", "b"], gold=None)
    res = curate(c, None, cfg)
    assert res.kept == 0 and res.dropped["no_correct_or_no_wrong"] == 3


def test_pointwise_mode():
    pts = [{"prompt_id": "q", "cand_idx": k, "p_good": g} for k, g in enumerate([0.9, 0.3, 0.6])]
    assert pointwise_scores(pts)["score"].tolist() == [0.9, 0.3, 0.6]
    # chosen 0 (0.9), rejected 1 (0.3), weight 0.6
    (p,) = curate(cands("q", ["red", "b", "c"]), None, CurationConfig(), point_rows=pts).pairs
    assert (p["chosen_idx"], p["rejected_idx"], p["weight"]) == (0, 1, approx(0.6))
    flat = [{**r, "p_good": 0.5} for r in pts]
    res = curate(cands("q", ["red", "b", "c"]), None, CurationConfig(), point_rows=flat)
    assert res.dropped["no_margin"] == 1


def test_missing_order_raises_naming_the_pair():
    rows = CONFIDENT[:-1]  # drop the (2, 1) order
    with pytest.raises(ValueError, match=r"'p0'.*\(1, 2\).*order \(1, 2\) only"):
        aggregate_pairs(rows)
    with pytest.raises(ValueError, match=r"\(1, 2\)"):
        curate(cands("p0", ["red", "b", "c"]), rows, CurationConfig())


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="p_a=1.5"):
        aggregate_pairs([order("z", 0, 1, 1.5, 0.0), order("z", 1, 0, 0.0, 1.0)])
    with pytest.raises(ValueError, match="> 1"):
        aggregate_pairs([order("z", 0, 1, 0.8, 0.8), order("z", 1, 0, 0.0, 1.0)])
    with pytest.raises(ValueError, match="lack columns"):
        aggregate_pairs([{"prompt_id": "z", "a_idx": 0, "b_idx": 1}])
    with pytest.raises(ValueError, match=r"ordered pair \('z', 0, 1\) appears twice"):
        aggregate_pairs(both("z", 0, 1, 0.5) + both("z", 0, 1, 0.5)[:1])
    # a verdict about a candidate that is not in the candidate table
    with pytest.raises(ValueError, match="outside"):
        curate(cands("p0", ["red", "b"]), CONFIDENT, CurationConfig())
    with pytest.raises(ValueError, match=r"candidate \('p0', 0\) appears twice"):
        curate(cands("p0", ["red", "b"]) * 2, CONFIDENT, CurationConfig())
    with pytest.raises(ValueError, match="no prompt_id"):
        curate([{**cands("p0", ["red"])[0], "prompt_id": None}], CONFIDENT, CurationConfig())
    with pytest.raises(ValueError, match="exactly one"):
        curate(cands("p0", ["red", "b", "c"]), None, CurationConfig())


def test_flip_rate():
    # pair (0,1) of 'x' always says A: inconsistency 0.8; pair of 'c' consistent: 0.0
    rows = [order("x", 0, 1, 0.9, 0.1), order("x", 1, 0, 0.9, 0.1)] + both("c", 0, 1, 0.7)
    assert flip_rate(rows) == approx((0.8 + 0.0) / 2)
    assert math.isnan(flip_rate([]))


def test_dataframe_inputs():
    res = curate(pd.DataFrame(cands("p0", ["red", "b", "c"])), pd.DataFrame(CONFIDENT),
                 CurationConfig())
    assert res.pairs[0]["weight"] == approx(0.8)


def test_integer_prompt_ids_give_json_ready_records():
    c = [{**r, "prompt_id": 7} for r in cands("p0", ["red", "b", "c"])]
    rows = [{**r, "prompt_id": 7} for r in CONFIDENT]
    res = curate(pd.DataFrame(c), pd.DataFrame(rows), CurationConfig())
    assert res.pairs[0]["prompt_id"] == 7
    json.dumps({"pairs": res.pairs, "scores": res.scores, "dropped": res.dropped})
    with pytest.raises(ValueError, match=r"prompt 7: pair \(1, 2\)"):
        aggregate_pairs(pd.DataFrame(rows[:-1]))


def test_balance_answers_gives_every_chosen_answer_the_same_total_weight():
    from data.curation import balance_weights

    pairs = [{"weight": 1.0} for _ in range(4)]
    balance_weights(pairs, ["0", "0", "0", "1"])
    assert [p["weight"] for p in pairs] == approx([2 / 3, 2 / 3, 2 / 3, 2.0])
    assert sum(p["weight"] for p in pairs[:3]) == approx(pairs[3]["weight"])
    many = [{"weight": 0.5} for _ in range(41)]
    balance_weights(many, ["0"] * 40 + ["1"])  # 41 / (2 x 1) = 20.5 for the lone one: clipped at 4
    assert many[-1]["weight"] == approx(2.0) and many[0]["weight"] == approx(0.5 * 41 / 80)
    # in curate: two prompts with chosen 'red', one with 'blue' (scores of CONFIDENT each)
    c = [*cands("a", ["red", "x", "y"]), *cands("b", ["red", "x", "y"]), *cands("c", ["blue", "x", "y"], gold="blue")]
    rows = [{**r, "prompt_id": pid} for pid in "abc" for r in CONFIDENT]
    res = curate(c, rows, CurationConfig(balance_answers=True))
    w = {p["prompt_id"]: p["weight"] for p in res.pairs}
    assert w["a"] == w["b"] == approx(0.8 * 3 / 4) and w["c"] == approx(0.8 * 3 / 2)
