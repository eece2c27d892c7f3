"""The MLflow server dies in the middle of a run: the run fails, nothing computed is lost, and
the next run (server back) reuses every finished stage and logs the whole run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, run_env
from tests.integration.smoke import ROOT, stage_digests

pytestmark = pytest.mark.slow  # minutes of real runs: `make test` runs them, plain `pytest` does not



def _mlflow_server(port: int, root: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(exe), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                             "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    # ready = its /health answers, not its port open: under load the port accepts connections
    # seconds before the app answers, and `src run`'s 3 s reachability check then times out
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                if r.status == 200:
                    return proc
        except OSError:  # refused, reset or timed out (URLError is an OSError)
            pass
        time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError("mlflow server did not answer /health in 90 s")


def test_mlflow_down_mid_run_loses_nothing_and_the_next_run_logs_it_all(base_model, tmp_path):
    port, state = free_port(), tmp_path / "state"
    uri = f"http://127.0.0.1:{port}"
    env = {**run_env(state), "MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
           "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    cmd = [sys.executable, "-m", "cli.main", "run", "--config", "configs/smoke.yaml",
           f"model.base={base_model}", "iterate.iterations=1", "runtime.num_threads=1"]
    server = _mlflow_server(port, tmp_path)
    try:
        run = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
        for line in run.stdout:  # the server goes away as the first iteration starts
            if "iteration 1:" in line:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
                break
        out = run.communicate(timeout=600)[0]
        assert run.returncode == 3, out[-2000:]
        assert "run the same command again once it is back" in out and uri in out
        done = stage_digests(state)
        assert {k[0] for k in done} >= {"world", "rationale_sft", "scorer", "evaluate"}
        server = _mlflow_server(port, tmp_path)  # back, on the same backend store
        again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
        assert {k: v for k, v in stage_digests(state).items() if k in done} == done  # reused as they were
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name("src-smoke")
        runs = client.search_runs([exp.experiment_id], "tags.`src.role` = 'pipeline'",
                                  order_by=["attributes.start_time ASC"])
        assert len(runs) == 2 and runs[-1].info.status == "FINISHED"
        kids = client.search_runs([exp.experiment_id],
                                  f"tags.mlflow.parentRunId = '{runs[-1].info.run_id}'")
        assert sorted(int(r.data.tags["src.iteration"]) for r in kids) == [0, 1]
        files = {f.path for f in client.list_artifacts(
            next(r for r in kids if r.data.tags["src.iteration"] == "1").info.run_id)}
        assert {"candidates.parquet", "preference_pairs.parquet"} <= files
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
