"""User mistakes at the command line end in `error:` lines and exit 2, never a traceback: a CUDA
device that is not here, an override that is not YAML, a state dir that cannot be used, a data
error inside a stage (not retried either).

Run: .venv/bin/python -m pytest -q tests/unit/test_cli_errors.py
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.config import ConfigError, load_config
from data.validate import DataError
from cli.main import main
from tests.conftest import run_env

ROOT = Path(__file__).resolve().parents[2]
SRC = [sys.executable, "-m", "cli.main"]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")


@pytest.fixture
def state(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("SRC_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def _one_error(capsys) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in out + err
    return lines[0]



@pytest.mark.parametrize("argv", [
    ["retrain", "--config", "configs/smoke.yaml", "tracking.backend=none"],
    ["run", "--config", "configs/smoke.yaml", "tracking.backend=none", "--start-from", "abc:1"],
])
def test_resume_or_retraining_without_tracking_is_one_line_before_prefect(argv, state, capsys):
    """tracking.backend=none records no runs: nothing to resume from, no registry."""
    assert main(argv) == 2
    assert _one_error(capsys) == (f"error: {argv[0]}: tracking.backend=none records no runs: use "
                                  "tracking.backend=mlflow to resume or retrain")
    assert not (state / "prefect").exists()


# ---------------------------------------------------------------- 1. model.device

@no_cuda
@pytest.mark.parametrize("argv", [
    ["run", "--config", "configs/smoke.yaml", "model.device=cuda"],
    ["run", "--config", "configs/qwen2-vl-7b.yaml"],  # a GPU preset, as shipped
    ["eval-base", "model.device=cuda:1"],
    ["retrain", "--config", "configs/smoke.yaml", "model.device=cuda"],
])
def test_a_cuda_device_on_a_machine_without_one_is_one_line_before_prefect(argv, state, capsys):
    assert main(argv) == 2
    line = _one_error(capsys)
    device = "cuda:1" if "model.device=cuda:1" in argv else "cuda"
    assert line.startswith(f"error: model.device={device!r} but no CUDA device is available here (")
    assert line.endswith("; use model.device=auto or cpu")
    assert not (state / "stages").exists() and not (state / "prefect").exists()


def test_gpu_presets_still_load_on_a_cpu_machine():
    """The device check is the CLI's, not the config's: tests read the 7B presets anywhere."""
    for preset in sorted((ROOT / "configs").glob("*-7b.yaml")):
        assert load_config(preset).model.device == "cuda"


def test_a_device_torch_does_not_know_is_named(state, capsys):
    assert main(["run", "model.device=gpu"]) == 2
    assert "model.device='gpu' is not a torch device" in _one_error(capsys)


# ---------------------------------------------------------------- 2. overrides

def test_an_override_that_is_not_yaml_is_one_line(state, capsys):
    assert main(["run", "--config", "configs/smoke.yaml", "data.files.columns={id: qid"]) == 2
    line = _one_error(capsys)
    assert line.startswith("error: override data.files.columns={id: qid: the value is not valid YAML (")
    assert "column 9" in line


def test_a_multi_line_config_error_prints_one_error_line_each(state, capsys):
    assert main(["run", "search.beams=0", "dpo.beta=-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert all(ln.startswith("error: ") for ln in err) and len(err) == 3, err
    assert "search.beams" in err[1] and "(got 0)" in err[1] and "dpo.beta" in err[2]


# ---------------------------------------------------------------- 3. SRC_STATE_DIR

def _bad_state(kind: str, tmp_path: Path) -> tuple[Path, str]:
    (tmp_path / "afile").write_text("x")
    if kind == "file":
        return tmp_path / "afile", "is a file, not a folder"
    if kind == "under a file":
        return tmp_path / "afile" / "state", f"cannot be created: {tmp_path / 'afile'} is a file"
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    return ro / "state", "cannot be created: Permission denied"


@pytest.mark.parametrize("kind", ["file", "under a file", "read-only"])
def test_a_state_dir_that_cannot_be_used_is_one_line(kind, tmp_path, monkeypatch, capsys):
    if kind == "read-only" and os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    path, why = _bad_state(kind, tmp_path)
    monkeypatch.setenv("SRC_STATE_DIR", str(path))
    assert main(["run", "--config", "configs/smoke.yaml"]) == 2
    line = _one_error(capsys)
    assert line.startswith(f"error: SRC_STATE_DIR={path} {why}"), line
    assert "set SRC_STATE_DIR to a folder you can write to" in line


def test_a_state_dir_that_is_not_writable_is_named(tmp_path, monkeypatch, capsys):
    """A folder that exists but takes no files (read-only mount): the probe file fails."""
    import tempfile

    def refuse(*a, **k):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setenv("SRC_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main(["compare", "--last", "1"]) == 2
    assert _one_error(capsys) == (f"error: SRC_STATE_DIR={tmp_path} is not writable: Read-only file "
                                  "system; set SRC_STATE_DIR to a folder you can write to")


def test_a_bad_state_dir_stops_a_fresh_process_before_prefect(tmp_path):
    """A fresh `src run`: the state dir is checked before Prefect, which keeps its home and
    results there, starts."""
    (tmp_path / "afile").write_text("x")
    env = run_env(tmp_path / "afile")
    p = subprocess.run([*SRC, "run", "--config", "configs/smoke.yaml"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert p.stderr.strip().splitlines() == [
        f"error: SRC_STATE_DIR={tmp_path / 'afile'} is a file, not a folder; set SRC_STATE_DIR to a "
        "folder you can write to"]
    assert "Traceback" not in p.stdout + p.stderr


# ---------------------------------------------------------------- 4. errors inside a stage

def test_only_transient_failures_are_retried():
    from prefect.states import Failed

    from infra.common import stage_task

    @stage_task("t", retries=2)
    def stage(key: str) -> dict:
        return {}

    retry = stage.with_options(refresh_cache=True).retry_condition_fn  # as flows/src_iterate.py calls it
    for exc in (DataError("bad rows"), ConfigError("bad value"), ValueError("bad")):
        assert retry(None, None, Failed(data=exc)) is False, exc
    for exc in (OSError("disk"), RuntimeError("CUDA out of memory")):
        assert retry(None, None, Failed(data=exc)) is True, exc


ENGINE = """
from infra.environment import apply_defaults
apply_defaults()  # an entry point: Prefect's home and results in the state dir, before prefect
from prefect import flow
from data.validate import DataError
from infra.common import stage_task

