"""`src doctor`: one line per check, failures say what to fix, exit 1 only on a failure."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import run_env

ROOT = Path(__file__).resolve().parents[2]


def _doctor(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", "doctor"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_ready_machine_passes_every_check(tmp_path):
    p = _doctor(run_env(tmp_path / "state"))
    assert p.returncode == 0, p.stdout + p.stderr
    names = [line.split(":")[0].split(maxsplit=1)[1] for line in p.stdout.splitlines()
             if line[:4].strip() in ("ok", "warn", "FAIL")]
    for want in ("python", "torch", "transformers", "gpu", "disk", "state dir", "mlflow", "prefect"):
        assert want in names, (want, p.stdout)
    assert "checks passed" in p.stdout
    state = (tmp_path / "state").resolve()
    assert f"ok    mlflow: tracking store sqlite:///{state / 'mlflow.db'} (default: local SQLite store" in p.stdout


def _doctor_here(argv: list[str], capsys) -> tuple[int, dict[str, str]]:
    """`src doctor` in this process; its check lines by name."""
    from cli.main import main

    rc = main(["doctor", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and not err.strip(), err
    lines = {ln[6:].split(":")[0]: ln for ln in out.splitlines() if ln[:4].strip() in ("ok", "warn", "FAIL")}
    return rc, lines


def test_a_state_dir_that_cannot_be_used_is_a_failed_check_not_a_crash(tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("x")
    # an earlier test may have set it; a user's shell would not
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for state, why in ((tmp_path / "afile", "is a file, not a folder"),
                       (tmp_path / "afile" / "state", f"cannot be created: {tmp_path / 'afile'} is a file")):
        monkeypatch.setenv("SRC_STATE_DIR", str(state))
        rc, lines = _doctor_here([], capsys)
        assert rc == 1
        assert lines["state dir"] == (f"FAIL  state dir: SRC_STATE_DIR={state} {why}  -> set SRC_STATE_DIR "
                                      "to a folder you can write to")
        assert f"sqlite:///{state / 'mlflow.db'}" in lines["mlflow"]  # where it would be
        assert lines["disk"].startswith("ok") or lines["disk"].startswith("warn")


def test_doctor_names_the_tracking_store_a_run_would_use(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SRC_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/env.db")
    _, lines = _doctor_here([], capsys)
    assert lines["mlflow"] == f"ok    mlflow: tracking store sqlite:///{tmp_path}/env.db ($MLFLOW_TRACKING_URI)"
    # a config's tracking.tracking_uri wins over the environment, as in MLflowTracker
    rc, lines = _doctor_here(["--config", "configs/smoke.yaml", f"tracking.tracking_uri=sqlite:///{tmp_path}/cfg.db"],
                             capsys)
    assert rc == 0
    assert lines["mlflow"] == (f"ok    mlflow: tracking store sqlite:///{tmp_path}/cfg.db "
                               "(tracking.tracking_uri of the config)")
    assert lines["config"].startswith("ok    config: configs/smoke.yaml loads with 1 override(s)")


def test_doctor_with_a_config_checks_it_and_its_device(tmp_path, monkeypatch, capsys):
    import torch

    monkeypatch.setenv("SRC_STATE_DIR", str(tmp_path / "state"))
    rc, lines = _doctor_here(["--config", "configs/smoke.yaml", "search.beams=0"], capsys)
    assert rc == 1 and lines["config"].startswith("FAIL  config: invalid config") and "search.beams" in lines["config"]
    if not torch.cuda.is_available():
        rc, lines = _doctor_here(["--config", "configs/qwen2-vl-7b.yaml"], capsys)
        assert rc == 1
        assert lines["device"].startswith("FAIL  device: model.device='cuda' but no CUDA device is available here (")
        assert lines["device"].endswith("-> use model.device=auto or cpu")


def test_a_server_that_is_down_fails_and_says_what_to_do(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    p = _doctor({**run_env(tmp_path / "state"), "MLFLOW_TRACKING_URI": dead})
    assert p.returncode == 1
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("FAIL  mlflow"))
    assert dead in line and "src up" in line and "MLFLOW_TRACKING_URI" in line
    assert "fix: mlflow" in p.stdout
