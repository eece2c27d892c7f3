"""Task: the iteration report of a pipeline run (`report.html` and its PNG plots, report/page.py).

Its key hashes the digests of every stage output it shows, so a fully cached re-run reuses the
page too; it shows no run id (the MLflow run it is logged to says which run it is).
"""

from __future__ import annotations

from pathlib import Path

from infra.common import stage_task
from infra.store import produce
from infra.reads import StageConfig
from report.page import IterationOutputs, build_report

# 2: the facts table has no empty header row; 3: the headroom table per iteration
STAGE, VERSION = "report", 3
READS = ("report", "curation")  # the config this stage reads: its cache key hashes exactly this (infra/reads.py)


def _dir(ref: dict | None) -> Path | None:
    return Path(ref["path"]) if ref else None


def build_report_files(cfg_dict: dict, world: dict, base_eval: dict, iterations: list[dict],
                       base_metrics: dict, facts: dict, out: Path, key: str = "") -> dict:
    cfg = StageConfig(cfg_dict, READS, STAGE)
    its = [IterationOutputs(it["iteration"], it["metrics"], Path(it["eval"]["path"]), _dir(it.get("candidates")),
                            _dir(it.get("scores")), _dir(it.get("pairs")))
           for it in iterations]
    files = build_report(Path(world["path"]), its, out, cfg.curation, base_eval_dir=_dir(base_eval),
                         base_metrics=base_metrics, n_prompts=cfg.report.n_prompts,
                         n_examples=cfg.report.n_examples, facts=facts)
    return {"pngs": [p.name for p in files["pngs"]]}


@stage_task("report")
def report_task(key: str, cfg: dict, world: dict, base_eval: dict, iterations: list[dict],
                base_metrics: dict, facts: dict) -> dict:
    return produce(STAGE, key, lambda out: build_report_files(cfg, world, base_eval, iterations,
                                                              base_metrics, facts, out))


def key_parts(cfg, world: dict, base_eval: dict, iterations: list[dict], base_metrics: dict,
              facts: dict) -> tuple[dict, dict]:
    """The outputs behind every number and example the page shows (the DPO loss: the adapter's),
    not the metrics dicts themselves: those carry timings, which differ between runs of the same
    outputs; the facts table is shown as given."""
    return {"facts": facts}, {"world": world["digest"], "base_eval": base_eval["digest"],
                              "iterations": [[s[k]["digest"] for k in ("eval", "candidates", "scores", "pairs", "adapter")
                                              if k in s] for s in iterations]}


BUILD, TASK = build_report_files, report_task  # the stage's logic, and it as a cached Prefect task (flows/runner.py)
