"""The SRC pipeline that the `src-iterate` flow runs (flows/src_iterate.py): rationale SFT and
R-Scorer once, then T iterations of search -> pairwise scoring -> curation -> DPO ->
evaluation, every stage a cached task. Retraining (flows/retrain.py) runs it too.

Stage outputs are content-addressed (infra/store.py); re-running the same command after a
crash reuses every finished stage and runs only the rest. Tracking happens here, at the edge:
one MLflow parent run per pipeline run, one child run per iteration (infra/tracking.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from data.config import SRCConfig, digest
from data.metrics import format_table
from data.validate import DataError
from tasks import curate, distil, dpo, evaluate, report, score, scorer, search, sft, world
from models.builtin import git_commit
from infra.layout import eval_metrics, log_iteration, metrics_table, resolve_start
from infra.reads import signature
from infra.refs import ORACLE_JUDGE, base_ref, given_judge_ref, reader_digest
from infra.store import lookup, stage_key
from infra.tracking import Tracker, make_tracker, require_records


def task_key(module: Any, cfg: SRCConfig, inputs: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    """A stage's key: the config it declares it reads (`module.READS`, infra/reads.py), its
    inputs' digests, `extra` values it is given (not config), the stage version and the seed."""
    return stage_key(module.STAGE, module.VERSION, {**signature(cfg, module.READS), **(extra or {})},
                     inputs, cfg.seed)


def eval_key(cfg: SRCConfig, base: dict, chain: list[dict], w: dict) -> str:
    """The evaluation stage's key; who grades (the teacher or nobody, on data without facts)
    is part of it, since whether teacher.endpoint is set is not."""
    inputs = {"base": base["digest"], "chain": _d(chain), "world": w["digest"]}
    return task_key(evaluate, cfg, inputs, {"graded_by": evaluate.grader(cfg)})


def _run(task_fn: Any, module: Any, key: str, **kwargs: Any) -> dict:
    """Call a stage task; a cached result whose files are gone or altered is recomputed.

    Prefect's cache only knows the key; the store knows whether the output is really there
    (manifest digests match). Where it is not, the task runs with `refresh_cache=True`.
    """
    if lookup(module.STAGE, key) is None:
        task_fn = task_fn.with_options(refresh_cache=True)
    return task_fn(key=key, **kwargs)




def log_judge(tracker: Tracker, parent: str, judge: dict) -> None:
    """The judge a run uses (its folder, a distilled reader inside it) and its metrics."""
    if judge is not ORACLE_JUDGE and Path(judge.get("judge_dir") or Path(judge["path"]) / "judge").is_dir():
        tracker.log_artifact(parent, judge.get("judge_dir") or Path(judge["path"]) / "judge", "scorer")
    tracker.log_metrics(parent, {f"scorer/{k}": v for k, v in judge["meta"].get("metrics", {}).items()
                                 if isinstance(v, (int, float))})


def _d(refs: list[dict]) -> list[str]:
    return [r["digest"] for r in refs]


def stage_timing(calls: list[dict], wall: float) -> dict:
    """Where a pipeline run's wall time went: the stage functions' own build time (stages
    built in this run) per stage, and the rest (Prefect, tracking, loading refs) as a share."""
    per: dict[str, float] = {}
    for c in calls:
        per[c["stage"]] = per.get(c["stage"], 0.0) + c["build_seconds"]
    stage_s = sum(per.values())
    return {"flow_seconds": wall, "stage_seconds": stage_s, "per_stage_seconds": per,
            "overhead_frac": (wall - stage_s) / wall if wall > 0 else 0.0,
            "built": sum(c["built"] for c in calls), "reused": sum(not c["built"] for c in calls)}


def graded_by(shown: list[dict]) -> str:
    """Who graded the held-out consistency and factuality of a run's iterations (the last one's
    evaluation says): the exact scorer, the teacher, or nobody."""
    by = (json.loads((Path(shown[-1]["eval"]["path"]) / "metrics.json").read_text()).get("measured_by")
          if shown else None)
    return by or "not measured (no scene facts, no teacher)"


