"""The real `src-iterate` flow on the smoke config: layout, caching, kill-and-resume, start_from.

Each run is a real `src run` process (ephemeral Prefect, real MLflow on SQLite in a temp
state dir). The first run (`first_run`, tests/integration/conftest.py) is shared.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run_env
from tests.integration.smoke import (
    ITER_ARTIFACTS,
    ROOT,
    SMALL,
    artifact_files,
    children,
    pipeline_runs,
    src_run,
    stage_digests,
)


def test_layout_of_a_pipeline_run(first_run):
    client, exp, runs = pipeline_runs(first_run["state"])
    assert len(runs) == 1
    parent = runs[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["src.flow_run_id"]
    assert parent.data.tags["src.code_commit"]
    logged = artifact_files(client, parent.info.run_id)
    assert {"config.yaml", "summary.json", "report.html", "report/metrics.png"} <= logged
    # two iterations x report.n_prompts (4) heatmaps, also as PNG files
    assert len([f for f in logged if f.startswith("report/iteration-")]) == 8
    kids = children(client, exp, parent.info.run_id)
    assert sorted(kids) == [0, 1, 2]
    for t, run in kids.items():
        files = artifact_files(client, run.info.run_id)
        assert {"eval/metrics.json", "eval/samples.parquet"} <= files, (t, files)
        for m in ("eval/accuracy", "eval/consistency", "eval/factuality", "eval/format_rate"):
            assert m in run.data.metrics, (t, m)
        if t == 0:
            assert any(f.startswith("adapter/") for f in files)  # the rationale SFT adapter
        else:
            assert ITER_ARTIFACTS <= files, (t, files)
            assert "judge/flip_rate" in run.data.metrics and "curate/kept_frac" in run.data.metrics
    # the per-iteration table is printed at the end, with the MLflow UI command
    assert "| iteration |" in first_run["stdout"] and "mlflow ui" in first_run["stdout"]
    assert "?workflowType=machine_learning" in first_run["stdout"]  # the run's page, not GenAI traces


def test_every_stage_record_is_of_its_kind(first_run):
    """Each parquet file a stage stored has the columns of its record kind (data/schema.py)."""
    import pyarrow.parquet as pq

    from data.schema import FILES, column_problem

    seen = {}
    for f in sorted((first_run["state"] / "stages").glob("*/*/*.parquet")):
        if f.name in FILES:
            seen[f.name] = column_problem(pq.read_schema(f).names, FILES[f.name])
    assert set(seen) >= {"eval.parquet", "candidates.parquet", "pairwise_scores.parquet",
                         "preference_pairs.parquet", "samples.parquet", "rejected_rows.parquet"}
    assert {name: why for name, why in seen.items() if why} == {}


def test_the_run_log_is_for_people(first_run):
    """No bytecode listing (dill's disassembly, caught by Prefect's print capture when the flow
    logged prints), no library FutureWarning per training or adapter load, no weight-loading
    bar per model load."""
    log = first_run["stdout"] + first_run["stderr"]
    assert "[rationale_sft]" in log and "[dpo]" in log  # the stages did log
    for noise in ("LOAD_GLOBAL", "RESUME", "FutureWarning", "Loading weights"):
        assert noise not in log, noise


def test_summary_json_has_metrics_and_stage_timing(first_run):
    s = first_run["summary"]
    assert [it["iteration"] for it in s["iterations"]] == [0, 1, 2]
    assert 0.0 <= s["base_metrics"]["eval/accuracy"] <= 1.0
    t = s["timing"]
    assert t["reused"] == 0 and t["built"] >= 1 + 1 + 1 + 1 + 1 + 2 * 5  # world..scorer, 2 iterations
    per = t["per_stage_seconds"]
    assert set(per) >= {"world", "rationale_sft", "scorer", "search", "score", "curate", "dpo", "evaluate"}
    assert all(v > 0 for v in per.values()) and 0 < t["stage_seconds"] < t["flow_seconds"]
    assert abs(t["overhead_frac"] - (1 - t["stage_seconds"] / t["flow_seconds"])) < 1e-9
    assert len(s["chain"]) == 3 and all(Path(p).is_dir() for p in s["chain"])


def test_identical_rerun_is_fully_cached(first_run, tmp_path):
    proc, seconds = src_run(first_run["state"], f"model.base={first_run['base']}", *SMALL,
                            "--summary-json", str(tmp_path / "s.json"))
    timing = json.loads((tmp_path / "s.json").read_text())["timing"]
    assert timing["built"] == 0 and timing["reused"] > 0 and timing["stage_seconds"] == 0
    log = proc.stdout + proc.stderr
    assert "Cached" in log
    # nothing is recomputed: no stage reports training or search progress
    assert "[search]" not in log and "[rationale_sft]" not in log and "[dpo]" not in log
    assert seconds < first_run["seconds"]
    client, exp, runs = pipeline_runs(first_run["state"])
    assert len(runs) == 2  # a new pipeline run, whose iterations reuse the cached outputs
    assert sorted(children(client, exp, runs[-1].info.run_id)) == [0, 1, 2]


def test_the_flow_runs_end_to_end_with_the_null_tracker(first_run, tmp_path):
    """tracking.backend=none: the same flow and stage outputs (all reused), nothing recorded;
    resuming, which reads runs back, says why it cannot. On a copy of the first run's state:
    the report's facts hold the config digest, so this run adds a report output."""
    import shutil

    state = tmp_path / "state"
    shutil.copytree(first_run["state"], state, ignore=shutil.ignore_patterns("*.lock", "locks", "prefect", "prefect-results"))
    _, _, before = pipeline_runs(state)
    proc, _ = src_run(state, f"model.base={first_run['base']}", *SMALL,
                      "tracking.backend=none", "--summary-json", str(tmp_path / "s.json"))
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["tracking_uri"] == "" and "not tracked: tracking.backend=none" in proc.stdout
    assert s["timing"]["built"] == 1  # the report; every stage before it reused
    assert ([it["metrics"] for it in s["iterations"]]
            == [it["metrics"] for it in first_run["summary"]["iterations"]])
    assert Path(s["report"]).is_file()
    _, _, after = pipeline_runs(state)
    assert len(after) == len(before)  # no MLflow run was made
    bad = subprocess.run([sys.executable, "-m", "cli.main", "run", "--config", "configs/smoke.yaml",
                          "tracking.backend=none", "--start-from", before[0].info.run_id],
                         cwd=ROOT, env=run_env(state), capture_output=True, text=True)
    assert bad.returncode == 2 and "tracking.backend=none records no runs" in bad.stderr, bad.stderr[-2000:]


