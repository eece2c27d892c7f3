"""The smoke run that the integration tests share, and helpers to read its state and MLflow store.

`first_run` (tests/integration/conftest.py) is one real `src run` on configs/smoke.yaml in a
temp state dir, made once per test session.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import run_env

ROOT = Path(__file__).resolve().parents[2]
# in-stage checkpoints often enough to be hit on the smoke config (runtime knobs: same keys).
# Every flow-test run uses them: shard and batch sizes move log-probs by float rounding
# (~1e-6, the batches pad differently), and the kill test compares files bit for bit.
CHECKPOINTS = ["rationale_sft.save_steps=5", "dpo.save_steps=2", "search.shard_size=4"]
SMALL = ["iterate.iterations=2", "runtime.num_threads=1", *CHECKPOINTS]
ITER_ARTIFACTS = {"candidates.parquet", "pairwise_scores.parquet", "preference_pairs.parquet",
                  "eval/metrics.json", "eval/samples.parquet"}


def src_run(state: Path, *args: str, start_from: str | None = None, timeout: int = 600):
    env = run_env(state)
    cmd = [sys.executable, "-m", "cli.main", "run", "--config", "configs/smoke.yaml", *args]
    if start_from:
        cmd += ["--start-from", start_from]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, time.time() - t0


def client_for(state: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}")


def pipeline_runs(state: Path):
    c = client_for(state)
    exp = c.get_experiment_by_name("src-smoke")
    return c, exp, c.search_runs([exp.experiment_id], "tags.`src.role` = 'pipeline'",
                                 order_by=["attributes.start_time ASC"])


def children(client, exp, parent_id: str) -> dict[int, object]:
    runs = client.search_runs([exp.experiment_id],
                              f"tags.mlflow.parentRunId = '{parent_id}' and tags.`src.role` = 'iteration'")
    return {int(r.data.tags["src.iteration"]): r for r in runs}


def artifact_files(client, run_id: str, path: str = "") -> set[str]:
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= artifact_files(client, run_id, f.path) if f.is_dir else {f.path}
    return out


def stage_digests(state: Path) -> dict[tuple[str, str], dict[str, str]]:
    """(stage, key) -> digests of its finished output files, timings (metrics.json) aside."""
    out = {}
    for mf in (state / "stages").glob("*/*/manifest.json"):
        m = json.loads(mf.read_text())
        out[(m["stage"], m["key"])] = {f: d for f, d in m["files"].items()
                                       if not f.endswith("metrics.json")}
    return out