calls = {"flaky": 0, "data": 0}

@stage_task("flaky", retries=2)
def flaky(key: str) -> dict:
    calls["flaky"] += 1
    if calls["flaky"] == 1:
        raise OSError("disk hiccup")
    return {}

@stage_task("bad-data", retries=2)
def bad(key: str) -> dict:
    calls["data"] += 1
    raise DataError("eval: 3 of 3 rows rejected")

@flow
def stages():
    flaky.with_options(retry_delay_seconds=0)(key="k1")
    bad.with_options(retry_delay_seconds=0)(key="k2")

try:
    stages()
except DataError:
    pass
print("CALLS", calls["flaky"], calls["data"])
"""


def test_prefect_retries_a_transient_failure_but_not_a_data_error(tmp_path):
    """Prefect's own engine honours the retry condition: OSError retried, DataError run once."""
    p = subprocess.run([sys.executable, "-c", ENGINE], cwd=ROOT, env=run_env(tmp_path / "state"),
                       capture_output=True, text=True, timeout=300)
    both = p.stdout + p.stderr
    assert "CALLS 2 1" in p.stdout, both[-3000:]
    assert "OSError('disk hiccup') - Retry 1/2" in both
    assert "Traceback" not in both


def test_prefect_logs_a_user_error_without_its_traceback():
    import infra.common  # noqa: F401  (installs the filter)

    def record(exc: Exception) -> logging.LogRecord:
        try:
            raise exc
        except Exception:
            return logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1,
                                     "Task run failed with exception: %r", (exc,), sys.exc_info())

    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        user, bug = record(DataError("eval: 3 of 3 rows rejected")), record(RuntimeError("bug"))
        assert all(f.filter(user) for f in logger.filters) and user.exc_info is None
        assert all(f.filter(bug) for f in logger.filters) and bug.exc_info is not None


def _all_rows_bad(root: Path) -> list[str]:
    """JSONL tables whose every row names an image that is not there."""
    over = ["data.world=files", f"data.files.image_dir={root}"]
    for split in ("rationale", "pool", "eval"):
        rows = [{"id": f"{split}-{i}", "question": "how many?", "answer": "1", "image": "gone.png",
                 "rationale": "none"} for i in range(3)]
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        over.append(f"data.files.{split}={root / f'{split}.jsonl'}")
    return over


def test_a_data_error_in_a_stage_is_error_lines_once_without_a_traceback(tmp_path):
    """The real run: Prefect, MLflow, the world stage on tables whose rows are all bad."""
    env = run_env(tmp_path / "state")
    p = subprocess.run([*SRC, "run", "--config", "configs/smoke.yaml", *_all_rows_bad(tmp_path)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    both = p.stdout + p.stderr
    assert p.returncode == 2, both[-3000:]
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    for split in ("rationale", "pool", "eval"):
        assert any(f"data.files.{split} ({tmp_path / f'{split}.jsonl'})" in ln for ln in errors), errors
    assert "Traceback" not in both
    assert "Retry" not in both
    world_ends = [ln for ln in both.splitlines() if "Task run 'world-" in ln and "Finished in state" in ln]
    assert len(world_ends) == 1 and "Failed" in world_ends[0], world_ends  # the stage ran once
