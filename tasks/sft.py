"""Task: rationale fine-tuning (stage 1), once per pipeline, before iteration 1."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from data.records import read_records, write_records
from data.schema import METRICS_FILE, RATIONALE_FILE, TEACHER_DROPPED_FILE, TEACHER_RATIONALES_FILE
from infra.common import load_policy, log, progress_logger, stage_task
from infra.store import drop_partial, partial_dir, produce, state_dir, write_json
from models.sft import train_rationale_sft
from models.teacher import TeacherClient, synthesize_rationales
from infra.launch import launch
from infra.reads import StageConfig

STAGE, VERSION = "rationale_sft", 1
# the config this stage reads: its cache key hashes exactly this (infra/reads.py); the teacher
# only where it writes the rationales, so a teacher set for distillation or grading (or another
# teacher.model) does not train stage 1 again
READS = ("rationale_sft", "model", ("teacher", "rationale_sft.source", "teacher"))


def build_sft(cfg_dict: dict, base: dict, world: dict, out: Path, key: str = "") -> dict:
    cfg = StageConfig(cfg_dict, READS, STAGE)
    if cfg.runtime.launcher == "accelerate":  # every process runs this function (infra/launch.py)

        return launch(STAGE, cfg_dict, {"base": base, "world": world}, out, log())
    model, processor = load_policy(cfg, base, [])
    records = read_records(Path(world["path"]) / RATIONALE_FILE)
    teacher = {}
    if cfg.rationale_sft.source == "teacher":
        records, teacher = _teacher_rationales(cfg, records, out)
    metrics = train_rationale_sft(
        model, processor, records, cfg.rationale_sft, out / "adapter", cfg.seed,
        progress_logger("rationale_sft"), gradient_checkpointing=cfg.model.gradient_checkpointing,
        checkpoint_dir=partial_dir(STAGE, key) if key else None,
    )
    metrics.update(teacher)
    write_json(out / METRICS_FILE, metrics)
    return {"metrics": metrics}


def _teacher_rationales(cfg, records: list[dict], out: Path) -> tuple[list[dict], dict]:
    """Rationale source (b): the teacher writes them; kept and dropped rows are both saved."""
    # replies are cached in the state dir: a re-run (or a resumed crash) asks nothing twice
    client = TeacherClient(cfg.teacher, cache_dir=state_dir() / "teacher-cache")
    kept, dropped = synthesize_rationales(client, records, progress_logger("teacher"))
    write_records(kept, out / TEACHER_RATIONALES_FILE)
    write_records(dropped, out / TEACHER_DROPPED_FILE)
    reasons = dict(Counter(row["reason"] for row in dropped))
    log()(f"[teacher] kept {len(kept)} of {len(records)} rationales; dropped {reasons}; "
          f"{client.hits} replies from the cache, {client.misses} asked")
    if not kept:
        first = dropped[0] if dropped else {}
        raise ValueError(f"teacher {cfg.teacher.model!r} at {cfg.teacher.endpoint}: no rationale "
                         f"kept of {len(records)} (first drop: {first.get('reason')}: "
                         f"{str(first.get('raw'))[:200]})")
    return kept, {"teacher/kept": len(kept), "teacher/requested": len(records),
                  **{f"teacher/dropped/{k}": v for k, v in reasons.items()}}


@stage_task("rationale_sft", retries=1)
def sft_task(key: str, cfg: dict, base: dict, world: dict) -> dict:
    ref = produce(STAGE, key, lambda out: build_sft(cfg, base, world, out, key))
    drop_partial(STAGE, key)  # the Trainer checkpoints are not needed once the adapter is in place
    return ref


BUILD, TASK = build_sft, sft_task  # the stage's logic, and it as a cached Prefect task (flows/runner.py)
