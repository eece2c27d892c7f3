"""The environment variables the project runs under, set in one place.

Each entry point calls `apply_defaults()` first, before anything imports prefect, mlflow or
transformers (they read these at import): `src` (cli/main.py), the test session
(tests/conftest.py), the benchmark (bench/run.py) and scripts/run_stages.py. `src up` gives
its services and worker, and so the deployed flow runs, the same values (cli/services.py). A
value already in the environment wins: a user who wants the hub sets HF_HUB_OFFLINE=0.

Importing a module of the project sets nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import MutableMapping
from pathlib import Path
from infra.store import state_path

# No telemetry, and no hub: the built-in world needs none, a real model by hub id must already
# be in the local Hugging Face cache (or these set to 0 by the user).
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
         "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TOKENIZERS_PARALLELISM": "false"}
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def prefect_defaults(state: Path) -> dict[str, str]:
    """Prefect's home (its SQLite database) and results inside the state dir, so the cross-run
    cache survives the process (Prefect caches only results it persisted)."""
    return {"PREFECT_HOME": str(state / "prefect"),
            "PREFECT_LOCAL_STORAGE_PATH": str(state / "prefect-results"),
            "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90"}


def defaults(state: Path | None = None) -> dict[str, str]:
    """Every default, for the state dir `state` (default: $SRC_STATE_DIR or `<project>/.src`)."""
    return {**QUIET, **OFFLINE, **prefect_defaults(state or state_path())}


def apply_defaults(environ: MutableMapping[str, str] | None = None,
                   state: Path | None = None) -> dict[str, str]:
    """Set each default that `environ` (default: this process's) lacks, for the state dir
    `state` (default: $SRC_STATE_DIR or `<project>/.src`, created here); returns those it set."""
    environ = os.environ if environ is None else environ
    state = state or state_path()
    with contextlib.suppress(OSError):  # Prefect creates its home, not the folders above it;
        state.mkdir(parents=True, exist_ok=True)  # a state dir that cannot be: `src` says so
    added = {k: v for k, v in defaults(state).items() if k not in environ}
    environ.update(added)
    return added
