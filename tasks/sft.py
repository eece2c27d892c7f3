"""Task: rationale fine-tuning (stage 1), once per pipeline, before iteration 1."""

from __future__ import annotations

from pathlib import Path

from data.records import read_records
from tasks.common import config_of, load_policy, progress_logger, stage_task
from tasks.store import produce, write_json

STAGE, VERSION = "rationale_sft", 1


def build_sft(cfg_dict: dict, base: dict, world: dict, out: Path) -> dict:
    from models.sft import train_rationale_sft

    cfg = config_of(cfg_dict)
    model, processor = load_policy(cfg, base, [])
    records = read_records(Path(world["path"]) / "rationale.parquet")
    metrics = train_rationale_sft(
        model, processor, records, cfg.rationale_sft, out / "adapter", cfg.seed,
        progress_logger("rationale_sft"), gradient_checkpointing=cfg.model.gradient_checkpointing,
    )
    write_json(out / "metrics.json", metrics)
    return {"metrics": metrics}


@stage_task("rationale_sft", retries=1)
def sft_task(key: str, cfg: dict, base: dict, world: dict) -> dict:
    return produce(STAGE, key, lambda out: build_sft(cfg, base, world, out))
