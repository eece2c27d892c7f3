"""The benchmark's bookkeeping: efficacy rows from run summaries, targets judged right.

Run: .venv/bin/python -m pytest -q tests/unit/test_bench.py
"""

from __future__ import annotations

import pytest

from bench import efficacy
from bench.gpu_check import ROOT


def _m(acc, cons, se=0.01, **extra):
    return {"eval/accuracy": acc, "eval/accuracy_se": se, "eval/consistency": cons,
            "eval/consistency_se": se, "eval/factuality": 0.1, "eval/format_rate": 1.0,
            "eval/family/count_color/accuracy": acc, **extra}


def _runs(last_acc, last_cons, oracle_acc, se=0.01):
    its = [{"iteration": 0, "metrics": _m(0.40, 0.30, se)},
           {"iteration": 1, "metrics": _m(0.45, 0.35, **{"judge/flip_rate": 0.1, "curate/kept_frac": 0.6})},
           {"iteration": 2, "metrics": _m(last_acc, last_cons, se)}]
    ab = lambda acc, cons: {"iterations": [{"iteration": 2, "metrics": _m(acc, cons, se)}]}  # noqa: E731
    return {"main": {"iterations": its, "base_metrics": _m(0.42, 0.0)},
            "pointwise": ab(0.44, 0.36), "uniform": ab(0.44, 0.50), "answer_only": ab(0.44, 0.30),
            "oracle": ab(oracle_acc, 0.5)}


def test_rows_are_base_iterations_then_ablations_at_their_last_iteration():
    rows = efficacy.table(_runs(0.50, 0.45, 0.60))
    assert [r["row"] for r in rows] == [
        "base (short answers)", "rationale-tuned (iteration 0)", "SRC iteration 1", "SRC iteration 2",
        "ablation: pointwise (iteration 2)", "ablation: uniform (iteration 2)",
        "ablation: answer_only (iteration 2)", "ablation: oracle (iteration 2)"]
    assert rows[2]["flip_rate"] == 0.1 and rows[2]["kept_frac"] == 0.6
    assert rows[3]["families"] == {"count_color": 0.50}
    md = efficacy.markdown(rows)
    assert "| SRC iteration 2 | 50.0 ± 1.0 | 45.0 ± 1.0 |" in md and "acc count_color" in md


def test_seed_rows_are_mean_and_sd_and_headroom_shows_best_of_n_over_greedy():
    runs = _runs(0.50, 0.45, 0.60)
    runs["main"]["iterations"][1]["metrics"].update({"search/bestofn_correct": 0.8, "search/greedy_correct": 0.5,
                                                     "judge/agree_same_answer": 0.55})
    for s, (acc, cons) in ((1, (0.52, 0.49)), (2, (0.54, 0.41))):
        runs[f"seed{s}"] = {"iterations": [{"iteration": 0, "metrics": _m(0.40 + s / 100, 0.30)},
                                           {"iteration": 2, "metrics": _m(acc, cons)}]}
    rows = efficacy.table(runs)
    seeded = {r["row"]: r for r in rows if "seeds" in r}
    last = seeded["SRC iteration 2, seeds 0,1,2 (mean ± sd)"]
    assert last["accuracy"] == pytest.approx(0.52) and last["accuracy_sd"] == pytest.approx(0.02)
    assert last["consistency"] == pytest.approx(0.45) and last["consistency_sd"] == pytest.approx(0.04)
    assert seeded["rationale-tuned (iteration 0), seeds 0,1,2 (mean ± sd)"]["accuracy"] == pytest.approx(0.41)
    md = efficacy.markdown(rows)
    assert "| SRC iteration 2, seeds 0,1,2 (mean ± sd) | 52.0 ± 2.0 | 45.0 ± 4.0 |" in md
    assert "| 80.0 / 50.0 |" in md and "| 0.550 |" in md
    t = {x["name"]: x for x in efficacy.targets(rows)}
    # the seed rows neither count as the last SRC iteration nor hide it
    assert t["SRC iteration 2 consistency gain over iteration 0 (seed 0)"]["value"] == pytest.approx(0.15)
    assert t["accuracy gain over iteration 0, mean of 3 seeds"]["value"] == pytest.approx(0.11)
    assert t["accuracy gain over iteration 0, mean of 3 seeds"]["met"]  # >= +2 points
    assert not t["judge agreement on same-answer pairs (lowest iteration, any seed)"]["met"]
    # each other seed against its own iteration 0: seed 2's consistency 0.30 -> 0.41, 7.8 SE
    s2 = t["seed 2: SRC iteration 2 consistency gain over its iteration 0"]
    assert s2["value"] == pytest.approx(0.11) and s2["met"]
    s1 = t["seed 1: SRC iteration 2 factuality gain over its iteration 0"]
    assert s1["value"] == pytest.approx(0.0) and not s1["met"]
    # stage 1's consistency was 0.30 on every seed: sd 0, within 3 points
    assert t["stage-1 consistency sd over 3 seeds"]["met"]


