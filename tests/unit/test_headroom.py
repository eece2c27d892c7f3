"""Headroom: what best-of-N adds over the greedy response, per level, exact on the built-in world."""

from __future__ import annotations

from data.headroom import headroom, levels, warning
from data.shapes import DataConfig, answers_of, format_response, generate


def recs(n: int = 4) -> list[dict]:
    return generate("pool", n, DataConfig(), 0)


def wrong(r: dict) -> str:
    return format_response(r["rationale"], next(a for a in answers_of(r["family"]) if a != r["answer"]))


def test_levels_are_cumulative_and_exact():
    r = recs(1)[0]
    assert levels(r["response"], r) == (True, True, True)
    assert levels(wrong(r), r) == (False, False, False)
    assert levels(r["short_response"], r) == (True, False, False)  # right, but states nothing
    own = {**r, "facts": None}
    assert levels(r["response"], own) == (True, None, None)  # without facts only `correct` is known


def test_best_of_n_against_greedy_on_the_same_prompts():
    rs = recs(4)
    by_id = {r["id"]: r for r in rs}
    # prompts 0-1: one gold candidate among wrong ones; prompts 2-3: only wrong candidates
    cands = [{"prompt_id": r["id"], "text": t} for k, r in enumerate(rs)
             for t in ([wrong(r), r["response"]] if k < 2 else [wrong(r), wrong(r)])]
    greedy = {r["id"]: r["short_response"] if k == 0 else wrong(r) for k, r in enumerate(rs)}
    m = headroom(cands, greedy, by_id)
    assert m["search/bestofn_correct"] == 0.5 and m["search/greedy_correct"] == 0.25
    assert m["search/bestofn_correct_consistent_factual"] == 0.5
    assert m["search/greedy_correct_consistent_factual"] == 0.0
    assert m["search/headroom"] == 0.5 and warning(m) is None


def test_nothing_to_teach_is_said_and_only_measured_levels_are_reported():
    rs = [{**r, "facts": None} for r in recs(3)]
    by_id = {r["id"]: r for r in rs}
    cands = [{"prompt_id": r["id"], "text": r["response"]} for r in rs]
    m = headroom(cands, {r["id"]: r["response"] for r in rs}, by_id)
    assert set(m) == {"search/bestofn_correct", "search/greedy_correct", "search/headroom"}
    assert m["search/headroom"] == 0.0
    assert "nothing to teach" in warning(m) and "100.0%" in warning(m)
