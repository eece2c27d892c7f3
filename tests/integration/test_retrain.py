"""Retraining from the registered champion (flows/retrain.py) on the smoke config.

Three real retraining runs share one temp state dir (SQLite MLflow store, ephemeral Prefect):
1. no champion yet: a fresh pipeline, its best iteration registered as `champion`;
2. from the champion, forced to promote (`--min-improvement -1`): the alias moves to the new run;
3. from that champion, with a different held-out set: the champion is re-evaluated first
   (the policy's lineage spans two pipeline runs), then promoted or kept by the rule.
Each run is its own process (`python -m cli.main retrain`, i.e. `src retrain`):
Prefect fixes its home and result folder when it is imported (infra/environment.py sets them), so one process per state dir.

    pytest -m slow tests/integration/test_retrain.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_env

from flows.retrain import Score, best_iteration, decide

ROOT = Path(__file__).resolve().parents[2]
MODEL = "src-smoke-policy"
TINY = ["iterate.iterations=1", "data.n_eval=16", "runtime.num_threads=1"]


# ------------------------------------------------------------------ the rule, by hand (fast)

def test_decide_promotes_only_on_strict_improvement():
    assert decide(Score(0.60, 0.02), Score(0.55, 0.02)).action == "promote"
    assert decide(Score(0.55, 0.02), Score(0.55, 0.02)).action == "keep"  # a tie keeps
    assert decide(Score(0.50, 0.02), Score(0.55, 0.02)).action == "keep"
    # +2 points does not clear a 3-point bar; -1 point clears a -2-point bar
    assert decide(Score(0.57), Score(0.55), min_improvement=0.03).action == "keep"
    assert decide(Score(0.54), Score(0.55), min_improvement=-0.02).action == "promote"


def test_decide_explains_with_numbers_and_noise():
    d = decide(Score(0.60, 0.05), Score(0.55, 0.05))  # +5 points < hypot(5, 5) = 7.1 points
    assert "60.0 ± 5.0%" in d.reason and "55.0 ± 5.0%" in d.reason and "+5.0 points" in d.reason
    assert "possibly noise" in d.reason
    assert "possibly noise" not in decide(Score(0.70, 0.01), Score(0.55, 0.01)).reason
    assert decide(Score(0.3), None).action == "initial"
    assert decide(None, Score(0.5)).action == "keep"  # iterate.iterations=0: nothing new
    with pytest.raises(ValueError, match="no champion and no candidate"):
        decide(None, None)


def test_best_iteration_prefers_accuracy_then_the_earliest():
    its = [{"iteration": t, "run_id": f"r{t}", "metrics": {"eval/accuracy": a}}
           for t, a in [(0, 0.5), (1, 0.6), (2, 0.6)]]
    assert best_iteration(its)["iteration"] == 1
    assert best_iteration([]) is None


# ------------------------------------------------------------------ real runs (slow)

def retrain(state: Path, *args: str) -> subprocess.CompletedProcess:
    env = run_env(state)
    cmd = [sys.executable, "-m", "cli.main", "retrain", "--config", "configs/smoke.yaml", *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
                          check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def runs(tmp_path_factory, base_model):
    """The three retraining runs, in order, and an MLflow client on their store."""
    from mlflow.tracking import MlflowClient

    state = tmp_path_factory.mktemp("retrain-state")
    base = f"model.base={base_model}"
    out = [retrain(state, base, *TINY),
           retrain(state, base, *TINY, "--min-improvement", "-1"),
           retrain(state, base, "iterate.iterations=1", "data.n_eval=12", "runtime.num_threads=1")]
    client = MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}")
    exp = client.get_experiment_by_name("src-smoke")
    parents = client.search_runs([exp.experiment_id], "tags.`src.role` = 'pipeline'",
                                 order_by=["attributes.start_time ASC"])
    assert len(parents) == 3
    return {"client": client, "exp": exp, "parents": parents, "stdout": [p.stdout for p in out]}


def decision_of(client, run) -> dict:
    path = client.download_artifacts(run.info.run_id, "retrain_decision.json")
    record = json.loads(Path(path).read_text())
    assert record["decision"] == run.data.tags["src.retrain_decision"]
    return record


def iteration_runs(client, exp, parent_id: str) -> dict[int, object]:
    kids = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    return {int(r.data.tags["src.iteration"]): r for r in kids}


@pytest.mark.slow
def test_first_retrain_registers_the_best_iteration_as_champion(runs):
    client, first = runs["client"], runs["parents"][0]
    rec = decision_of(client, first)
    assert rec["decision"] == "initial" and "no champion" in rec["reason"]
    assert rec["champion_before"] is None and rec["champion_after"]["version"] == "1"
    v1 = client.get_model_version(MODEL, "1")
    assert v1.tags["src.pipeline_run_id"] == first.info.run_id
    acc = {t: r.data.metrics["eval/accuracy"]
           for t, r in iteration_runs(client, runs["exp"], first.info.run_id).items()}
    assert sorted(acc) == [0, 1]
    # the best of iterations 0 and 1, the earlier one on a tie
    assert int(v1.tags["src.iteration"]) == min(t for t, a in acc.items() if a == max(acc.values()))
    assert float(v1.tags["src.eval_accuracy"]) == max(acc.values())
    assert v1.source.startswith("runs:/") and v1.source.endswith("/adapter")
    assert client.list_artifacts(v1.run_id, "adapter")  # the source holds the adapter files
    assert "initial:" in runs["stdout"][0]


@pytest.mark.slow
def test_second_retrain_continues_from_the_champion_and_moves_the_alias(runs):
    client, exp = runs["client"], runs["exp"]
    first, second = runs["parents"][:2]
    v1 = client.get_model_version(MODEL, "1")
    start = f"{first.info.run_id}:{v1.tags['src.iteration']}"
    assert second.data.tags["src.start_from"] == start
    kids = iteration_runs(client, exp, second.info.run_id)
    assert sorted(kids) == [int(v1.tags["src.iteration"]) + 1]  # only the new iteration
    rec = decision_of(client, second)
    # forced (--min-improvement -1): promoted whatever the numbers, and the reason says so
    assert rec["decision"] == "promote", rec
    assert rec["champion_before"] == {"version": "1", "start_from": start,
                                      "accuracy": float(v1.tags["src.eval_accuracy"]),
                                      "accuracy_se": float(v1.tags["src.eval_accuracy_se"]),
                                      "reevaluated": False}
    assert "need > -100.0" in rec["reason"]
    assert rec["champion_after"]["version"] == "2"
    v2 = client.get_model_version_by_alias(MODEL, "champion")
    # a SQLite store answers int versions, a tracking server strings: compare as strings
    assert str(v2.version) == "2" and v2.tags["src.pipeline_run_id"] == second.info.run_id
    assert v2.tags["src.start_from"] == start and v2.tags["src.decision"] == "promote"


@pytest.mark.slow
def test_third_retrain_reevaluates_on_a_new_heldout_set_then_applies_the_rule(runs):
    client, exp = runs["client"], runs["exp"]
    second, third = runs["parents"][1:]
    v2 = client.get_model_version(MODEL, "2")
    assert third.data.tags["src.start_from"] == f"{second.info.run_id}:{v2.tags['src.iteration']}"
    rec = decision_of(client, third)
    before = rec["champion_before"]
    assert before["version"] == "2" and before["reevaluated"] is True
    assert rec["heldout_signature"] != v2.tags["src.heldout_signature"]
    kids = iteration_runs(client, exp, third.info.run_id)
    best = max(r.data.metrics["eval/accuracy"] for r in kids.values())
    assert rec["candidate"]["accuracy"] == best
    champion = str(client.get_registered_model(MODEL).aliases["champion"])
    if best > before["accuracy"]:
        assert rec["decision"] == "promote" and champion == "3"
    else:
        assert rec["decision"] == "keep" and champion == "2"
        assert "did not improve" in rec["reason"]
        assert len(client.search_model_versions(f"name = '{MODEL}'")) == 2