def log_report(tracker: Tracker, parent: str, run: Any, cfg: SRCConfig, c: dict, w: dict, eb: dict,
               shown: list[dict], base_metrics: dict) -> Path:
    """Build (or reuse) the run's `report.html` and log it, with its PNG plots under `report/`;
    returns the page's path in the store."""
    facts = {"config digest": digest(c)[:12], "base model": cfg.model.base,
             "R-Scorer": f"{cfg.scorer.model} ({cfg.scorer.mode})",
             "calibration prompts per iteration": str(cfg.iterate.prompts_per_iteration),
             "candidates per prompt": str(cfg.search.n_candidates),
             "consistency and factuality graded by": graded_by(shown)}
    # the outputs behind every number and example it shows (the DPO loss: the adapter's), not the
    # metrics dicts themselves: those carry timings, which differ between runs of the same outputs
    inputs = {"world": w["digest"], "base_eval": eb["digest"],
              "iterations": [[s[k]["digest"] for k in ("eval", "candidates", "scores", "pairs", "adapter") if k in s]
                             for s in shown]}
    key = task_key(report, cfg, inputs, {"facts": facts})
    ref = run(report.report_task, report, key, cfg=c, world=w, base_eval=eb, iterations=shown,
              base_metrics=base_metrics, facts=facts)
    folder = Path(ref["path"])
    tracker.log_artifact(parent, folder / "report.html")
    for name in ref["meta"].get("pngs", []):
        tracker.log_artifact(parent, folder / name, "report")
    return folder / "report.html"


