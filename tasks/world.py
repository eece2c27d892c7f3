"""Task: build the dataset splits of a run as parquet records (the built-in shapes world)."""

from __future__ import annotations

from pathlib import Path

from data.records import write_records
from data.shapes import generate
from tasks.common import config_of, log, stage_task

STAGE, VERSION = "world", 1
SPLITS = ("rationale", "pool", "eval", "scorer")


def build_world(cfg_dict: dict, out: Path) -> dict:
    """Write `<split>.parquet` for every split; returns the row counts."""
    cfg = config_of(cfg_dict)
    d = cfg.data
    sizes = {"rationale": d.n_rationale, "pool": d.n_pool, "eval": d.n_eval,
             "scorer": cfg.scorer.n_train_items}
    counts = {}
    for split in SPLITS:
        counts[split] = write_records(generate(split, sizes[split], d, cfg.seed), out / f"{split}.parquet")
    log()(f"[world] {counts}")
    return {"counts": counts}


@stage_task("world")
def world_task(key: str, cfg: dict) -> dict:
    from tasks.store import produce

    return produce(STAGE, key, lambda out: build_world(cfg, out))
