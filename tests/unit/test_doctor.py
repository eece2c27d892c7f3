"""`src doctor`: one line per check, failures say what to fix, exit 1 only on a failure."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import run_env

ROOT = Path(__file__).resolve().parents[2]


def _doctor(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", "doctor"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_ready_machine_passes_every_check(tmp_path):
    p = _doctor(run_env(tmp_path / "state"))
    assert p.returncode == 0, p.stdout + p.stderr
    names = [line.split(":")[0].split(maxsplit=1)[1] for line in p.stdout.splitlines()
             if line[:4].strip() in ("ok", "warn", "FAIL")]
    for want in ("python", "torch", "transformers", "gpu", "disk", "state dir", "mlflow", "prefect"):
        assert want in names, (want, p.stdout)
    assert "checks passed" in p.stdout


def test_a_server_that_is_down_fails_and_says_what_to_do(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    p = _doctor({**run_env(tmp_path / "state"), "MLFLOW_TRACKING_URI": dead})
    assert p.returncode == 1
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("FAIL  mlflow"))
    assert dead in line and "src up" in line and "MLFLOW_TRACKING_URI" in line
    assert "fix: mlflow" in p.stdout
