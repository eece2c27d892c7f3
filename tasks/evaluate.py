"""Task: held-out evaluation of a policy pi_t (docs/method.md section 8).

The base model (an empty chain) answers briefly: its consistency and factuality are not
applicable. On data without scene facts the R-Scorer (`judge`) measures them, where given.
"""

from __future__ import annotations

from pathlib import Path

from data.records import read_records, write_records
from data.schema import EvalRow
from tasks.common import config_of, load_policy, progress_logger, stage_task
from tasks.store import produce, write_json

# 2: short answers (the base) report consistency/factuality as n/a; data without facts is
#    judged by the R-Scorer (or reported as not measured)
STAGE, VERSION = "evaluate", 2
READS = ("eval", "model")  # the config this stage reads: its cache key hashes exactly this (tasks/reads.py)


def needs_judge(world: str) -> bool:
    """Whether evaluation on `data.world` reads consistency/factuality from the R-Scorer (no
    scene facts to score them exactly): the judge is then an input of the stage's key."""
    return world != "shapes"


def build_eval(cfg_dict: dict, base: dict, chain: list[dict], world: dict, out: Path,
               judge: dict | None = None) -> dict:
    from models.evaluate import evaluate_policy

    cfg = config_of(cfg_dict, READS, STAGE)
    model, processor = load_policy(cfg, base, chain)
    records = read_records(Path(world["path"]) / "eval.parquet")
    if cfg.eval.max_questions:
        records = records[: cfg.eval.max_questions]
    scorer = None
    rationales = bool(chain)
    if judge is not None and rationales and not all(r.get("facts") for r in records):
        from data.config import ScorerConfig
        from tasks.score import ORACLE, judge_for

        settings = ScorerConfig.model_validate(judge["scorer"])  # they come with it (flows/pipeline.py)
        # a claim checker grades claims, not responses: such a run reports n/a here
        if judge["digest"] != ORACLE and settings.mode != "claims":
            j = judge_for(settings.model_copy(update={"reader": None}), judge, cfg.model.device)
            scorer = (j.model, j.tokenizer, settings)
    summary, rows = evaluate_policy(model, processor, records, cfg.eval, progress_logger("eval"),
                                    judge=scorer, rationales=rationales)
    write_json(out / "metrics.json", summary)
    write_records(rows, out / "scores.parquet", EvalRow)
    write_records(rows[: cfg.eval.n_samples], out / "samples.parquet", EvalRow)
    return {"metrics": {k: v for k, v in summary.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)}}


@stage_task("evaluate", retries=1)
def eval_task(key: str, cfg: dict, base: dict, chain: list[dict], world: dict,
              judge: dict | None = None) -> dict:
    return produce(STAGE, key, lambda out: build_eval(cfg, base, chain, world, out, judge))
