"""Task: held-out evaluation of a policy pi_t (METHOD.md section 6)."""

from __future__ import annotations

from pathlib import Path

from data.records import read_records, write_records
from tasks.common import config_of, load_policy, progress_logger, stage_task
from tasks.store import produce, write_json

STAGE, VERSION = "evaluate", 1


def build_eval(cfg_dict: dict, base: dict, chain: list[dict], world: dict, out: Path) -> dict:
    from models.evaluate import evaluate_policy

    cfg = config_of(cfg_dict)
    model, processor = load_policy(cfg, base, chain)
    records = read_records(Path(world["path"]) / "eval.parquet")
    if cfg.eval.max_questions:
        records = records[: cfg.eval.max_questions]
    summary, rows = evaluate_policy(model, processor, records, cfg.eval, progress_logger("eval"))
    write_json(out / "metrics.json", summary)
    write_records(rows, out / "scores.parquet")
    write_records(rows[: cfg.eval.n_samples], out / "samples.parquet")
    return {"metrics": {k: v for k, v in summary.items() if isinstance(v, (int, float))}}


@stage_task("evaluate", retries=1)
def eval_task(key: str, cfg: dict, base: dict, chain: list[dict], world: dict) -> dict:
    return produce(STAGE, key, lambda out: build_eval(cfg, base, chain, world, out))