def run_pipeline(cfg: SRCConfig, start_from: str | None = None, tracker: Tracker | None = None,
                 config_path: str | None = None) -> dict:
    """The whole SRC loop; returns {"parent_run_id", "iterations": [metrics per iteration]}.
    `tracker` defaults to the one of `tracking.backend` (infra/tracking.py)."""
    say = get_run_logger().info
    tracker = tracker or make_tracker(cfg.tracking)
    if start_from:
        require_records(tracker, "start_from")
    c = cfg.model_dump(mode="json")
    t0 = time.time()
    calls: list[dict] = []  # every stage call: its wall time here, and the stage's own build time

    def run(task_fn: Any, module: Any, key: str, **kwargs: Any) -> dict:
        t = time.time()
        ref = _run(task_fn, module, key, **kwargs)
        built = (ref.get("created") or 0) >= t  # False: reused from the store / Prefect cache
        calls.append({"stage": module.STAGE, "call_seconds": time.time() - t, "built": built,
                      "build_seconds": (ref.get("build_seconds") or 0.0) if built else 0.0})
        return ref
    # a given judge is checked (exists, prompt style) before any run or compute starts
    given_judge = given_judge_ref(cfg)
    reader = reader_digest(cfg.scorer.reader, cfg.data.world)  # checked, like the judge, before any compute
    parent = tracker.start_run(
        f"src-{time.strftime('%Y%m%d-%H%M%S')}",
        {"src.role": "pipeline", "src.flow_run_id": str(flow_run.get_id() or ""),
         "src.code_commit": git_commit(), "src.config_digest": digest(c),
         "src.config_path": str(config_path or ""), "src.start_from": start_from or ""},
    )
    tracker.log_dict(parent, c, "config.yaml")
    tracker.log_params(parent, {"seed": cfg.seed, "iterations": cfg.iterate.iterations,
                                "model.base": cfg.model.base, "scorer.mode": cfg.scorer.mode})
    results: list[dict] = []
    shown: list[dict] = []  # per iteration: the refs the report shows
    try:
        base = base_ref(cfg.model.base)
        wkey = task_key(world, cfg, world.source_files(c))
        try:
            w = run(world.world_task, world, wkey, cfg=c)
        except DataError:  # too many bad rows: the report is the run's artifact, then stop
            report = world.failed_report(wkey)
            if report.is_file():
                tracker.log_artifact(parent, report, "data")
            raise
        tracker.log_artifact(parent, Path(w["path"]) / world.REJECTED, "data")
        tracker.log_metrics(parent, {f"data/rejected_{k}": v for k, v in w["meta"].get("rejected", {}).items()})
        # the base model before any SRC stage (short answers): the reference row of every table
        eb = run(evaluate.eval_task, evaluate, eval_key(cfg, base, [], w), cfg=c, base=base, chain=[], world=w)
        base_summary = json.loads((Path(eb["path"]) / "metrics.json").read_text())
        base_metrics = eval_metrics(eb)
        tracker.log_metrics(parent, {f"base/{k}": v for k, v in base_metrics.items()})
        tracker.log_artifact(parent, Path(eb["path"]) / "metrics.json", "base_eval")
        start = resolve_start(start_from, tracker) if start_from else None
        if start:
            chain, judge, first = start["chain"], start["judge"], start["iteration"] + 1
            if cfg.scorer.model == score.ORACLE or judge is None:
                judge = given_judge
                if judge is None:
                    raise ValueError(f"start_from: run {start_from!r} logged no judge; set scorer.model")
            say(f"continuing from run {start_from}: {len(chain)} adapters, iteration {first}")
        else:
            s = run(sft.sft_task, sft, task_key(sft, cfg, {"base": base["digest"], "world": w["digest"]}),
                             cfg=c, base=base, world=w)
            chain, first = [s], 1
            if cfg.scorer.model == "train":
                judge = run(scorer.scorer_task, scorer, task_key(scorer, cfg,
                                                                 {"base": base["digest"], "world": w["digest"]}),
                             cfg=c, base=base, world=w)
            else:  # the committed tiny judge, or a trained one by path or hub id: nothing to train;
                judge = given_judge  # None for scorer.model=distill: distilled on iteration 1's candidates
            e0 = run(evaluate.eval_task, evaluate, eval_key(cfg, base, chain, w), cfg=c, base=base, chain=chain, world=w)
            results.append(log_iteration(tracker, parent, 0, {"adapter": s, "eval": e0}))
            shown.append({"iteration": 0, "metrics": results[-1]["metrics"], "eval": e0, "adapter": s})
        if judge is not None:
            log_judge(tracker, parent, judge)
        for t in range(first, first + cfg.iterate.iterations):
            say(f"iteration {t}: search -> score -> curate -> dpo -> eval")
            inputs = {"base": base["digest"], "chain": _d(chain), "world": w["digest"]}
            cands = run(
                search.search_task, search, task_key(search, cfg, {**inputs, "iteration": t}),
                cfg=c, base=base, chain=chain, world=w, iteration=t)
            if judge is None:  # scorer.model=distill: taught by the teacher on the policy's own candidates
                judge = run(distil.distil_task, distil, task_key(distil, cfg, {"candidates": cands["digest"],
                                                                               "world": w["digest"]}),
                            cfg=c, candidates=cands, world=w)
                log_judge(tracker, parent, judge)
            sc = run(score.score_task, score, task_key(score, cfg, {"judge": judge["digest"], "candidates": cands["digest"],
                                                             **({"reader": reader} if reader else {})}),
                                  cfg=c, judge=judge, candidates=cands)
            prefs = run(curate.curate_task, curate, task_key(curate, cfg, {"candidates": cands["digest"],
                                                                   "scores": sc["digest"]}),
                                       cfg=c, candidates=cands, scores=sc)
            ad = run(dpo.dpo_task, dpo, task_key(dpo, cfg, {**inputs, "pairs": prefs["digest"]}),
                              cfg=c, base=base, chain=chain, pairs=prefs, world=w)
            chain = chain + [ad]
            ev = run(evaluate.eval_task, evaluate, eval_key(cfg, base, chain, w), cfg=c, base=base, chain=chain, world=w)
            results.append(log_iteration(tracker, parent, t, {
                "candidates": cands, "scores": sc, "pairs": prefs, "adapter": ad, "eval": ev}))
            shown.append({"iteration": t, "metrics": results[-1]["metrics"], "eval": ev,
                          "candidates": cands, "scores": sc, "pairs": prefs, "adapter": ad})
        report_page = log_report(tracker, parent, run, cfg, c, w, eb, shown, base_metrics)
    except BaseException:
        tracker.end_run(parent, "FAILED")
        raise
    wall = time.time() - t0
    final = results[-1]["metrics"] if results else {}
    timing = stage_timing(calls, wall)
    tracker.log_metrics(parent, {**{f"final/{k}": v for k, v in final.items()}, "pipeline/wall_seconds": wall,
                                 "pipeline/stage_seconds": timing["stage_seconds"],
                                 "pipeline/overhead_frac": timing["overhead_frac"]})
    table = metrics_table(results)
    # where the last table row's consistency/factuality come from: exact scorer, R-Scorer, None
    measured_by = (json.loads((Path(shown[-1]["eval"]["path"]) / "metrics.json").read_text()).get("measured_by")
                   if shown else None)
    tracker.log_dict(parent, {"iterations": results, "timing": timing}, "summary.json")
    tracker.end_run(parent)
    uri = tracker.uri
    create_markdown_artifact(
        key="src-summary",
        markdown=(f"# SRC pipeline run `{parent}`\n\n"
                  + (f"MLflow: `{uri}` (parent run `{parent}`)" if uri else "not tracked (tracking.backend=none)")
                  + f"\n\n{table}\n"),
        description="per-iteration held-out metrics",
    )
    return {"parent_run_id": parent, "iterations": results, "wall_seconds": wall, "table": table,
            "timing": timing, "chain": [r["path"] for r in chain], "base_metrics": base_metrics,
            "tracking_uri": uri, "experiment_id": tracker.experiment_id,
            "base_table": format_table(base_summary), "report": str(report_page),
            "measured_by": measured_by, "rejected": w["meta"].get("rejected", {}),
            "rejected_report": str(Path(w["path"]) / world.REJECTED)}
