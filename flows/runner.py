"""The stage runner: how the SRC recipe (flows/pipeline.py) calls a stage. It lives with the
flows, above tasks/: it calls the stage functions a stage module hands it.

A stage module of tasks/ declares what it is: `STAGE`, `VERSION`, `READS` (the config it
reads, infra/reads.py), `BUILD` (its logic: a plain function of the config, its output folder
and its input references) and `TASK` (that function as a cached Prefect task); where its key
needs more than its inputs' digests, `key_parts(cfg, **refs) -> (extra, inputs)`. The
runner builds each key from those declarations alone, hands each stage function only the
sections of the config it declares (`infra.reads.project`), runs the stage (its Prefect task
inside a flow; the plain function through the store in `make stages`), reuses a finished
output (resume), and records the wall time of each call and the stage's own build time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from data.config import SRCConfig
from infra.reads import project, signature
from infra.store import digests, lookup, produce, stage_key


@dataclass
class StageRunner:
    """Runs stage modules for one config: `runner(module, **refs) -> the output's reference`."""

    cfg: SRCConfig
    prefect: bool = True  # False: plain calls through the store (`make stages`), no Prefect
    calls: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cfg_dict = self.cfg.model_dump(mode="json")
        self._views: dict[str, dict] = {}

    def view(self, module: ModuleType) -> dict:
        """The stage's projection of the config (`infra.reads.project`), made once per stage: its
        key and its function are handed the same one."""
        if module.STAGE not in self._views:
            self._views[module.STAGE] = project(self.cfg, module.READS)
        return self._views[module.STAGE]

    def key(self, module: ModuleType, **refs: Any) -> str:
        """The stage's key: the config it declares it reads, its inputs' digests (and what its
        `key_parts` adds, given the stage's projection of the config), its version and the seed."""
        parts = getattr(module, "key_parts", None)
        extra, inputs = parts(self.view(module), **refs) if parts else ({}, digests(refs))
        return stage_key(module.STAGE, module.VERSION, {**signature(self.cfg, module.READS), **extra},
                         inputs, self.cfg.seed)

    def __call__(self, module: ModuleType, **refs: Any) -> dict:
        cfg = self.view(module)
        key = self.key(module, **refs)
        t = time.time()
        if self.prefect:  # Prefect's cache knows the key; the store knows whether the files are there
            task = module.TASK if lookup(module.STAGE, key) else module.TASK.with_options(refresh_cache=True)
            ref = task(key=key, cfg=cfg, **refs)
        else:
            ref = produce(module.STAGE, key, lambda out: module.BUILD(cfg, out=out, key=key, **refs))
        built = (ref.get("created") or 0) >= t  # False: reused from the store / Prefect cache
        self.calls.append({"stage": module.STAGE, "call_seconds": time.time() - t, "built": built,
                           "build_seconds": (ref.get("build_seconds") or 0.0) if built else 0.0})
        return ref

    def timing(self, wall: float) -> dict:
        """Where a run's wall time went: the stage functions' own build time (stages built in
        this run) per stage, and the rest (Prefect, tracking, loading refs) as a share."""
        per: dict[str, float] = {}
        for c in self.calls:
            per[c["stage"]] = per.get(c["stage"], 0.0) + c["build_seconds"]
        stage_s = sum(per.values())
        return {"flow_seconds": wall, "stage_seconds": stage_s, "per_stage_seconds": per,
                "overhead_frac": (wall - stage_s) / wall if wall > 0 else 0.0,
                "built": sum(c["built"] for c in self.calls), "reused": sum(not c["built"] for c in self.calls)}