def test_targets_gain_in_standard_errors_ablations_and_oracle_share():
    runs = _runs(0.50, 0.45, 0.60)
    runs["main"]["iterations"][2]["metrics"].update({"judge/agree_same_answer": 0.85, "judge/agree_factual_only": 0.7,
                                                     "judge/steer_filler": 0.02, "judge/steer_padding": 0.2})
    t = {x["name"]: x for x in efficacy.targets(efficacy.table(runs))}
    acc = t["SRC iteration 2 accuracy gain over iteration 0 (seed 0)"]
    # +10 points with SE 1 point each: z = 0.10 / sqrt(2) / 0.01 = 7.07
    assert acc["value"] == pytest.approx(0.10) and acc["z"] == pytest.approx(7.071, abs=1e-3) and acc["met"]
    cons = t["SRC iteration 2 consistency gain over iteration 0 (seed 0)"]
    assert cons["value"] == pytest.approx(0.15) and cons["met"]
    assert not t["SRC iteration 2 factuality gain over iteration 0 (seed 0)"]["met"]  # 0.1 -> 0.1
    assert t["full SRC consistency + factuality - pointwise ablation"]["met"]  # 9 points, 6.4 SE
    assert not t["full SRC consistency + factuality - uniform ablation"]["met"]  # 0.45 < 0.50
    share = t["R-Scorer accuracy gain / oracle accuracy gain"]
    assert share["value"] == pytest.approx(0.5) and share["met"] is None  # 0.10 of 0.20, reported
    assert t["R-Scorer consistency gain / oracle consistency gain"]["value"] == pytest.approx(0.75)
    assert t["iteration 0 accuracy - base short-answer accuracy"]["met"] is False  # 0.40 < 0.42
    assert t["judge agreement on same-answer pairs (lowest iteration, any seed)"]["met"]  # 0.85
    assert not t["judge agreement on pairs differing only in factuality (lowest iteration, any seed)"]["met"]
    steer = t["steer win probability (highest: filler, copied verdict, padding)"]
    assert steer["value"] == pytest.approx(0.2) and not steer["met"]
    # a fall under one standard error still counts as "not lower"; one over it does not
    t2 = {x["name"]: x for x in efficacy.targets(efficacy.table(_runs(0.39, 0.45, 0.49, se=0.04)))}
    acc2 = t2["SRC iteration 2 accuracy gain over iteration 0 (seed 0)"]
    assert acc2["value"] == pytest.approx(-0.01) and acc2["met"]  # -0.18 SE
    t3 = {x["name"]: x for x in efficacy.targets(efficacy.table(_runs(0.30, 0.45, 0.49)))}
    assert not t3["SRC iteration 2 accuracy gain over iteration 0 (seed 0)"]["met"]  # -7 SE
    # a lead over an ablation under 2 standard errors misses
    assert not t2["full SRC consistency + factuality - pointwise ablation"]["met"]  # 9 points, SE 5.7


def test_the_gpu_check_runs_its_stages_on_the_tiny_shape(tmp_path):
    """bench/gpu_check.py with `--shape tiny` on CPU: the same code the GPU check runs at 7B."""
    import json
    import subprocess
    import sys

    out = tmp_path / "gc.json"
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--shape", "tiny", "--device", "cpu",
                           "--prompts", "2", "--dpo-steps", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fig = json.loads(out.read_text())
    assert fig["candidates"] >= 2 * 2 and fig["search_tokens_per_s"] > 0
    assert fig["search_speedup_vs_reference"] > 0 and fig["search_same_as_reference"] >= 0.5
    assert fig["scored_pairs"] > 0 and fig["scoring_pairs_per_s"] > 0
    assert fig["dpo_pairs"] == 2 and fig["dpo_step_s"] > 0
    assert "search_tokens_per_s: " in proc.stdout and "dpo_step_s: " in proc.stdout
