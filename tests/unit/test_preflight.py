"""A run whose MLflow or Prefect server is down says so in one line, before any compute.

Run: .venv/bin/python -m pytest -q tests/unit/test_preflight.py
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cli.preflight import ServiceUnavailable, check_services
from tests.conftest import free_port, run_env

ROOT = Path(__file__).resolve().parents[2]



def test_a_server_that_answers_passes_one_that_does_not_is_named():
    srv = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # 501s
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        up = f"http://127.0.0.1:{srv.server_address[1]}"
        check_services(up, up)  # any HTTP answer counts as reachable
        dead = f"http://127.0.0.1:{free_port()}"
        with pytest.raises(ServiceUnavailable, match=rf"MLflow tracking server {dead} .*src up"):
            check_services(dead, up)
        with pytest.raises(ServiceUnavailable, match=rf"Prefect API {dead}/api .*src up"):
            check_services(up, dead + "/api")
    finally:
        srv.shutdown()
    check_services("sqlite:///x.db", "")  # local stores need no server


@pytest.mark.parametrize("var", ["MLFLOW_TRACKING_URI", "PREFECT_API_URL"])
def test_src_run_with_a_server_down_fails_in_one_line_before_compute(var, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}" + ("/api" if var == "PREFECT_API_URL" else "")
    env = {**run_env(tmp_path / "state"), var: dead}
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "cli.main", "run", "--config", "configs/smoke.yaml"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and dead in err[0] and "not reachable" in err[0] and "src up" in err[0]
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "state" / "stages").exists()  # nothing was computed
    assert time.time() - t0 < 60


def test_a_device_that_is_not_here_is_named_before_any_model_loads():
    import torch

    from cli.preflight import DeviceUnavailable, check_device

    check_device("auto")
    check_device("cpu")
    with pytest.raises(DeviceUnavailable, match=r"model.device='tpu0' is not a torch device"):
        check_device("tpu0")
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        with pytest.raises(DeviceUnavailable, match=rf"this machine has {n} CUDA device\(s\)"):
            check_device(f"cuda:{n}")
    else:
        with pytest.raises(DeviceUnavailable, match=r"model.device='cuda' but no CUDA device is available"):
            check_device("cuda")
