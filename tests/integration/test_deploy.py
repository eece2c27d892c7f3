"""`src up` for real: Prefect server, MLflow server, work pool, the deployments of prefect.yaml
and a process worker on free 127.0.0.1 ports, state (PREFECT_HOME included) in a temp folder;
a `src-iterate/local` run of the smoke config through them; `src down`.

    pytest -m slow tests/integration/test_deploy.py

The stack is torn down by the fixture's finalizer whatever happens (process groups, SIGTERM
then SIGKILL), and by `up` itself when a service fails to start.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request

import pytest

from tests.conftest import free_port

from cli import services

pytestmark = pytest.mark.slow



@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    state = tmp_path_factory.mktemp("deploy-state")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SRC_STATE_DIR", str(state))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("PREFECT_API_URL", raising=False)
        ports = free_port(), free_port()
        try:
            yield services.up(*ports, timeout=240, log=print)
        finally:
            services.down(services.saved_stack(state), log=print)


def api(stack: services.Stack, path: str) -> dict:
    with urllib.request.urlopen(f"{stack.prefect_api}{path}", timeout=10) as r:
        return json.loads(r.read())


def test_up_serves_both_uis_and_the_deployments(stack, capsys):
    assert urllib.request.urlopen(f"{stack.prefect_api}/health", timeout=5).status == 200
    assert urllib.request.urlopen(f"{stack.mlflow_uri}/health", timeout=5).status == 200
    assert all(services.status(stack).values())
    assert (stack.state / "prefect" / "prefect.db").is_file()  # PREFECT_HOME in the state dir
    local = api(stack, "/deployments/name/src-iterate/local")
    retrain = api(stack, "/deployments/name/src-iterate/retrain")
    assert local["work_pool_name"] == retrain["work_pool_name"] == services.POOL
    assert local["pull_steps"][0]["prefect.deployments.steps.set_working_directory"]
    assert retrain["parameters"]["retrain"] is True
    [schedule] = retrain["schedules"]
    assert schedule["active"] is False and schedule["schedule"]["cron"] == "0 3 * * 1"
    assert api(stack, f"/work_pools/{services.POOL}")["type"] == "process"
    capsys.readouterr()
    assert services.up(stack.prefect_port, stack.mlflow_port, log=print) == stack
    assert "already up" in capsys.readouterr().out


def test_deployment_run_logs_to_the_mlflow_server(stack, base_model):
    overrides = [f"model.base={base_model}", "iterate.iterations=1", "data.n_eval=16",
                 "runtime.num_threads=1"]
    cmd = [services._exe("prefect"), "deployment", "run", "src-iterate/local",
           "-p", "config_path=configs/smoke.yaml", "-p", f"overrides={json.dumps(overrides)}",
           "--watch", "--watch-timeout", "900"]
    proc = subprocess.run(cmd, env=stack.env(), cwd=services.PROJECT_DIR, capture_output=True,
                          text=True, timeout=960, check=False)
    worker_log = (stack.dir / "worker.log").read_text()[-3000:]
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:] + worker_log
    assert "finished successfully in 'Completed'" in proc.stdout

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=stack.mlflow_uri)  # through the server, not the file
    exp = client.get_experiment_by_name("src-smoke")
    [parent] = client.search_runs([exp.experiment_id], "tags.`src.role` = 'pipeline'")
    assert parent.info.status == "FINISHED"
    flow_run = api(stack, f"/flow_runs/{parent.data.tags['src.flow_run_id']}")
    assert flow_run["state_type"] == "COMPLETED"  # the worker's run, tracked on the server
    kids = client.search_runs([exp.experiment_id],
                              f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(int(k.data.tags["src.iteration"]) for k in kids) == [0, 1]
    assert all("eval/accuracy" in k.data.metrics for k in kids)
    assert (stack.state / "mlflow.db").is_file() and any((stack.state / "mlartifacts").iterdir())


def test_down_stops_every_process(stack):
    pids = [info["pid"] for info in services.status(stack).values()]
    assert sorted(services.down(stack, log=print)) == ["mlflow", "prefect", "worker"]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
    assert not any(services.status(stack).values())