# Kill points, in the order a run reaches them: (stage, what must exist under the state dir
# before the SIGKILL). Each is inside its stage: its temporary output folder exists (or, for
# stages that checkpoint, its first in-stage checkpoint), its manifest does not.
KILL_POINTS = [
    ("world", "stages/world/.tmp-*"),
    ("evaluate", "stages/evaluate/.tmp-*"),                       # the base model's evaluation
    ("rationale_sft", "partial/rationale_sft/*/checkpoint-*/trainer_state.json"),  # checkpointed
    ("scorer", "stages/scorer/.tmp-*"),
    ("search", "partial/search/*/shard-*.parquet"),              # after a finished shard
    ("score", "stages/score/.tmp-*"),
    ("dpo", "partial/dpo/*/checkpoint-*"),  # while the Trainer writes a checkpoint (incomplete)
]


def run_until(state: Path, pattern: str, args: list[str], timeout: float = 600) -> str:
    """Start `src run`, SIGKILL its process group as soon as `pattern` exists in `state`;
    returns 'killed', or 'finished' when the run ended first."""
    cmd = [sys.executable, "-m", "cli.main", "run", "--config", "configs/smoke.yaml", *args]
    log = open(state.parent / "kill-runs.log", "a")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=run_env(state), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        if list(state.glob(pattern)):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            log.close()
            return "killed"
        time.sleep(0.02)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()
    return "finished"


@pytest.mark.slow  # seven killed runs and a resume: ~3 min
def test_sigkill_in_every_stage_then_resume_matches_uninterrupted(first_run, tmp_path):
    state = tmp_path / "state"
    args = [f"model.base={first_run['base']}", *SMALL]
    outcome = {}
    for stage, pattern in KILL_POINTS:
        before = stage_digests(state)
        outcome[stage] = run_until(state, pattern, args)
        assert outcome[stage] == "killed", (stage, outcome, (tmp_path / "kill-runs.log").read_text()[-3000:])
        after = stage_digests(state)
        assert {k: after.get(k) for k in before} == before  # finished outputs survive the kill
        if stage not in ("evaluate", "search"):  # these run again later in the same run
            assert stage not in {k[0] for k in after}, (stage, sorted(after))
    print("kill points:", outcome)
    partial = sorted(str(p.relative_to(state)) for p in (state / "partial").glob("*/*/*"))
    assert any(p.startswith("partial/dpo/") for p in partial), partial  # the last kill's checkpoint
    src_run(state, *args)
    assert stage_digests(state) == stage_digests(first_run["state"])
    assert not any((state / "partial").glob("*/*/*"))  # checkpoints dropped once outputs exist
    assert not any((state / "stages").glob("*/.tmp-*"))  # no half-written folder left behind
    from data.records import read_records
    for (stage, key) in stage_digests(state):
        if stage == "search":
            rows = read_records(state / "stages" / stage / key / "candidates.parquet")
            ids = [(r["prompt_id"], r["cand_idx"]) for r in rows]
            assert len(ids) == len(set(ids))  # no candidate duplicated by the resumed shards


