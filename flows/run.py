"""The plumbing of one SRC run, so that flows/pipeline.py can read as the method: the stage
runner (keys, timing, resume: flows/runner.py), the MLflow parent run and one child run per
iteration (infra/tracking.py, infra/layout.py), the checks before any compute, the report
and the summary the command line prints.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from data.config import SRCConfig, digest
from data.metrics import format_table
from data.validate import DataError
from data.schema import METRICS_FILE
from infra.common import log
from infra.layout import eval_metrics, log_iteration, metrics_table, resolve_start
from infra.refs import ORACLE_JUDGE, base_ref, given_judge_ref, reader_digest
from flows.runner import StageRunner
from infra.tracking import Tracker, make_tracker, require_records
from models.builtin import git_commit
from tasks import evaluate, report, scorer, world


class Run:
    """One pipeline run. `run(stage_module, **refs)` runs a stage (flows/runner.py); the other
    methods record what the recipe produces."""

    def __init__(self, cfg: SRCConfig, tracker: Tracker | None = None, config_path: str | None = None,
                 start_from: str | None = None, prefect: bool = True):
        self.cfg, self.start_from, self.prefect = cfg, start_from, prefect
        self.tracker = tracker or make_tracker(cfg.tracking)
        if start_from:
            require_records(self.tracker, "start_from")
        self.stage = StageRunner(cfg, prefect)
        self.say = log()
        self.t0 = time.time()
        # a given judge and reader are checked (exist, trained for this world) before any compute
        self.given_judge = given_judge_ref(cfg.scorer, cfg.data.world)
        reader_digest(cfg.scorer.reader, cfg.data.world)
        self.base = base_ref(cfg.model.base)
        self.results: list[dict] = []
        self.shown: list[dict] = []  # per iteration: the refs the report shows
        c = self.stage.cfg_dict
        self.parent = self.tracker.start_run(
            f"src-{time.strftime('%Y%m%d-%H%M%S')}",
            {"src.role": "pipeline", "src.flow_run_id": _flow_run_id() if prefect else "",
             "src.code_commit": git_commit(), "src.config_digest": digest(c),
             "src.config_path": str(config_path or ""), "src.start_from": start_from or ""})
        self.tracker.log_dict(self.parent, c, "config.yaml")
        self.tracker.log_params(self.parent, {"seed": cfg.seed, "iterations": cfg.iterate.iterations,
                                              "model.base": cfg.model.base, "scorer.mode": cfg.scorer.mode})

    def __call__(self, module: Any, **refs: Any) -> dict:
        return self.stage(module, **refs)

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, kind: Any, *_: Any) -> None:
        if kind is not None:
            self.tracker.end_run(self.parent, "FAILED")

    def world(self) -> dict:
        """The data splits; too many bad rows: their report is the run's artifact, then stop."""
        try:
            w = self(world)
        except DataError:
            failed = world.failed_report(self.stage.key(world))
            if failed.is_file():
                self.tracker.log_artifact(self.parent, failed, "data")
            raise
        self.tracker.log_artifact(self.parent, Path(w["path"]) / world.REJECTED, "data")
        self.tracker.log_metrics(self.parent, {f"data/rejected_{k}": v for k, v in w["meta"].get("rejected", {}).items()})
        self.w = w
        return w

    def base_eval(self) -> dict:
        """The base model before any SRC stage (short answers): the reference row of every table."""
        self.eb = self(evaluate, base=self.base, chain=[], world=self.w)
        self.base_metrics = eval_metrics(self.eb)
        self.tracker.log_metrics(self.parent, {f"base/{k}": v for k, v in self.base_metrics.items()})
        self.tracker.log_artifact(self.parent, Path(self.eb["path"]) / METRICS_FILE, "base_eval")
        return self.eb

    def resume(self) -> tuple[list[dict], dict | None, int]:
        """(adapter chain, judge, first iteration) of the run `start_from` names."""
        start = resolve_start(self.start_from, self.tracker)
        chain, judge, first = start["chain"], start["judge"], start["iteration"] + 1
        if self.cfg.scorer.model == "oracle" or judge is None:
            judge = self.given_judge
            if judge is None and self.cfg.scorer.model != "distill":
                raise ValueError(f"start_from: run {self.start_from!r} logged no judge; set scorer.model")
        self.say(f"continuing from run {self.start_from}: {len(chain)} adapters, iteration {first}")
        return chain, judge, first

    def judge_of_its_own(self) -> dict | None:
        """The judge the run makes before iteration 1 (scorer.model=train), or the given one;
        None for scorer.model=distill (made from iteration 1's candidates)."""
        return own_judge(self.stage, self.cfg.scorer.model, self.base, self.w, self.given_judge)

    def log_judge(self, judge: dict | None) -> dict | None:
        """The judge a run uses (its folder, a distilled reader inside it) and its metrics."""
        if judge is None:
            return None
        folder = Path(judge.get("judge_dir") or Path(judge["path"]) / "judge")
        if judge is not ORACLE_JUDGE and folder.is_dir():
            self.tracker.log_artifact(self.parent, folder, "scorer")
        self.tracker.log_metrics(self.parent, {f"scorer/{k}": v for k, v in judge["meta"].get("metrics", {}).items()
                                               if isinstance(v, (int, float))})
        return judge

    def iteration(self, t: int, **refs: dict) -> None:
        """Iteration t's outputs (`adapter`, `eval`, and from t = 1 `candidates`, `scores`,
        `pairs`): one MLflow child run with their files and metrics."""
        self.results.append(log_iteration(self.tracker, self.parent, t, refs))
        self.shown.append({"iteration": t, "metrics": self.results[-1]["metrics"], **refs})

    def measured_by(self) -> str | None:
        """Who graded the held-out consistency and factuality (the last evaluation says)."""
        return (json.loads((Path(self.shown[-1]["eval"]["path"]) / METRICS_FILE).read_text()).get("measured_by")
                if self.shown else None)

    def finish(self, chain: list[dict]) -> dict:
        """The report, the final metrics and the summary: what `src run` prints and returns."""
        cfg, measured_by = self.cfg, self.measured_by()
        facts = {"config digest": digest(self.stage.cfg_dict)[:12], "base model": cfg.model.base,
                 "R-Scorer": f"{cfg.scorer.model} ({cfg.scorer.mode})",
                 "calibration prompts per iteration": str(cfg.iterate.prompts_per_iteration),
                 "candidates per prompt": str(cfg.search.n_candidates),
                 "consistency and factuality graded by": measured_by or "not measured (no scene facts, no teacher)"}
        page = self(report, world=self.w, base_eval=self.eb, iterations=self.shown,
                    base_metrics=self.base_metrics, facts=facts)
        folder = Path(page["path"])
        self.tracker.log_artifact(self.parent, folder / "report.html")
        for name in page["meta"].get("pngs", []):
            self.tracker.log_artifact(self.parent, folder / name, "report")
        wall = time.time() - self.t0
        final = self.results[-1]["metrics"] if self.results else {}
        timing = self.stage.timing(wall)
        self.tracker.log_metrics(self.parent, {**{f"final/{k}": v for k, v in final.items()},
                                               "pipeline/wall_seconds": wall,
                                               "pipeline/stage_seconds": timing["stage_seconds"],
                                               "pipeline/overhead_frac": timing["overhead_frac"]})
        table = metrics_table(self.results)
        self.tracker.log_dict(self.parent, {"iterations": self.results, "timing": timing}, "summary.json")
        self.tracker.end_run(self.parent)
        uri = self.tracker.uri
        if self.prefect:
            _summary_artifact(self.parent, uri, table)
        base_summary = json.loads((Path(self.eb["path"]) / METRICS_FILE).read_text())
        return {"parent_run_id": self.parent, "iterations": self.results, "wall_seconds": wall, "table": table,
                "timing": timing, "chain": [r["path"] for r in chain], "base_metrics": self.base_metrics,
                "tracking_uri": uri, "experiment_id": self.tracker.experiment_id,
                "base_table": format_table(base_summary), "report": str(folder / "report.html"),
                "measured_by": measured_by, "rejected": self.w["meta"].get("rejected", {}),
                "rejected_report": str(Path(self.w["path"]) / world.REJECTED)}


def own_judge(run: StageRunner, scorer_model: str, base: dict, world: dict, given: dict | None) -> dict | None:
    """The judge a run has before iteration 1 (the recipe and the bench's scale curve): trained
    now (scorer.model=train), else `given` (given_judge_ref); None for scorer.model=distill."""
    return run(scorer, base=base, world=world) if scorer_model == "train" else given


def _flow_run_id() -> str:
    return str(flow_run.get_id() or "")


def _summary_artifact(parent: str, uri: str | None, table: str) -> None:
    """The Prefect markdown artifact `src-summary` of a run inside a flow."""
    create_markdown_artifact(
        key="src-summary",
        markdown=(f"# SRC pipeline run `{parent}`\n\n"
                  + (f"MLflow: `{uri}` (parent run `{parent}`)" if uri else "not tracked (tracking.backend=none)")
                  + f"\n\n{table}\n"),
        description="per-iteration held-out metrics")
