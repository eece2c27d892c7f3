"""Candidate search and pairwise scoring as shards on a Ray cluster, through Prefect's Ray task
runner (prefect-ray), with `runtime.ray_address` set.

    src run --config configs/builtin.yaml runtime.ray_address=local runtime.ray_workers=2
    src run --config configs/qwen2-vl-7b.yaml runtime.ray_address=ray://head:10001 \
        runtime.ray_workers=8 runtime.ray_num_gpus=1

A stage's items are cut into `runtime.ray_workers` contiguous shards; each shard is one Prefect
task run on a Ray worker, which loads its own model replica (`runtime.ray_num_gpus` GPUs per
task) and writes the shard's records to the stage's checkpoint folder
(`<state>/partial/<stage>/<key>/shard-<lo>-<hi>.parquet`, infra/store.py). The stage then
merges the shards in item order, exactly as a single-process run merges its checkpointed
shards: per-prompt random streams make the candidates independent of the sharding. The
workers must see the state dir (one machine, or a shared filesystem on a cluster) and the
project (same machine, or `pip install` of it on every node).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from typing import Any, Callable

from infra.store import PROJECT_DIR, state_dir

PASSED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "TOKENIZERS_PARALLELISM",
              "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")


def shard_bounds(n: int, workers: int) -> tuple[int, list[tuple[int, int]]]:
    """(shard size, [(lo, hi), ...]): `workers` contiguous shards of ceil(n / workers) items."""
    size = max(1, math.ceil(n / max(workers, 1)))
    return size, [(lo, min(lo + size, n)) for lo in range(0, n, size)]


def ray_runner(cfg: Any, tmp: str | None = None):
    """Prefect's Ray task runner for `cfg.runtime`: a local cluster (its session files in
    `tmp`), or an existing one."""
    from prefect_ray import RayTaskRunner

    rt = cfg.runtime
    env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
    env.update(SRC_STATE_DIR=str(state_dir()), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               PYTHONPATH=os.pathsep.join(p for p in (str(PROJECT_DIR), os.environ.get("PYTHONPATH")) if p))
    init: dict[str, Any] = {"runtime_env": {"env_vars": env}}
    if rt.ray_address == "local":
        init.update(num_cpus=rt.ray_workers, include_dashboard=False, _temp_dir=tmp or tempfile.gettempdir())
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        return RayTaskRunner(init_kwargs=init)
    return RayTaskRunner(address=rt.ray_address, init_kwargs=init)


def map_shards(cfg: Any, task_fn: Callable, calls: list[dict], name: str) -> list:
    """Run `task_fn(**call)` for every call as Prefect tasks on Ray; results in call order."""
    from prefect import flow
    from prefect_ray.context import remote_options

    gpus = cfg.runtime.ray_num_gpus
    # a local cluster's session files: a short path under /tmp (Ray's socket paths must stay
    # under 107 bytes), removed afterwards
    tmp = tempfile.mkdtemp(prefix="src-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)

    @flow(name=f"{name}-on-ray", task_runner=ray_runner(cfg, tmp), persist_result=False)
    def shards() -> list:
        with remote_options(num_gpus=gpus) if gpus else contextlib.nullcontext():
            futures = [task_fn.submit(**c) for c in calls]
        return [f.result() for f in futures]

    try:
        return shards()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
