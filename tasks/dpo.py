"""Task: weighted LoRA DPO of iteration t on pi_{t-1} (stage 5), against pi_{t-1} or pi_0
(`dpo.reference`)."""

from __future__ import annotations

from pathlib import Path

from data.records import read_records
from data.schema import METRICS_FILE, PAIRS_FILE, POOL_FILE
from infra.common import adapter_paths, load_policy, log, progress_logger, stage_task
from infra.store import drop_partial, partial_dir, produce, write_json
from models.dpo import train_dpo
from infra.launch import launch
from infra.reads import StageConfig

STAGE, VERSION = "dpo", 1
READS = ("dpo", "model")  # the config this stage reads: its cache key hashes exactly this (infra/reads.py)


def build_dpo(cfg_dict: dict, base: dict, chain: list[dict], pairs: dict, world: dict,
              out: Path, key: str = "") -> dict:
    cfg = StageConfig(cfg_dict, READS, STAGE)
    if cfg.runtime.launcher == "accelerate":  # every process runs this function (infra/launch.py)

        return launch(STAGE, cfg_dict, {"base": base, "chain": chain, "pairs": pairs, "world": world}, out, log())
    model, processor = load_policy(cfg, base, chain)
    prefs = read_records(Path(pairs["path"]) / PAIRS_FILE)
    pool = {r["id"]: r["image"] for r in read_records(Path(world["path"]) / POOL_FILE)}
    for p in prefs:  # images travel by id, not copied into every pairs file
        p["image"] = pool[p["prompt_id"]]
    if not prefs:  # the policy stays pi_{t-1}; the flow logs why
        write_json(out / METRICS_FILE, {"skipped": "curation kept no preference pairs"})
        return {"skipped": True, "metrics": {}}
    ref_model = None
    if cfg.dpo.reference == "initial" and adapter_paths(chain) != adapter_paths(chain[:1]):
        # pi_0, stage 1's adapter alone (in iteration 1, or after skipped iterations, pi_{t-1} is pi_0)
        ref_model, _ = load_policy(cfg, base, chain[:1])
    metrics = train_dpo(model, processor, prefs, cfg.dpo, out / "adapter", cfg.seed,
                        progress_logger("dpo"), gradient_checkpointing=cfg.model.gradient_checkpointing,
                        checkpoint_dir=partial_dir(STAGE, key) if key else None, ref_model=ref_model)
    write_json(out / METRICS_FILE, metrics)
    return {"metrics": metrics}


@stage_task("dpo", retries=1)
def dpo_task(key: str, cfg: dict, base: dict, chain: list[dict], pairs: dict, world: dict) -> dict:
    ref = produce(STAGE, key, lambda out: build_dpo(cfg, base, chain, pairs, world, out, key))
    drop_partial(STAGE, key)  # the Trainer checkpoints are not needed once the adapter is in place
    return ref


BUILD, TASK = build_dpo, dpo_task  # the stage's logic, and it as a cached Prefect task (flows/runner.py)
