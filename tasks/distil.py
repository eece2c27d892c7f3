"""Task: distil the judge from the teacher (stage 3, scorer.model=distill; models/distill.py).

Once per pipeline, on the first iteration's candidates (the policy's own): the teacher labels
every distinct claim and reads every distinct rationale (cached in the state folder, so a
resumed run asks nothing twice: the hit count is logged), then a claim checker and (with
scorer.reader=distill) a reader are fine-tuned from scorer.init. The key is the candidates,
the world and the scorer and teacher settings (teacher.model, its prompt settings; not where
it is served).
"""

from __future__ import annotations

from pathlib import Path

from data.records import read_records, write_records
from data.schema import SCORER_FILE, CANDIDATES_FILE, METRICS_FILE, POOL_FILE, TEACHER_CLAIMS_FILE, TEACHER_READS_FILE
from infra.common import log, progress_logger, stage_task
from infra.store import produce, state_dir, write_json
from infra.reads import StageConfig
from models.distill import (
    ask_claims, ask_reads, claim_rows, read_rows, sample_prompts, teacher_agreement, twin_rows,
    train_student_checker, train_student_reader,
)
from models.teacher import TeacherClient

# 2: the gold rationales of scorer.distill_rationale_claims scorer-split records are checked too
# 3: and a one-word twin of every claim (scorer.distill_twins); a prompt's claims train in one batch
STAGE, VERSION = "distil", 3
READS = ("scorer", "teacher", "model.device", "data.world")  # the config this stage reads (infra/reads.py)


def build_distil(cfg_dict: dict, candidates: dict, world: dict, out: Path, key: str = "") -> dict:
    cfg = StageConfig(cfg_dict, READS, STAGE)
    say = log()
    cands = sample_prompts(read_records(Path(candidates["path"]) / CANDIDATES_FILE),
                           cfg.scorer.distill_prompts, cfg.seed)
    pool = {r["id"]: r for r in read_records(Path(world["path"]) / POOL_FILE)}
    images = {pid: pool[pid]["image"] for pid in {c["prompt_id"] for c in cands}}
    client = TeacherClient(cfg.teacher, cache_dir=state_dir() / "teacher-cache")
    # the policy's own sentences, and the sentences of gold rationales (mostly true: the claims a
    # weak policy seldom writes, which the checker must also learn to pass)
    gold = [r for r in read_records(Path(world["path"]) / SCORER_FILE)[: cfg.scorer.distill_rationale_claims]
            if r.get("response")]
    images.update({r["id"]: r["image"] for r in gold})
    asked = claim_rows(cands, images) + claim_rows(
        [{"prompt_id": r["id"], "text": r["response"], "choices": r.get("choices"), "reference": r.get("reference")}
         for r in gold], images)
    if cfg.scorer.distill_twins:  # what the verdict turns on: a claim next to its one-word twin
        asked += twin_rows(asked, cfg.seed)
    claims = ask_claims(client, asked, progress_logger("teacher claims"))
    want_reader = cfg.scorer.reader == "distill"
    reads = ask_reads(client, read_rows(cands, images), progress_logger("teacher reads")) if want_reader else []
    say(f"[distil] teacher {cfg.teacher.model}: {len(claims)} claims labelled ({sum(c['holds'] for c in claims)} "
        f"true), {len(reads)} rationales read; {client.hits} answers from the cache, {client.misses} asked")
    write_records(claims, out / TEACHER_CLAIMS_FILE)
    if reads:
        write_records(reads, out / TEACHER_READS_FILE)
    metrics: dict = {"distill/claims": float(len(claims)), "distill/reads": float(len(reads)),
                     "distill/teacher_cache_hits": float(client.hits), "distill/teacher_asked": float(client.misses)}
    facts = {**{r["id"]: r.get("facts") for r in gold}, **{pid: pool[pid].get("facts") for pid in pool}}
    metrics.update(teacher_agreement(claims, reads, facts))
    metrics.update(train_student_checker(cfg, claims, out / "judge", cfg.data.world, progress_logger("distil checker")))
    if want_reader:
        metrics.update(train_student_reader(cfg, reads, out / "judge" / "reader", cfg.data.world,
                                            progress_logger("distil reader")))
    write_json(out / METRICS_FILE, metrics)
    say("[distil] " + " ".join(f"{k.split('/', 1)[1]}={v:.3f}" for k, v in metrics.items()
                               if "agree" in k or "exact" in k))
    return {"metrics": metrics}


@stage_task("distil", retries=1)
def distil_task(key: str, cfg: dict, candidates: dict, world: dict) -> dict:
    return produce(STAGE, key, lambda out: build_distil(cfg, candidates, world, out))


BUILD, TASK = build_distil, distil_task  # the stage's logic, and it as a cached Prefect task (flows/runner.py)
