"""Test-wide environment: offline, one torch thread, state and tracking in temp folders."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUILTIN_BASE = ROOT / "models" / "builtin" / "base"

from infra.environment import apply_defaults, prefect_defaults  # noqa: E402

# the test session is an entry point: the project's defaults, set before any test module
# imports prefect or transformers
apply_defaults()
os.environ.setdefault("OMP_NUM_THREADS", "1")  # tiny models: one thread is as fast, two thrash
os.environ.pop("MLFLOW_TRACKING_URI", None)


# They point at the session's state dir and must not leak into the `src` processes a test
# starts for its own state dir (each sets its own from SRC_STATE_DIR).
STATE_BOUND = (*prefect_defaults(Path(".")), "PREFECT_API_URL", "MLFLOW_TRACKING_URI", "SRC_STATE_DIR")


def run_env(state: Path) -> dict[str, str]:
    """Environment of a subprocess that keeps all its state in `state`."""
    env = {k: v for k, v in os.environ.items() if k not in STATE_BOUND}
    env["SRC_STATE_DIR"] = str(state)
    return env


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def base_model(tmp_path_factory) -> str:
    """The committed built-in base, or (before it exists) a quickly bootstrapped one."""
    if (BUILTIN_BASE / "manifest.json").is_file():
        return str(BUILTIN_BASE)
    out = tmp_path_factory.mktemp("base") / "base"
    subprocess.run([sys.executable, "-m", "tools.bootstrap", "--steps", "30", "--eval-n", "20",
                    "--threads", "1", "--out", str(out)], cwd=ROOT, check=True,
                   capture_output=True)
    return str(out)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# `make test` runs the suite on 2 workers (pytest-xdist, --dist loadgroup): a module's tests
# stay on one worker, so module fixtures are built once; the modules that share the session's
# `first_run` (one whole `src run`) stay together so it runs once.
FIRST_RUN_MODULES = {"test_flow.py", "test_report.py", "test_browser.py"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        group = "first_run" if name in FIRST_RUN_MODULES else str(item.path.relative_to(ROOT))
        item.add_marker(pytest.mark.xdist_group(group))
