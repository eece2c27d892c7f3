"""Task: held-out evaluation of a policy pi_t (docs/method.md section 8).

The base model (an empty chain) answers briefly: its consistency and factuality are not
applicable. On data without scene facts the teacher grades them (`eval.judge`,
models/distill.py:grade_rows), never the judge whose preferences DPO optimizes; without a
teacher they are not measured (n/a).
"""

from __future__ import annotations

from pathlib import Path

from data.records import read_records, write_records
from data.schema import EVAL_FILE, EVAL_ROWS_FILE, EvalRow, METRICS_FILE, SAMPLES_FILE
from infra.common import load_policy, progress_logger, stage_task
from infra.store import digests, produce, state_dir, write_json
from infra.reads import StageConfig
from models.evaluate import evaluate_policy
from models.distill import grade_rows
from models.teacher import TeacherClient

# 2: short answers (the base) report consistency/factuality as n/a; data without facts is
#    judged by the R-Scorer (or reported as not measured)
# 3: data without facts is graded by the teacher (eval.judge), not by the R-Scorer
STAGE, VERSION = "evaluate", 3
READS = ("eval", "model", "teacher", "data.world")  # the config this stage reads: its cache key hashes exactly this (infra/reads.py)


def build_eval(cfg_dict: dict, base: dict, chain: list[dict], world: dict, out: Path, key: str = "") -> dict:
    cfg = StageConfig(cfg_dict, READS, STAGE)
    model, processor = load_policy(cfg, base, chain)
    records = read_records(Path(world["path"]) / EVAL_FILE)
    if cfg.eval.max_questions:
        records = records[: cfg.eval.max_questions]
    grade = None
    if bool(chain) and cfg.eval.grader(cfg.data.world, cfg.teacher) == "teacher" and not all(r.get("facts") for r in records):
        client = TeacherClient(cfg.teacher, cache_dir=state_dir() / "teacher-cache")
        grade = (f"teacher {cfg.teacher.model}",
                 lambda rows, recs: grade_rows(client, rows, recs, progress_logger("eval teacher")))
    summary, rows = evaluate_policy(model, processor, records, cfg.eval, progress_logger("eval"),
                                    grade=grade, rationales=bool(chain))
    write_json(out / METRICS_FILE, summary)
    write_records(rows, out / EVAL_ROWS_FILE, EvalRow)
    write_records(rows[: cfg.eval.n_samples], out / SAMPLES_FILE, EvalRow)
    return {"metrics": {k: v for k, v in summary.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)}}


@stage_task("evaluate", retries=1)
def eval_task(key: str, cfg: dict, base: dict, chain: list[dict], world: dict) -> dict:
    return produce(STAGE, key, lambda out: build_eval(cfg, base, chain, world, out))


def key_parts(cfg, **refs) -> tuple[dict, dict]:
    """Who grades is part of the key (whether teacher.endpoint is set is not, being a runtime knob)."""
    c = StageConfig(cfg, READS, STAGE)
    return {"graded_by": c.eval.grader(c.data.world, c.teacher)}, digests(refs)


BUILD, TASK = build_eval, eval_task  # the stage's logic, and it as a cached Prefect task (flows/runner.py)