def test_start_from_continues_the_iteration_numbering(first_run):
    client, exp, runs = pipeline_runs(first_run["state"])
    source = runs[0].info.run_id
    src_run(first_run["state"], f"model.base={first_run['base']}", "iterate.iterations=1",
            "runtime.num_threads=1", start_from=f"{source}:1")
    client, exp, runs = pipeline_runs(first_run["state"])
    latest = runs[-1]
    assert latest.data.tags["src.start_from"] == f"{source}:1"
    kids = children(client, exp, latest.info.run_id)
    assert sorted(kids) == [2]
    # iteration 2 continued from pi_1 of the source run, so it equals the source's iteration 2
    src_kids = children(client, exp, source)
    assert kids[2].data.metrics["eval/accuracy"] == src_kids[2].data.metrics["eval/accuracy"]


def test_a_corrupted_cached_output_is_recomputed_not_used(first_run):
    state = first_run["state"]
    # the oldest search output: iteration 1 of the first run, which every plain re-run uses
    manifests = sorted((state / "stages" / "search").glob("*/manifest.json"),
                       key=lambda p: json.loads(p.read_text())["created"])
    search_dir = manifests[0].parent
    target = search_dir / "candidates.parquet"
    good = target.read_bytes()
    target.write_bytes(good + b"corrupt")  # the manifest's digest no longer matches
    proc, _ = src_run(state, f"model.base={first_run['base']}", *SMALL)
    assert "[search]" in proc.stdout + proc.stderr  # that stage ran again
    assert target.read_bytes() == good  # and produced the same content


def test_a_given_trained_scorer_is_used_not_retrained(first_run):
    state = first_run["state"]
    [judge_dir] = [p.parent / "judge" for p in (state / "stages" / "scorer").glob("*/manifest.json")]
    proc, _ = src_run(state, f"model.base={first_run['base']}", "iterate.iterations=1",
                      "runtime.num_threads=1", f"scorer.model={judge_dir}")
    log = proc.stdout + proc.stderr
    assert "[scorer]" not in log  # nothing trained
    assert "[score]" in log  # the given judge scored the candidates afresh
    client, exp, runs = pipeline_runs(state)
    assert sorted(children(client, exp, runs[-1].info.run_id)) == [0, 1]


def test_the_oracle_judges_with_no_judge_model(first_run, tmp_path):
    state = first_run["state"]
    proc, _ = src_run(state, f"model.base={first_run['base']}", "iterate.iterations=1",
                      "runtime.num_threads=1", "scorer.model=oracle", "--summary-json", str(tmp_path / "s.json"))
    log = proc.stdout + proc.stderr
    assert "[scorer]" not in log  # no judge is trained (nor loaded)
    m = json.loads((tmp_path / "s.json").read_text())["iterations"][1]["metrics"]
    # the exact scorer agrees with itself, and never flips with the order
    assert m["judge/onpolicy_agreement"] == 1.0 and m["judge/flip_rate"] == 0.0
    client, exp, runs = pipeline_runs(state)
    assert not any(f.startswith("scorer/") for f in artifact_files(client, runs[-1].info.run_id))


