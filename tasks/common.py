"""What every stage task shares: the Prefect task factory with the store's key as cache key,
model loading from references, progress reporting into Prefect logs.

A task takes and returns small JSON values: the stage key, the config as a dict, and
references `{"path", "digest", ...}` to earlier outputs; never models or datasets.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from tasks.store import state_dir

# Prefect reads these at import: results persist to an absolute folder in the state dir, so
# the cross-run cache survives the process (NOTES.md: only persisted results are cached).
os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true")
os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(state_dir() / "prefect-results"))
os.environ.setdefault("PREFECT_HOME", str(state_dir() / "prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

from prefect import get_run_logger, task  # noqa: E402

from data.config import SRCConfig  # noqa: E402


def _key_from_params(context: Any, parameters: dict[str, Any]) -> str:
    # The flow computes the store key (stage, version, config without runtime knobs, input
    # digests, seed) and passes it in: Prefect's cache and the store agree by construction.
    return parameters["key"]


def stage_task(name: str, retries: int = 0) -> Callable:
    """A Prefect task cached across runs under the store key passed as `key`."""
    return task(
        name=name,
        cache_key_fn=_key_from_params,
        persist_result=True,
        retries=retries,
        retry_delay_seconds=[5, 20, 60][:max(retries, 1)] if retries else 0,
    )


def config_of(cfg: dict) -> SRCConfig:
    return SRCConfig.model_validate(cfg)


def log() -> Callable[[str], None]:
    """Prefect's run logger inside a run, print outside (stage functions stay Prefect-free)."""
    try:
        logger = get_run_logger()
        return logger.info
    except Exception:  # noqa: BLE001 - outside a flow/task run context
        return lambda msg: print(msg, flush=True)


def progress_logger(stage: str, every_s: float = 10.0) -> Callable[..., None]:
    """A `progress(done, total, ...)` callback that logs rate and ETA at most every `every_s`."""
    say = log()
    start = time.time()
    last = [0.0]

    def progress(done: int, total: int, *extra: Any) -> None:
        now = time.time()
        if now - last[0] < every_s and done < total:
            return
        last[0] = now
        rate = done / max(now - start, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("nan")
        tail = ""
        if extra and isinstance(extra[-1], dict) and extra[-1]:
            tail = " " + " ".join(f"{k}={v:.4g}" for k, v in extra[-1].items()
                                  if isinstance(v, (int, float)))
        say(f"[{stage}] {done}/{total} ({rate:.2f}/s, eta {eta:.0f}s){tail}")

    return progress


def adapter_paths(chain: list[dict]) -> list[str]:
    """Adapter folders of a policy chain (each ref's output holds `adapter/`)."""
    # a skipped DPO (no pairs kept) leaves no adapter: the policy did not change
    return [str(Path(r["path"]) / "adapter") for r in chain
            if (Path(r["path"]) / "adapter").is_dir()]


def load_policy(cfg: SRCConfig, base: dict, chain: list[dict]):
    """pi_t = base + merged chain of adapters, loaded fresh from files."""
    from models.policy import build_policy

    return build_policy(base["path"], adapter_paths(chain), dtype=cfg.model.dtype,
                        device=cfg.model.device, trust_remote_code=cfg.model.trust_remote_code)