def test_the_committed_judge_is_loaded_not_trained(first_run):
    from models.builtin import BUILTIN_JUDGE

    if not (BUILTIN_JUDGE / "manifest.json").is_file():
        pytest.skip("models/builtin/judge is not committed yet (make bootstrap-judge)")
    state = first_run["state"]
    proc, _ = src_run(state, f"model.base={first_run['base']}", "iterate.iterations=1",
                      "runtime.num_threads=1", "scorer.model=builtin", "scorer.reader=builtin")
    log = proc.stdout + proc.stderr
    assert "[scorer]" not in log and "[score]" in log
    client, exp, runs = pipeline_runs(state)
    parent = runs[-1]
    # the committed judge's own held-out agreement is on the pipeline run, the judge with it
    assert parent.data.metrics["scorer/judge/agreement"] > 0.5
    assert any(f.startswith("scorer/") for f in artifact_files(client, parent.info.run_id))
    kid = children(client, exp, parent.info.run_id)[1]
    assert 0.0 <= kid.data.metrics["judge/onpolicy_agreement"] <= 1.0
    for how in ("filler", "verdict", "padding"):  # the steering probes of the score stage
        assert 0.0 <= kid.data.metrics[f"judge/steer_{how}"] <= 1.0
    # the committed reader marked every candidate; curation counted what it ruled out
    for k in ("reader/supported_share", "reader/agree_consistent"):
        assert 0.0 <= kid.data.metrics[k] <= 1.0
    assert "curate/dropped/chosen_unsupported" in kid.data.metrics
    assert "reader.parquet" in artifact_files(client, kid.info.run_id)
    # a judge trained on another prompt style is refused before any compute
    bad = subprocess.run([sys.executable, "-m", "cli.main", "run", "--config", "configs/smoke.yaml",
                          "scorer.model=builtin", "scorer.template=full"], cwd=ROOT,
                         env=run_env(state), capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "scorer.template" in bad.stdout + bad.stderr
    # so is a reader that is not there
    bad = subprocess.run([sys.executable, "-m", "cli.main", "run", "--config", "configs/smoke.yaml",
                          "scorer.reader=/no/such/reader"], cwd=ROOT,
                         env=run_env(state), capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "scorer.reader" in bad.stdout + bad.stderr


def test_the_claims_judge_marks_candidates_and_curation_says_what_decided(first_run, tmp_path):
    from models.builtin import BUILTIN_CLAIMS

    state = first_run["state"]
    proc, _ = src_run(state, f"model.base={first_run['base']}", "iterate.iterations=1", "runtime.num_threads=1",
                      "scorer.mode=claims", "scorer.model=builtin", "scorer.reader=builtin",
                      "--summary-json", str(tmp_path / "s.json"))
    log = proc.stdout + proc.stderr
    assert "[scorer]" not in log and "[score]" in log  # the committed checker: loaded, not trained
    m = json.loads((tmp_path / "s.json").read_text())["iterations"][1]["metrics"]
    # marks worked out into position-free pair verdicts: never a flip, no slot preferred
    assert m["judge/flip_rate"] == pytest.approx(0.0, abs=1e-9) and abs(m["judge/slot_bias"]) < 1e-9
    for k in ("claims/agree_consistent", "claims/agree_factual", "judge/steer_filler"):
        assert 0.0 <= m[k] <= 1.0
    decided = {k: m[f"curate/decided_by/{k}"] for k in ("correct", "consistent", "factual", "none")}
    assert sum(decided.values()) == m["curate/kept"]  # every kept pair says which mark decided it
    if m["curate/kept"]:  # what curation handed DPO, graded by the exact scorer (scene facts)
        assert m["curate/exact/chosen_correct"] == 1.0  # curation.require_correct_chosen
        assert all(0.0 <= m[f"curate/exact/{k}"] <= 1.0 for k in ("chosen_consistent", "rejected_factual", "ccf_available"))
    client, exp, runs = pipeline_runs(state)
    kid = children(client, exp, runs[-1].info.run_id)[1]
    assert "marks.parquet" in artifact_files(client, kid.info.run_id)
    from data.records import read_records

    marks = [r for p in (state / "stages" / "score").glob("*/marks.parquet") for r in read_records(p)]
    assert marks
    assert all(0.0 <= r[k] <= 1.0 for r in marks for k in ("correct", "consistent", "factual"))
    assert (BUILTIN_CLAIMS / "src_judge.json").is_file()
    # a claim checker asked to judge pairs is refused before any compute, naming the mode
    bad = subprocess.run([sys.executable, "-m", "cli.main", "run", "--config", "configs/smoke.yaml",
                          f"scorer.model={BUILTIN_CLAIMS}"], cwd=ROOT,
                         env=run_env(state), capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "scorer.mode=claims" in bad.stdout + bad.stderr


def test_a_claim_checker_is_trained_in_the_flow(first_run):
    state = first_run["state"]
    proc, _ = src_run(state, f"model.base={first_run['base']}", "iterate.iterations=1", "runtime.num_threads=1",
                      "scorer.mode=claims", "scorer.model=train", "scorer.reader=builtin")
    assert "[scorer]" in proc.stdout + proc.stderr
    [checker] = [p.parent for p in (state / "stages" / "scorer").glob("*/judge/src_judge.json")
                 if json.loads(p.read_text()).get("mode") == "claims"]
    metrics = json.loads((checker.parent / "metrics.json").read_text())
    assert metrics["claims/train_steps"] == 30.0 and 0.0 <= metrics["claims/accuracy"] <= 1.0
